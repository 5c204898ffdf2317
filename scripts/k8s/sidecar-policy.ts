/**
 * What a schema cannot see: the rules that tie the manifests to tokenguard's config and to
 * the deployment contract of PRODUCT.md. Every pod that runs a `tokenguard` container is
 * checked against the config file it mounts:
 * - hardening of every container (the Pod Security "restricted" profile, plus a read-only
 *   root filesystem and a memory limit);
 * - the gateway's ports, probes (/healthz liveness, /readyz readiness on the admin port),
 *   secret injection (client_secret from a Secret, never a literal), heap cap under the limit;
 * - drain timing: preStop + server.shutdown_grace_seconds fit terminationGracePeriodSeconds
 *   and, for a regular sidecar, the API outlives the gateway's drain;
 * - exposure: the upstream is loopback, no routable Service port reaches the admin port, a
 *   NetworkPolicy admits the admin port only from the monitoring namespace, and each
 *   ServiceMonitor scrapes the admin port;
 * - trusted proxies: a gateway that believes X-Forwarded-For (server.trusted_proxies) sits
 *   behind a NetworkPolicy that admits its port from selected pods only (the ingress
 *   controller's), since any pod that can connect from a trusted address can name any client
 *   and get a fresh token-fishing budget with every guess.
 */
import path from 'node:path';
import { parse } from 'yaml';
import {
  allContainers,
  asObjects,
  podSpecs,
  type Json,
  type JsonObject,
  type Manifest,
} from './manifests.js';
import { describeManifest } from './validate.js';

const DEFAULT_CONFIG_PATH = '/etc/tokenguard/config.yaml';
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

const isObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const get = (value: Json | undefined, ...keys: string[]): Json | undefined =>
  keys.reduce<Json | undefined>(
    (current, key) => (isObject(current) ? current[key] : undefined),
    value,
  );

/** Kubernetes quantity → MiB (memory). */
export function quantityToMiB(quantity: Json | undefined): number | undefined {
  if (typeof quantity === 'number') return quantity / 2 ** 20;
  if (typeof quantity !== 'string') return undefined;
  const match = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(quantity);
  if (!match) return undefined;
  const factor: Record<string, number> = {
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
  };
  return (Number(match[1]) * (match[2] ? (factor[match[2]] ?? 1) : 1)) / 2 ** 20;
}

export interface GatewayConfig {
  serverPort: number;
  adminPort: number;
  shutdownGraceSeconds: number;
  upstreamUrl: string;
  clientSecret: Json | undefined;
  trustedProxies: string[];
  text: string;
}

export function readGatewayConfig(text: string): GatewayConfig {
  const config = (parse(text) ?? {}) as JsonObject;
  const number = (value: Json | undefined, fallback: number) =>
    typeof value === 'number' ? value : fallback;
  return {
    serverPort: number(get(config, 'server', 'port'), 8000),
    adminPort: number(get(config, 'admin', 'port'), 9100),
    shutdownGraceSeconds: number(get(config, 'server', 'shutdown_grace_seconds'), 10),
    upstreamUrl: String(get(config, 'upstream', 'url') ?? 'http://127.0.0.1:8080'),
    clientSecret: get(config, 'introspection', 'client_secret'),
    trustedProxies: (() => {
      const list = get(config, 'server', 'trusted_proxies');
      return Array.isArray(list) ? list.map(String) : [];
    })(),
    text,
  };
}

const sleepSeconds = (container: JsonObject): number => {
  const seconds = get(container, 'lifecycle', 'preStop', 'sleep', 'seconds');
  return typeof seconds === 'number' ? seconds : 0;
};

const containerPort = (container: JsonObject, port: Json | undefined): number | undefined => {
  if (typeof port === 'number') return port;
  const named = asObjects(container.ports).find((candidate) => candidate.name === port);
  return typeof named?.containerPort === 'number' ? named.containerPort : undefined;
};

const selects = (selector: Json | undefined, labels: Json | undefined): boolean =>
  isObject(selector) &&
  Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([key, value]) => isObject(labels) && labels[key] === value);

