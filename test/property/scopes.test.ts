/**
 * Why: a scope check is the last rule between a token and the API. The compiled, allocation-
 * free check (src/policy/scopes.ts) must decide exactly as Ory Oathkeeper's strategies do —
 * which are fosite's ScopeStrategy functions — so the reference below is a line-by-line port
 * of fosite/scope_strategy.go, with Oathkeeper's use of it (every required scope must be met,
 * the token's `scope` split on single spaces). The compiled check is compared with it on
 * generated scopes full of dots, stars and look-alikes, on fosite's own test table, and on
 * hostile inputs: huge scope strings, empty scopes, `*` abuse and odd separators.
 */
import test from 'ava';
import fc from 'fast-check';
import { parseConfig } from '../../src/config/load.js';
import {
  compileScopeRequirement,
  NO_SCOPES,
  parseScopes,
  requiredScopeProblem,
  type ScopeMatch,
} from '../../src/policy/scopes.js';

// ---- reference: fosite/scope_strategy.go, ported as written ------------------------------

function fositeHierarchic(haystack: string[], needle: string): boolean {
  for (const self of haystack) {
    if (self === needle) return true;
    if (self.length > needle.length) continue;
    const needles = needle.split('.');
    const hay = self.split('.');
    const hayLen = hay.length - 1;
    for (let k = 0; k < needles.length; k += 1) {
      if (hayLen < k) return true;
      if (hay[k] !== needles[k]) break;
    }
  }
  return false;
}

function fositeExact(haystack: string[], needle: string): boolean {
  return haystack.includes(needle);
}

function fositeWildcard(matchers: string[], needle: string): boolean {
  const needleParts = needle.split('.');
  for (const matcher of matchers) {
    const matcherParts = matcher.split('.');
    if (matcherParts.length > needleParts.length) continue;
    let noteq = false;
    for (let k = 0; k < matcherParts.length; k += 1) {
      const c = matcherParts[k] as string;
      if (k === matcherParts.length - 1 && matcherParts.length !== needleParts.length) {
        if (c !== '*') {
          noteq = true;
          break;
        }
      }
      if (c === '*' && (needleParts[k] as string).length > 0) continue;
      else if (c !== needleParts[k]) {
        noteq = true;
        break;
      }
    }
    if (!noteq) return true;
  }
  return false;
}

const FOSITE = { exact: fositeExact, hierarchic: fositeHierarchic, wildcard: fositeWildcard };

/** Oathkeeper: `strings.Split(i.Scope, " ")`, then every required scope must be met. */
function reference(match: ScopeMatch, all: string[], any: string[], tokenScope: string): boolean {
  const haystack = tokenScope.split(' ');
  const strategy = FOSITE[match];
  if (!all.every((scope) => strategy(haystack, scope))) return false;
  return any.length === 0 || any.some((scope) => strategy(haystack, scope));
}

const compiled = (match: ScopeMatch, all: string[], any: string[], tokenScope: string) =>
  compileScopeRequirement(all, any, match).satisfiedBy(parseScopes(tokenScope));

// ---- generators -------------------------------------------------------------------------

/** Few segment values, so that generated scopes collide, nest and match often. */
const segment = fc.constantFrom('orders', 'read', 'own', 'a', 'ab', 'b', 'x', '*', 'orders*', '');
const word = fc.array(segment, { minLength: 1, maxLength: 5 }).map((parts) => parts.join('.'));
/** A required scope the config accepts for this strategy. */
const requiredFor = (match: ScopeMatch) =>
  word.filter((scope) => scope !== '' && requiredScopeProblem(scope, match) === null);
/** A token's `scope`: words joined by one or more spaces, empty words included. */
const tokenScope = fc
  .array(fc.tuple(word, fc.constantFrom(' ', '  ')), { maxLength: 6 })
  .map((pairs) => pairs.map(([scope, gap]) => scope + gap).join(''));
const strategy = fc.constantFrom<ScopeMatch>('exact', 'hierarchic', 'wildcard');

test('property: the compiled check decides as Oathkeeper (fosite) on every strategy, all-of and any-of', (t) => {
  fc.assert(
    fc.property(
      strategy.chain((match) =>
        fc.tuple(
          fc.constant(match),
          fc.array(requiredFor(match), { maxLength: 3 }),
          fc.array(requiredFor(match), { maxLength: 3 }),
          tokenScope,
        ),
      ),
      ([match, all, any, scope]) =>
        compiled(match, all, any, scope) === reference(match, all, any, scope),
    ),
    { numRuns: 5000 },
  );
  t.pass();
});

