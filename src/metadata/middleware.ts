import { routeNotFound } from '../errors.js';
import { pseudoRoute } from '../policy/route-table.js';
import type { GatewayMiddleware } from '../state.js';
import type { ProtectedResourceMetadata } from './protected-resource.js';

/** The `route` label of requests the gateway answers itself (RFC 9728 metadata). */
export const RESOURCE_METADATA_ROUTE_LABEL = '__resource_metadata__';

/**
 * Answers the protected-resource metadata paths before any route is matched or token read
 * (RFC 9728 §3: no token needed, even for a client blocked for fishing, as `auth: none`
 * routes serve it). The path is the normalised one, compared case-sensitively: well-known
 * URIs are (RFC 8615), and `/.WELL-KNOWN/...` is an ordinary path for the routes.
 */
export function serveResourceMetadata(metadata: ProtectedResourceMetadata): GatewayMiddleware {
  const route = pseudoRoute(RESOURCE_METADATA_ROUTE_LABEL);
  return async function serveResourceMetadata(ctx, next) {
    const path = ctx.state.target?.path ?? '';
    if (!metadata.owns(path)) return next();
    ctx.state.route = route;
    // Not a WebSocket endpoint: an upgrade here is refused like an unknown path.
    if (ctx.state.upgrade) throw routeNotFound();
    metadata.serve(ctx.req.method ?? '', path, ctx.res);
    ctx.respond = false;
    ctx.state.served = true;
  };
}
