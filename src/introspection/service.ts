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
  type CacheLookup,
  type TokenCache,
} from '../cache/token-cache.js';
import type { GatewayMetrics, IntrospectionResult } from '../metrics/metrics.js';
import { buildIdentityHeaders, compileIdentityMapping } from '../proxy/identity-headers.js';
import { createIntern } from '../cache/intern.js';
import { createIntrospectionBudget, type Requester } from './budget.js';
import { parseScopes } from './check-claims.js';
import {
  createIntrospectionClient,
  isAnswerAboutTheToken,
  UnexpectedAnswerError,
  type Claims,
  type IntrospectionClient,
} from './client.js';

const NOBODY: Requester = { clientKey: 'unknown', suspect: false };
const NO_SCOPES: ReadonlySet<string> = new Set();
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

export function createIntrospectionService(
  config: Config,
  metrics: GatewayMetrics,
  logger: Logger,
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
  let client: IntrospectionClient | undefined;
  let closed = false;
  let retryTimer: NodeJS.Timeout | undefined;

  const useEndpoint = (endpoint: URL) => {
    client = createIntrospectionClient({ endpoint, config: settings });
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
  let lastServerErrorMs = 0;
  const answersOthers = () =>
    lastGoodAnswerMs > lastServerErrorMs &&
    Date.now() - lastGoodAnswerMs < config.fishing.window_seconds * 1000;
  const classifyUnexpected = ({ answer }: UnexpectedAnswerError): GatewayError => {
    const detail = `introspection answered HTTP ${answer.status}${answer.oauthError ? ` (${answer.oauthError})` : ''}`;
    const aboutTheToken = isAnswerAboutTheToken(answer, answersOthers());
    if (answer.status >= 500) lastServerErrorMs = Date.now();
    return aboutTheToken
      ? tokenRejectedByAuthorizationServer(`${detail} for this token`)
      : authorizationServerUnavailable('TOKENGUARD_INTROSPECTION_STATUS', detail);
  };

  const load = async (token: string, requester: Requester | undefined): Promise<CacheEntry> => {
    if (!client) {
      throw authorizationServerUnavailable(
        'TOKENGUARD_DISCOVERY_PENDING',
        'introspection endpoint not discovered yet',
      );
    }
    const refusal = await budget.acquire(requester ?? NOBODY, settings.timeout_ms);
    if (refusal) throw introspectionOverBudget(`introspection budget: ${refusal}`);
    if (closed) {
      budget.release();
      throw authorizationServerUnavailable('TOKENGUARD_DRAINING', 'the gateway is stopping');
    }
    const started = performance.now();
    let result: IntrospectionResult = 'error';
    try {
      const answer = await client.introspect(token);
      result = answer.active ? 'active' : 'inactive';
      lastGoodAnswerMs = Date.now();
      if (!answer.active) return INACTIVE;
      const scope = answer.claims.scope;
      return {
        active: true,
        claims: compactClaims(answer.claims),
        scopes: typeof scope === 'string' ? scopeSets.get(scope) : NO_SCOPES,
        identityHeaders: buildIdentityHeaders(answer.claims, identityMapping, strings),
      };
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

  const cache = createTokenCache<Requester>({
    maxEntries: config.cache.max_entries,
    maxNegativeEntries: config.cache.max_negative_entries,
    maxTtlSeconds: config.cache.max_ttl_seconds,
    negativeTtlSeconds: config.cache.negative_ttl_seconds,
    load,
    onLookup: (result) => metrics.cacheLookups.inc({ result }),
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
