/**
 * Why: the bearer parser is the first code every hostile request reaches, and what it returns
 * is sent to the authorization server and hashed into the cache key. PRODUCT.md's status
 * table: malformed credentials (empty, illegal characters, over 4 KiB, two tokens) are a 400
 * `invalid_request` without asking the authorization server — never a crash, never a token
 * that is not RFC 6750 §2.1 `b64token`, never one of two Authorization fields picked at
 * random. Requests are built the way Node builds them (./_node-headers.ts).
 */
import test from 'ava';
import fc from 'fast-check';
import { GatewayError } from '../../src/errors.js';
import {
  countRawHeader,
  MAX_TOKEN_BYTES,
  readBearerCredentials,
  type BearerCredentials,
} from '../../src/token/extract-bearer-token.js';
import { fakeRequest, flattenRaw } from './_node-headers.js';

/** RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const B64_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/';

type Outcome = BearerCredentials | { kind: 'refused'; status: number };

/** Runs the parser; a GatewayError becomes a value, anything else is rethrown (a bug). */
function parse(rawHeaders: readonly string[]): Outcome {
  try {
    return readBearerCredentials(fakeRequest(rawHeaders));
  } catch (error) {
    if (error instanceof GatewayError) return { kind: 'refused', status: error.status };
    throw error;
  }
}

const randomCase = (word: string) =>
  fc
    .array(fc.boolean(), { minLength: word.length, maxLength: word.length })
    .map((upper) =>
      [...word].map((char, index) => (upper[index] ? char.toUpperCase() : char)).join(''),
    );

const b64Char = fc.constantFrom(...B64_CHARS);
const b64token = (minLength: number, maxLength: number) =>
  fc
    .tuple(
      fc.string({ unit: b64Char, minLength, maxLength }),
      fc.string({ unit: fc.constant('='), maxLength: 3 }),
    )
    .map(([body, padding]) => body + padding);

/** Anything a client could put after the scheme, well-formed or not. */
const credentials = fc.oneof(
  { weight: 4, arbitrary: b64token(1, 64) },
  { weight: 1, arbitrary: b64token(MAX_TOKEN_BYTES - 4, MAX_TOKEN_BYTES + 4) },
  { weight: 1, arbitrary: fc.string({ unit: b64Char, minLength: 4_000, maxLength: 10_000 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  {
    weight: 2,
    // A good token with one foreign character spliced in: `=` in the middle, space, comma, …
    arbitrary: fc
      .tuple(
        b64token(1, 40),
        fc.nat(),
        fc.constantFrom('=', ' ', ',', '"', '\t', '\0', 'é', '\u212a'),
      )
      .map(
        ([token, at, char]) =>
          token.slice(0, at % (token.length + 1)) + char + token.slice(at % (token.length + 1)),
      ),
  },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', '=', '==', 'a b', 'a, Bearer b') },
);

const schemes = fc.oneof(
  { weight: 8, arbitrary: randomCase('bearer') },
  { weight: 1, arbitrary: fc.constantFrom('Basic', 'DPoP', 'Bearerx', 'Beare', 'Bearer,', '') },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }) },
);

const separators = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: fc.constant(' '), minLength: 1, maxLength: 4 }) },
  { weight: 1, arbitrary: fc.constantFrom('', '\t', ' \t', '\u00a0') },
);

/** Authorization header values: mostly `<scheme><spaces><credentials>`, sometimes garbage. */
const authorizationValues = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.tuple(schemes, separators, credentials).map((parts) => parts.join('')),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 200 }) },
);

const authorizationName = fc.oneof(
  { weight: 8, arbitrary: randomCase('authorization') },
  { weight: 1, arbitrary: fc.constantFrom('Authorisation', 'Authorization ', 'X-Authorization') },
);

const otherField = fc.tuple(
  fc.constantFrom('Host', 'Accept', 'Proxy-Authorization', 'DPoP', 'X-Auth'),
  fc.string({ maxLength: 20 }),
);

