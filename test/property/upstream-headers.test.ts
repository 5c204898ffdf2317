/**
 * Why: the upstream trusts what the gateway sends it. An identity header a client managed to
 * set itself (`X_Auth_Subject`, `x-auth-SUBJECT`), a method override that turns an authorised
 * GET into a DELETE, a hop-by-hop field, or a `Connection:` token that removes the Host or
 * the gateway's own fields is an authorization bypass, not a cosmetic bug (PRODUCT.md "What
 * the upstream receives"). Client headers are folded the way Node folds them
 * (./_node-headers.ts); identity headers come from the real claim encoder.
 */
import type { IncomingHttpHeaders } from 'node:http';
import test from 'ava';
import fc from 'fast-check';
import { GatewayError } from '../../src/errors.js';
import {
  buildIdentityHeaders,
  compileIdentityMapping,
  identityPairs,
  encodeHeaderValue,
  MAX_IDENTITY_HEADER_BYTES,
  type IdentityHeaders,
} from '../../src/proxy/identity-headers.js';
import {
  buildUpstreamHeaders,
  createUpstreamHeaderPolicy,
  PROXY_ASSERTED,
  type ForwardingFacts,
} from '../../src/proxy/upstream-headers.js';
import { flattenRaw, nodeHeaders } from './_node-headers.js';

const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'upgrade',
  'proxy-authorization',
  'proxy-connection',
];
const METHOD_OVERRIDES = ['x-http-method-override', 'x-http-method', 'x-method-override'];
const FORWARDED = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-id'];
/** `Connection` may never remove these: the request needs them end to end. */
const END_TO_END = ['host', 'content-length', 'transfer-encoding'];

/** Identity headers as a config could spell them; each test configures some of them. */
const IDENTITY_POOL = [
  'X-Auth-Subject',
  'X-Auth-Client-Id',
  'X-Auth-Scope',
  'X_Auth_Tenant',
  'x-user',
];
const OTHER_NAMES = [
  'Host',
  'Content-Length',
  'Transfer-Encoding',
  'Authorization',
  'Expect',
  'Accept',
  'Cookie',
  'Set-Cookie',
  'X-Request-Id',
  'Forwarded',
  'Proxy-Authenticate',
];

/** How a field is told apart from another: case and `_` for `-` do not count. */
const canonical = (name: string) => name.toLowerCase().replaceAll('_', '-');

/** A header name spelled with random case and random `_` for `-`. */
const spelling = (name: string) =>
  fc
    .array(fc.integer({ min: 0, max: 3 }), { minLength: name.length, maxLength: name.length })
    .map((choices) =>
      [...name]
        .map((char, index) => {
          const choice = choices[index] ?? 0;
          if (char === '-' || char === '_') return choice < 2 ? '-' : '_';
          return choice % 2 === 0 ? char.toLowerCase() : char.toUpperCase();
        })
        .join(''),
    );

const knownName = fc.constantFrom(
  ...IDENTITY_POOL,
  ...HOP_BY_HOP,
  ...METHOD_OVERRIDES,
  ...FORWARDED,
  ...OTHER_NAMES,
);
const fieldName = fc.oneof(
  { weight: 5, arbitrary: knownName.chain(spelling) },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z][A-Za-z0-9_-]{0,10}$/) },
);

/** `Connection` values: tokens naming other fields, the usual words, odd spacing. */
const connectionValue = fc
  .array(
    fc.oneof(
      { weight: 4, arbitrary: knownName.chain(spelling) },
      { weight: 2, arbitrary: fc.constantFrom(...END_TO_END).chain(spelling) },
      { weight: 1, arbitrary: fc.constantFrom('close', 'keep-alive', 'Keep-Alive', 'Upgrade', '') },
    ),
    { minLength: 1, maxLength: 4 },
  )
  .chain((tokens) => fc.constantFrom(', ', ',', ' ,  ').map((comma) => tokens.join(comma)));

const printable = fc.string({ maxLength: 20 }).map((value) => value.trim());

const field = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fieldName, printable) },
  { weight: 2, arbitrary: fc.tuple(spelling('Connection'), connectionValue) },
  { weight: 1, arbitrary: fc.tuple(spelling('Upgrade'), fc.constantFrom('websocket', 'h2c')) },
  { weight: 1, arbitrary: fc.tuple(spelling('Host'), fc.domain()) },
  { weight: 1, arbitrary: fc.tuple(spelling('Content-Length'), fc.nat().map(String)) },
  { weight: 1, arbitrary: fc.tuple(spelling('Transfer-Encoding'), fc.constant('chunked')) },
  { weight: 1, arbitrary: fc.tuple(spelling('X-Forwarded-For'), fc.ipV4()) },
);

