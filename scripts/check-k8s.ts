/**
 * npm run check:k8s [-- DIR...]   render every kustomization with `kubectl kustomize`
 *                                 (default: every one under k8s/ and the sidecar fixtures),
 *                                 validate and check what it renders, and lint the
 *                                 Dockerfile; exit 1 on any problem
 *
 * The same checks as test/k8s.test.ts, for a quick run while editing manifests. Needs
 * `npm run build` first (the gateway configs are checked by dist/cli.js) and kubectl >= 1.27
 * (to see a rendering, run `kubectl kustomize DIR` itself).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { lintDockerfile } from './k8s/dockerfile.js';
import { kustomize, RenderError, type Manifest } from './k8s/manifests.js';
import { checkSidecarPolicy, gatewayPods } from './k8s/sidecar-policy.js';
import { checkUnknownFields } from './k8s/strict-fields.js';
import { validateManifests } from './k8s/validate.js';

const ROOT = path.resolve(import.meta.dirname, '..');
/** Every kustomization (not the Components: they render through the fixtures that use them). */
const KUSTOMIZATIONS = [
  'k8s/base',
  'k8s/overlays/example',
  'k8s/monitoring',
  'k8s/overlays/monitoring',
  'test/fixtures/k8s-sidecar/regular',
  'test/fixtures/k8s-sidecar/native',
];

function checkConfigs(manifests: Manifest[], target: string): string[] {
  const cli = path.join(ROOT, 'dist/cli.js');
  if (!existsSync(cli)) return [`${target}: dist/cli.js is missing: run \`npm run build\` first`];
  const dir = mkdtempSync(path.join(tmpdir(), 'tokenguard-check-k8s-'));
  try {
    return gatewayPods(manifests).pods.flatMap((pod, index) => {
      const file = path.join(dir, `config-${index}.yaml`);
      writeFileSync(file, pod.config.text);
      try {
        execFileSync(process.execPath, [cli, 'check', '--config', file], {
          env: { ...process.env, TOKENGUARD_CLIENT_SECRET: 'check-k8s' },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        return [];
      } catch (error) {
        const stderr = String((error as { stderr?: Buffer }).stderr ?? error).trim();
        return [`${target}: the gateway config of ${pod.workload.metadata.name}:\n${stderr}`];
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function checkTarget(target: string): string[] {
  let manifests: Manifest[];
  try {
    manifests = kustomize(path.resolve(ROOT, target));
  } catch (error) {
    if (error instanceof RenderError) return [`${target}: ${error.message}`];
    throw error;
  }
  const problems = [
    ...validateManifests(manifests),
    ...checkUnknownFields(manifests),
    ...checkSidecarPolicy(manifests),
  ].map((problem) => `${target}: ${problem}`);
  return [...problems, ...checkConfigs(manifests, target)];
}

function main(argv: string[]): number {
  const targets = argv.length > 0 ? argv : KUSTOMIZATIONS;
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  const problems = [
    ...targets.flatMap(checkTarget),
    ...lintDockerfile(path.join(ROOT, 'Dockerfile'), ROOT, nodeMajor),
  ];
  for (const problem of problems) process.stderr.write(`${problem}\n`);
  process.stdout.write(
    problems.length === 0
      ? `check:k8s: ok (${targets.join(', ')}, Dockerfile)\n`
      : `check:k8s: ${problems.length} problem(s)\n`,
  );
  return problems.length === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
