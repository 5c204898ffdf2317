/**
 * A small, dependency-free kustomize: renders the subset of kustomization.yaml that
 * tokenguard's manifests use, so CI can build them without a kustomize binary (none is
 * published on npm). Anything outside that subset is an error rather than silently ignored,
 * so "it renders here" keeps meaning "kustomize renders it the same way". Where a real
 * `kubectl` is on the PATH, test/k8s.test.ts also renders with `kubectl kustomize` and
 * requires identical output.
 *
 * Supported: resources (files and directories), components, namespace, labels (without
 * selectors), images, replicas, patches (strategic merge and JSON 6902, with targets),
 * configMapGenerator / secretGenerator (files, literals, envs, behavior, options) with
 * kustomize's content-hash suffix and the name references to it, generatorOptions.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface Manifest extends JsonObject {
  apiVersion: string;
  kind: string;
  metadata: JsonObject & { name: string };
}

interface Resource {
  manifest: Manifest;
  /** The file it came from (or the kustomization that generated it), for messages. */
  source: string;
  /** Set for generated ConfigMaps and Secrets: their name before the hash suffix. */
  generated?: { hashSuffix: boolean };
}

export class KustomizeError extends Error {
  override name = 'KustomizeError';
}

const KUSTOMIZATION_FILES = ['kustomization.yaml', 'kustomization.yml', 'Kustomization'];
const SUPPORTED_FIELDS = new Set([
  'apiVersion',
  'kind',
  'resources',
  'components',
  'namespace',
  'labels',
  'images',
  'replicas',
  'patches',
  'configMapGenerator',
  'secretGenerator',
  'generatorOptions',
]);

/** Cluster-scoped kinds the namespace transformer leaves alone. */
const CLUSTER_SCOPED = new Set([
  'Namespace',
  'ClusterRole',
  'ClusterRoleBinding',
  'CustomResourceDefinition',
  'PersistentVolume',
  'StorageClass',
  'PriorityClass',
  'IngressClass',
  'RuntimeClass',
  'ValidatingWebhookConfiguration',
  'MutatingWebhookConfiguration',
  'APIService',
]);

/** kustomize's "legacy" output order (its default). */
const KIND_ORDER = [
  'Namespace',
  'ResourceQuota',
  'StorageClass',
  'CustomResourceDefinition',
  'ServiceAccount',
  'PodSecurityPolicy',
  'Role',
  'ClusterRole',
  'RoleBinding',
  'ClusterRoleBinding',
  'ConfigMap',
  'Secret',
  'Endpoints',
  'Service',
  'LimitRange',
  'PriorityClass',
  'PersistentVolume',
  'PersistentVolumeClaim',
  'Deployment',
  'StatefulSet',
  'CronJob',
  'PodDisruptionBudget',
];
const KIND_ORDER_LAST = ['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration'];

const isObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const clone = <T>(value: T): T => structuredClone(value);

/** Renders the kustomization in `dir` as `kustomize build dir` would. */
export function kustomizeBuild(dir: string): Manifest[] {
  const resources = buildDirectory(path.resolve(dir), 'Kustomization', []);
  applyGeneratedNames(resources);
  return sortLegacy(resources.map((resource) => resource.manifest));
}

/** Parses a multi-document YAML file into manifests (empty documents skipped). */
export function readManifests(file: string): Manifest[] {
  return parseManifests(readFileSync(file, 'utf8'), file);
}

