/**
 * npm run check:rules   `promtool check rules` on the groups of
 *                       k8s/monitoring/prometheus-rule.yaml, then `promtool test rules` with
 *                       the unit tests of k8s/monitoring/tests/; exit 1 on any failure.
 * The same as test/monitoring.test.ts does, for a quick run while editing the alerts.
 */
import { rmSync } from 'node:fs';
import { promtool, writeRuleFiles } from './monitoring/rules.js';

async function main(): Promise<number> {
  const { dir, rules, tests } = writeRuleFiles();
  try {
    for (const args of [
      ['check', 'rules', rules],
      ['test', 'rules', tests],
    ]) {
      const { code, output } = await promtool(args);
      process.stdout.write(output);
      if (code !== 0) return 1;
    }
    return 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
