/**
 * OAuth 2.0 Protected Resource Metadata (RFC 9728), served by the gateway itself on the data
 * port when `resource_metadata` is configured: the document a client (an MCP client, say)
 * reads to learn which authorization server issues tokens for this API and which scopes it
 * knows. It needs no token, is never forwarded upstream, and is built once at start-up.
 *
 * The resource identifier comes from config, never from the request's `Host`: a document
 * and challenge URL derived from a client-supplied header would let anyone make the gateway
 * vouch for another resource (and a shared cache keep that answer for everyone).
 *
 * Paths (RFC 9728 §3, §3.1): the document is at `/.well-known/oauth-protected-resource`, and,
 * when the resource identifier has a path (`https://api.example.com/orders`), also at the
 * path-suffixed form §3.1 builds from it (`/.well-known/oauth-protected-resource/orders`) —
 * the URL every `WWW-Authenticate` challenge names in `resource_metadata` (§5.1). Any other
 * path below the well-known one is the gateway's too: 404, never the upstream's.
 */
import type { ServerResponse } from 'node:http';
import type { Config } from '../config/schema.js';
import { routeMethodNotAllowed, routeNotFound } from '../errors.js';
import type { RouteTable } from '../policy/route-table.js';
import { scopesNamed } from '../policy/scopes.js';

export const WELL_KNOWN_PATH = '/.well-known/oauth-protected-resource';
const WELL_KNOWN_PREFIX = `${WELL_KNOWN_PATH}/`;

export interface ProtectedResourceMetadata {
  /** The document's URL: the challenges' `resource_metadata` (RFC 9728 §5.1). */
  readonly url: string;
  /** The JSON document, as served. */
  readonly document: Readonly<Record<string, unknown>>;
  /** The normalised path is the gateway's (the document, or 404 below it). */
  owns(path: string): boolean;
  /**
   * Answers a request for an owned path: 200 with the document (GET, HEAD).
   * @throws GatewayError 404 for another path below the well-known one, 405 for another method
   */
  serve(method: string, path: string, res: ServerResponse): void;
}

/** RFC 9728 §3.1: the well-known path inserted between the host and the resource's path. */
export function metadataUrlOf(resource: string): URL {
  const url = new URL(resource);
  const path = url.pathname === '/' ? '' : url.pathname.replace(/\/+$/, '');
  return new URL(`${WELL_KNOWN_PATH}${path}${url.search}`, url.origin);
}

export function createProtectedResourceMetadata(
  config: Pick<Config, 'resource_metadata' | 'introspection'>,
  routes: RouteTable,
): ProtectedResourceMetadata | undefined {
  const settings = config.resource_metadata;
  if (settings === undefined) return undefined;
  const url = metadataUrlOf(settings.resource);
  const paths = new Set([WELL_KNOWN_PATH, url.pathname]);
  const issuer = config.introspection.issuer;
  const authorizationServers = settings.authorization_servers ?? (issuer ? [issuer] : undefined);
  const scopes = scopesNamed(
    routes.routes.filter((route) => route.auth !== 'none').map((route) => route.requirement),
  );
  // RFC 9728 §2 names, in its order; absent values are left out rather than written null.
  const document: Record<string, unknown> = { resource: settings.resource };
  if (authorizationServers) document.authorization_servers = authorizationServers;
  if (scopes.length > 0) document.scopes_supported = scopes;
  document.bearer_methods_supported = ['header'];
  if (settings.resource_name !== undefined) document.resource_name = settings.resource_name;
  if (settings.resource_documentation !== undefined) {
    document.resource_documentation = settings.resource_documentation;
  }
  // DPoP-bound tokens are accepted nowhere yet (a bound token is refused as Bearer).
  document.dpop_bound_access_tokens_required = false;
  const body = Buffer.from(JSON.stringify(document));
  const headers = {
    'content-type': 'application/json',
    'content-length': String(body.length),
    'cache-control': `public, max-age=${settings.max_age_seconds}`,
    // A public document with no credentials: browser-based clients may read it.
    'access-control-allow-origin': '*',
  };
  return {
    url: url.href,
    document,
    owns: (path) => path === WELL_KNOWN_PATH || path.startsWith(WELL_KNOWN_PREFIX),
    serve(method, path, res) {
      if (!paths.has(path)) throw routeNotFound();
      if (method !== 'GET' && method !== 'HEAD') throw routeMethodNotAllowed(method, 'GET, HEAD');
      res.writeHead(200, headers);
      res.end(method === 'HEAD' ? undefined : body);
    },
  };
}
