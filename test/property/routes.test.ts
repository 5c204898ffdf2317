/**
 * Why: a route is a security rule, and a rule an attacker can step around by spelling the
 * path differently is no rule. With `routes_case_sensitive: false` (the default), `/ADMIN`,
 * `/%61dmin`, `/x/../admin` and `//admin` must meet the same rule as `/admin`; `prefix`
 * routes are bounded by segments; `prefix: /admin/` means `prefix: /admin` and `prefix: /`
 * covers everything; a path some route covers never falls through to `default_action`
 * because of its method (PRODUCT.md "Routing"). Paths go through the real normaliser first,
 * as they do in the gateway.
 */
import test from 'ava';
import fc from 'fast-check';
import type { RouteConfig } from '../../src/config/schema.js';
import { normaliseRequestTarget } from '../../src/policy/normalize-path.js';
import { createRouteTable, type Route, type RouteTable } from '../../src/policy/route-table.js';
import { canonicalSegment, hostileTarget, joinSegments, respelling } from './_paths.js';

type Method = NonNullable<RouteConfig['methods']>[number];
const METHODS: readonly Method[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

type Matched =
  | { kind: 'route'; index: number } // index -1: the default route (`default_action: authenticate`)
  | { kind: 'none' }
  | { kind: 'method-mismatch'; allow: string[] };

/**
 * The one place that reads `RouteTable.match`. Assumed: it answers a Route (the default
 * route has index -1), null when nothing matches, or — once 405 lands — an object with an
 * `allow` string (`GET, HEAD`) when routes match the path but none the method.
 */
function matchRoute(table: RouteTable, method: string, matchPath: string): Matched {
  const match: unknown = table.match(method, matchPath);
  if (match === null) return { kind: 'none' };
  if (typeof match === 'object' && 'allow' in match) {
    return { kind: 'method-mismatch', allow: String(match.allow).split(/,\s*/).sort() };
  }
  return { kind: 'route', index: (match as Route).index };
}

const tableOf = (
  routes: RouteConfig[],
  defaultAction: 'deny' | 'authenticate' = 'deny',
): RouteTable =>
  createRouteTable({ routes, routes_case_sensitive: false, default_action: defaultAction });

const prefixRoute = (prefix: string): RouteConfig => ({ prefix, auth: 'required', scopes: [] });

/** Matches, through the normaliser; undefined when the normaliser refuses the target. */
function matchTarget(table: RouteTable, method: string, target: string): Matched | undefined {
  let matchPath: string;
  try {
    ({ matchPath } = normaliseRequestTarget(target));
  } catch {
    return undefined;
  }
  return matchRoute(table, method, matchPath);
}

const randomCase = (word: string) =>
  fc
    .array(fc.boolean(), { minLength: word.length, maxLength: word.length })
    .map((upper) =>
      [...word].map((char, index) => (upper[index] ? char.toUpperCase() : char)).join(''),
    );

/** Few names, so that routes and paths meet often. */
const NAMES = ['a', 'b', 'ab', 'api', 'admin', 'v1', 'x-y', 'u_v', 'o.k', 'z~'];
const name = fc.constantFrom(...NAMES);
const patternName = name.chain(randomCase);

const routeConfig = fc
  .record({
    kind: fc.constantFrom('path', 'prefix'),
    segments: fc.array(fc.oneof({ weight: 4, arbitrary: patternName }, fc.constant(':')), {
      maxLength: 3,
    }),
    methods: fc.option(fc.subarray([...METHODS], { minLength: 1 })),
  })
  .map(({ kind, segments, methods }): RouteConfig => {
    const pattern = `/${segments.map((segment, index) => (segment === ':' ? `:p${index}` : segment)).join('/')}`;
    return {
      ...(kind === 'path' ? { path: pattern } : { prefix: pattern }),
      ...(methods === null ? {} : { methods }),
      auth: 'required',
      scopes: [],
    };
  });

const routeTables = fc.record({
  routes: fc.array(routeConfig, { minLength: 1, maxLength: 6 }),
  defaultAction: fc.constantFrom('deny' as const, 'authenticate' as const),
});

/** Canonical path segments that often meet the routes' names; `''` last is a trailing slash. */
const pathSegments = fc
  .tuple(
    fc.array(fc.oneof({ weight: 4, arbitrary: name }, fc.constant('42'), canonicalSegment), {
      maxLength: 4,
    }),
    fc.boolean(),
  )
  .map(([segments, trailingSlash]) =>
    trailingSlash || segments.length === 0 ? [...segments, ''] : segments,
  );

const method = fc.constantFrom(...METHODS);

test('the matched route does not depend on case, escaped unreserved characters, //, ./ or x/../', (t) => {
  fc.assert(
    fc.property(
      routeTables,
      method,
      pathSegments.chain((segments) =>
        fc.tuple(fc.constant(joinSegments(segments)), respelling(segments, true)),
      ),
      ({ routes, defaultAction }, verb, [canonical, spelled]) => {
        const table = tableOf(routes, defaultAction);
        const plain = matchTarget(table, verb, canonical);
        const other = matchTarget(table, verb, spelled);
        return plain !== undefined && JSON.stringify(other) === JSON.stringify(plain);
      },
    ),
    { numRuns: 3_000 },
  );
  t.pass();
});

/** `prefix: /x/y` and a path under it, in any case. */
const prefixAndCase = fc
  .array(name, { minLength: 1, maxLength: 3 })
  .chain((segments) =>
    fc.tuple(
      fc.constant(joinSegments(segments)),
      fc.tuple(...segments.map(randomCase)).map(joinSegments),
    ),
  );

test('prefix: /x matches /x, /x/ and /x/anything in any case, and never /xy', (t) => {
  fc.assert(
    fc.property(
      prefixAndCase,
      fc.array(canonicalSegment, { minLength: 1, maxLength: 3 }),
      fc.stringMatching(/^[A-Za-z0-9\-._~]{1,4}$/),
      method,
      ([prefix, spelled], below, suffix, verb) => {
        const table = tableOf([prefixRoute(prefix)]);
        const matches = (target: string) => matchTarget(table, verb, target)?.kind === 'route';
        return (
          matches(spelled) &&
          matches(`${spelled}/`) &&
          matches(`${spelled}/${below.join('/')}`) &&
          !matches(`${spelled}${suffix}`) &&
          !matches(`${spelled}${suffix}/${below.join('/')}`)
        );
      },
    ),
    { numRuns: 1_000 },
  );
  t.pass();
});

test('contract: prefix: /x/ means the same as prefix: /x', (t) => {
  fc.assert(
    fc.property(
      fc.array(name, { minLength: 1, maxLength: 2 }).map(joinSegments),
      pathSegments.map(joinSegments),
      method,
      (prefix, path, verb) => {
        const bare = matchTarget(tableOf([prefixRoute(prefix)]), verb, path);
        const slashed = matchTarget(tableOf([prefixRoute(`${prefix}/`)]), verb, path);
        return JSON.stringify(slashed) === JSON.stringify(bare);
      },
    ),
    { numRuns: 2_000 },
  );
  t.pass();
});

test('contract: prefix: / matches every path', (t) => {
  const table = tableOf([prefixRoute('/')]);
  fc.assert(
    fc.property(fc.oneof(pathSegments.map(joinSegments), hostileTarget), method, (target, verb) => {
      const matched = matchTarget(table, verb, target);
      return matched === undefined || matched.kind === 'route';
    }),
    { numRuns: 2_000 },
  );
  t.pass();
});

test('a route listing GET matches HEAD too', (t) => {
  fc.assert(
    fc.property(routeTables, pathSegments.map(joinSegments), ({ routes }, path) => {
      const table = tableOf(routes);
      const get = matchTarget(table, 'GET', path);
      if (get?.kind !== 'route' || !routes[get.index]?.methods?.includes('GET')) return true;
      const head = matchTarget(table, 'HEAD', path);
      return head?.kind === 'route' && head.index <= get.index;
    }),
    { numRuns: 2_000 },
  );
  t.pass();
});

test('contract: a path some route covers never falls to default_action because of its method (405 with Allow)', (t) => {
  fc.assert(
    fc.property(routeTables, pathSegments.map(joinSegments), method, (tables, path, verb) => {
      const table = tableOf(tables.routes, tables.defaultAction);
      const matched = matchTarget(table, verb, path);
      if (matched === undefined) return false;
      const { matchPath } = normaliseRequestTarget(path);
      const covering = table.routes.filter((route) => route.match(matchPath));
      if (covering.length === 0) return matched.kind !== 'method-mismatch';
      if (matched.kind === 'route') return matched.index >= 0; // a real route, never the default
      if (matched.kind === 'none') return false;
      const allow = new Set(covering.flatMap((route) => [...(route.methods ?? METHODS)]));
      return (
        !allow.has(verb) && JSON.stringify(matched.allow) === JSON.stringify([...allow].sort())
      );
    }),
    { numRuns: 2_000 },
  );
  t.pass();
});
