/**
 * `npm run bench -- --smoke` runs in CI, so the benchmark cannot rot: every scenario starts
 * its real processes, drives them and reports. Its functional targets are asserted here
 * (they are counts, not timings); the hot path is guarded by the figures that stay steady
 * on a shared machine — CPU µs and promoted bytes per request of the cache-hit path,
 * relative to the bare http-proxy passthrough measured in the same run — so a regression
 * like the per-request WeakMap (≈6.7 KB promoted per request, ≈2× the CPU) fails CI.
 * Throughput ratios and p99 are timings: they are printed by the bench, never asserted.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import test from 'ava';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Row {
  scenario: string;
  side: string;
  cpuUsPerRequest?: number;
  promotedBytesPerRequest?: number;
  asCalls?: number;
  non2xx: number;
  socketErrors: number;
}
interface Check {
  scenario: string;
  target: string;
  value: string;
  met: boolean;
}

/** The count-based targets: any failure is a bug, not noise. */
const FUNCTIONAL = [
  /^distinct: no AS call once cached$/,
  /^cold: zero non-2xx$/,
  /^cold: AS calls = \d+$/,
  /^fishing-\d+: AS calls ≤ max_failures/,
  /^fishing-\d+: legitimate: no errors$/,
  /^flood: AS calls ≤/,
  /^flood: cached tokens still served from cache after it$/,
  /^flood: legitimate: no errors$/,
  /^memory: every token cached$/,
  /^fleet: AS calls = distinct tokens/,
  /^fleet: cache hits: no Redis command$/,
  /^cached-\d+: no errors$/,
];

test('npm run bench -- --smoke: every scenario runs; counts hold; the hot path costs what it should', async (t) => {
  t.timeout(300_000);
  const dir = await mkdtemp(path.join(tmpdir(), 'tokenguard-bench-'));
  try {
    const json = path.join(dir, 'bench.json');
    await run('npx', ['tsc', '-p', 'tsconfig.bench.json'], { cwd: ROOT });
    const { stdout } = await run(
      process.execPath,
      ['dist-bench/bench/run.js', '--smoke', '--json', json],
      { cwd: ROOT, timeout: 280_000, maxBuffer: 16 * 1024 * 1024 },
    );
    t.log(stdout.slice(stdout.indexOf('| scenario')));
    const report = JSON.parse(await readFile(json, 'utf8')) as { rows: Row[]; checks: Check[] };

    const scenarios = new Set(report.checks.map((check) => check.scenario.replace(/-\d+$/, '')));
    t.deepEqual([...scenarios].sort(), [
      'cached',
      'cold',
      'distinct',
      'fishing',
      'fleet',
      'flood',
      'memory',
    ]);
    for (const check of report.checks) {
      const name = `${check.scenario}: ${check.target}`;
      if (FUNCTIONAL.some((pattern) => pattern.test(name)))
        t.true(check.met, `${name} — ${check.value}`);
    }

    const cached = report.rows.filter((row) => row.scenario.startsWith('cached token'));
    const gateway = cached.find((row) => row.side === 'gateway');
    const bare = cached.find((row) => row.side === 'passthrough');
    if (!gateway || !bare) {
      t.fail('the cached scenario reported both sides');
      return;
    }
    const cpu = (gateway.cpuUsPerRequest as number) / (bare.cpuUsPerRequest as number);
    t.true(
      cpu <= 3,
      `cache-hit CPU per request is ${cpu.toFixed(2)} × the passthrough's (bound 3)`,
    );
    const promoted =
      (gateway.promotedBytesPerRequest as number) - (bare.promotedBytesPerRequest as number);
    t.true(
      promoted <= 2048,
      `cache-hit path promotes ${promoted.toFixed(0)} B per request more than the passthrough (bound 2 KiB)`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
