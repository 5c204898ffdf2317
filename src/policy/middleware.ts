/** Policy stages: request sanity and normalisation, route matching, scope enforcement. */
import type { IncomingMessage } from 'node:http';
import { countRawHeader } from '../token/extract-bearer-token.js';
import {
  badRequest,
  insufficientScope,
  methodNotAllowed,
  routeMethodNotAllowed,
  routeNotFound,
} from '../errors.js';
import type { GatewayMiddleware } from '../state.js';
import { hasMethodOverrideParameter } from './method-override.js';
import { AUTHORITY, normaliseRequestTarget, type NormalisedTarget } from './normalize-path.js';
import { isMethodMismatch, type Route, type RouteTable } from './route-table.js';
import type { GrantedScopes } from './scopes.js';

const WEBSOCKET = /^websocket$/i;

/**
 * TRACE (reflects credentials, XST) and CONNECT (a tunnel around every rule) are never
 * forwarded. The request must name one host (RFC 9112 §3.2: exactly one `Host` in HTTP/1.1,
 * syntactically a host[:port]) — Node's parser checks that for plain requests but not for
 * upgrades, so it is checked here for both. The only upgrade is a bodiless HTTP/1.1
 * WebSocket GET: h2c would switch protocols under the gateway's feet, and a declared body
 * on an upgrade is how a request is smuggled into the upstream connection (the upstream
 * answers without 101 and then reads the next request as that body). Then the target is
 * normalised once, and `req.url` becomes exactly the path that routes are matched on and
 * the upstream receives.
 */
export function refuseUnsafeRequests(): GatewayMiddleware {
  return async function refuseUnsafeRequests(ctx, next) {
    const target = checkRequest(ctx.req, ctx.state.upgrade !== undefined);
    ctx.state.target = target;
    ctx.req.url = target.path + target.search;
    await next();
  };
}

/**
 * The checks of refuseUnsafeRequests, synchronous (the cached pass runs them too).
 * @returns the normalised target
 * @throws GatewayError 400 or 405
 */
export function checkRequest(req: IncomingMessage, upgrade: boolean): NormalisedTarget {
  const method = req.method ?? '';
  if (method === 'TRACE' || method === 'CONNECT') throw methodNotAllowed(method);
  const host = req.headers.host;
  if (host === undefined) {
    if (req.httpVersionMajor !== 1 || req.httpVersionMinor !== 0) {
      throw badRequest('TOKENGUARD_MISSING_HOST', 'an HTTP/1.1 request needs a Host header');
    }
  } else {
    if (countRawHeader(req.rawHeaders, 'host') > 1) {
      throw badRequest('TOKENGUARD_DUPLICATE_HOST', 'more than one Host header');
    }
    if (!AUTHORITY.test(host)) throw badRequest('TOKENGUARD_BAD_HOST', 'malformed Host header');
  }
  if (upgrade) refuseUnsafeUpgrade(req);
  const target = normaliseRequestTarget(req.url ?? '');
  if (target.search !== '' && hasMethodOverrideParameter(target.search)) {
    throw badRequest(
      'TOKENGUARD_METHOD_OVERRIDE',
      'method override parameters are not accepted',
      '_method query parameter',
    );
  }
  return target;
}

function refuseUnsafeUpgrade(req: IncomingMessage): void {
  if (req.method !== 'GET' || !WEBSOCKET.test(req.headers.upgrade ?? '')) {
    throw badRequest('TOKENGUARD_UPGRADE_REFUSED', 'only WebSocket upgrades are supported');
  }
  if (req.httpVersion !== '1.1') {
    throw badRequest('TOKENGUARD_UPGRADE_REFUSED', 'a WebSocket upgrade needs HTTP/1.1');
  }
  const length = req.headers['content-length'];
  if (
    req.headers['transfer-encoding'] !== undefined ||
    (length !== undefined && Number(length) !== 0)
  ) {
    throw badRequest('TOKENGUARD_UPGRADE_WITH_BODY', 'an upgrade request cannot have a body');
  }
}

export function matchRoute(table: RouteTable): GatewayMiddleware {
  return async function matchRoute(ctx, next) {
    const method = ctx.req.method ?? '';
    const route = table.match(method, (ctx.state.target as { matchPath: string }).matchPath);
    if (!route) throw routeNotFound();
    if (isMethodMismatch(route)) throw routeMethodNotAllowed(method, route.allow);
    ctx.state.route = route;
    await next();
  };
}

/**
 * The token's `scope` (RFC 7662 §2.2) must meet the route's requirement: all of `scopes`, one
 * of `any_scopes`, matched by the route's `scope_match` (policy/scopes.ts).
 */
export function enforceScopes(): GatewayMiddleware {
  return async function enforceScopes(ctx, next) {
    const route = ctx.state.route;
    const grant = ctx.state.grant;
    if (route && grant && !hasScopes(route, grant.scopes)) {
      throw insufficientScope(route.scopeString);
    }
    await next();
  };
}

/** The one scope decision of both paths (the Koa pipeline and the cached pass). */
export function hasScopes(route: Route, granted: GrantedScopes): boolean {
  return route.requirement.satisfiedBy(granted);
}
