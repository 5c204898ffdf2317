/**
 * What a config means beyond its schema, checked once when it is loaded (never per request):
 * clashes the schema cannot see key by key (two ports on one address, an upstream that is the
 * gateway itself, no route at all, one route name twice), route lists that do not do what
 * they say (src/policy/route-analysis.ts), insecure settings (src/config/attention.ts), and
 * keys that have no effect. Errors stop `tokenguard check` and start-up alike; warnings are
 * printed by `check` and logged at start-up.
 */
import type { Logger } from 'pino';
import { analyseRoutes } from '../policy/route-analysis.js';
import { createRouteTable } from '../policy/route-table.js';
import { attentionFindings, isLoopbackHost } from './attention.js';
import { configSchema, parseUrl, type Config } from './schema.js';

/** The sections of a config that passed the schema (all of them once it is valid). */
export type PartialConfig = Partial<Config>;

export interface ConfigFinding {
  severity: 'error' | 'warning';
  /** Also the `event` of its start-up log line. */
  kind: 'insecure_setting' | 'route_conflict' | 'config_clash' | 'no_effect';
  /** Where the finding is (a key path of the config). */
  path: (string | number)[];
  message: string;
  /** The other place it is about (the earlier route, the other port). */
  related?: (string | number)[];
}

/**
 * The top-level sections of `raw` that pass the schema each on its own: when some section is
 * invalid, the checks that do not need it still run, so every problem is reported together.
 */
export function validSections(raw: unknown): PartialConfig {
  const sections: Record<string, unknown> = {};
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return sections;
  for (const [key, schema] of Object.entries(configSchema.shape)) {
    const parsed = schema.safeParse((raw as Record<string, unknown>)[key]);
    if (parsed.success) sections[key] = parsed.data;
  }
  return sections as PartialConfig;
}

const ANY_ADDRESS = new Set(['0.0.0.0', '::', '']);
const bareHost = (host: string) => host.replace(/^\[|\]$/g, '').toLowerCase();

/** A connection to `host:port` reaches a socket listening on `listenHost:listenPort`. */
function reaches(listenHost: string, listenPort: number, host: string, port: number): boolean {
  if (listenPort === 0 || listenPort !== port) return false;
  const listen = bareHost(listenHost);
  const target = bareHost(host);
  if (listen === target || ANY_ADDRESS.has(target)) return true;
  if (ANY_ADDRESS.has(listen)) return isLoopbackHost(target);
  return (
    (listen === 'localhost' || target === 'localhost') &&
    isLoopbackHost(listen) &&
    isLoopbackHost(target)
  );
}

/** Two listeners on the same port whose addresses overlap: the second bind fails. */
function clashes(hostA: string, portA: number, hostB: string, portB: number): boolean {
  if (portA === 0 || portA !== portB) return false;
  if (ANY_ADDRESS.has(bareHost(hostA)) || ANY_ADDRESS.has(bareHost(hostB))) return true;
  return reaches(hostA, portA, hostB, portB);
}

function urlPort(url: URL): number {
  if (url.port !== '') return Number(url.port);
  return url.protocol === 'https:' ? 443 : 80;
}

function listenerClashes(config: PartialConfig): ConfigFinding[] {
  const findings: ConfigFinding[] = [];
  const { server, admin, upstream, introspection } = config;
  if (server && admin && clashes(server.host, server.port, admin.host, admin.port)) {
    findings.push({
      severity: 'error',
      kind: 'config_clash',
      path: ['admin', 'port'],
      related: ['server', 'port'],
      message: `is ${admin.port}, the port server.port listens on (${server.host} and ${admin.host} overlap): the admin port must be its own, never reachable through the Service`,
    });
  }
  const listeners = [
    ...(server ? [{ name: 'server.port', path: ['server', 'port'], ...server }] : []),
    ...(admin ? [{ name: 'admin.port', path: ['admin', 'port'], ...admin }] : []),
  ];
  const targets: Array<{ path: (string | number)[]; value: string | undefined; what: string }> = [
    { path: ['upstream', 'url'], value: upstream?.url, what: 'the upstream' },
    {
      path: ['introspection', 'endpoint'],
      value: introspection?.endpoint,
      what: 'the introspection endpoint',
    },
    { path: ['introspection', 'issuer'], value: introspection?.issuer, what: 'the issuer' },
  ];
  for (const target of targets) {
    const url = target.value === undefined ? null : parseUrl(target.value);
    if (!url) continue;
    const listener = listeners.find((candidate) =>
      reaches(candidate.host, candidate.port, url.hostname, urlPort(url)),
    );
    if (listener) {
      findings.push({
        severity: 'error',
        kind: 'config_clash',
        path: target.path,
        related: listener.path,
        message: `is the gateway's own ${listener.name} (${url.host}): ${target.what} would be tokenguard itself`,
      });
    }
  }
  return findings;
}

