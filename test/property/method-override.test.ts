/**
 * Why: `?_method=DELETE` makes Rails, Laravel, Symfony or Express's method-override run a
 * request as another method after the gateway authorised it as the one it saw (PRODUCT.md
 * "Routing": a `_method` query parameter in any case is a 400). A detector that misses one
 * spelling the frameworks accept is a bypass; one that fires on other parameters breaks
 * ordinary requests. The detector is src/policy/method-override.ts.
 */
import test from 'ava';
import fc from 'fast-check';
import { hasMethodOverrideParameter } from '../../src/policy/method-override.js';
import { percentEncode } from './_paths.js';

/** Each character of `name` as it is, in the other case, or percent-encoded (either hex case). */
const spelledName = (name: string, encodings: number) =>
  fc
    .tuple(
      ...[...name].map((char) =>
        fc.constantFrom(
          char,
          char.toUpperCase(),
          ...(encodings >= 1 ? [percentEncode(char, true), percentEncode(char, false)] : []),
          ...(encodings >= 2 ? [percentEncode(percentEncode(char, true), false)] : []),
        ),
      ),
    )
    .map((chars) => chars.join(''));

const otherParameter = fc.oneof(
  fc.stringMatching(/^[a-z0-9]{1,8}(?:=[a-zA-Z0-9%]{0,6})?$/),
  fc.constantFrom(
    'method=DELETE',
    'x_method=1',
    '_methods=1',
    '__method=1',
    'a=_method',
    'a[_method]=1',
    '',
  ),
);

/** A query with `name` among other parameters, `&` or `;` between them. */
const queryWith = (name: fc.Arbitrary<string>) =>
  fc
    .tuple(
      fc.array(otherParameter, { maxLength: 3 }),
      name,
      fc.constantFrom('', '=DELETE', '=put', '='),
      fc.array(otherParameter, { maxLength: 3 }),
      fc.constantFrom('&', ';'),
    )
    .map(
      ([before, parameter, value, after, separator]) =>
        `?${[...before, parameter + value, ...after].join(separator)}`,
    );

test('contract: _method in any case, escaped or not, is found wherever it stands in the query', (t) => {
  fc.assert(
    fc.property(queryWith(spelledName('_method', 1)), (search) =>
      hasMethodOverrideParameter(search),
    ),
    { numRuns: 2_000 },
  );
  t.pass();
});

test('what src/policy/method-override.ts adds: escaped twice, + or %20 for a leading space, PHP . and [] forms', (t) => {
  const lenient = fc
    .tuple(
      fc.constantFrom('', '+', '%20', '++'),
      fc.constantFrom('_', '.', '%2E', '%255F'),
      spelledName('method', 2),
      fc.constantFrom('', '[]', '[x]'),
    )
    .map((parts) => parts.join(''));
  fc.assert(
    fc.property(queryWith(lenient), (search) => hasMethodOverrideParameter(search)),
    { numRuns: 2_000 },
  );
  t.pass();
});

test('queries without a _method parameter are never refused', (t) => {
  fc.assert(
    fc.property(
      fc.array(otherParameter, { maxLength: 6 }),
      fc.constantFrom('&', ';'),
      (parameters, separator) => !hasMethodOverrideParameter(`?${parameters.join(separator)}`),
    ),
    { numRuns: 2_000 },
  );
  t.pass();
});