const clientHeaders = fc
  .array(field, { maxLength: 14 })
  .map((fields) => nodeHeaders(flattenRaw(fields)));

const facts = fc.record({
  peerAddress: fc.oneof(fc.ipV4(), fc.ipV6()),
  keepForwardedFor: fc.boolean(),
  proto: fc.constantFrom('http' as const, 'https' as const),
  websocket: fc.boolean(),
  requestId: fc.uuid(),
});

/** Claim values of every JSON type; null is a missing claim. */
const claim = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.integer(),
  fc.boolean(),
  fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 3 }), fc.string({ maxLength: 3 }), { maxKeys: 2 }),
  fc.constant(null),
);

/** Configured identity headers, the claims they map, and the values the gateway computed. */
const identities = fc
  .tuple(
    fc.subarray(IDENTITY_POOL, { minLength: 1 }),
    fc.array(claim, {
      minLength: IDENTITY_POOL.length,
      maxLength: IDENTITY_POOL.length,
    }),
    fc.boolean(),
  )
  .map(([names, values, stripAuthorization]) => {
    const config = Object.fromEntries(names.map((name, index) => [name, `claim${index}`]));
    const claims: Record<string, unknown> = {};
    for (const [index, value] of values.entries()) {
      if (value !== null) claims[`claim${index}`] = value;
    }
    const identity = buildIdentityHeaders(claims, compileIdentityMapping(config));
    const policy = createUpstreamHeaderPolicy({ identityHeaders: names, stripAuthorization });
    return { names, identity, policy, stripAuthorization };
  });

interface Case {
  headers: IncomingHttpHeaders;
  names: string[];
  identity: IdentityHeaders;
  stripAuthorization: boolean;
  facts: ForwardingFacts;
  upstream: IncomingHttpHeaders;
}

const cases = fc
  .tuple(clientHeaders, identities, facts)
  .map(([headers, { names, identity, policy, stripAuthorization }, forwarding]): Case => {
    // Built from a copy: the checks compare with what the client sent even if it were edited in place.
    const upstream = buildUpstreamHeaders(structuredClone(headers), policy, identity, forwarding);
    return { headers, names, identity, stripAuthorization, facts: forwarding, upstream };
  });

/** Canonical names the client's `Connection` field names. */
const connectionNamed = (headers: IncomingHttpHeaders) =>
  new Set(
    (headers.connection ?? '')
      .split(',')
      .map((token) => canonical(token.trim()))
      .filter((token) => token !== ''),
  );

const NUM_RUNS = 2_000;

