/**
 * npm run soak [-- --seconds N]   (default 180)
 *
 * The real gateway under mixed valid, unknown and fishing traffic while the authorization
 * server goes down, answers 500, hangs and comes back (test/_soak.ts). Prints the report;
 * exits 1 on any answer a class of client must never get, a failed connection, descriptors
 * left open or memory growth. Needs `npm run build` first. Not part of `npm test` (which runs
 * a 20-second version, test/soak.test.ts).
 */
import { soak } from '../test/_soak.js';

const at = process.argv.indexOf('--seconds');
const seconds = at === -1 ? 180 : Number(process.argv[at + 1]);
if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 3600) {
  console.error('soak: --seconds must be between 1 and 3600');
  process.exit(2);
}
const report = await soak(seconds, (line) => console.log(line));
const findings = [
  ...Object.entries(report.unexpected).map(([key, count]) => `unexpected ${key}: ${count}`),
  ...report.problems,
  ...(report.fdsAfter > report.fdsBefore + 40
    ? [`descriptors ${report.fdsBefore} → ${report.fdsAfter}`]
    : []),
  ...(report.rssAfterMiB - report.rssBeforeMiB >= 64
    ? [`RSS ${report.rssBeforeMiB} → ${report.rssAfterMiB} MiB`]
    : []),
];
console.log(findings.length === 0 ? 'soak: ok' : `soak: ${findings.length} finding(s)`);
for (const finding of findings) console.log(`  ${finding}`);
process.exit(findings.length === 0 ? 0 : 1);
