/** Policy stages: request sanity and normalisation, route matching, scope enforcement. */
import { countRawHeader } from '../token/extract-bearer-token.js';
import { badRequest, insufficientScope, methodNotAllowed, routeNotFound } from '../errors.js';
import type { GatewayMiddleware } from '../state.js';
import { normaliseRequestTarget } from './normalize-path.js';
import type { RouteTable } from './route-table.js';

const WEBSOCKET = /^websocket$/i;

/**
 * TRACE (reflects credentials, XST) and CONNECT (a tunnel around every rule) are never
 * forwarded; two Host fields or a non-WebSocket upgrade (h2c would switch protocols under
 * the gateway's feet) are refused; then the target is normalised once, and `req.url`
 * becomes exactly the path that routes are matched on and the upstream receives.
 */
export function refuseUnsafeRequests(): GatewayMiddleware {
  return async function refuseUnsafeRequests(ctx, next) {
    const { req } = ctx;
    const method = req.method ?? '';
    if (method === 'TRACE' || method === 'CONNECT') throw methodNotAllowed(method);
    if (countRawHeader(req.rawHeaders, 'host') > 1) {
      throw badRequest('TOKENGUARD_DUPLICATE_HOST', 'more than one Host header');
    }
    if (ctx.state.upgrade && !(method === 'GET' && WEBSOCKET.test(req.headers.upgrade ?? ''))) {
      throw badRequest('TOKENGUARD_UPGRADE_REFUSED', 'only WebSocket upgrades are supported');
    }
    const target = normaliseRequestTarget(req.url ?? '');
    ctx.state.target = target;
    req.url = target.path + target.search;
    await next();
  };
}

export function matchRoute(table: RouteTable): GatewayMiddleware {
  return async function matchRoute(ctx, next) {
    const route = table.match(
      ctx.req.method ?? '',
      (ctx.state.target as { matchPath: string }).matchPath,
    );
    if (!route) throw routeNotFound();
    ctx.state.route = route;
    await next();
  };
}

/** All of the route's scopes must be words of the token's `scope` (RFC 7662 §2.2). */
export function enforceScopes(): GatewayMiddleware {
  return async function enforceScopes(ctx, next) {
    const route = ctx.state.route;
    const grant = ctx.state.grant;
    if (route && grant) {
      for (const scope of route.scopes) {
        if (!grant.scopes.has(scope)) throw insufficientScope(route.scopeString);
      }
    }
    await next();
  };
}
