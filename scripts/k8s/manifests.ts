/**
 * Rendered manifests, as the checks of scripts/k8s/ read them. Rendering is kustomize's own,
 * through `kubectl kustomize` (kubectl >= 1.27, kustomize v5: Components, `labels`,
 * `replacements`): no second implementation that could drift from the real one. Without
 * kubectl this fails, saying so, rather than checking nothing.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface Manifest extends JsonObject {
  apiVersion: string;
  kind: string;
  metadata: JsonObject & { name: string };
}

/** A kustomization that does not render, or output that is not a list of resources. */
export class RenderError extends Error {
  override name = 'RenderError';
}

const isObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** The kubectl binary: $KUBECTL when set, else `kubectl` on the PATH. */
export const kubectlBinary = (): string => process.env.KUBECTL ?? 'kubectl';

/** The YAML `kubectl kustomize DIR` prints. */
export function kustomizeYaml(dir: string): string {
  try {
    return execFileSync(kubectlBinary(), ['kustomize', dir], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (error) {
    const { code, stderr } = error as { code?: string; stderr?: string };
    if (code === 'ENOENT') {
      throw new RenderError(
        `${kubectlBinary()} not found: rendering needs kubectl >= 1.27 (\`kubectl kustomize\`); ` +
          'scripts/test-servers.sh says how to install it',
      );
    }
    throw new RenderError(`kubectl kustomize ${dir}: ${String(stderr ?? error).trim()}`);
  }
}

/** The resources `kubectl kustomize DIR` renders, in its output order. */
export function kustomize(dir: string): Manifest[] {
  return parseManifests(kustomizeYaml(dir), `kubectl kustomize ${dir}`);
}

/** Parses a multi-document YAML file into manifests (empty documents skipped). */
export function readManifests(file: string): Manifest[] {
  return parseManifests(readFileSync(file, 'utf8'), file);
}

export function parseManifests(text: string, source: string): Manifest[] {
  const manifests: Manifest[] = [];
  for (const doc of parseAllDocuments(text, { uniqueKeys: true })) {
    const problem = doc.errors[0] ?? doc.warnings[0];
    if (problem) throw new RenderError(`${source}: ${problem.message.split('\n')[0]}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    if (!isObject(value)) throw new RenderError(`${source}: a document is not a mapping`);
    const items = value.kind === 'List' && Array.isArray(value.items) ? value.items : [value];
    for (const item of items) {
      if (
        !isObject(item) ||
        typeof item.apiVersion !== 'string' ||
        typeof item.kind !== 'string' ||
        !isObject(item.metadata) ||
        typeof item.metadata.name !== 'string'
      ) {
        throw new RenderError(`${source}: every resource needs apiVersion, kind and metadata.name`);
      }
      manifests.push(item as Manifest);
    }
  }
  return manifests;
}

export const asObjects = (value: Json | undefined): JsonObject[] =>
  Array.isArray(value) ? value.filter(isObject) : [];

/** The pod specs inside a workload (Pod, Deployment & co, Job, CronJob). */
export function podSpecs(manifest: Manifest): JsonObject[] {
  const spec = manifest.spec;
  if (!isObject(spec)) return [];
  if (manifest.kind === 'Pod') return [spec];
  if (isObject(spec.template) && isObject(spec.template.spec)) return [spec.template.spec];
  const job = isObject(spec.jobTemplate) ? spec.jobTemplate.spec : undefined;
  if (isObject(job) && isObject(job.template) && isObject(job.template.spec)) {
    return [job.template.spec];
  }
  return [];
}

export const allContainers = (podSpec: JsonObject): JsonObject[] => [
  ...asObjects(podSpec.initContainers),
  ...asObjects(podSpec.containers),
];
