/**
 * The metric catalogue of PRODUCT.md, on a registry of its own per gateway instance (no
 * prom-client global: tests run gateways side by side). Label values are bounded: `route` is
 * a configured name or pattern, never a raw path, a client address or a token.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { FishingReason, Outcome } from '../errors.js';
import type { CacheResult } from '../cache/token-cache.js';

/** From a sub-millisecond cache hit to a multi-second authorization-server stall. */
const LATENCY_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
  30,
];

export type IntrospectionResult = 'active' | 'inactive' | 'error';
export type UpstreamErrorKind = 'connect' | 'timeout' | 'reset';

export interface GatewayMetrics {
  registry: Registry;
  requests: Counter<'route' | 'outcome'>;
  requestDuration: Histogram<'route' | 'outcome'>;
  introspectionRequests: Counter<'result'>;
  introspectionDuration: Histogram<'result'>;
  /** Handing a request to the upstream → its response headers (the API's own latency). */
  upstreamDuration: Histogram;
  /** Lookups refused a call to the authorization server by the gateway's own limits. */
  introspectionRejections: Counter<'reason'>;
  cacheLookups: Counter<'result'>;
  cacheEntries: Gauge;
  fishingFailures: Counter<'reason'>;
  fishingBlockedRequests: Counter;
  fishingBlockedClients: Gauge;
  upstreamErrors: Counter<'kind'>;
  /** `tokenguard_revocations_total{by}`: POST /admin/revoke, by what it named. */
  revocations: Counter<'by'>;
  /** Fleet mode only (registered with `shared:`): 1 when Redis answers. */
  sharedStoreUp: Gauge;
  sharedStoreErrors: Counter<'op'>;
  sharedStoreDuration: Histogram<'op'>;
  /** Pre-bound children of requests/requestDuration for a route label (made once per label). */
  requestSeries(route: string): RequestSeries;
  /** Pre-bound `tokenguard_cache_lookups_total{result="hit"}`. */
  cacheHit(): void;
  /** upstreamDuration, pre-bound: no closure per forwarded request. */
  upstreamAnswered(seconds: number): void;
}

/** The request counter and histogram children of one route, pre-bound per outcome. */
export type RequestSeries = Readonly<
  Record<Outcome, { count(): void; observe(seconds: number): void }>
>;

export interface MetricSources {
  cacheEntries: () => number;
  blockedClients: () => number;
}

export const OUTCOMES: readonly Outcome[] = [
  'forwarded',
  'served',
  'unauthorized',
  'forbidden',
  'bad_request',
  'throttled',
  'not_found',
  'unavailable',
  'upstream_error',
];
export const FISHING_REASONS: readonly FishingReason[] = [
  'malformed',
  'inactive',
  'expired',
  'audience',
  'issuer',
  'sender_constrained',
  'rejected',
];
export const CACHE_RESULTS: readonly CacheResult[] = [
  'hit',
  'negative_hit',
  'miss',
  'coalesced',
  'stale',
];
export const INTROSPECTION_RESULTS: readonly IntrospectionResult[] = [
  'active',
  'inactive',
  'error',
];
/**
 * Why the gateway itself refused a lookup its call to the authorization server (503): the
 * budget's concurrency or its rate (`max_concurrent`, `max_calls_per_second`), its waiting
 * line full, the fleet's rate, or the client's own guesses in flight — never a server fault,
 * which is `introspection_requests_total{result="error"}`.
 */
export type IntrospectionRejection =
  | 'budget_concurrency'
  | 'budget_rate'
  | 'budget_queue_full'
  | 'fleet_budget_rate'
  | 'client_inflight';
export const INTROSPECTION_REJECTIONS: readonly IntrospectionRejection[] = [
  'budget_concurrency',
  'budget_rate',
  'budget_queue_full',
  'fleet_budget_rate',
  'client_inflight',
];
export const UPSTREAM_ERROR_KINDS: readonly UpstreamErrorKind[] = ['connect', 'timeout', 'reset'];

export const REVOKED_BY = ['token', 'sub', 'client_id'] as const;

