/**
 * The outermost stage: renders every refusal as an RFC 6750 response (§3: the
 * WWW-Authenticate challenge, §3.1 error codes) with a JSON body, and records each request
 * once — one metric sample and one access-log line, with a token fingerprint, never a token.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { GatewayError, type Outcome } from './errors.js';
import { jsonString, type AccessLog } from './log/access-log.js';
import type { GatewayMetrics } from './metrics/metrics.js';
import { UNMATCHED_ROUTE_LABEL, type Route } from './policy/route-table.js';
import { traceIdOf, type RequestIds } from './request-id.js';
import type { GatewayContext, GatewayMiddleware } from './state.js';

const REALM = 'Bearer realm="tokenguard"';

export interface ObserveOptions {
  recorder: RequestRecorder;
  writeRefusal: RefusalWriter;
  logger: Logger;
  isDraining: () => boolean;
  tarpit: Tarpit;
}

/**
 * Answers to a blocked client that keeps hammering (more than a few 429s a second, see
 * FishingGuard.hammering) are held for a moment before they are written: a fisher that
 * keeps its connections busy with requests it knows will be refused then gets one refusal
 * per connection per second instead of thousands, and cannot turn its block into CPU load
 * on the gateway (the legitimate clients beside it keep their latency). Bounded: past
 * `maxHeld` waiting answers, they go at once.
 */
export interface Tarpit {
  hold(write: () => void): void;
  /** Writes everything held (draining). */
  release(): void;
}

export function createTarpit(delayMs = 1000, maxHeld = 10_000): Tarpit {
  const held = new Map<NodeJS.Timeout, () => void>();
  return {
    hold(write) {
      if (held.size >= maxHeld) {
        write();
        return;
      }
      const timer = setTimeout(() => {
        held.delete(timer);
        write();
      }, delayMs);
      held.set(timer, write);
    },
    release() {
      for (const [timer, write] of held) {
        clearTimeout(timer);
        write();
      }
      held.clear();
    },
  };
}

/** One metric sample and one access line per request, for the Koa pipeline and the cached pass alike. */
export interface RequestRecorder {
  record(
    req: IncomingMessage,
    route: Route | undefined,
    outcome: Outcome,
    status: number,
    startedMs: number,
    facts: RecordFacts,
  ): void;
}

export interface RecordFacts {
  path: string | undefined;
  cache: string | undefined;
  client: string | undefined;
  tokenHash: string | undefined;
  failure: GatewayError | undefined;
  /** Ms from handing the request to the upstream to its response headers (forwarded only). */
  upstreamMs?: number | undefined;
}

export function createRequestRecorder(
  metrics: GatewayMetrics,
  accessLog: AccessLog,
  requestIds: RequestIds,
): RequestRecorder {
  const unmatchedJson = jsonString(UNMATCHED_ROUTE_LABEL);
  return {
    record(req, route, outcome, status, startedMs, facts) {
      const seconds = (performance.now() - startedMs) / 1000;
      const series = metrics.requestSeries(route?.label ?? UNMATCHED_ROUTE_LABEL)[outcome];
      series.count();
      series.observe(seconds);
      if (facts.upstreamMs !== undefined) metrics.upstreamAnswered(facts.upstreamMs / 1000);
      if (!accessLog.enabled) return;
      accessLog.write({
        method: req.method ?? '',
        path: facts.path,
        routeJson: route?.labelJson ?? unmatchedJson,
        outcome,
        status,
        latencyMs: Math.round(seconds * 100000) / 100,
        cache: facts.cache,
        client: facts.client,
        token: facts.tokenHash?.slice(0, 12),
        code: facts.failure?.code,
        detail: facts.failure?.detail,
        upstreamMs:
          facts.upstreamMs === undefined ? undefined : Math.round(facts.upstreamMs * 100) / 100,
        requestId: requestIds.of(req),
        traceId: traceIdOf(req.headers.traceparent),
      });
    },
  };
}

/**
 * The status an access line records for a forwarded request: the upstream's, or 499 (nginx's
 * "client closed request") when the client was gone before any answer was written — Koa's
 * default 404 and Node's default 200 would both name an answer nobody sent.
 */
export const CLIENT_CLOSED = 499;
export function answeredStatus(res: ServerResponse): number {
  return res.headersSent ? res.statusCode : CLIENT_CLOSED;
}