const namespaceOf = (manifest: Manifest) => String(manifest.metadata.namespace ?? '');

interface GatewayPod {
  workload: Manifest;
  podSpec: JsonObject;
  podLabels: Json | undefined;
  gateway: JsonObject;
  config: GatewayConfig;
}

/** The gateway config a tokenguard container reads (TOKENGUARD_CONFIG or the image default). */
function mountedConfig(
  podSpec: JsonObject,
  gateway: JsonObject,
  configMaps: Manifest[],
  namespace: string,
): { config?: GatewayConfig; problem?: string } {
  const override = asObjects(gateway.env).find((env) => env.name === 'TOKENGUARD_CONFIG');
  const file = typeof override?.value === 'string' ? override.value : DEFAULT_CONFIG_PATH;
  const mount = asObjects(gateway.volumeMounts).find(
    (candidate) =>
      typeof candidate.mountPath === 'string' && path.posix.dirname(file) === candidate.mountPath,
  );
  if (!mount)
    return { problem: `nothing is mounted at ${path.posix.dirname(file)} (config ${file})` };
  const volume = asObjects(podSpec.volumes).find((candidate) => candidate.name === mount.name);
  const configMapName = get(volume, 'configMap', 'name');
  if (typeof configMapName !== 'string') {
    return {
      problem: `volume "${String(mount.name)}" at ${String(mount.mountPath)} is not a ConfigMap`,
    };
  }
  const configMap = configMaps.find(
    (candidate) =>
      candidate.metadata.name === configMapName && namespaceOf(candidate) === namespace,
  );
  if (!configMap) return { config: undefined }; // provided outside these manifests
  const text = get(configMap, 'data', path.posix.basename(file));
  if (typeof text !== 'string') {
    return { problem: `ConfigMap ${configMapName} has no key ${path.posix.basename(file)}` };
  }
  return { config: readGatewayConfig(text) };
}

/** Pods with a tokenguard container whose config is among the manifests. */
export function gatewayPods(manifests: Manifest[]): { pods: GatewayPod[]; problems: string[] } {
  const configMaps = manifests.filter((manifest) => manifest.kind === 'ConfigMap');
  const pods: GatewayPod[] = [];
  const problems: string[] = [];
  for (const workload of manifests) {
    for (const podSpec of podSpecs(workload)) {
      const gateway = allContainers(podSpec).find((container) => container.name === 'tokenguard');
      if (!gateway) continue;
      const { config, problem } = mountedConfig(
        podSpec,
        gateway,
        configMaps,
        namespaceOf(workload),
      );
      if (problem) problems.push(`${describeManifest(workload)}: tokenguard: ${problem}`);
      if (!config) continue;
      const podLabels =
        workload.kind === 'Pod'
          ? workload.metadata.labels
          : get(workload, 'spec', 'template', 'metadata', 'labels');
      pods.push({ workload, podSpec, podLabels, gateway, config });
    }
  }
  return { pods, problems };
}

function checkHardening(workload: Manifest, podSpec: JsonObject): string[] {
  const problems: string[] = [];
  const podSecurity = isObject(podSpec.securityContext) ? podSpec.securityContext : {};
  for (const container of allContainers(podSpec)) {
    const where = `${describeManifest(workload)}: container ${String(container.name)}`;
    const security = isObject(container.securityContext) ? container.securityContext : {};
    const effective = (key: string) => security[key] ?? podSecurity[key];
    if (security.allowPrivilegeEscalation !== false)
      problems.push(`${where}: allowPrivilegeEscalation must be false`);
    if (security.readOnlyRootFilesystem !== true)
      problems.push(`${where}: readOnlyRootFilesystem must be true`);
    if (security.privileged === true) problems.push(`${where}: must not be privileged`);
    const drop = get(security, 'capabilities', 'drop');
    if (!Array.isArray(drop) || !drop.includes('ALL'))
      problems.push(`${where}: capabilities.drop must include ALL`);
    const added = get(security, 'capabilities', 'add');
    if (Array.isArray(added) && added.some((capability) => capability !== 'NET_BIND_SERVICE')) {
      problems.push(`${where}: adds capabilities ${JSON.stringify(added)}`);
    }
    if (effective('runAsNonRoot') !== true) problems.push(`${where}: runAsNonRoot must be true`);
    if (effective('runAsUser') === 0) problems.push(`${where}: runs as UID 0`);
    const seccomp = get(effective('seccompProfile'), 'type');
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') {
      problems.push(`${where}: seccompProfile.type must be RuntimeDefault or Localhost`);
    }
    if (quantityToMiB(get(container, 'resources', 'limits', 'memory')) === undefined) {
      problems.push(`${where}: needs resources.limits.memory`);
    }
    if (get(container, 'resources', 'requests', 'cpu') === undefined) {
      problems.push(`${where}: needs resources.requests.cpu`);
    }
  }
  return problems;
}

