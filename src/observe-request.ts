/**
 * The outermost stage: renders every refusal as an RFC 6750 response (§3: the
 * WWW-Authenticate challenge, §3.1 error codes) with a JSON body, and records each request
 * once — one metric sample and one access-log line, with a token fingerprint, never a token.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { GatewayError, type Outcome } from './errors.js';
import type { GatewayMetrics } from './metrics/metrics.js';
import { UNMATCHED_ROUTE_LABEL } from './policy/route-table.js';
import type { GatewayContext, GatewayMiddleware } from './state.js';

const REALM = 'Bearer realm="tokenguard"';

export interface ObserveOptions {
  metrics: GatewayMetrics;
  logger: Logger;
  accessLog: boolean;
  isDraining: () => boolean;
}

export function observeRequest(options: ObserveOptions): GatewayMiddleware {
  const { metrics, logger } = options;
  return async function observeRequest(ctx, next) {
    const started = performance.now();
    let outcome: Outcome = 'forwarded';
    let failure: GatewayError | undefined;
    if (options.isDraining()) ctx.res.shouldKeepAlive = false;
    try {
      await next();
      if (ctx.state.upstreamFailure) outcome = 'upstream_error';
    } catch (error) {
      failure = asGatewayError(error, logger);
      outcome = failure.outcome;
      renderError(ctx, failure);
    }
    const seconds = (performance.now() - started) / 1000;
    const route = ctx.state.route?.label ?? UNMATCHED_ROUTE_LABEL;
    metrics.requests.inc({ route, outcome });
    metrics.requestDuration.observe({ route, outcome }, seconds);
    if (options.accessLog) {
      logger.info(
        {
          event: 'access',
          method: ctx.req.method,
          path: ctx.state.target?.path,
          route,
          outcome,
          status: ctx.state.upgradeStatus ?? ctx.res.statusCode,
          latency_ms: Math.round(seconds * 100000) / 100,
          cache: ctx.state.cacheResult,
          client: ctx.state.client?.address,
          token: ctx.state.tokenHash?.slice(0, 12),
          code: failure?.code,
          detail: failure?.detail,
        },
        'request',
      );
    }
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

function challenge(error: GatewayError): string | undefined {
  if (error.oauthError === 'unauthorized') return REALM;
  const tokenProblem =
    error.oauthError === 'invalid_token' ||
    error.oauthError === 'insufficient_scope' ||
    (error.oauthError === 'invalid_request' && error.fishingReason === 'malformed');
  if (!tokenProblem) return undefined;
  let value = `${REALM}, error=${quote(error.oauthError)}, error_description=${quote(error.description)}`;
  if (error.requiredScope !== undefined) value += `, scope=${quote(error.requiredScope)}`;
  return value;
}

export function renderError(ctx: GatewayContext, error: GatewayError): void {
  const { res, req } = ctx;
  if (res.headersSent || !ctx.writable) {
    res.destroy();
    return;
  }
  ctx.respond = true;
  ctx.status = error.status;
  const authenticate = challenge(error);
  if (authenticate) ctx.set('WWW-Authenticate', authenticate);
  if (error.retryAfterSeconds !== undefined)
    ctx.set('Retry-After', String(error.retryAfterSeconds));
  if (error.allow !== undefined) ctx.set('Allow', error.allow);
  ctx.set('Cache-Control', 'no-store');
  // A refused request's body is never read: close rather than drain an attacker's upload.
  const hasBody =
    req.headers['transfer-encoding'] !== undefined ||
    Number(req.headers['content-length'] ?? 0) > 0;
  if (error.closeConnection || hasBody || ctx.state.upgrade) {
    ctx.set('Connection', 'close');
    res.shouldKeepAlive = false;
  }
  ctx.body = { error: error.oauthError, error_description: error.description };
}
