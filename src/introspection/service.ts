/**
 * The introspection stage's engine: endpoint discovery, the authenticated client, the
 * budget that shields the authorization server, metrics, and the token cache in front of it
 * all. `lookup` is the only way the data path learns about a token.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import {
  authorizationServerUnavailable,
  GatewayError,
  introspectionOverBudget,
  tokenRejectedByAuthorizationServer,
} from '../errors.js';
import {
  createTokenCache,
  INACTIVE,
  type CacheEntry,
  type Loaded,
  type CacheLookup,
  type TokenCache,
} from '../cache/token-cache.js';
import type { GatewayMetrics, IntrospectionResult } from '../metrics/metrics.js';
import { buildIdentityHeaders, compileIdentityMapping } from '../proxy/identity-headers.js';
import { createIntern } from '../cache/intern.js';
import type { Fleet } from '../shared/fleet.js';
import type { SharedAnswer } from '../shared/shared-cache.js';
import { createIntrospectionBudget, type Requester } from './budget.js';
import { NO_SCOPES, parseScopes } from '../policy/scopes.js';
import {
  createIntrospectionClient,
  isAnswerAboutTheToken,
  UnexpectedAnswerError,
  type Claims,
  type IntrospectionClient,
} from './client.js';

const NOBODY: Requester = { clientKey: 'unknown', suspect: false };
import { discoverIntrospectionEndpoint } from './discovery.js';

export interface IntrospectionService {
  /** The endpoint is known (configured, or discovered). */
  readonly ready: boolean;
  readonly cache: TokenCache<Requester>;
  /** `requester` is who pays if the token is not cached: budget turns are shared per client. */
  lookup(token: string, key: string, requester: Requester): Promise<CacheLookup>;
  close(): Promise<void>;
}

/**
 * The claims an active cache entry keeps: what the per-request checks read (exp, nbf, iss,
 * aud, the sender-constraint markers) and what fleet revocation matches on (sub,
 * client_id). Identity headers are computed at load; the rest of the answer is dropped.
 */
const KEPT_CLAIMS = ['exp', 'nbf', 'iss', 'aud', 'token_type', 'sub', 'client_id'] as const;

/** How often a refusal of the gateway's own credentials is logged. */
const CREDENTIALS_REPORT_INTERVAL_MS = 60_000;