export function createMetrics(
  sources: MetricSources,
  options: { shared?: boolean; sharedOps?: readonly string[] } = {},
): GatewayMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  // Fleet-mode series exist only in fleet mode: a 0 "up" gauge on a single replica would page
  // on-call for a Redis nobody configured.
  const sharedRegisters = options.shared ? registers : [];

  const series = new Map<string, RequestSeries>();
  const metrics: GatewayMetrics = {
    registry,
    requests: new Counter({
      name: 'tokenguard_requests_total',
      help: 'Requests handled by the gateway, by matched route and outcome.',
      labelNames: ['route', 'outcome'],
      registers,
    }),
    requestDuration: new Histogram({
      name: 'tokenguard_request_duration_seconds',
      help: 'Time from request to response end (includes the upstream), by route and outcome.',
      labelNames: ['route', 'outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    introspectionRequests: new Counter({
      name: 'tokenguard_introspection_requests_total',
      help: 'Calls to the RFC 7662 introspection endpoint, by result.',
      labelNames: ['result'],
      registers,
    }),
    introspectionDuration: new Histogram({
      name: 'tokenguard_introspection_duration_seconds',
      help: 'Duration of introspection calls, by result.',
      labelNames: ['result'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    upstreamDuration: new Histogram({
      name: 'tokenguard_upstream_duration_seconds',
      help: "From handing a request to the upstream to its response headers: the API's own latency, apart from the gateway's.",
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    introspectionRejections: new Counter({
      name: 'tokenguard_introspection_rejections_total',
      help: "Lookups refused a call to the authorization server by the gateway's own limits (503), by reason.",
      labelNames: ['reason'],
      registers,
    }),
    cacheLookups: new Counter({
      name: 'tokenguard_cache_lookups_total',
      help: 'Token cache lookups, by result.',
      labelNames: ['result'],
      registers,
    }),
    cacheEntries: new Gauge({
      name: 'tokenguard_cache_entries',
      help: 'Entries in the token cache.',
      registers,
      collect() {
        this.set(sources.cacheEntries());
      },
    }),
    fishingFailures: new Counter({
      name: 'tokenguard_fishing_failures_total',
      help: 'Failed token presentations (400 invalid_request, 401 invalid_token), by reason.',
      labelNames: ['reason'],
      registers,
    }),
    fishingBlockedRequests: new Counter({
      name: 'tokenguard_fishing_blocked_requests_total',
      help: 'Requests refused with 429 because their client is blocked for token fishing.',
      registers,
    }),
    fishingBlockedClients: new Gauge({
      name: 'tokenguard_fishing_blocked_clients',
      help: 'Clients currently blocked for token fishing.',
      registers,
      collect() {
        this.set(sources.blockedClients());
      },
    }),
    upstreamErrors: new Counter({
      name: 'tokenguard_upstream_errors_total',
      help: 'Failures talking to the upstream, by kind.',
      labelNames: ['kind'],
      registers,
    }),
    revocations: new Counter({
      name: 'tokenguard_revocations_total',
      help: 'Revocations received on POST /admin/revoke, by what they named (token, sub, client_id).',
      labelNames: ['by'],
      registers,
    }),
    sharedStoreUp: new Gauge({
      name: 'tokenguard_shared_store_up',
      help: 'Fleet mode: 1 while the shared Redis answers, 0 while this replica runs on its local state.',
      registers: sharedRegisters,
    }),
    sharedStoreErrors: new Counter({
      name: 'tokenguard_shared_store_errors_total',
      help: 'Fleet mode: Redis operations that failed or timed out (the replica fell back to local state), by operation.',
      labelNames: ['op'],
      registers: sharedRegisters,
    }),
    sharedStoreDuration: new Histogram({
      name: 'tokenguard_shared_store_duration_seconds',
      help: 'Fleet mode: duration of Redis operations that answered, by operation.',
      labelNames: ['op'],
      buckets: LATENCY_BUCKETS,
      registers: sharedRegisters,
    }),
    requestSeries(route) {
      let bound = series.get(route);
      if (!bound) {
        const entries = OUTCOMES.map((outcome) => {
          const count = metrics.requests.labels(route, outcome);
          const duration = metrics.requestDuration.labels(route, outcome);
          return [
            outcome,
            { count: () => count.inc(), observe: (seconds: number) => duration.observe(seconds) },
          ] as const;
        });
        bound = Object.fromEntries(entries) as unknown as RequestSeries;
        series.set(route, bound);
      }
      return bound;
    },
    cacheHit: () => cacheHit.inc(),
    upstreamAnswered: (seconds) => upstreamAnswered.observe(seconds),
  };
  const cacheHit = metrics.cacheLookups.labels('hit');
  const upstreamAnswered = metrics.upstreamDuration.labels();

  // Every label value exists from the first scrape, so rate() and alerts see zeros, not gaps.
  for (const reason of FISHING_REASONS) metrics.fishingFailures.inc({ reason }, 0);
  for (const result of CACHE_RESULTS) metrics.cacheLookups.inc({ result }, 0);
  for (const result of INTROSPECTION_RESULTS) metrics.introspectionRequests.inc({ result }, 0);
  for (const reason of INTROSPECTION_REJECTIONS) metrics.introspectionRejections.inc({ reason }, 0);
  for (const kind of UPSTREAM_ERROR_KINDS) metrics.upstreamErrors.inc({ kind }, 0);
  for (const by of REVOKED_BY) metrics.revocations.inc({ by }, 0);
  for (const op of options.sharedOps ?? []) metrics.sharedStoreErrors.inc({ op }, 0);
  return metrics;
}