test('property: wildcard matching agrees with fosite even for requirements the config refuses', (t) => {
  // The matcher itself is a faithful port; the config only narrows what may be required.
  fc.assert(
    fc.property(
      word.filter((scope) => scope !== ''),
      tokenScope,
      (needle, scope) =>
        compiled('wildcard', [needle], [], scope) === reference('wildcard', [needle], [], scope),
    ),
    { numRuns: 3000 },
  );
  t.pass();
});

test('property: exact stays exact — a token passes iff it carries every required word', (t) => {
  fc.assert(
    fc.property(fc.array(requiredFor('exact'), { maxLength: 4 }), tokenScope, (all, scope) => {
      const words = new Set(scope.split(' '));
      return compiled('exact', all, [], scope) === all.every((required) => words.has(required));
    }),
  );
  t.pass();
});

test('property: hierarchic and wildcard only ever widen exact; any_scopes only ever narrows', (t) => {
  fc.assert(
    fc.property(
      fc.array(requiredFor('wildcard'), { maxLength: 3 }),
      fc.array(requiredFor('wildcard'), { minLength: 1, maxLength: 3 }),
      tokenScope,
      (all, any, scope) => {
        const exact = compiled('exact', all, [], scope);
        if (exact && !compiled('hierarchic', all, [], scope)) return false;
        if (exact && !compiled('wildcard', all, [], scope)) return false;
        for (const match of ['exact', 'hierarchic', 'wildcard'] as const) {
          if (compiled(match, all, any, scope) && !compiled(match, all, [], scope)) return false;
        }
        return true;
      },
    ),
  );
  t.pass();
});

// ---- fosite's own tables (scope_strategy_test.go) ----------------------------------------

test("fosite's hierarchic table", (t) => {
  const grants = 'foo.bar bar.baz baz.baz.1 baz.baz.2 baz.baz.3 baz.baz.baz';
  const cases: [string, boolean][] = [
    ['foo.bar.baz', true],
    ['baz.baz.baz', true],
    ['foo.bar', true],
    ['foo', false],
    ['bar.baz', true],
    ['bar.baz.zad', true],
    ['bar', false],
    ['baz', false],
  ];
  for (const [needle, expected] of cases) {
    t.is(compiled('hierarchic', [needle], [], grants), expected, needle);
  }
  t.true(compiled('hierarchic', ['offline.baz.bar.baz'], [], 'hydra openid offline'));
  t.false(compiled('hierarchic', ['foo'], [], ''));
  t.false(compiled('hierarchic', ['ordersx.read'], [], 'orders'), 'segment-bounded');
});

test("fosite's wildcard table", (t) => {
  const cases: [string, string, boolean][] = [
    ['*', 'asdf', true],
    ['*', 'asdf.asdf', true],
    ['foo', 'foo', true],
    ['foo*', 'foo', false],
    ['foo*', 'fooa', false],
    ['foo.*', 'foo.bar', true],
    ['foo.*', 'foo.bar.baz', true],
    ['foo.*', 'foo', false],
    ['foo.*.baz', 'foo.bar.baz', true],
    ['foo.*.baz', 'foo.baz', false],
    ['foo.*.baz', 'foo.bar.bar', false],
    ['foo.*.bar.*', 'foo.baz.bar.baz', true],
    ['foo.*.bar.*', 'foo.baz.baz.bar.baz', false],
    ['foo.*.bar.*', 'foo.baz.bar.bar.bar', true],
    ['foo.*.bar.*', 'foo.baz.bar', false],
    ['foo.*.bar.*', 'foo.1.bar.1.2.3.4.5', true],
    ['foo.*.bar', 'foo.bar.bar', true],
    ['foo.*.bar', 'foo.bar.bar.bar', false],
    ['foo.*.bar.*.baz.*', 'foo.bar.bar.baz.baz.baz', true],
    ['foo.*.bar.*.baz.*', 'foo.bar.bar.baz.baz', false],
    ['hydra.* openid offline  hydra', 'hydra.clients.get', true],
    ['hydra.* openid offline  hydra', 'hydra', true],
  ];
  for (const [grants, needle, expected] of cases) {
    t.is(compiled('wildcard', [needle], [], grants), expected, `${grants} → ${needle}`);
    t.is(reference('wildcard', [needle], [], grants), expected, `reference: ${grants} → ${needle}`);
  }
});