function checkGateway({ workload, podSpec, gateway, config }: GatewayPod): string[] {
  const where = `${describeManifest(workload)}: tokenguard`;
  const problems: string[] = [];
  const security = isObject(gateway.securityContext) ? gateway.securityContext : {};
  const uid = security.runAsUser ?? get(podSpec, 'securityContext', 'runAsUser');
  if (uid !== 65532)
    problems.push(`${where}: runAsUser must be the image's UID 65532 (is ${String(uid)})`);

  const ports = asObjects(gateway.ports).map((port) => port.containerPort);
  if (!ports.includes(config.serverPort))
    problems.push(`${where}: no containerPort ${config.serverPort} (server.port)`);
  if (!ports.includes(config.adminPort))
    problems.push(`${where}: no containerPort ${config.adminPort} (admin.port)`);

  const probe = (name: string, wanted: string) => {
    const httpGet = get(gateway, name, 'httpGet');
    const port = containerPort(gateway, get(httpGet, 'port'));
    if (get(httpGet, 'path') !== wanted || port !== config.adminPort) {
      problems.push(`${where}: ${name} must GET ${wanted} on the admin port ${config.adminPort}`);
    }
  };
  probe('livenessProbe', '/healthz');
  probe('readinessProbe', '/readyz');

  const secretReference =
    typeof config.clientSecret === 'string'
      ? /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(config.clientSecret)
      : null;
  if (config.clientSecret !== undefined && !secretReference) {
    problems.push(
      `${where}: introspection.client_secret must be an \${ENV} reference, not a value`,
    );
  }
  if (secretReference) {
    const env = asObjects(gateway.env).find((candidate) => candidate.name === secretReference[1]);
    if (!get(env, 'valueFrom', 'secretKeyRef')) {
      problems.push(
        `${where}: env ${secretReference[1]} must come from a Secret (valueFrom.secretKeyRef)`,
      );
    }
  }

  // The heap cap follows the memory limit: `--max-old-space-size=$(VAR)` where VAR is the
  // container's limits.memory through a resourceFieldRef whose divisor makes it a fraction
  // of the limit in MiB (or, the old way, a literal number), never above 75 % of it.
  const envs = asObjects(gateway.env);
  const nodeOptions = envs.find((env) => env.name === 'NODE_OPTIONS')?.value;
  const limit = quantityToMiB(get(gateway, 'resources', 'limits', 'memory'));
  const heap =
    typeof nodeOptions === 'string'
      ? /--max-old-space-size=(?:(\d+)|\$\(([A-Za-z_][A-Za-z0-9_]*)\))/.exec(nodeOptions)
      : null;
  if (!heap) {
    problems.push(`${where}: NODE_OPTIONS must set --max-old-space-size from the memory limit`);
  } else if (heap[1] !== undefined) {
    if (limit !== undefined && Number(heap[1]) > limit * 0.75) {
      problems.push(
        `${where}: --max-old-space-size=${heap[1]} leaves too little of the ${limit}Mi limit`,
      );
    }
  } else {
    const source = envs.find((env) => env.name === heap[2]);
    const field = get(source, 'valueFrom', 'resourceFieldRef');
    const divisorMiB = quantityToMiB(get(field, 'divisor'));
    if (get(field, 'resource') !== 'limits.memory' || divisorMiB === undefined) {
      problems.push(
        `${where}: env ${heap[2]} must be limits.memory through a resourceFieldRef with a divisor`,
      );
    } else if (1 / divisorMiB > 0.75) {
      problems.push(
        `${where}: env ${heap[2]} (limits.memory / ${divisorMiB.toFixed(3)}Mi) gives the heap ${Math.round(100 / divisorMiB)} % of the limit; at most 75 %`,
      );
    }
  }

  const upstream = new URL(config.upstreamUrl);
  if (!LOOPBACK.has(upstream.hostname)) {
    problems.push(
      `${where}: upstream.url ${config.upstreamUrl} is not loopback: the API is reachable around the gateway`,
    );
  }

  const grace =
    typeof podSpec.terminationGracePeriodSeconds === 'number'
      ? podSpec.terminationGracePeriodSeconds
      : 30;
  const drain = sleepSeconds(gateway) + config.shutdownGraceSeconds;
  const native = asObjects(podSpec.initContainers).includes(gateway);
  const others = asObjects(podSpec.containers).filter((container) => container !== gateway);
  if (native) {
    if (gateway.restartPolicy !== 'Always')
      problems.push(`${where}: an init container sidecar needs restartPolicy: Always`);
    const before = Math.max(0, ...others.map(sleepSeconds));
    if (before + drain >= grace) {
      problems.push(
        `${where}: terminationGracePeriodSeconds ${grace} must exceed the API's preStop (${before}) + the gateway's preStop and shutdown_grace_seconds (${drain})`,
      );
    }
  } else {
    if (drain >= grace) {
      problems.push(
        `${where}: terminationGracePeriodSeconds ${grace} must exceed preStop + shutdown_grace_seconds (${drain})`,
      );
    }
    for (const other of others) {
      if (sleepSeconds(other) < drain) {
        problems.push(
          `${describeManifest(workload)}: container ${String(other.name)}: preStop sleep ${sleepSeconds(other)} s ends before the gateway has drained (${drain} s)`,
        );
      }
    }
  }
  return problems;
}

