/**
 * What `tokenguard check` (and start-up) says about the route list beyond its schema: a route
 * that can never match, because an earlier route takes every request it would (first match
 * wins), and an earlier route that takes some of a later route's requests while requiring
 * less — the classic `prefix: /api` (auth: none) above `/api/orders/:id` (scopes), where
 * the operator meant the specific rule to apply — and a route that lists a method an earlier
 * route always takes on its paths (`methods: [GET, POST]` under an earlier `[POST]` of the
 * same paths: its POST is dead text). The gateway enforces exactly what the list says, but
 * not what its author wrote on the later route, so `tokenguard check` and start-up refuse
 * each of them as a config error (src/config/review.ts), naming both routes.
 *
 * A narrower route placed first on purpose — the exception to a broader rule below it — is
 * not reported. The analysis works on the compiled routes (koa-router's own matchers), probing each route
 * with a sample of the paths the other would match: parameters become a literal segment.
 */
import type { Route } from './route-table.js';

export interface RouteFinding {
  /** Index of the route the finding is about. */
  route: number;
  /** Index of the earlier route that takes its requests. */
  earlier: number;
  kind: 'unreachable' | 'weaker_shadow' | 'method_overlap';
  message: string;
}

/** A segment with a parameter, wildcard or optional group: not a literal. */
const DYNAMIC_SEGMENT = /[:*{}()]/;

/** A path every instance of the pattern shares, up to its first dynamic segment. */
function staticStem(route: Route): string {
  const segments = route.pattern.split('/');
  const stem: string[] = [];
  for (const segment of segments) {
    if (DYNAMIC_SEGMENT.test(segment)) break;
    stem.push(segment);
  }
  const joined = stem.join('/').replace(/\/+$/, '');
  return joined === '' ? '/' : joined;
}

/** One concrete path the pattern matches: parameters filled with a literal. */
function samplePath(route: Route): string {
  const filled = route.pattern
    .replace(/\{([^}]*)\}/g, '$1')
    .replace(/:[A-Za-z_$][\w$]*/g, 'x')
    .replace(/\*[A-Za-z_$][\w$]*/g, 'x/y');
  return filled.length > 1 ? filled.replace(/\/+$/, '') : filled;
}

const methodsOf = (route: Route): string =>
  route.methods ? [...route.methods].filter((method) => method !== 'HEAD').join(' ') : 'any method';

const describe = (route: Route): string =>
  `routes[${route.index}] (${route.kind} ${route.pattern}, ${methodsOf(route)})`;

const requirementOf = (route: Route): string => {
  if (route.auth === 'none') return 'auth none';
  const { all, any, match } = route.requirement;
  if (all.length === 0 && any.length === 0) return 'any active token';
  const words = [
    ...(all.length > 0 ? [`scopes ${all.join(' ')}`] : []),
    ...(any.length > 0 ? [`one of ${any.join(' ')}`] : []),
  ].join(' and ');
  return match === 'exact' ? words : `${words} (${match})`;
};

/** `earlier` handles every method `later` does. */
function coversMethods(earlier: Route, later: Route): boolean {
  if (!earlier.methods) return true;
  if (!later.methods) return false;
  for (const method of later.methods) if (!earlier.methods.has(method)) return false;
  return true;
}

function sharesMethods(earlier: Route, later: Route): boolean {
  if (!earlier.methods || !later.methods) return true;
  for (const method of later.methods) if (earlier.methods.has(method)) return true;
  return false;
}

/** The methods `later` lists that `earlier` takes too (HEAD counts only when GET is not listed: GET implies it). */
function deadMethods(earlier: Route, later: Route): string[] {
  if (!later.methods) return [];
  const listsGet = later.methods.has('GET');
  return [...later.methods].filter(
    (method) =>
      (!earlier.methods || earlier.methods.has(method)) && !(method === 'HEAD' && listsGet),
  );
}

/** `earlier` matches every path `later` does. */
function coversPaths(earlier: Route, later: Route): boolean {
  if (earlier.kind === 'prefix') return earlier.match(staticStem(later));
  if (later.kind === 'prefix') return false;
  const parameterless = !DYNAMIC_SEGMENT.test(later.pattern);
  if (parameterless) return earlier.match(later.pattern);
  const shape = (pattern: string) => pattern.replace(/:[A-Za-z_$][\w$]*/g, ':').replace(/\/+$/, '');
  return shape(earlier.pattern).toLowerCase() === shape(later.pattern).toLowerCase();
}

/** Some path matches both. */
function sharesPaths(earlier: Route, later: Route): boolean {
  return earlier.match(samplePath(later)) || later.match(samplePath(earlier));
}

/** `earlier` lets through what `later` would refuse. */
function isWeaker(earlier: Route, later: Route): boolean {
  if (later.auth === 'none') return false;
  if (earlier.auth === 'none') return true;
  const before = earlier.requirement;
  const after = later.requirement;
  // Exact matching is the strictest: a token meeting `orders.read` exactly meets it under every
  // strategy, while `orders` meets `orders.read` hierarchically and not exactly.
  if (before.match !== after.match && before.match !== 'exact') return true;
  if (after.all.some((scope) => !before.all.includes(scope))) return true;
  if (after.any.length === 0) return false;
  // `later` wants one of its any_scopes: `earlier` is as strict if it requires one of them
  // outright, or lets through only tokens with one of them.
  if (before.all.some((scope) => after.any.includes(scope))) return false;
  return before.any.length === 0 || before.any.some((scope) => !after.any.includes(scope));
}

export function analyseRoutes(routes: readonly Route[]): RouteFinding[] {
  const findings: RouteFinding[] = [];
  for (const later of routes) {
    for (const earlier of routes) {
      if (earlier.index >= later.index) break;
      if (coversMethods(earlier, later) && coversPaths(earlier, later)) {
        findings.push({
          route: later.index,
          earlier: earlier.index,
          kind: 'unreachable',
          message: `can never match: ${describe(earlier)} comes first and takes every request ${describe(later)} would (first match wins)`,
        });
        break;
      }
      // Methods written on `later` that `earlier` always takes first: every path of `later`
      // is one of `earlier`'s. Only methods the operator wrote count (absent = any method is
      // the broad rule below an exception), and HEAD rides along with GET.
      const dead = coversPaths(earlier, later) ? deadMethods(earlier, later) : [];
      if (dead.length > 0) {
        const weaker = isWeaker(earlier, later)
          ? `, requiring ${requirementOf(earlier)} instead of ${requirementOf(later)}`
          : '';
        findings.push({
          route: later.index,
          earlier: earlier.index,
          kind: 'method_overlap',
          message: `can never match ${dead.join(' ')}: ${describe(earlier)} comes first and takes ${dead.join(' ')} on every path ${describe(later)} matches${weaker}; drop ${dead.length > 1 ? 'them' : 'it'} from one of the two routes`,
        });
        continue;
      }
      // A narrower route first is the deliberate exception (`GET /api/orders/:id` with a read
      // scope above `prefix: /api/orders` with a write scope); a broader one is the mistake.
      if (
        sharesMethods(earlier, later) &&
        sharesPaths(earlier, later) &&
        !coversPaths(later, earlier) &&
        isWeaker(earlier, later)
      ) {
        findings.push({
          route: later.index,
          earlier: earlier.index,
          kind: 'weaker_shadow',
          message: `${describe(earlier)} comes first and takes some requests ${describe(later)} would match, requiring ${requirementOf(earlier)} instead of ${requirementOf(later)}; put the more specific route first`,
        });
      }
    }
  }
  return findings;
}
