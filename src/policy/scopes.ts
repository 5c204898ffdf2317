/**
 * Scope requirements: what a route asks of a token's `scope` (RFC 7662 §2.2, space-separated
 * words), compiled once per route at config load so the per-request check is a handful of
 * Set lookups — no split, no regular expression, no allocation.
 *
 * A route requires every word of `scopes` (all-of) and, when `any_scopes` is given, at least
 * one of those (any-of). How a granted word satisfies a required one is the route's
 * `scope_match`, with Ory Oathkeeper's strategies (which are fosite's `ScopeStrategy`
 * functions, fosite/scope_strategy.go):
 *
 * - `exact`: the very word (case-sensitive). The default, and what tokenguard always did.
 * - `hierarchic`: a granted scope grants itself and every scope below it, `.` separating the
 *   levels: `orders` grants `orders.read` and `orders.read.own`; `orders.read` does not grant
 *   `orders`, and `orders` does not grant `ordersx`.
 * - `wildcard`: the token's scopes are patterns, `*` standing for one whole `.`-separated
 *   segment: `orders.*.own` grants `orders.read.own`. As in fosite, a `*` that is the
 *   pattern's last segment stands for one *or more* segments: `orders.*` grants
 *   `orders.read` and `orders.read.own`, never `orders` itself; a lone `*` grants every
 *   scope. A `*` inside a segment (`orders*`) is an ordinary character.
 *
 * Differences from Oathkeeper, all at config load: a required scope under `hierarchic` or
 * `wildcard` must have no empty segment (`orders..read`, `.orders`, `orders.`), and under
 * `wildcard` no `*` segment — fosite would accept `orders.*` as a requirement, met only by
 * tokens that carry a wildcard themselves, which is never what the operator meant.
 * Oathkeeper's `none` strategy (hand the scopes to the authorization server) has no
 * equivalent: tokenguard always checks scopes itself.
 */

export const SCOPE_MATCHES = ['exact', 'hierarchic', 'wildcard'] as const;
export type ScopeMatch = (typeof SCOPE_MATCHES)[number];

/**
 * A token's granted scopes: the words, plus (for the wildcard strategy) the words holding a
 * `*`, already split into segments. Built once per distinct `scope` string (the
 * introspection service interns them), never per request.
 */
export interface GrantedScopes extends ReadonlySet<string> {
  readonly wildcards: readonly (readonly string[])[];
}

/** RFC 7662 §2.2 `scope`: space-separated words; empty words (two spaces) are no scope. */
export function parseScopes(scope: unknown): GrantedScopes {
  const words = typeof scope === 'string' && scope !== '' ? scope.split(' ') : [];
  const granted = new Set<string>();
  const wildcards: string[][] = [];
  for (const word of words) {
    if (word === '' || granted.has(word)) continue;
    granted.add(word);
    if (word.includes('*')) wildcards.push(word.split('.'));
  }
  return Object.assign(granted, { wildcards });
}

export const NO_SCOPES: GrantedScopes = parseScopes('');

export interface ScopeRequirement {
  readonly match: ScopeMatch;
  /** Every one of them is required. */
  readonly all: readonly string[];
  /** At least one of them is required (empty: no any-of requirement). */
  readonly any: readonly string[];
  /**
   * The RFC 6750 §3 `scope=` of a 403: one set of scopes that suffices — every word of
   * `all`, then the first of `any` (the operator's preferred, least-privileged alternative).
   */
  readonly challenge: string;
  /** The whole requirement, precompiled: does a token with these scopes pass? */
  readonly satisfiedBy: (granted: GrantedScopes) => boolean;
}

/** Why a required scope cannot be used with a strategy; null when it can. */
export function requiredScopeProblem(scope: string, match: ScopeMatch): string | null {
  if (match === 'exact') return null;
  const segments = scope.split('.');
  if (segments.some((segment) => segment === '')) {
    return `has an empty segment (scope_match ${match} splits scopes at "."): write e.g. orders.read`;
  }
  if (match === 'wildcard' && segments.includes('*')) {
    return 'cannot contain a "*" segment: under scope_match wildcard the token\'s scopes are the patterns (a token with orders.* passes a route requiring orders.read); require the concrete scope';
  }
  return null;
}

/** One required word, compiled for its strategy. */
type Test = (granted: GrantedScopes) => boolean;

function compileOne(scope: string, match: ScopeMatch): Test {
  if (match === 'exact') return (granted) => granted.has(scope);
  if (match === 'hierarchic') {
    // The word and each of its ancestors, nearest first: orders.read.own, orders.read, orders.
    const grantors: string[] = [scope];
    for (let dot = scope.lastIndexOf('.'); dot > 0; dot = scope.lastIndexOf('.', dot - 1)) {
      grantors.push(scope.slice(0, dot));
    }
    return (granted) => {
      for (const grantor of grantors) if (granted.has(grantor)) return true;
      return false;
    };
  }
  const needle = scope.split('.');
  return (granted) => {
    // A pattern without `*` grants only the very word it is (fosite: segment by segment).
    if (granted.has(scope)) return true;
    for (const pattern of granted.wildcards) if (wildcardGrants(pattern, needle)) return true;
    return false;
  };
}

/** fosite's WildcardScopeStrategy for one matcher, on segments split beforehand. */
export function wildcardGrants(pattern: readonly string[], needle: readonly string[]): boolean {
  const last = pattern.length - 1;
  if (last >= needle.length) return false;
  for (let k = 0; k <= last; k += 1) {
    const segment = pattern[k] as string;
    const wanted = needle[k] as string;
    if (segment === '*') {
      if (wanted === '') return false;
    } else if (k === last && last !== needle.length - 1) {
      return false; // a shorter pattern must end in `*`
    } else if (segment !== wanted) {
      return false;
    }
  }
  return true;
}

export function compileScopeRequirement(
  all: readonly string[],
  any: readonly string[],
  match: ScopeMatch,
): ScopeRequirement {
  const challengeWords = [...all];
  const preferred = any[0];
  if (preferred !== undefined && !challengeWords.includes(preferred))
    challengeWords.push(preferred);
  const base = { match, all, any, challenge: challengeWords.join(' ') };
  if (match === 'exact' && any.length === 0) {
    // The common case stays what it always was: one Set lookup per required word.
    return {
      ...base,
      satisfiedBy: (granted) => {
        for (const scope of all) if (!granted.has(scope)) return false;
        return true;
      },
    };
  }
  const allTests = all.map((scope) => compileOne(scope, match));
  const anyTests = any.map((scope) => compileOne(scope, match));
  return {
    ...base,
    satisfiedBy: (granted) => {
      for (const test of allTests) if (!test(granted)) return false;
      if (anyTests.length === 0) return true;
      for (const test of anyTests) if (test(granted)) return true;
      return false;
    },
  };
}

/** Every word a requirement names, for `scopes_supported` (RFC 9728 §2). */
export function scopesNamed(requirements: readonly ScopeRequirement[]): string[] {
  const named = new Set<string>();
  for (const requirement of requirements) {
    for (const scope of requirement.all) named.add(scope);
    for (const scope of requirement.any) named.add(scope);
  }
  return [...named];
}
