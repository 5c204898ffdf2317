import type { RequestIds } from '../request-id.js';
import type { GatewayMiddleware } from '../state.js';
import type { Exchange, Forwarder } from './forwarder.js';
import { buildUpstreamHeaders, type UpstreamHeaderPolicy } from './upstream-headers.js';

const CONTINUE = /^100-continue$/i;

/**
 * The last stage: only an authorised request gets here. `Expect: 100-continue` is answered
 * now, not before (Node would send 100 before any middleware ran unless the server handles
 * `checkContinue`), then http-proxy owns the response (`ctx.respond = false`).
 */
export function forwardToUpstream(
  forwarder: Forwarder,
  policy: UpstreamHeaderPolicy,
  requestIds: RequestIds,
): GatewayMiddleware {
  return async function forwardToUpstream(ctx, next) {
    const { req, res, state } = ctx;
    const expectsContinue = CONTINUE.test(req.headers.expect ?? '');
    req.headers = buildUpstreamHeaders(req.headers, policy, state.grant?.identityHeaders ?? [], {
      peerAddress: state.client?.peerAddress ?? '',
      keepForwardedFor: state.client?.viaTrustedProxy ?? false,
      proto: 'http',
      websocket: state.upgrade !== undefined,
      authority: state.target?.authority,
      requestId: requestIds.of(req),
    });
    if (state.upgrade) {
      const { socket, head } = state.upgrade;
      // Koa keeps the socket until the upstream answers: a failure before that is rendered
      // like any other refusal.
      state.upgradeStatus = await forwarder.ws(req, res, socket, head);
      ctx.respond = false;
      return next();
    }
    ctx.respond = false;
    if (expectsContinue) res.writeContinue();
    const exchange = await new Promise<Exchange>((resolve) =>
      forwarder.web(req, res, resolve, undefined),
    );
    // Failed before any response header: rendered like any refusal.
    if (exchange.error) throw exchange.error;
    if (exchange.failure) state.upstreamFailure = exchange.failure;
    if (exchange.upstreamMs >= 0) state.upstreamMs = exchange.upstreamMs;
    return next();
  };
}