export function createIntrospectionService(
  config: Config,
  metrics: GatewayMetrics,
  logger: Logger,
  /** Fleet mode: the shared second cache level, one call per token, the fleet's budget. */
  fleet?: Fleet,
): IntrospectionService {
  const settings = config.introspection;
  const identityMapping = compileIdentityMapping(config.forward.identity_headers);
  const budget = createIntrospectionBudget({
    maxConcurrent: settings.max_concurrent,
    maxCallsPerSecond: settings.max_calls_per_second,
  });
  const strings = createIntern((text: string) => text);
  const scopeSets = createIntern((scope: string) => parseScopes(scope));
  /** Only what KEPT_CLAIMS names, low-cardinality strings shared between entries. */
  const compactClaims = (claims: Claims): Claims => {
    const kept: Record<string, unknown> = {};
    for (const name of KEPT_CLAIMS) {
      const value = claims[name];
      if (value === undefined) continue;
      kept[name] = typeof value === 'string' && name !== 'sub' ? strings.get(value) : value;
    }
    if (claims.cnf !== undefined && claims.cnf !== null) kept.cnf = true;
    return kept;
  };
  /** An active entry from an answer's claims (the server's, or the fleet's copy of them). */
  const activeEntry = (claims: Claims): Extract<CacheEntry, { active: true }> => {
    const scope = claims.scope;
    return {
      active: true,
      claims: compactClaims(claims),
      scopes: typeof scope === 'string' ? scopeSets.get(scope) : NO_SCOPES,
      identityHeaders: buildIdentityHeaders(claims, identityMapping, strings),
    };
  };
  /** What the fleet's copy keeps: the kept claims, the scope, the claims identity headers map. */
  const sharedClaimNames = new Set<string>([
    ...KEPT_CLAIMS,
    'scope',
    'cnf',
    ...identityMapping.map(([, claim]) => claim),
  ]);
  const sharedClaims = (claims: Claims): Record<string, unknown> => {
    const kept: Record<string, unknown> = {};
    for (const name of sharedClaimNames) if (claims[name] !== undefined) kept[name] = claims[name];
    return kept;
  };
  let client: IntrospectionClient | undefined;
  let closed = false;
  let retryTimer: NodeJS.Timeout | undefined;

  const useEndpoint = (endpoint: URL) => {
    client = createIntrospectionClient({
      endpoint,
      config: settings,
      requestIdHeader: config.forward.request_id_header,
    });
  };

  if (settings.endpoint) {
    useEndpoint(new URL(settings.endpoint));
  } else if (settings.issuer) {
    const issuer = settings.issuer;
    let delayMs = 500;
    const discover = () => {
      discoverIntrospectionEndpoint(issuer, settings.timeout_ms).then(
        (endpoint) => {
          if (closed) return;
          useEndpoint(endpoint);
          logger.info(
            { event: 'discovery', endpoint: endpoint.href },
            'introspection endpoint discovered',
          );
        },
        (error: Error) => {
          if (closed) return;
          logger.warn(
            { event: 'discovery_failed', reason: error.message, retry_ms: delayMs },
            'discovery failed',
          );
          retryTimer = setTimeout(discover, delayMs);
          retryTimer.unref();
          delayMs = Math.min(delayMs * 2, 30_000);
        },
      );
    };
    discover();
  }

  /**
   * Does the server answer other tokens right now? Yes when it gave an RFC 7662 answer within
   * the fishing window and since its last server error: a run of 5xx with nothing good in
   * between is an outage, and counting it would block clients for the server's trouble.
   */
  let lastGoodAnswerMs = 0;
  /** A stale answer was served since the last good one (cache_stale_served logged). */
  let staleAnnounced = false;
  let lastServerErrorMs = 0;
  const answersOthers = () =>
    lastGoodAnswerMs > lastServerErrorMs &&
    Date.now() - lastGoodAnswerMs < config.fishing.window_seconds * 1000;
  /**
   * The server refusing the gateway's own credentials fails every uncached token (503) until
   * someone fixes the config or the client registration: one error line a minute says so,
   * instead of a 503 per request that reads like a server outage.
   */
  let credentialsReportedMs = -Infinity;
  const reportRejectedCredentials = (status: number, oauthError: string | undefined) => {
    const now = Date.now();
    if (now - credentialsReportedMs < CREDENTIALS_REPORT_INTERVAL_MS) return;
    credentialsReportedMs = now;
    logger.error(
      {
        event: 'introspection_credentials_rejected',
        status,
        oauth_error: oauthError,
        client_id: settings.client_id,
        auth_method: settings.auth_method,
      },
      `the authorization server refused tokenguard's own credentials (HTTP ${status}${oauthError ? `, ${oauthError}` : ''}): check introspection.client_id, the secret or key and introspection.auth_method against the client registered there; every uncached token gets 503 until then`,
    );
  };
  const classifyUnexpected = ({ answer }: UnexpectedAnswerError): GatewayError => {
    const detail = `introspection answered HTTP ${answer.status}${answer.oauthError ? ` (${answer.oauthError})` : ''}`;
    if (
      answer.status === 401 ||
      answer.oauthError === 'invalid_client' ||
      answer.oauthError === 'unauthorized_client'
    ) {
      reportRejectedCredentials(answer.status, answer.oauthError);
    }
    const aboutTheToken = isAnswerAboutTheToken(answer, answersOthers());
    if (answer.status >= 500) lastServerErrorMs = Date.now();
    return aboutTheToken
      ? tokenRejectedByAuthorizationServer(`${detail} for this token`)
      : authorizationServerUnavailable('TOKENGUARD_INTROSPECTION_STATUS', detail);
  };

  /** Asks the authorization server (the replica's own budget, then the fleet's). */
  const introspect = async (
    token: string,
    requester: Requester | undefined,
  ): Promise<{ entry: CacheEntry; claims?: Claims }> => {
    if (!client) {
      throw authorizationServerUnavailable(
        'TOKENGUARD_DISCOVERY_PENDING',
        'introspection endpoint not discovered yet',
      );
    }
    const deadline = Date.now() + settings.timeout_ms;
    const refusal = await budget.acquire(requester ?? NOBODY, settings.timeout_ms);
    if (refusal === 'closed') {
      throw authorizationServerUnavailable('TOKENGUARD_DRAINING', 'the gateway is stopping');
    }
    if (refusal) {
      metrics.introspectionRejections.inc({ reason: `budget_${refusal}` });
      throw introspectionOverBudget(`introspection budget: ${refusal}`);
    }
    if (closed) {
      budget.release();
      throw authorizationServerUnavailable('TOKENGUARD_DRAINING', 'the gateway is stopping');
    }
    if (fleet && !(await fleet.budget.take(deadline))) {
      budget.release();
      metrics.introspectionRejections.inc({ reason: 'fleet_budget_rate' });
      throw introspectionOverBudget("introspection budget: the fleet's calls per second");
    }
    const started = performance.now();
    let result: IntrospectionResult = 'error';
    try {
      const answer = await client.introspect(token, requester);
      result = answer.active ? 'active' : 'inactive';
      lastGoodAnswerMs = Date.now();
      staleAnnounced = false;
      if (!answer.active) return { entry: INACTIVE };
      return { entry: activeEntry(answer.claims), claims: answer.claims };
    } catch (error) {
      result = 'error';
      if (error instanceof UnexpectedAnswerError) throw classifyUnexpected(error);
      if (error instanceof GatewayError) throw error;
      throw authorizationServerUnavailable('TOKENGUARD_INTROSPECTION_FAILED', String(error));
    } finally {
      budget.release();
      metrics.introspectionRequests.inc({ result });
      metrics.introspectionDuration.observe({ result }, (performance.now() - started) / 1000);
    }
  };

  /** An answer from the fleet's cache, unless a revocation since its introspection names it. */
  const fromFleet = (key: string, answer: SharedAnswer | undefined): Loaded | undefined => {
    if (!fleet || !answer) return undefined;
    if (fleet.revokedSince(answer.startedAt, key, answer.claims)) return undefined;
    const entry: CacheEntry = answer.active
      ? { ...activeEntry(answer.claims ?? {}), fromFleet: true }
      : INACTIVE;
    return { entry, ttlMs: answer.expiresAt - Date.now() };
  };

  const load = async (
    token: string,
    key: string,
    requester: Requester | undefined,
  ): Promise<Loaded> => {
    const startedAt = Date.now();
    if (!fleet || !fleet.store.up) return introspect(token, requester);
    // A local miss asks the fleet first: another replica may know the token already.
    const known = fromFleet(key, await fleet.cache.get(key));
    if (known) return known;
    const lock = await fleet.cache.lock(key);
    if (lock === 'taken') {
      // Another replica is asking the server: wait for its answer (bounded), else ask too.
      const answered = fromFleet(
        key,
        await fleet.cache.waitFor(key, startedAt + settings.timeout_ms),
      );
      if (answered) return answered;
    }
    try {
      const { entry, claims } = await introspect(token, requester);
      const ttl = cache.ttlMs(entry);
      // Revoked while it was being asked: served to this request, never remembered.
      if (fleet.revokedSince(startedAt, key, claims)) return { entry, ttlMs: 0 };
      if (ttl > 0) {
        await fleet.cache.set(key, {
          active: entry.active,
          ...(claims ? { claims: sharedClaims(claims) } : {}),
          expiresAt: Date.now() + ttl,
          startedAt,
        });
      }
      return { entry };
    } finally {
      if (lock === 'locked') void fleet.cache.unlock(key);
    }
  };

  const cache = createTokenCache<Requester>({
    maxEntries: config.cache.max_entries,
    maxNegativeEntries: config.cache.max_negative_entries,
    maxTtlSeconds: config.cache.max_ttl_seconds,
    negativeTtlSeconds: config.cache.negative_ttl_seconds,
    load,
    onLookup: (result) => {
      metrics.cacheLookups.inc({ result });
      if (result === 'stale' && !staleAnnounced) {
        staleAnnounced = true;
        logger.warn(
          {
            event: 'cache_stale_served',
            stale_if_error_seconds: config.cache.stale_if_error_seconds,
          },
          'introspection failing: serving cached active answers past their TTL (cache.stale_if_error_seconds), never past exp; once per outage',
        );
      }
    },
    staleIfErrorSeconds: config.cache.stale_if_error_seconds,
    // The server failing or the budget refusing — never an answer about the token.
    staleOnError: (error) => error instanceof GatewayError && error.status === 503,
  });

  return {
    get ready() {
      return client !== undefined;
    },
    cache,
    lookup: (token, key, requester) => cache.lookup(token, key, requester),
    async close() {
      closed = true;
      budget.close();
      if (retryTimer) clearTimeout(retryTimer);
      await client?.close();
    },
  };
}