export function parseManifests(text: string, file: string): Manifest[] {
  const manifests: Manifest[] = [];
  for (const doc of parseAllDocuments(text, { uniqueKeys: true })) {
    const problem = doc.errors[0] ?? doc.warnings[0];
    if (problem) throw new KustomizeError(`${file}: ${problem.message.split('\n')[0]}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    if (!isObject(value)) throw new KustomizeError(`${file}: a document is not a mapping`);
    const items = value.kind === 'List' && Array.isArray(value.items) ? value.items : [value];
    for (const item of items) {
      if (
        !isObject(item) ||
        typeof item.apiVersion !== 'string' ||
        typeof item.kind !== 'string' ||
        !isObject(item.metadata) ||
        typeof item.metadata.name !== 'string'
      ) {
        throw new KustomizeError(
          `${file}: every resource needs apiVersion, kind and metadata.name`,
        );
      }
      manifests.push(item as Manifest);
    }
  }
  return manifests;
}

function readKustomization(dir: string): { file: string; spec: JsonObject } {
  const name = KUSTOMIZATION_FILES.find((candidate) => existsSync(path.join(dir, candidate)));
  if (!name) throw new KustomizeError(`${dir}: no kustomization.yaml`);
  const file = path.join(dir, name);
  const docs = parseAllDocuments(readFileSync(file, 'utf8'), { uniqueKeys: true });
  const doc = docs[0];
  if (docs.length !== 1 || !doc) throw new KustomizeError(`${file}: expected one YAML document`);
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) throw new KustomizeError(`${file}: ${problem.message.split('\n')[0]}`);
  const spec: unknown = doc.toJS();
  if (!isObject(spec)) throw new KustomizeError(`${file}: not a mapping`);
  for (const field of Object.keys(spec)) {
    if (!SUPPORTED_FIELDS.has(field)) {
      throw new KustomizeError(`${file}: field "${field}" is not supported by this renderer`);
    }
  }
  return { file, spec };
}

/** kustomize's load restrictor: files named by a kustomization stay inside its directory. */
function fileInside(dir: string, kustomizationFile: string, relative: string): string {
  const resolved = path.resolve(dir, relative);
  if (resolved !== dir && !resolved.startsWith(dir + path.sep)) {
    throw new KustomizeError(
      `${kustomizationFile}: security; file "${relative}" is not in or below "${dir}"`,
    );
  }
  if (!existsSync(resolved)) {
    throw new KustomizeError(`${kustomizationFile}: "${relative}" does not exist`);
  }
  return resolved;
}

function stringList(spec: JsonObject, field: string, file: string): string[] {
  const value = spec[field];
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) {
    throw new KustomizeError(`${file}: "${field}" must be a list of strings`);
  }
  return value as string[];
}

function objectList(spec: JsonObject, field: string, file: string): JsonObject[] {
  const value = spec[field];
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || !value.every(isObject)) {
    throw new KustomizeError(`${file}: "${field}" must be a list of mappings`);
  }
  return value as JsonObject[];
}

/**
 * Builds one kustomization (or Component, applied to `inherited`, the resources its parent
 * has accumulated so far) and returns the accumulated resources, names not yet hashed.
 */
function buildDirectory(
  dir: string,
  expectedKind: 'Kustomization' | 'Component',
  inherited: Resource[],
): Resource[] {
  const { file, spec } = readKustomization(dir);
  const kind = spec.kind ?? 'Kustomization';
  if (kind !== expectedKind) {
    throw new KustomizeError(`${file}: expected kind ${expectedKind}, found ${String(kind)}`);
  }
  let resources: Resource[] = inherited;

  for (const entry of stringList(spec, 'resources', file)) {
    const target = path.resolve(dir, entry);
    if (!existsSync(target)) throw new KustomizeError(`${file}: resource "${entry}" not found`);
    const loaded = statSync(target).isDirectory()
      ? buildDirectory(target, 'Kustomization', [])
      : readManifests(fileInside(dir, file, entry)).map((manifest) => ({
          manifest,
          source: target,
        }));
    for (const resource of loaded) addResource(resources, resource, file);
  }
  for (const entry of stringList(spec, 'components', file)) {
    resources = buildDirectory(path.resolve(dir, entry), 'Component', resources);
  }

  const generatorOptions = isObject(spec.generatorOptions) ? spec.generatorOptions : {};
  for (const generator of objectList(spec, 'configMapGenerator', file)) {
    generate(resources, 'ConfigMap', generator, generatorOptions, dir, file);
  }
  for (const generator of objectList(spec, 'secretGenerator', file)) {
    generate(resources, 'Secret', generator, generatorOptions, dir, file);
  }

  for (const patch of objectList(spec, 'patches', file)) applyPatch(resources, patch, dir, file);
  if (typeof spec.namespace === 'string') setNamespace(resources, spec.namespace);
  for (const labels of objectList(spec, 'labels', file)) addLabels(resources, labels, file);
  for (const replica of objectList(spec, 'replicas', file)) setReplicas(resources, replica, file);
  for (const image of objectList(spec, 'images', file)) setImage(resources, image, file);
  return resources;
}

const idOf = (manifest: Manifest, name = manifest.metadata.name): string =>
  `${manifest.apiVersion.split('/').length > 1 ? manifest.apiVersion.split('/')[0] : ''}|${
    manifest.kind
  }|${String(manifest.metadata.namespace ?? '')}|${name}`;

function addResource(resources: Resource[], resource: Resource, file: string): void {
  const id = idOf(resource.manifest);
  if (resources.some((other) => idOf(other.manifest) === id)) {
    throw new KustomizeError(
      `${file}: may not add resource with an already registered id: ${resource.manifest.kind} ${resource.manifest.metadata.name}`,
    );
  }
  resources.push(resource);
}

// ---- generators ------------------------------------------------------------------------

function parseEnvFile(file: string): [string, string][] {
  return readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const equals = line.indexOf('=');
      if (equals <= 0) throw new KustomizeError(`${file}: "${line}" is not KEY=VALUE`);
      return [line.slice(0, equals), line.slice(equals + 1)];
    });
}

function generate(
  resources: Resource[],
  kind: 'ConfigMap' | 'Secret',
  generator: JsonObject,
  globalOptions: JsonObject,
  dir: string,
  file: string,
): void {
  const name = generator.name;
  if (typeof name !== 'string') throw new KustomizeError(`${file}: a generator needs a name`);
  const entries: [string, string][] = [];
  for (const literal of stringList(generator, 'literals', file)) {
    const equals = literal.indexOf('=');
    if (equals <= 0) throw new KustomizeError(`${file}: literal "${literal}" is not KEY=VALUE`);
    entries.push([literal.slice(0, equals), literal.slice(equals + 1)]);
  }
  for (const entry of stringList(generator, 'files', file)) {
    const equals = entry.indexOf('=');
    const key = equals > 0 ? entry.slice(0, equals) : path.basename(entry);
    const source = fileInside(dir, file, equals > 0 ? entry.slice(equals + 1) : entry);
    entries.push([key, readFileSync(source, 'utf8')]);
  }
  for (const entry of stringList(generator, 'envs', file)) {
    entries.push(...parseEnvFile(fileInside(dir, file, entry)));
  }
  const data: JsonObject = {};
  for (const [key, value] of entries) {
    if (key in data) throw new KustomizeError(`${file}: ${kind} ${name}: duplicate key "${key}"`);
    data[key] = kind === 'Secret' ? Buffer.from(value, 'utf8').toString('base64') : value;
  }

  const options = { ...globalOptions, ...(isObject(generator.options) ? generator.options : {}) };
  const labels = isObject(options.labels) ? options.labels : undefined;
  const annotations = isObject(options.annotations) ? options.annotations : undefined;
  const hashSuffix = options.disableNameSuffixHash !== true;
  const namespace = typeof generator.namespace === 'string' ? generator.namespace : undefined;
  const behavior = generator.behavior ?? 'create';

  const existing = resources.find(
    (resource) =>
      resource.manifest.kind === kind &&
      resource.manifest.metadata.name === name &&
      (namespace === undefined || resource.manifest.metadata.namespace === namespace),
  );
  if (behavior === 'create') {
    const manifest: Manifest = {
      apiVersion: 'v1',
      kind,
      metadata: {
        name,
        ...(namespace ? { namespace } : {}),
        ...(labels ? { labels: clone(labels) } : {}),
        ...(annotations ? { annotations: clone(annotations) } : {}),
      },
      ...(kind === 'Secret'
        ? { type: typeof generator.type === 'string' ? generator.type : 'Opaque' }
        : {}),
      data,
    };
    addResource(resources, { manifest, source: file, generated: { hashSuffix } }, file);
    return;
  }
  if (behavior !== 'replace' && behavior !== 'merge') {
    throw new KustomizeError(`${file}: unknown generator behavior "${String(behavior)}"`);
  }
  if (!existing?.generated) {
    throw new KustomizeError(`${file}: ${kind} ${name} to ${behavior} does not exist`);
  }
  const target = existing.manifest;
  target.data =
    behavior === 'merge' ? { ...(isObject(target.data) ? target.data : {}), ...data } : data;
  if (labels)
    target.metadata.labels = {
      ...(isObject(target.metadata.labels) ? target.metadata.labels : {}),
      ...labels,
    };
  if (annotations) {
    target.metadata.annotations = {
      ...(isObject(target.metadata.annotations) ? target.metadata.annotations : {}),
      ...annotations,
    };
  }
  existing.generated = { hashSuffix: hashSuffix && existing.generated.hashSuffix };
  existing.source = file;
}

/** Go's encoding/json escapes these; kustomize hashes Go's encoding. */
const goJson = (value: unknown): string =>
  JSON.stringify(sortKeys(value)).replace(
    /[<>&\u2028\u2029]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (!isObject(value)) return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((key) => [key, sortKeys(value[key])]),
  );
}

/** kustomize's name-suffix hash (api/hasher): sha256 of kind, data (and type), name "". */
export function kustomizeHash(manifest: Manifest): string {
  const encoded: JsonObject = { kind: manifest.kind, name: '', data: manifest.data ?? {} };
  if (manifest.kind === 'Secret') encoded.type = manifest.type ?? 'Opaque';
  if (manifest.binaryData !== undefined) encoded.binaryData = manifest.binaryData;
  const hex = createHash('sha256').update(goJson(encoded)).digest('hex').slice(0, 10);
  const swap: Record<string, string> = { '0': 'g', '1': 'h', '3': 'k', a: 'm', e: 't' };
  return hex.replace(/[013ae]/g, (char) => swap[char] ?? char);
}

/** Appends the hash suffixes and rewrites every reference to a renamed ConfigMap/Secret. */
function applyGeneratedNames(resources: Resource[]): void {
  const renamed = new Map<string, string>();
  for (const resource of resources) {
    if (!resource.generated?.hashSuffix) continue;
    const { manifest } = resource;
    const name = `${manifest.metadata.name}-${kustomizeHash(manifest)}`;
    renamed.set(
      `${manifest.kind}|${String(manifest.metadata.namespace ?? '')}|${manifest.metadata.name}`,
      name,
    );
    manifest.metadata.name = name;
  }
  if (renamed.size === 0) return;
  for (const { manifest } of resources) {
    const namespace = String(manifest.metadata.namespace ?? '');
    const rename = (kind: string, holder: JsonObject, field: string) => {
      const current = holder[field];
      if (typeof current !== 'string') return;
      const next = renamed.get(`${kind}|${namespace}|${current}`);
      if (next) holder[field] = next;
    };
    for (const podSpec of podSpecs(manifest)) {
      for (const volume of asObjects(podSpec.volumes)) {
        if (isObject(volume.configMap)) rename('ConfigMap', volume.configMap, 'name');
        if (isObject(volume.secret)) rename('Secret', volume.secret, 'secretName');
        if (isObject(volume.projected)) {
          for (const source of asObjects(volume.projected.sources)) {
            if (isObject(source.configMap)) rename('ConfigMap', source.configMap, 'name');
            if (isObject(source.secret)) rename('Secret', source.secret, 'name');
          }
        }
      }
      for (const secret of asObjects(podSpec.imagePullSecrets)) rename('Secret', secret, 'name');
      for (const container of allContainers(podSpec)) {
        for (const env of asObjects(container.env)) {
          if (!isObject(env.valueFrom)) continue;
          if (isObject(env.valueFrom.configMapKeyRef))
            rename('ConfigMap', env.valueFrom.configMapKeyRef, 'name');
          if (isObject(env.valueFrom.secretKeyRef))
            rename('Secret', env.valueFrom.secretKeyRef, 'name');
        }
        for (const source of asObjects(container.envFrom)) {
          if (isObject(source.configMapRef)) rename('ConfigMap', source.configMapRef, 'name');
          if (isObject(source.secretRef)) rename('Secret', source.secretRef, 'name');
        }
      }
    }
  }
}

// ---- pod helpers ---------------------------------------------------------------------------

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

// ---- transformers ----------------------------------------------------------------------

function setNamespace(resources: Resource[], namespace: string): void {
  for (const { manifest } of resources) {
    if (!CLUSTER_SCOPED.has(manifest.kind)) manifest.metadata.namespace = namespace;
  }
}

function addLabels(resources: Resource[], entry: JsonObject, file: string): void {
  if (!isObject(entry.pairs)) throw new KustomizeError(`${file}: labels[].pairs is required`);
  if (entry.includeSelectors === true) {
    throw new KustomizeError(`${file}: labels with includeSelectors are not supported here`);
  }
  for (const { manifest } of resources) {
    manifest.metadata.labels = {
      ...(isObject(manifest.metadata.labels) ? manifest.metadata.labels : {}),
      ...entry.pairs,
    };
    if (entry.includeTemplates === true) {
      const spec = manifest.spec;
      if (isObject(spec) && isObject(spec.template)) {
        const metadata = isObject(spec.template.metadata) ? spec.template.metadata : {};
        metadata.labels = { ...(isObject(metadata.labels) ? metadata.labels : {}), ...entry.pairs };
        spec.template.metadata = metadata;
      }
    }
  }
}

function setReplicas(resources: Resource[], entry: JsonObject, file: string): void {
  if (typeof entry.name !== 'string' || typeof entry.count !== 'number') {
    throw new KustomizeError(`${file}: replicas[] needs name and count`);
  }
  const workloads = ['Deployment', 'ReplicaSet', 'StatefulSet', 'ReplicationController'];
  const targets = resources.filter(
    ({ manifest }) => workloads.includes(manifest.kind) && manifest.metadata.name === entry.name,
  );
  for (const { manifest } of targets) {
    if (isObject(manifest.spec)) manifest.spec.replicas = entry.count;
  }
}

/** Splits `registry:5000/name:tag@sha256:…` into name, tag and digest. */
export function splitImage(image: string): { name: string; tag?: string; digest?: string } {
  const [withoutDigest = '', digest] = image.split('@');
  const slash = withoutDigest.lastIndexOf('/');
  const colon = withoutDigest.lastIndexOf(':');
  if (colon > slash) {
    return {
      name: withoutDigest.slice(0, colon),
      tag: withoutDigest.slice(colon + 1),
      ...(digest ? { digest } : {}),
    };
  }
  return { name: withoutDigest, ...(digest ? { digest } : {}) };
}

function setImage(resources: Resource[], entry: JsonObject, file: string): void {
  if (typeof entry.name !== 'string') throw new KustomizeError(`${file}: images[] needs a name`);
  for (const { manifest } of resources) {
    for (const podSpec of podSpecs(manifest)) {
      for (const container of allContainers(podSpec)) {
        if (typeof container.image !== 'string') continue;
        const current = splitImage(container.image);
        if (current.name !== entry.name) continue;
        const name = typeof entry.newName === 'string' ? entry.newName : current.name;
        if (typeof entry.digest === 'string') container.image = `${name}@${entry.digest}`;
        else if (entry.newTag !== undefined && entry.newTag !== null) {
          container.image = `${name}:${String(entry.newTag)}`;
        } else {
          container.image = `${name}${current.tag ? `:${current.tag}` : ''}${current.digest ? `@${current.digest}` : ''}`;
        }
      }
    }
  }
}

// ---- patches -------------------------------------------------------------------------------

function matchesSelector(labels: Json | undefined, selector: string): boolean {
  const have = isObject(labels) ? labels : {};
  return selector
    .split(',')
    .map((term) => term.trim())
    .filter(Boolean)
    .every((term) => {
      const notEqual = term.split('!=');
      if (notEqual.length === 2) return have[notEqual[0]!.trim()] !== notEqual[1]!.trim();
      const equal = term.split(/==?/);
      if (equal.length === 2) return have[equal[0]!.trim()] === equal[1]!.trim();
      if (term.startsWith('!')) return !(term.slice(1) in have);
      return term in have;
    });
}

function matchesTarget(manifest: Manifest, target: JsonObject): boolean {
  const [group, version] = manifest.apiVersion.includes('/')
    ? manifest.apiVersion.split('/')
    : ['', manifest.apiVersion];
  const exact = (pattern: Json | undefined, value: string | undefined) =>
    typeof pattern !== 'string' || new RegExp(`^(?:${pattern})$`).test(value ?? '');
  return (
    exact(target.group, group) &&
    exact(target.version, version) &&
    exact(target.kind, manifest.kind) &&
    exact(target.name, manifest.metadata.name) &&
    exact(
      target.namespace,
      typeof manifest.metadata.namespace === 'string' ? manifest.metadata.namespace : '',
    ) &&
    (typeof target.labelSelector !== 'string' ||
      matchesSelector(manifest.metadata.labels, target.labelSelector)) &&
    (typeof target.annotationSelector !== 'string' ||
      matchesSelector(manifest.metadata.annotations, target.annotationSelector))
  );
}

function applyPatch(resources: Resource[], entry: JsonObject, dir: string, file: string): void {
  let text: string;
  if (typeof entry.path === 'string')
    text = readFileSync(fileInside(dir, file, entry.path), 'utf8');
  else if (typeof entry.patch === 'string') text = entry.patch;
  else throw new KustomizeError(`${file}: patches[] needs path or patch`);
  const docs = parseAllDocuments(text, { uniqueKeys: true }).map((doc) => {
    const problem = doc.errors[0];
    if (problem) throw new KustomizeError(`${file}: patch: ${problem.message.split('\n')[0]}`);
    return doc.toJS() as unknown;
  });
  const target = isObject(entry.target) ? entry.target : undefined;

  if (docs.length === 1 && Array.isArray(docs[0])) {
    if (!target) throw new KustomizeError(`${file}: a JSON 6902 patch needs a target`);
    const matches = resources.filter(({ manifest }) => matchesTarget(manifest, target));
    if (matches.length === 0) throw new KustomizeError(`${file}: patch target matches nothing`);
    for (const resource of matches) {
      resource.manifest = applyJson6902(resource.manifest, docs[0] as Json[], file) as Manifest;
    }
    return;
  }
  for (const doc of docs) {
    if (!isObject(doc))
      throw new KustomizeError(`${file}: a strategic merge patch must be a mapping`);
    const patch = doc as JsonObject;
    const metadata = isObject(patch.metadata) ? patch.metadata : {};
    const selector: JsonObject = target ?? {
      kind: patch.kind ?? null,
      name: metadata.name ?? null,
      ...(typeof metadata.namespace === 'string' ? { namespace: metadata.namespace } : {}),
    };
    const matches = resources.filter(({ manifest }) => matchesTarget(manifest, selector));
    if (matches.length === 0) throw new KustomizeError(`${file}: patch target matches nothing`);
    for (const resource of matches) {
      const body = clone(patch);
      if (target && isObject(body.metadata)) {
        // As kustomize does: a targeted patch applies whatever name it carries.
        body.metadata.name = resource.manifest.metadata.name;
        if (resource.manifest.metadata.namespace !== undefined) {
          body.metadata.namespace = resource.manifest.metadata.namespace;
        }
      }
      resource.manifest = strategicMerge(resource.manifest, body, []) as Manifest;
    }
  }
}

/** The merge key of a list field (Kubernetes' patchMergeKey) — only for built-in kinds. */
function mergeKey(fieldPath: string[], items: Json[]): string | undefined {
  const field = fieldPath[fieldPath.length - 1];
  switch (field) {
    case 'containers':
    case 'initContainers':
    case 'ephemeralContainers':
    case 'volumes':
    case 'env':
    case 'imagePullSecrets':
      return 'name';
    case 'volumeMounts':
      return 'mountPath';
    case 'ports':
      return items.some((item) => isObject(item) && 'containerPort' in item)
        ? 'containerPort'
        : 'port';
    case 'topologySpreadConstraints':
      return 'topologyKey';
    default:
      return undefined;
  }
}

export function strategicMerge(base: Json, patch: Json, fieldPath: string[]): Json {
  if (!isObject(patch) || !isObject(base)) return clone(patch);
  if (patch.$patch === 'replace') {
    const rest = clone(patch);
    delete rest.$patch;
    return rest;
  }
  if (patch.$patch === 'delete') return null;
  const result: JsonObject = clone(base);
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete result[key];
      continue;
    }
    const current = result[key];
    if (Array.isArray(value) && Array.isArray(current)) {
      const keyField = mergeKey([...fieldPath, key], [...current, ...value]);
      result[key] = keyField
        ? mergeList(current, value, keyField, [...fieldPath, key])
        : clone(value);
    } else if (isObject(value) && isObject(current)) {
      result[key] = strategicMerge(current, value, [...fieldPath, key]);
    } else {
      result[key] = clone(value);
    }
  }
  return result;
}

/**
 * Merges a keyed list the way kustomize (kyaml) does: the patch's items first, in the
 * patch's order (merged into their originals), then the original items it did not name.
 */
function mergeList(base: Json[], patch: Json[], keyField: string, fieldPath: string[]): Json[] {
  const remaining = clone(base);
  const merged: Json[] = [];
  for (const item of patch) {
    if (!isObject(item) || !(keyField in item)) {
      throw new KustomizeError(`patch: items of ${fieldPath.join('.')} need "${keyField}"`);
    }
    const index = remaining.findIndex(
      (other) => isObject(other) && other[keyField] === item[keyField],
    );
    const original = index >= 0 ? remaining.splice(index, 1)[0] : undefined;
    if (item.$patch === 'delete') continue;
    merged.push(original === undefined ? clone(item) : strategicMerge(original, item, fieldPath));
  }
  return [...merged, ...remaining];
}

function applyJson6902(document: Json, operations: Json[], file: string): Json {
  let root = clone(document);
  for (const operation of operations) {
    if (
      !isObject(operation) ||
      typeof operation.op !== 'string' ||
      typeof operation.path !== 'string'
    ) {
      throw new KustomizeError(`${file}: invalid JSON patch operation`);
    }
    const tokens = operation.path
      .split('/')
      .slice(1)
      .map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'));
    const last = tokens.pop();
    if (last === undefined) {
      if (operation.op === 'replace' || operation.op === 'add')
        root = clone(operation.value ?? null);
      continue;
    }
    let parent: Json = root;
    for (const token of tokens) {
      const next: Json | undefined = Array.isArray(parent)
        ? parent[Number(token)]
        : isObject(parent)
          ? parent[token]
          : undefined;
      if (next === undefined) throw new KustomizeError(`${file}: path ${operation.path} not found`);
      parent = next;
    }
    const value = clone(operation.value ?? null);
    switch (operation.op) {
      case 'add':
        if (Array.isArray(parent))
          parent.splice(last === '-' ? parent.length : Number(last), 0, value);
        else if (isObject(parent)) parent[last] = value;
        break;
      case 'replace':
        if (Array.isArray(parent)) parent[Number(last)] = value;
        else if (isObject(parent) && last in parent) parent[last] = value;
        else throw new KustomizeError(`${file}: path ${operation.path} not found`);
        break;
      case 'remove':
        if (Array.isArray(parent)) parent.splice(Number(last), 1);
        else if (isObject(parent) && last in parent) delete parent[last];
        else throw new KustomizeError(`${file}: path ${operation.path} not found`);
        break;
      case 'test': {
        const actual = Array.isArray(parent)
          ? parent[Number(last)]
          : isObject(parent)
            ? parent[last]
            : undefined;
        if (JSON.stringify(actual) !== JSON.stringify(operation.value)) {
          throw new KustomizeError(`${file}: test of ${operation.path} failed`);
        }
        break;
      }
      default:
        throw new KustomizeError(`${file}: JSON patch op "${operation.op}" is not supported`);
    }
  }
  return root;
}

// ---- output ----------------------------------------------------------------------------

function kindRank(kind: string): number {
  const first = KIND_ORDER.indexOf(kind);
  if (first >= 0) return first;
  const last = KIND_ORDER_LAST.indexOf(kind);
  return last >= 0 ? KIND_ORDER.length + 1 + last : KIND_ORDER.length;
}

/** kustomize's GVK string: `group_version_kind`, `~G` standing for the core group. */
function gvkString(manifest: Manifest): string {
  const [group, version] = manifest.apiVersion.includes('/')
    ? manifest.apiVersion.split('/')
    : ['~G', manifest.apiVersion];
  return `${group}_${version}_${manifest.kind}`;
}

export function sortLegacy(manifests: Manifest[]): Manifest[] {
  const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  return [...manifests].sort(
    (a, b) =>
      kindRank(a.kind) - kindRank(b.kind) ||
      compare(gvkString(a), gvkString(b)) ||
      compare(String(a.metadata.namespace ?? ''), String(b.metadata.namespace ?? '')) ||
      compare(a.metadata.name, b.metadata.name),
  );
}
