/**
 * The PrometheusRule's groups as the plain rule file Prometheus and promtool read, and
 * promtool itself (Debian's `prometheus` package; scripts/test-servers.sh installs it). The
 * unit tests of k8s/monitoring/tests/ name that file `tokenguard.rules.yaml`, beside them.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';

const execFileAsync = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
export const RULE_FILE = path.join(ROOT, 'k8s/monitoring/prometheus-rule.yaml');
export const RULE_TESTS = path.join(ROOT, 'k8s/monitoring/tests/tokenguard.rules.test.yaml');
export const PROMTOOL = process.env.PROMTOOL ?? 'promtool';

/** The `spec` of the PrometheusRule in `file`: `{groups: [...]}`, as YAML. */
export function ruleGroupsYaml(file = RULE_FILE): string {
  const rule = parse(readFileSync(file, 'utf8')) as { kind?: string; spec?: unknown };
  if (rule.kind !== 'PrometheusRule') throw new Error(`${file}: not a PrometheusRule`);
  return stringify(rule.spec);
}

/**
 * A directory holding `tokenguard.rules.yaml` (the groups of `ruleFile`, or `rulesYaml`
 * verbatim) and a copy of the unit tests; returns their paths.
 */
export function writeRuleFiles(options: { ruleFile?: string; rulesYaml?: string } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'tokenguard-rules-'));
  const rules = path.join(dir, 'tokenguard.rules.yaml');
  writeFileSync(rules, options.rulesYaml ?? ruleGroupsYaml(options.ruleFile));
  const tests = path.join(dir, path.basename(RULE_TESTS));
  copyFileSync(RULE_TESTS, tests);
  return { dir, rules, tests };
}

export interface ToolResult {
  code: number;
  output: string;
}

/** Runs promtool; its exit code and stdout + stderr. A missing promtool throws, loudly. */
export async function promtool(args: string[]): Promise<ToolResult> {
  try {
    const { stdout, stderr } = await execFileAsync(PROMTOOL, args, { encoding: 'utf8' });
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    const { code, stdout, stderr } = error as { code?: unknown; stdout?: string; stderr?: string };
    if (code === 'ENOENT') {
      throw new Error(
        `${PROMTOOL} not found: install Debian's prometheus package (scripts/test-servers.sh)`,
        { cause: error },
      );
    }
    return { code: typeof code === 'number' ? code : 1, output: `${stdout ?? ''}${stderr ?? ''}` };
  }
}
