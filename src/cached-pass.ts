/**
 * The cached pass: a request that can be decided from memory alone — a clean target, a
 * route, and either `auth: none` or a token whose active answer is in the cache and passes
 * every check — is decided here in one synchronous pass and handed to the forwarder, without
 * a Koa context or a promise per stage. It runs the very same stage functions as the Koa
 * pipeline (checkRequest, the route table, blockedFor, readBearerCredentials, the cache,
 * checkClaims, hasScopes, buildUpstreamHeaders), in the same order. Anything else — a
 * refusal of any kind, a cache miss or negative entry, `Expect`, draining — returns false
 * before a single side effect the pipeline would not also make, and the Koa pipeline
 * (app.ts) decides and renders it from the start.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { tokenHash } from './cache/token-cache.js';
import type { ClientIdentifier, ClientIdentity } from './fishing/client-key.js';
import type { FishingGuard } from './fishing/fishing-guard.js';
import { checkClaims, type ClaimRules } from './introspection/check-claims.js';
import type { IntrospectionService } from './introspection/service.js';
import type { Outcome } from './errors.js';
import type { GatewayMetrics } from './metrics/metrics.js';
import { answeredStatus, type RefusalWriter, type RequestRecorder } from './observe-request.js';
import { checkRequest, hasScopes } from './policy/middleware.js';
import type { NormalisedTarget } from './policy/normalize-path.js';
import { isMethodMismatch, type Route, type RouteTable } from './policy/route-table.js';
import type { Exchange, Forwarder } from './proxy/forwarder.js';
import { buildUpstreamHeaders, type UpstreamHeaderPolicy } from './proxy/upstream-headers.js';
import type { RequestIds } from './request-id.js';
import { readBearerCredentials } from './token/extract-bearer-token.js';
import type { IdentityHeaders } from './proxy/identity-headers.js';

export interface CachedPassDependencies {
  routes: RouteTable;
  identifier: ClientIdentifier;
  fishing: FishingGuard;
  introspection: IntrospectionService;
  claimRules: ClaimRules;
  headerPolicy: UpstreamHeaderPolicy;
  forwarder: Forwarder;
  metrics: GatewayMetrics;
  recorder: RequestRecorder;
  requestIds: RequestIds;
  /** The gateway's one refusal writer (the Koa pipeline's too): identical challenges. */
  writeRefusal: RefusalWriter;
  /** Paths the gateway answers itself (RFC 9728 metadata): always the Koa pipeline's. */
  ownsPath: ((path: string) => boolean) | null;
  isDraining: () => boolean;
}

/** What the access line and metrics need once the exchange is over. */
interface Decided {
  started: number;
  route: Route;
  target: NormalisedTarget;
  client: ClientIdentity;
  tokenHash: string | undefined;
}

const NO_IDENTITY: IdentityHeaders = [];

export function createCachedPass(deps: CachedPassDependencies) {
  const { routes, identifier, fishing, introspection, claimRules, forwarder, recorder } = deps;
  const { writeRefusal, ownsPath } = deps;

  const ended = (exchange: Exchange<Decided>): void => {
    const { req, res, context: decided } = exchange;
    let outcome: Outcome = 'forwarded';
    let status = answeredStatus(res);
    if (exchange.error !== null) {
      // Refused before the upstream answered — it failed (502/504), or the body was (400) —
      // rendered and named as the pipeline would.
      writeRefusal(req, res, exchange.error, false);
      outcome = exchange.error.outcome;
      status = exchange.error.status;
    } else if (exchange.failure !== null) {
      outcome = 'upstream_error';
    }
    recorder.record(req, decided.route, outcome, status, decided.started, {
      path: decided.target.path,
      cache: decided.tokenHash === undefined ? undefined : 'hit',
      client: decided.client.address,
      tokenHash: decided.tokenHash,
      failure: exchange.error ?? undefined,
      upstreamMs: exchange.upstreamMs >= 0 ? exchange.upstreamMs : undefined,
    });
  };

  /** Serves the request and returns true, or returns false for the Koa pipeline to take it. */
  return function serveFromMemory(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.headers.expect !== undefined || deps.isDraining()) return false;
    const started = performance.now();
    let target: NormalisedTarget;
    try {
      target = checkRequest(req, false);
    } catch {
      return false;
    }
    if (ownsPath !== null && ownsPath(target.path)) return false;
    const route = routes.match(req.method ?? '', target.matchPath);
    if (route === null || isMethodMismatch(route)) return false;
    const client = identifier.identify(req);
    let key: string | undefined;
    let identity = NO_IDENTITY;
    if (route.auth !== 'none') {
      if (fishing.blockedFor(client.key) > 0) return false;
      let token: string;
      try {
        const credentials = readBearerCredentials(req);
        if (credentials.kind === 'absent') return false;
        token = credentials.token;
      } catch {
        return false;
      }
      key = tokenHash(token);
      const entry = introspection.cache.peek(key);
      if (entry === undefined || !entry.active) return false;
      if (checkClaims(entry.claims, claimRules, Date.now() / 1000) !== null) return false;
      if (!hasScopes(route, entry.scopes)) return false;
      identity = entry.identityHeaders;
      deps.metrics.cacheHit();
    }
    req.url = target.path + target.search;
    req.headers = buildUpstreamHeaders(req.headers, deps.headerPolicy, identity, {
      peerAddress: client.peerAddress,
      keepForwardedFor: client.viaTrustedProxy,
      proto: 'http',
      websocket: false,
      authority: target.authority,
      requestId: deps.requestIds.of(req),
    });
    const decided: Decided = { started, route, target, client, tokenHash: key };
    forwarder.web(req, res, ended, decided);
    return true;
  };
}