test('any_scopes: all of scopes and one of any_scopes; the challenge names one sufficient set', (t) => {
  const requirement = compileScopeRequirement(['orders'], ['read', 'admin'], 'exact');
  t.true(requirement.satisfiedBy(parseScopes('orders admin')));
  t.true(requirement.satisfiedBy(parseScopes('read orders')));
  t.false(requirement.satisfiedBy(parseScopes('read admin')));
  t.false(requirement.satisfiedBy(parseScopes('orders')));
  t.is(requirement.challenge, 'orders read');
  t.is(compileScopeRequirement([], ['a', 'b'], 'exact').challenge, 'a');
  t.is(compileScopeRequirement(['a'], ['a', 'b'], 'exact').challenge, 'a');
  t.is(compileScopeRequirement([], [], 'wildcard').challenge, '');
});

// ---- hostile inputs ---------------------------------------------------------------------

test('hostile: a huge scope string (100k words, 1 MB) is parsed once and decides correctly', (t) => {
  const words = Array.from({ length: 100_000 }, (_, index) => `s${index}.x`);
  const huge = parseScopes(`${words.join(' ')} orders.read`);
  t.is(huge.size, 100_001);
  for (const match of ['exact', 'hierarchic', 'wildcard'] as const) {
    t.true(compileScopeRequirement(['orders.read'], [], match).satisfiedBy(huge), match);
    t.false(compileScopeRequirement(['orders.write'], [], match).satisfiedBy(huge), match);
  }
  // 10k wildcard patterns that all fail: the check still ends, and still says no.
  const stars = parseScopes(Array.from({ length: 10_000 }, (_, i) => `p${i}.*`).join(' '));
  t.false(compileScopeRequirement(['orders.read'], [], 'wildcard').satisfiedBy(stars));
  // One very long word.
  const long = 'a.'.repeat(50_000) + 'b';
  t.true(compileScopeRequirement([long], [], 'hierarchic').satisfiedBy(parseScopes('a')));
  t.false(compileScopeRequirement([long], [], 'hierarchic').satisfiedBy(parseScopes('b')));
});

test('hostile: empty and blank scopes grant nothing, under every strategy', (t) => {
  for (const match of ['exact', 'hierarchic', 'wildcard'] as const) {
    const requirement = compileScopeRequirement(['orders.read'], [], match);
    for (const scope of ['', ' ', '     ', '\t', '.', '..', '.orders.read', 'orders.read.']) {
      t.false(requirement.satisfiedBy(parseScopes(scope)), `${match}: ${JSON.stringify(scope)}`);
    }
    t.false(requirement.satisfiedBy(NO_SCOPES));
    t.true(compileScopeRequirement([], [], match).satisfiedBy(NO_SCOPES), 'no requirement');
  }
  t.is(parseScopes('  a  b ').size, 2);
  t.is(parseScopes(undefined).size, 0);
  t.is(parseScopes(['orders.read']).size, 0, 'an array is not RFC 7662 scope');
  t.is(parseScopes(42).size, 0);
});

test('hostile: `*` means something only under wildcard, and only as a whole segment', (t) => {
  const route = (match: ScopeMatch) => compileScopeRequirement(['orders.read'], [], match);
  for (const scope of ['*', '*.*', 'orders.*', '*.read']) {
    t.false(route('exact').satisfiedBy(parseScopes(scope)), `exact: ${scope}`);
    t.false(route('hierarchic').satisfiedBy(parseScopes(scope)), `hierarchic: ${scope}`);
  }
  // As in Oathkeeper, a lone `*` grants every scope: an authorization server must not issue it.
  t.true(route('wildcard').satisfiedBy(parseScopes('*')));
  t.true(route('wildcard').satisfiedBy(parseScopes('*.read')));
  for (const scope of ['**', 'orders*', 'orders.re*', '*orders.read', 'orders.**', 'orders.*.*']) {
    t.false(route('wildcard').satisfiedBy(parseScopes(scope)), `wildcard: ${scope}`);
  }
});

