/**
 * The route table: config routes compiled once into koa-router layers (koa-router's path
 * syntax, compiled at start-up so no request ever builds a regular expression), matched in
 * order, first match wins. `prefix` routes are segment-bounded (`/api/ordersx` is not under
 * `/api/orders`), matching is case-insensitive unless configured otherwise, and a route
 * listing GET matches HEAD too.
 *
 * A trailing `/` in a pattern changes nothing (`prefix: /admin/` is `prefix: /admin`, and
 * `prefix: /` matches every path): upstreams serve `/admin` and `/admin/` alike, so a rule
 * must cover both. When routes match the path but none the method, the answer is 405 with
 * the methods they accept — never `default_action`, which would hand a PUT to a rule
 * written for GET (PRODUCT.md "Routing").
 */
import Router from '@koa/router';
import type { Config, RouteConfig } from '../config/schema.js';
import { compileScopeRequirement, type ScopeMatch, type ScopeRequirement } from './scopes.js';

export interface Route {
  /** Position in the config's `routes` list. */
  index: number;
  /** The `route` metric label: the configured name, else the pattern. */
  label: string;
  /** `label` as a JSON string literal, for the preformatted access line. */
  labelJson: string;
  pattern: string;
  kind: 'path' | 'prefix';
  /** null: every method. */
  methods: ReadonlySet<string> | null;
  auth: 'required' | 'none';
  scopes: readonly string[];
  /** `any_scopes`: at least one of them is required too (empty: none). */
  anyScopes: readonly string[];
  /** Everything the route asks of the token's scopes, compiled at load (policy/scopes.ts). */
  requirement: ScopeRequirement;
  /** RFC 6750 §3 `scope=` of its 403: one sufficient set (ScopeRequirement.challenge). */
  scopeString: string;
  match(path: string): boolean;
}

/** The pseudo-route of unmatched requests under `default_action: authenticate`. */
export const DEFAULT_ROUTE_LABEL = '__default__';
/** The `route` label of requests refused before a route could be chosen. */
export const UNMATCHED_ROUTE_LABEL = '__unmatched__';

/** Routes match the path, none the method: 405 with `Allow`. */
export interface MethodMismatch {
  /** The `Allow` field value: the methods of the routes matching the path. */
  readonly allow: string;
}

export type RouteMatch = Route | MethodMismatch | null;

export const isMethodMismatch = (match: RouteMatch): match is MethodMismatch =>
  match !== null && 'allow' in match;

export interface RouteTable {
  routes: readonly Route[];
  /**
   * The first route matching method and path; else a MethodMismatch when some route
   * matches the path; else the default route, or null when there is none.
   */
  match(method: string, matchPath: string): RouteMatch;
}

/** Throws the path-to-regexp error for an unusable pattern (used by config validation). */
export function compilePattern(
  pattern: string,
  kind: 'path' | 'prefix',
  caseSensitive: boolean,
): (path: string) => boolean {
  // A trailing `/` means nothing (see above); `/` itself is every path under a prefix.
  const bare = pattern.length > 1 ? pattern.replace(/\/+$/, '') : pattern;
  if (kind === 'prefix' && (bare === '/' || bare === '')) return () => true;
  const router = new Router({ sensitive: caseSensitive });
  const layer = router.register(bare || '/', [], () => undefined, {
    end: kind === 'path',
    sensitive: caseSensitive,
  });
  if (!('match' in layer) || typeof layer.match !== 'function') {
    throw new Error('koa-router did not return a layer');
  }
  return (path: string) => (layer as { match(path: string): boolean }).match(path);
}

export function compileRoute(
  route: RouteConfig,
  index: number,
  caseSensitive: boolean,
  defaultScopeMatch: ScopeMatch = 'exact',
): Route {
  const anyScopes = route.any_scopes ?? [];
  const requirement = compileScopeRequirement(
    route.scopes,
    anyScopes,
    route.scope_match ?? defaultScopeMatch,
  );
  const kind = route.path === undefined ? 'prefix' : 'path';
  const pattern = (route.path ?? route.prefix) as string;
  const methods = route.methods ? new Set(route.methods) : null;
  if (methods?.has('GET')) methods.add('HEAD');
  return {
    index,
    label: route.name ?? pattern,
    labelJson: JSON.stringify(route.name ?? pattern),
    pattern,
    kind,
    methods,
    auth: route.auth,
    scopes: route.scopes,
    anyScopes,
    requirement,
    scopeString: requirement.challenge,
    match: compilePattern(pattern, kind, caseSensitive),
  };
}

/** A route that is no config route (the default route, the gateway's own answers). */
export function pseudoRoute(label: string, auth: Route['auth'] = 'none'): Route {
  return {
    index: -1,
    label,
    labelJson: JSON.stringify(label),
    pattern: '*',
    kind: 'prefix',
    methods: null,
    auth,
    scopes: [],
    anyScopes: [],
    requirement: compileScopeRequirement([], [], 'exact'),
    scopeString: '',
    match: () => true,
  };
}

export function createRouteTable(
  config: Pick<Config, 'routes' | 'routes_case_sensitive' | 'default_action'> &
    Partial<Pick<Config, 'scope_match'>>,
): RouteTable {
  const routes = config.routes.map((route, index) =>
    compileRoute(route, index, config.routes_case_sensitive, config.scope_match),
  );
  const defaultRoute: Route | null =
    config.default_action === 'authenticate' ? pseudoRoute(DEFAULT_ROUTE_LABEL, 'required') : null;
  return {
    routes,
    match(method, matchPath) {
      for (const route of routes) {
        if (route.methods && !route.methods.has(method)) continue;
        if (route.match(matchPath)) return route;
      }
      // Nothing took it: a second pass, off the hot path, tells 405 from default_action.
      let allow: Set<string> | undefined;
      for (const route of routes) {
        if (route.methods && route.match(matchPath)) {
          allow ??= new Set();
          for (const allowed of route.methods) allow.add(allowed);
        }
      }
      if (allow) return { allow: [...allow].join(', ') };
      return defaultRoute;
    },
  };
}