test('no client-sent identity header reaches the upstream in any spelling; the gateway sets its own', (t) => {
  fc.assert(
    fc.property(cases, ({ names, identity, upstream }) => {
      const configured = new Set(names.map(canonical));
      const injected = new Map(identityPairs(identity));
      for (const [name, value] of Object.entries(upstream)) {
        if (configured.has(canonical(name)) && injected.get(name) !== value) return false;
      }
      return identityPairs(identity).every(([name, value]) => upstream[name] === value);
    }),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('no hop-by-hop field, and no field the client Connection names, reaches the upstream (WebSocket keeps Connection: upgrade)', (t) => {
  fc.assert(
    fc.property(cases, ({ headers, identity, facts: forwarding, upstream }) => {
      const named = connectionNamed(headers);
      const gatewaySet = new Set([...FORWARDED, ...identityPairs(identity).map(([name]) => name)]);
      for (const name of Object.keys(upstream)) {
        const key = canonical(name);
        const websocketField =
          forwarding.websocket && (name === 'connection' || name === 'upgrade');
        if (HOP_BY_HOP.includes(key) && !websocketField) return false;
        if (
          named.has(key) &&
          !END_TO_END.includes(key) &&
          !gatewaySet.has(name) &&
          !websocketField
        ) {
          return false;
        }
      }
      return (
        !forwarding.websocket ||
        (upstream.connection === 'upgrade' && /^websocket$/i.test(String(upstream.upgrade)))
      );
    }),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('the upstream gets one request id, the one the gateway chose, whatever the client sent in any spelling', (t) => {
  fc.assert(
    fc.property(cases, ({ facts: forwarding, upstream }) => {
      const ids = Object.keys(upstream).filter((name) => canonical(name) === 'x-request-id');
      return ids.length === 1 && upstream['x-request-id'] === forwarding.requestId;
    }),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('no method-override header reaches the upstream in any spelling', (t) => {
  fc.assert(
    fc.property(cases, ({ upstream }) =>
      Object.keys(upstream).every((name) => !METHOD_OVERRIDES.includes(canonical(name))),
    ),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('X-Forwarded-For ends with the peer and keeps the client value only from a trusted proxy; -Proto and -Host are the gateway’s', (t) => {
  fc.assert(
    fc.property(cases, ({ headers, facts: forwarding, upstream }) => {
      const client = headers['x-forwarded-for'];
      const expected =
        forwarding.keepForwardedFor && client
          ? `${client}, ${forwarding.peerAddress}`
          : forwarding.peerAddress;
      const spellings = Object.keys(upstream).filter((name) => FORWARDED.includes(canonical(name)));
      return (
        upstream['x-forwarded-for'] === expected &&
        upstream['x-forwarded-proto'] === forwarding.proto &&
        upstream['x-forwarded-host'] === headers.host &&
        spellings.every((name) => FORWARDED.includes(name))
      );
    }),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('Host, Content-Length and Transfer-Encoding are never removed by a Connection token', (t) => {
  fc.assert(
    fc.property(cases, ({ headers, facts: forwarding, upstream }) =>
      END_TO_END.every(
        (name) =>
          // A WebSocket handshake has no body: its Content-Length is dropped on purpose.
          (forwarding.websocket && name === 'content-length') || upstream[name] === headers[name],
      ),
    ),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('every other client field reaches the upstream unchanged (Authorization unless strip_authorization)', (t) => {
  fc.assert(
    fc.property(
      cases,
      ({ headers, names, identity, stripAuthorization, facts: forwarding, upstream }) => {
        const named = connectionNamed(headers);
        const owned = new Set([
          ...HOP_BY_HOP,
          ...METHOD_OVERRIDES,
          ...FORWARDED,
          'expect',
          'dpop',
          'proxy-authenticate',
          ...PROXY_ASSERTED,
          ...names.map(canonical),
        ]);
        const injected = new Set(identityPairs(identity).map(([name]) => name));
        return Object.entries(headers).every(([name, value]) => {
          const key = canonical(name);
          if (owned.has(key) || injected.has(name)) return true;
          if (named.has(key) && !END_TO_END.includes(key)) return true;
          if (name === 'authorization' && stripAuthorization) return upstream[name] === undefined;
          if (name === 'content-length' && forwarding.websocket) return true;
          return JSON.stringify(upstream[name]) === JSON.stringify(value);
        });
      },
    ),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('contract: with an absolute-form target the upstream Host (and X-Forwarded-Host) is the target authority', (t) => {
  fc.assert(
    fc.property(
      clientHeaders,
      identities,
      facts,
      fc.domain().chain((host) => fc.constantFrom(host, `${host}:8443`)),
      (headers, { identity, policy }, forwarding, authority) => {
        const upstream = buildUpstreamHeaders(headers, policy, identity, {
          ...forwarding,
          authority,
        });
        return upstream.host === authority && upstream['x-forwarded-host'] === authority;
      },
    ),
    { numRuns: 500 },
  );
  t.pass();
});

test('contract (sender-constrained tokens): a client DPoP header never reaches the upstream', (t) => {
  fc.assert(
    fc.property(
      identities,
      facts,
      spelling('DPoP'),
      printable,
      ({ identity, policy }, forwarding, name, proof) => {
        const headers = nodeHeaders([name, proof || 'eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.sig']);
        const upstream = buildUpstreamHeaders(headers, policy, identity, forwarding);
        return Object.keys(upstream).every((key) => canonical(key) !== 'dpop');
      },
    ),
    { numRuns: 200 },
  );
  t.pass();
});

// ----- identity header values -----

/** Printable ASCII (space allowed) with `%` only as the start of an upper-case escape. */
const HEADER_SAFE = /^(?:[\x20-\x24\x26-\x7e]|%[0-9A-F]{2})*$/;

test('encodeHeaderValue always answers printable ASCII, % only in upper-case escapes — even for lone surrogates', (t) => {
  const codeUnits = fc.string({
    unit: fc.integer({ min: 0, max: 0xffff }).map((unit) => String.fromCharCode(unit)),
    maxLength: 40,
  });
  fc.assert(
    fc.property(
      fc.oneof(fc.string({ unit: 'binary' }), codeUnits, fc.string({ unit: 'binary-ascii' })),
      (value) => HEADER_SAFE.test(encodeHeaderValue(value)),
    ),
    { numRuns: 5_000 },
  );
  t.pass();
});

test('encodeHeaderValue is reversible: decodeURIComponent gives back any well-formed string', (t) => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ unit: 'binary' }),
        fc.string({ unit: 'grapheme' }),
        fc.string({ unit: fc.constantFrom('%', '%2', '%25', '%41', '+', ' ', '\r\n', 'é', '😀') }),
      ),
      (value) => decodeURIComponent(encodeHeaderValue(value)) === value,
    ),
    { numRuns: 5_000 },
  );
  t.pass();
});

test('encodeHeaderValue leaves printable ASCII without % exactly as it is', (t) => {
  fc.assert(
    fc.property(
      fc.string().filter((value) => !value.includes('%')),
      (value) => encodeHeaderValue(value) === value,
    ),
    { numRuns: 1_000 },
  );
  t.pass();
});

/** PRODUCT.md: strings as they are, numbers and booleans as JSON, arrays joined with a space, objects as JSON. */
const claimText = (value: unknown): string =>
  typeof value === 'string'
    ? value
    : Array.isArray(value)
      ? value.map((item) => (typeof item === 'string' ? item : JSON.stringify(item))).join(' ')
      : JSON.stringify(value);

/** What percent-encoding makes of a text: 1 byte per safe character, 3 per UTF-8 byte of the others. */
const encodedSize = (text: string) =>
  [...text].reduce(
    (size, char) => size + (/[\x20-\x24\x26-\x7e]/.test(char) ? 1 : 3 * Buffer.byteLength(char)),
    0,
  );

test('identity headers: one per present claim, header-safe and reversible; over 8 KiB encoded is a 503', (t) => {
  const claimValue = fc.oneof(
    { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 1 }) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 100 }) },
    {
      // Around the 8 KiB limit once encoded.
      weight: 1,
      arbitrary: fc
        .tuple(
          fc.string({ unit: 'binary', minLength: 1, maxLength: 3 }),
          fc.integer({ min: 8_100, max: 8_300 }),
        )
        .map(([chunk, target]) => chunk.repeat(Math.ceil(target / encodedSize(chunk)))),
    },
    {
      // Exactly at the limit, give or take a few bytes.
      weight: 1,
      arbitrary: fc
        .tuple(
          fc.integer({ min: MAX_IDENTITY_HEADER_BYTES - 3, max: MAX_IDENTITY_HEADER_BYTES + 3 }),
          fc.constantFrom('', 'é', '%', '😀'),
        )
        .map(([size, tail]) => 'x'.repeat(size - encodedSize(tail)) + tail),
    },
  );
  fc.assert(
    fc.property(
      // undefined: the claim is missing; null: present as JSON null. Neither gives a header.
      fc.dictionary(fc.stringMatching(/^[a-z_]{1,8}$/), fc.option(claimValue, { nil: undefined })),
      (claims) => {
        const names = Object.keys(claims);
        const mapping = compileIdentityMapping(
          Object.fromEntries(names.map((claim) => [`X-Claim-${claim}`, claim])),
        );
        const present = names.filter(
          (claim) => claims[claim] !== undefined && claims[claim] !== null,
        );
        const tooLarge = present.some(
          (claim) => encodedSize(claimText(claims[claim])) > MAX_IDENTITY_HEADER_BYTES,
        );
        let headers: IdentityHeaders;
        try {
          headers = buildIdentityHeaders(claims, mapping);
        } catch (error) {
          return tooLarge && error instanceof GatewayError && error.status === 503;
        }
        const byName = new Map(identityPairs(headers));
        return (
          !tooLarge &&
          identityPairs(headers).length === present.length &&
          present.every((claim) => {
            const value = byName.get(`x-claim-${claim}`);
            return (
              value !== undefined &&
              HEADER_SAFE.test(value) &&
              decodeURIComponent(value) === claimText(claims[claim]).replace(/\p{Cs}/gu, '\uFFFD')
            );
          })
        );
      },
    ),
    { numRuns: 1_000 },
  );
  t.pass();
});