function checkExposure(pod: GatewayPod, manifests: Manifest[]): string[] {
  const problems: string[] = [];
  const namespace = namespaceOf(pod.workload);
  const inNamespace = manifests.filter((manifest) => namespaceOf(manifest) === namespace);
  const { adminPort, serverPort } = pod.config;
  const resolve = (port: Json | undefined) => {
    for (const container of allContainers(pod.podSpec)) {
      const resolved = containerPort(container, port);
      if (resolved !== undefined) return resolved;
    }
    return typeof port === 'number' ? port : undefined;
  };

  const services = inNamespace.filter(
    (manifest) =>
      manifest.kind === 'Service' && selects(get(manifest, 'spec', 'selector'), pod.podLabels),
  );
  for (const service of services) {
    const headless = get(service, 'spec', 'clusterIP') === 'None';
    for (const port of asObjects(get(service, 'spec', 'ports'))) {
      const target = resolve(port.targetPort ?? port.port);
      if (target === adminPort && !headless) {
        problems.push(
          `${describeManifest(service)}: port ${String(port.name ?? port.port)} exposes the admin port`,
        );
      } else if (target !== adminPort && target !== serverPort) {
        problems.push(
          `${describeManifest(service)}: port ${String(port.name ?? port.port)} bypasses the gateway (targets ${String(target)})`,
        );
      }
    }
  }

  const policies = inNamespace.filter((manifest) => {
    if (manifest.kind !== 'NetworkPolicy') return false;
    const podSelector = get(manifest, 'spec', 'podSelector', 'matchLabels');
    return (
      (isObject(podSelector) && Object.keys(podSelector).length === 0) ||
      podSelector === undefined ||
      selects(podSelector, pod.podLabels)
    );
  });
  // A loopback proxy is a container of this pod: no network peer behind it.
  if (pod.config.trustedProxies.some((range) => !/^(?:127\.|::1(?:\/|$))/.test(range))) {
    problems.push(...checkTrustedProxies(pod, policies, resolve));
  }
  for (const policy of policies) {
    for (const rule of asObjects(get(policy, 'spec', 'ingress'))) {
      const ports = asObjects(rule.ports);
      const coversAdmin =
        ports.length === 0 || ports.some((port) => resolve(port.port) === adminPort);
      if (!coversAdmin) continue;
      const sources = asObjects(rule.from);
      const onlyMonitoring =
        sources.length > 0 &&
        sources.every(
          (source) =>
            Object.keys(source).length === 1 &&
            get(source, 'namespaceSelector', 'matchLabels', 'kubernetes.io/metadata.name') ===
              'monitoring',
        );
      if (!onlyMonitoring) {
        problems.push(
          `${describeManifest(policy)}: admits the admin port from outside the monitoring namespace`,
        );
      }
    }
  }

  for (const monitor of inNamespace.filter((manifest) => manifest.kind === 'ServiceMonitor')) {
    const matchLabels = get(monitor, 'spec', 'selector', 'matchLabels');
    const scraped = services.filter((service) => selects(matchLabels, service.metadata.labels));
    if (scraped.length === 0) continue;
    for (const endpoint of asObjects(get(monitor, 'spec', 'endpoints'))) {
      for (const service of scraped) {
        const port = asObjects(get(service, 'spec', 'ports')).find(
          (candidate) => candidate.name === endpoint.port,
        );
        if (!port || resolve(port.targetPort ?? port.port) !== adminPort) {
          problems.push(
            `${describeManifest(monitor)}: endpoint port ${String(endpoint.port)} is not the admin port of ${describeManifest(service)}`,
          );
        }
      }
    }
  }
  return problems;
}