/** Raw header lines: other fields around zero to three Authorization fields. */
const rawHeaderLists = fc
  .tuple(
    fc.oneof(
      { weight: 6, arbitrary: fc.tuple(fc.tuple(authorizationName, authorizationValues)) },
      {
        weight: 3,
        arbitrary: fc.array(fc.tuple(authorizationName, authorizationValues), { maxLength: 3 }),
      },
    ),
    fc.array(otherField, { maxLength: 3 }),
    fc.nat(),
  )
  .map(([authorizations, others, seed]) => {
    const fields: Array<readonly [string, string]> = [...others];
    for (const [index, field] of authorizations.entries()) {
      fields.splice((seed + index * 7) % (fields.length + 1), 0, field);
    }
    return flattenRaw(fields);
  });

const authorizationCount = (raw: readonly string[]) =>
  raw.filter((name, index) => index % 2 === 0 && name.toLowerCase() === 'authorization').length;

test('never throws anything but a 400; a token is b64token, at most 4 KiB, and exactly what follows "Bearer" and its spaces', (t) => {
  fc.assert(
    fc.property(rawHeaderLists, (raw) => {
      const outcome = parse(raw);
      if (outcome.kind === 'refused') return outcome.status === 400;
      const header = fakeRequest(raw).headers.authorization;
      const bearer = header === undefined ? null : /^bearer +/i.exec(header);
      if (outcome.kind === 'absent') {
        // Absent means no Bearer credentials at all (401), never malformed ones let through.
        return bearer === null && !/^bearer$/i.test(header ?? '');
      }
      return (
        B64TOKEN.test(outcome.token) &&
        outcome.token.length <= MAX_TOKEN_BYTES &&
        bearer !== null &&
        outcome.token === (header as string).slice(bearer[0].length) &&
        authorizationCount(raw) === 1
      );
    }),
    { numRuns: 3_000 },
  );
  t.pass();
});

test('two Authorization fields are never read as one token, whatever their order and spelling', (t) => {
  fc.assert(
    fc.property(
      fc.tuple(authorizationName, authorizationValues),
      fc.tuple(randomCase('authorization'), fc.tuple(randomCase('bearer'), b64token(1, 40))),
      fc.boolean(),
      (other, [name, [scheme, token]], bearerFirst) => {
        const bearerField = [name, `${scheme} ${token}`] as const;
        const raw = flattenRaw(bearerFirst ? [bearerField, other] : [other, bearerField]);
        const outcome = parse(raw);
        return authorizationCount(raw) < 2 || outcome.kind === 'refused';
      },
    ),
    { numRuns: 1_000 },
  );
  t.pass();
});

test('the scheme is case-insensitive and any run of spaces separates it; tokens over 4 KiB are a 400', (t) => {
  fc.assert(
    fc.property(
      randomCase('bearer'),
      fc.integer({ min: 1, max: 5 }),
      fc.oneof(b64token(1, 80), b64token(MAX_TOKEN_BYTES - 3, MAX_TOKEN_BYTES + 3)),
      (scheme, spaces, token) => {
        const outcome = parse(['Authorization', `${scheme}${' '.repeat(spaces)}${token}`]);
        return token.length <= MAX_TOKEN_BYTES
          ? outcome.kind === 'token' && outcome.token === token
          : outcome.kind === 'refused' && outcome.status === 400;
      },
    ),
    { numRuns: 1_000 },
  );
  t.pass();
});

test('countRawHeader counts exactly the fields of that name, in any case, and nothing else', (t) => {
  const names = fc.oneof(
    randomCase('authorization'),
    randomCase('host'),
    fc.constantFrom('authorizatıon', 'authorization\u0307', 'hoſt', 'Authorization ', 'x-host'),
    fc.string({ unit: 'binary', maxLength: 14 }),
  );
  fc.assert(
    fc.property(
      fc.array(fc.tuple(names, fc.string({ maxLength: 5 })), { maxLength: 12 }),
      fc.constantFrom('authorization', 'host'),
      (fields, wanted) => {
        const expected = fields.filter(([name]) => name.toLowerCase() === wanted).length;
        return countRawHeader(flattenRaw(fields), wanted) === expected;
      },
    ),
    { numRuns: 2_000 },
  );
  t.pass();
});