export function observeRequest(options: ObserveOptions): GatewayMiddleware {
  const { recorder, logger } = options;
  return async function observeRequest(ctx, next) {
    const started = performance.now();
    let outcome: Outcome = 'forwarded';
    let failure: GatewayError | undefined;
    if (options.isDraining()) ctx.res.shouldKeepAlive = false;
    try {
      await next();
      if (ctx.state.upstreamFailure) outcome = 'upstream_error';
      else if (ctx.state.served) outcome = 'served';
    } catch (error) {
      failure = asGatewayError(error, logger);
      outcome = failure.outcome;
      renderError(ctx, failure, options.writeRefusal, options.tarpit);
    }
    const { state } = ctx;
    recorder.record(
      ctx.req,
      state.route,
      outcome,
      failure?.status ?? state.upgradeStatus ?? answeredStatus(ctx.res),
      started,
      {
        path: state.target?.path,
        cache: state.cacheResult,
        client: state.client?.address,
        tokenHash: state.tokenHash,
        failure,
        upstreamMs: state.upstreamMs,
      },
    );
  };
}

function asGatewayError(error: unknown, logger: Logger): GatewayError {
  if (error instanceof GatewayError) return error;
  // A bug, not a decision: fail closed, log it without request data.
  logger.error({ err: error }, 'unexpected error in the request pipeline');
  return new GatewayError({
    status: 503,
    oauthError: 'temporarily_unavailable',
    code: 'TOKENGUARD_INTERNAL',
    description: 'the request could not be processed',
    outcome: 'unavailable',
    retryAfterSeconds: 1,
  });
}

/** `"` and `\` cannot appear in an RFC 6750 auth-param's quoted value. */
const quote = (value: string) => `"${value.replace(/["\\]/g, '')}"`;

/**
 * The RFC 6750 §3 challenge of a refusal about the token, or undefined. `tail` is appended to
 * every challenge: `, resource_metadata="<url>"` when RFC 9728 metadata is configured (§5.1).
 */
function challenge(error: GatewayError, tail: string): string | undefined {
  if (error.oauthError === 'unauthorized') return REALM + tail;
  const tokenProblem =
    error.oauthError === 'invalid_token' ||
    error.oauthError === 'insufficient_scope' ||
    (error.oauthError === 'invalid_request' && error.fishingReason === 'malformed');
  if (!tokenProblem) return undefined;
  let value = `${REALM}, error=${quote(error.oauthError)}, error_description=${quote(error.description)}`;
  if (error.requiredScope !== undefined) value += `, scope=${quote(error.requiredScope)}`;
  return value + tail;
}

export function renderError(
  ctx: GatewayContext,
  error: GatewayError,
  writeRefusal: RefusalWriter,
  tarpit?: Tarpit,
): void {
  ctx.respond = false;
  const upgrade = ctx.state.upgrade !== undefined;
  if (error.hold && tarpit) tarpit.hold(() => writeRefusal(ctx.req, ctx.res, error, upgrade));
  else writeRefusal(ctx.req, ctx.res, error, upgrade);
}

/**
 * Writes a refusal as RFC 6750 wants it (the challenge, the JSON error body) straight on the
 * response. One writer per gateway, shared by Koa's pipeline and the cached pass, so both
 * give byte-identical challenges.
 */
export type RefusalWriter = (
  req: IncomingMessage,
  res: ServerResponse,
  error: GatewayError,
  upgrade: boolean,
) => void;

export interface RefusalOptions {
  /** RFC 9728 §5.1: named in every challenge when set. */
  resourceMetadataUrl?: string | undefined;
}

export function createRefusalWriter(options: RefusalOptions = {}): RefusalWriter {
  const tail =
    options.resourceMetadataUrl === undefined
      ? ''
      : `, resource_metadata=${quote(options.resourceMetadataUrl)}`;
  return (req, res, error, upgrade) => writeRefusal(req, res, error, upgrade, tail);
}

function writeRefusal(
  req: IncomingMessage,
  res: ServerResponse,
  error: GatewayError,
  upgrade: boolean,
  challengeTail: string,
): void {
  if (res.headersSent || res.destroyed || res.writableEnded) {
    res.destroy();
    return;
  }
  const headers: Record<string, string> = {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
  };
  const authenticate = challenge(error, challengeTail);
  if (authenticate) headers['www-authenticate'] = authenticate;
  if (error.retryAfterSeconds !== undefined)
    headers['retry-after'] = String(error.retryAfterSeconds);
  if (error.allow !== undefined) headers.allow = error.allow;
  // A refused request's body is never read: close rather than drain an attacker's upload.
  const hasBody =
    req.headers['transfer-encoding'] !== undefined ||
    Number(req.headers['content-length'] ?? 0) > 0;
  if (error.closeConnection || hasBody || upgrade) {
    headers.connection = 'close';
    res.shouldKeepAlive = false;
  }
  const body = JSON.stringify({ error: error.oauthError, error_description: error.description });
  headers['content-length'] = String(Buffer.byteLength(body));
  res.writeHead(error.status, headers);
  res.end(body);
}