test('hostile: separators other than one space and one dot are ordinary characters', (t) => {
  const route = (match: ScopeMatch) => compileScopeRequirement(['orders.read'], [], match);
  for (const match of ['exact', 'hierarchic', 'wildcard'] as const) {
    for (const scope of [
      'orders,read',
      'orders\tread',
      'orders\nread',
      'orders.read\t',
      'orders/read',
      'orders:read',
      'orders\u3002read', // ideographic full stop
      'orders\uff0eread', // fullwidth full stop
      'ORDERS.READ',
      'orders.read\u0000',
    ]) {
      t.false(route(match).satisfiedBy(parseScopes(scope)), `${match}: ${JSON.stringify(scope)}`);
    }
    t.false(route(match).satisfiedBy(parseScopes('orders\tread')));
  }
  // A tab or comma does not split: `orders` inside `orders,admin` grants nothing hierarchically.
  t.false(
    compileScopeRequirement(['orders.read'], [], 'hierarchic').satisfiedBy(
      parseScopes('orders,admin'),
    ),
  );
});

test('hostile: the check allocates nothing per request that depends on the token (same answer twice, shared sets)', (t) => {
  // parseScopes is called once per distinct scope string (interned); deciding twice with the
  // same granted set gives the same answer and never mutates it.
  const granted = parseScopes('orders.* admin');
  const requirement = compileScopeRequirement(['orders.read'], ['admin', 'root'], 'wildcard');
  t.true(requirement.satisfiedBy(granted));
  t.true(requirement.satisfiedBy(granted));
  t.deepEqual([...granted], ['orders.*', 'admin']);
  t.deepEqual(granted.wildcards, [['orders', '*']]);
});

// ---- config -----------------------------------------------------------------------------

const configWith = (routes: string, top = '') => `
introspection:
  endpoint: https://as.example.com/introspect
  client_id: tokenguard
  client_secret: s
${top}routes:
${routes}`;

const problemsOf = (text: string): string[] => {
  try {
    parseConfig(text, 'gw.yaml', {});
    return [];
  } catch (error) {
    return (error as Error).message.split('\n');
  }
};

test('config: unknown strategies and unusable patterns are file:line:col errors', (t) => {
  t.deepEqual(problemsOf(configWith('  - prefix: /a\n    scope_match: glob\n')), [
    'gw.yaml:8:18: routes[0].scope_match: must be one of "exact", "hierarchic", "wildcard"',
  ]);
  // Values are case-sensitive; a near miss gets a suggestion.
  t.deepEqual(problemsOf(configWith('  - prefix: /a\n', 'scope_match: Wildcard\n')), [
    'gw.yaml:6:14: scope_match: must be one of "exact", "hierarchic", "wildcard"; did you mean `wildcard`?',
  ]);
  const bad = problemsOf(
    configWith(
      '  - prefix: /a\n    scopes: [orders..read, .x, y.]\n    any_scopes: [orders.*]\n',
      'scope_match: wildcard\n',
    ),
  );
  t.is(bad.length, 4);
  t.regex(bad[0] ?? '', /^gw\.yaml:9:14: routes\[0\]\.scopes\[0\]: has an empty segment/);
  t.regex(bad[1] ?? '', /^gw\.yaml:9:28: routes\[0\]\.scopes\[1\]: has an empty segment/);
  t.regex(bad[2] ?? '', /^gw\.yaml:9:32: routes\[0\]\.scopes\[2\]: has an empty segment/);
  t.regex(
    bad[3] ?? '',
    /^gw\.yaml:10:18: routes\[0\]\.any_scopes\[0\]: cannot contain a "\*" segment/,
  );
  // The same words are fine under exact (an ordinary word), and a route may override.
  t.deepEqual(problemsOf(configWith('  - prefix: /a\n    scopes: [orders..read, "*"]\n')), []);
  t.deepEqual(
    problemsOf(
      configWith(
        '  - prefix: /a\n    scope_match: exact\n    scopes: ["orders.*"]\n',
        'scope_match: wildcard\n',
      ),
    ),
    [],
  );
  t.deepEqual(problemsOf(configWith('  - prefix: /a\n    any_scopes: []\n')), [
    'gw.yaml:8:17: routes[0].any_scopes: must not be empty',
  ]);
  t.deepEqual(problemsOf(configWith('  - prefix: /a\n    auth: none\n    any_scopes: [a]\n')), [
    'gw.yaml:9:17: routes[0].any_scopes: cannot be required on a route with `auth: none`',
  ]);
  t.deepEqual(problemsOf(configWith('  - prefix: /a\n    any_scopes: ["a b"]\n')), [
    'gw.yaml:8:18: routes[0].any_scopes[0]: must be a single RFC 6749 scope token',
  ]);
});