/** A NetworkPolicy peer that names pods: a non-empty podSelector (in some or all namespaces). */
const selectsPods = (source: JsonObject): boolean => {
  const selector = get(source, 'podSelector');
  return (
    isObject(selector) &&
    (Object.keys(isObject(selector.matchLabels) ? selector.matchLabels : {}).length > 0 ||
      asObjects(selector.matchExpressions).length > 0)
  );
};

/**
 * With trusted_proxies, the gateway port must be admitted from selected pods only: by some
 * Ingress NetworkPolicy, and by no rule of any policy that selects the pod from anywhere
 * wider (every pod of a namespace, an ipBlock, no `from` at all), since policies add up.
 */
function checkTrustedProxies(
  pod: GatewayPod,
  policies: Manifest[],
  resolve: (port: Json | undefined) => number | undefined,
): string[] {
  const where = `${describeManifest(pod.workload)}: tokenguard trusts X-Forwarded-For from ${pod.config.trustedProxies.join(', ')}`;
  const isolating = policies.filter((policy) => {
    const types = get(policy, 'spec', 'policyTypes');
    return Array.isArray(types) ? types.includes('Ingress') : true;
  });
  if (isolating.length === 0) {
    return [
      `${where}, but no NetworkPolicy limits who reaches port ${pod.config.serverPort}: admit only the ingress controller's pods`,
    ];
  }
  const problems: string[] = [];
  for (const policy of isolating) {
    for (const rule of asObjects(get(policy, 'spec', 'ingress'))) {
      const ports = asObjects(rule.ports);
      const coversServer =
        ports.length === 0 || ports.some((port) => resolve(port.port) === pod.config.serverPort);
      if (!coversServer) continue;
      const sources = asObjects(rule.from);
      if (sources.length === 0 || !sources.every(selectsPods)) {
        problems.push(
          `${where}, but ${describeManifest(policy)} admits port ${pod.config.serverPort} from more than selected pods: any pod it admits could name any client`,
        );
      }
    }
  }
  return problems;
}

export function checkSidecarPolicy(manifests: Manifest[]): string[] {
  const { pods, problems } = gatewayPods(manifests);
  for (const workload of manifests) {
    for (const podSpec of podSpecs(workload)) problems.push(...checkHardening(workload, podSpec));
  }
  for (const pod of pods) problems.push(...checkGateway(pod), ...checkExposure(pod, manifests));
  return problems;
}