function routeFindings(config: PartialConfig): ConfigFinding[] {
  const { routes, routes_case_sensitive, default_action } = config;
  if (!routes || routes_case_sensitive === undefined || !default_action) return [];
  const findings: ConfigFinding[] = [];
  if (routes.length === 0) {
    findings.push({
      severity: 'error',
      kind: 'config_clash',
      path: ['routes'],
      message:
        default_action === 'deny'
          ? 'lists no route: with default_action deny every request gets 404 and nothing is ever forwarded'
          : 'lists no route: with default_action authenticate any active token reaches every path, whatever its scopes',
    });
    return findings;
  }
  const named = new Map<string, number>();
  for (const [index, route] of routes.entries()) {
    if (route.name === undefined) continue;
    const first = named.get(route.name);
    if (first === undefined) {
      named.set(route.name, index);
      continue;
    }
    findings.push({
      severity: 'error',
      kind: 'route_conflict',
      path: ['routes', index, 'name'],
      related: ['routes', first, 'name'],
      message: `is "${route.name}", the name of routes[${first}] too: the route metric label must tell them apart`,
    });
  }
  const table = createRouteTable({ routes, routes_case_sensitive, default_action });
  for (const finding of analyseRoutes(table.routes)) {
    findings.push({
      severity: 'error',
      kind: 'route_conflict',
      path: ['routes', finding.route],
      related: ['routes', finding.earlier],
      message: finding.message,
    });
  }
  return findings;
}

function noEffectFindings(config: PartialConfig): ConfigFinding[] {
  const findings: ConfigFinding[] = [];
  const { introspection, server, forward, shared } = config;
  if (introspection) {
    const method = introspection.auth_method;
    if (
      introspection.client_secret !== undefined &&
      (method === 'none' || method === 'private_key_jwt')
    ) {
      findings.push({
        severity: 'warning',
        kind: 'no_effect',
        path: ['introspection', 'client_secret'],
        message: `is never sent with auth_method ${method}`,
      });
    }
    if (introspection.private_key_file !== undefined && method !== 'private_key_jwt') {
      findings.push({
        severity: 'warning',
        kind: 'no_effect',
        path: ['introspection', 'private_key_file'],
        message: `is never used with auth_method ${method}`,
      });
    }
  }
  if (server && forward && forward.keep_from_trusted_proxies.length > 0) {
    if (server.trusted_proxies.length === 0) {
      findings.push({
        severity: 'warning',
        kind: 'no_effect',
        path: ['forward', 'keep_from_trusted_proxies'],
        related: ['server', 'trusted_proxies'],
        message: 'has no effect: server.trusted_proxies is empty, so no peer is a trusted proxy',
      });
    }
  }
  const redis = shared?.redis;
  if (redis?.tls_ca_file !== undefined && parseUrl(redis.url)?.protocol !== 'rediss:') {
    findings.push({
      severity: 'warning',
      kind: 'no_effect',
      path: ['shared', 'redis', 'tls_ca_file'],
      related: ['shared', 'redis', 'url'],
      message: 'is never used: shared.redis.url is redis://, not rediss:// (TLS)',
    });
  }
  return findings;
}

/**
 * Every finding about `config`, errors and warnings, in no particular order; `complete` when
 * every section passed the schema (a partial config skips the checks of the missing ones).
 */
export function reviewConfig(config: PartialConfig, complete = true): ConfigFinding[] {
  return [
    ...listenerClashes(config),
    ...routeFindings(config),
    ...attentionFindings(config, complete),
    ...noEffectFindings(config),
  ];
}

const formatPath = (path: readonly (string | number)[]): string =>
  path
    .map((key, index) => (typeof key === 'number' ? `[${key}]` : `${index === 0 ? '' : '.'}${key}`))
    .join('');

/**
 * Start-up: every warning once, loudly. A config that did not come through the loader (which
 * refuses errors with their positions) is refused here too, so no path starts a gateway the
 * loader would not have.
 */
export function warnAboutConfig(config: Config, logger: Logger): void {
  const findings = reviewConfig(config);
  const errors = findings.filter((finding) => finding.severity === 'error');
  if (errors.length > 0) {
    throw new Error(
      `invalid config:\n${errors.map((finding) => `${formatPath(finding.path)}: ${finding.message}`).join('\n')}`,
    );
  }
  for (const finding of findings) {
    logger.warn(
      { event: finding.kind, key: formatPath(finding.path) },
      `${formatPath(finding.path)}: ${finding.message}`,
    );
  }
}
