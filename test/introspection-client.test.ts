/**
 * The RFC 7662 introspection client: what the authorization server receives (method, media
 * type, parameters, each client-authentication method), how every hostile answer fails
 * closed (unit tables for parseIntrospectionAnswer and checkClaims, then the real gateway
 * against misbehaving servers), all asserted from the authorization server's side.
 *
 * The development AS accepts only HTTP Basic and client_secret_post, so private_key_jwt,
 * `none` and the byte-level misbehaviours use a tiny node:http introspection endpoint started
 * here, on 127.0.0.1:0, that records what it receives.
 */
import {
  constants,
  generateKeyPairSync,
  verify,
  type KeyObject,
  type VerifyKeyObjectInput,
  type VerifyPublicKeyInput,
} from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http, { type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { jwtVerify } from 'jose';
import { GatewayError, type FishingReason } from '../src/errors.js';
import { checkClaims, type ClaimRules } from '../src/introspection/check-claims.js';
import {
  MAX_INTROSPECTION_RESPONSE_BYTES,
  parseIntrospectionAnswer,
} from '../src/introspection/client.js';
import { startDevAuthorizationServer, type IntrospectionFault } from '../src/dev/auth-server.js';
import {
  withHarness,
  metricValue,
  scrapeMetrics,
  request,
  type Harness,
  type RawResponse,
} from './_harness.js';

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/** GET /api/orders/1 (scope orders:read) with `Authorization: Bearer token`. */
const send = (harness: Harness, token: string): Promise<RawResponse> =>
  request(`${harness.url}/api/orders/1`, {
    headers: { authorization: `Bearer ${token}` },
    timeoutMs: 30_000,
  });

const introspectionErrors = (text: string) =>
  metricValue(text, 'tokenguard_introspection_requests_total', { result: 'error' });

interface RecordedCall {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
  form: URLSearchParams;
}

type Answer = (res: ServerResponse, call: RecordedCall) => void;

interface FakeIntrospectionEndpoint {
  /** The endpoint URL, `http://127.0.0.1:PORT/oauth2/introspect`. */
  endpoint: string;
  calls: RecordedCall[];
  close(): Promise<void>;
}

/** Answers `{"active":true,"scope":"orders:read"}` unless told otherwise. */
const ACTIVE_READER: Answer = (res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ active: true, scope: 'orders:read', sub: 'fake-user' }));
};

async function startFakeIntrospection(
  answer: Answer = ACTIVE_READER,
): Promise<FakeIntrospectionEndpoint> {
  const calls: RecordedCall[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const call: RecordedCall = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body,
        form: new URLSearchParams(body),
      };
      calls.push(call);
      answer(res, call);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}/oauth2/introspect`,
    calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function withFakeIntrospection(
  answer: Answer | undefined,
  introspection: Record<string, unknown>,
  run: (harness: Harness, fake: FakeIntrospectionEndpoint) => Promise<void>,
  topLevel: Record<string, unknown> = {},
): Promise<void> {
  const fake = await startFakeIntrospection(answer);
  try {
    await withHarness(
      () => ({ introspection: { endpoint: fake.endpoint, ...introspection }, ...topLevel }),
      (harness) => run(harness, fake),
    );
  } finally {
    await fake.close();
  }
}

/** A JSON introspection answer of exactly `bytes` bytes. */
function paddedAnswer(bytes: number): string {
  const skeleton = JSON.stringify({ active: true, scope: 'orders:read', padding: '' });
  return JSON.stringify({
    active: true,
    scope: 'orders:read',
    padding: 'x'.repeat(bytes - skeleton.length),
  });
}

const decodeJwtPart = (part: string | undefined): Record<string, unknown> =>
  JSON.parse(Buffer.from(part ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// what the authorization server receives
// ---------------------------------------------------------------------------------------------

test('the call is a form POST carrying token and token_type_hint=access_token', async (t) => {
  await withHarness(undefined, async (harness) => {
    const { as } = harness;
    const token = as.issue({ scope: 'orders:read' });
    t.is((await send(harness, token)).status, 200);

    const call = as.lastIntrospection;
    t.truthy(call);
    t.regex(String(call?.headers['content-type']), /^application\/x-www-form-urlencoded\b/);
    t.is(call?.body.token, token);
    t.is(call?.body.token_type_hint, 'access_token');
  });
});

test('the method is POST, the token is in the body only, never in the URL', async (t) => {
  await withFakeIntrospection(undefined, {}, async (harness, fake) => {
    const token = harness.as.issue();
    t.is((await send(harness, token)).status, 200);
    const call = fake.calls[0];
    t.is(fake.calls.length, 1);
    t.is(call?.method, 'POST');
    t.is(call?.url, '/oauth2/introspect');
    t.is(call?.form.get('token'), token);
    t.is(call?.form.getAll('token').length, 1);
  });
});

test('a token with + / = reaches the authorization server intact (form-encoded)', async (t) => {
  await withFakeIntrospection(undefined, {}, async (harness, fake) => {
    const token = 'a+b/c-d_e.f~g==';
    t.is((await send(harness, token)).status, 200);
    t.is(fake.calls[0]?.form.get('token'), token);
    t.regex(fake.calls[0]?.body ?? '', /(?:^|&)token=a%2Bb%2Fc-d_e\.f(?:~|%7E)g%3D%3D(?:&|$)/);
  });
});

test('a configured token_type_hint is sent as configured', async (t) => {
  await withHarness(
    () => ({ introspection: { token_type_hint: 'urn:example:opaque-token' } }),
    async (harness) => {
      const token = harness.as.issue({ scope: 'orders:read' });
      t.is((await send(harness, token)).status, 200);
      t.is(harness.as.lastIntrospection?.body.token_type_hint, 'urn:example:opaque-token');
    },
  );
});

// RFC 6749 §2.3.1: id and secret are application/x-www-form-urlencoded, then joined by `:`
// and Base64-encoded. Expected values are written out by hand, not recomputed.
const AWKWARD_CLIENT = {
  id: 'gate:way é+1',
  secret: 'p@ss w:rd+ü%25%',
  formEncodedId: 'gate%3Away+%C3%A9%2B1',
  formEncodedSecret: 'p%40ss+w%3Ard%2B%C3%BC%2525%25',
} as const;

async function withAwkwardClient(
  authMethod: 'client_secret_basic' | 'client_secret_post',
  run: (
    harness: Harness,
    as: Awaited<ReturnType<typeof startDevAuthorizationServer>>,
  ) => Promise<void>,
): Promise<void> {
  const as = await startDevAuthorizationServer({
    introspectionClients: [{ id: AWKWARD_CLIENT.id, secret: AWKWARD_CLIENT.secret }],
  });
  try {
    await withHarness(
      () => ({
        introspection: {
          endpoint: as.introspectionEndpoint,
          auth_method: authMethod,
          client_id: AWKWARD_CLIENT.id,
          client_secret: AWKWARD_CLIENT.secret,
        },
      }),
      (harness) => run(harness, as),
    );
  } finally {
    await as.close();
  }
}

test('client_secret_basic form-encodes an id and secret with : % space + and non-ASCII', async (t) => {
  await withAwkwardClient('client_secret_basic', async (harness, as) => {
    const token = as.issue({ scope: 'orders:read' });
    const response = await send(harness, token);
    t.is(response.status, 200, 'the authorization server accepted the credentials');

    const header = String(as.lastIntrospection?.headers.authorization);
    t.regex(header, /^Basic [A-Za-z0-9+/]+=*$/);
    const decoded = Buffer.from(header.slice('Basic '.length), 'base64').toString('utf8');
    t.is(decoded, `${AWKWARD_CLIENT.formEncodedId}:${AWKWARD_CLIENT.formEncodedSecret}`);
    t.is(decoded.split(':').length, 2, 'the only raw colon is the separator');
    t.is(as.lastIntrospection?.body.client_secret, undefined);
  });
});

test('client_secret_post puts client_id and client_secret in the body, no Authorization', async (t) => {
  await withAwkwardClient('client_secret_post', async (harness, as) => {
    const token = as.issue({ scope: 'orders:read' });
    t.is((await send(harness, token)).status, 200);
    const call = as.lastIntrospection;
    t.is(call?.headers.authorization, undefined);
    t.is(call?.body.client_id, AWKWARD_CLIENT.id);
    t.is(call?.body.client_secret, AWKWARD_CLIENT.secret);
    t.is(call?.body.token, token);
  });
});

test('auth_method none sends no credentials at all', async (t) => {
  await withFakeIntrospection(
    undefined,
    { auth_method: 'none', client_id: undefined, client_secret: undefined },
    async (harness, fake) => {
      const token = harness.as.issue();
      t.is((await send(harness, token)).status, 200);
      const call = fake.calls[0];
      t.is(call?.headers.authorization, undefined);
      t.deepEqual([...(call?.form.keys() ?? [])].sort(), ['token', 'token_type_hint']);
    },
    { insecure: ['unauthenticated_introspection'] }, // an error unless acknowledged
  );
});

const signatureAlgorithms: Array<{
  alg: 'RS256' | 'PS256' | 'ES256';
  keys: () => { publicKey: KeyObject; privateKey: KeyObject };
  verifyKey: (publicKey: KeyObject) => VerifyKeyObjectInput | VerifyPublicKeyInput | KeyObject;
  signatureBytes?: number;
}> = [
  {
    alg: 'RS256',
    keys: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
    verifyKey: (key) => key,
  },
  {
    alg: 'PS256',
    keys: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
    verifyKey: (key) => ({ key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }),
  },
  {
    alg: 'ES256',
    keys: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }),
    // JWS (RFC 7518 §3.4): R || S, 32 bytes each — not DER.
    verifyKey: (key) => ({ key, dsaEncoding: 'ieee-p1363' }),
    signatureBytes: 64,
  },
];

for (const { alg, keys, verifyKey, signatureBytes } of signatureAlgorithms) {
  test(`private_key_jwt (${alg}): a signed RFC 7523 client assertion, no secret`, async (t) => {
    const { publicKey, privateKey } = keys();
    const dir = await mkdtemp(path.join(tmpdir(), 'tokenguard-pkjwt-'));
    const keyFile = path.join(dir, 'client.pem');
    await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    try {
      await withFakeIntrospection(
        undefined,
        {
          auth_method: 'private_key_jwt',
          client_id: 'gateway-client',
          client_secret: undefined,
          private_key_file: keyFile,
          private_key_alg: alg,
          key_id: 'key-2024',
        },
        async (harness, fake) => {
          const first = harness.as.issue();
          const second = harness.as.issue();
          t.is((await send(harness, first)).status, 200);
          t.is((await send(harness, second)).status, 200);
          t.is(fake.calls.length, 2);

          const call = fake.calls[0];
          t.is(call?.headers.authorization, undefined);
          t.is(call?.form.get('client_secret'), null);
          t.is(call?.form.get('token'), first);
          t.is(
            call?.form.get('client_assertion_type'),
            'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          );
          const assertion = call?.form.get('client_assertion') ?? '';
          const parts = assertion.split('.');
          t.is(parts.length, 3);
          const [headerPart, payloadPart, signaturePart] = parts;

          const signature = Buffer.from(signaturePart ?? '', 'base64url');
          if (signatureBytes !== undefined) t.is(signature.length, signatureBytes);
          const input = Buffer.from(`${headerPart}.${payloadPart}`);
          t.true(verify('sha256', input, verifyKey(publicKey), signature), 'signature verifies');
          t.false(
            verify(
              'sha256',
              Buffer.from(`${headerPart}.${payloadPart}x`),
              verifyKey(publicKey),
              signature,
            ),
            'and only over what was sent',
          );

          const header = decodeJwtPart(headerPart);
          t.is(header.alg, alg);
          t.is(header.kid, 'key-2024');
          const claims = decodeJwtPart(payloadPart);
          t.is(claims.iss, 'gateway-client');
          t.is(claims.sub, 'gateway-client');
          t.is(claims.aud, fake.endpoint);
          t.is(typeof claims.exp, 'number');
          t.true((claims.exp as number) > Date.now() / 1000, 'exp is in the future');
          t.is(typeof claims.jti, 'string');
          t.not(claims.jti, '');

          // RFC 7523 §3 (7): a jti is not reused, so the AS can refuse replays.
          const next = decodeJwtPart(
            (fake.calls[1]?.form.get('client_assertion') ?? '').split('.')[1],
          );
          t.not(next.jti, claims.jti);
        },
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test('client_secret_jwt: an HS256 RFC 7523 assertion over the shared secret; the secret never crosses', async (t) => {
  const secret = 'a-client-secret-of-at-least-32-bytes!!';
  await withFakeIntrospection(
    undefined,
    {
      auth_method: 'client_secret_jwt',
      client_id: 'gateway-client',
      client_secret: secret,
    },
    async (harness, fake) => {
      const token = harness.as.issue();
      t.is((await send(harness, token)).status, 200);
      t.is((await send(harness, harness.as.issue())).status, 200);
      const call = fake.calls[0];
      t.is(call?.headers.authorization, undefined);
      t.is(call?.form.get('client_secret'), null);
      t.is(call?.form.get('client_id'), 'gateway-client');
      t.is(
        call?.form.get('client_assertion_type'),
        'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      );
      const assertion = call?.form.get('client_assertion') ?? '';
      t.false(assertion.includes(secret));
      const key = new TextEncoder().encode(secret);
      // Verified by jose as an AS would: HS256 only, this audience and issuer.
      const { payload, protectedHeader } = await jwtVerify(assertion, key, {
        algorithms: ['HS256'],
        audience: fake.endpoint,
        issuer: 'gateway-client',
        subject: 'gateway-client',
      });
      t.is(protectedHeader.alg, 'HS256');
      t.is(typeof payload.jti, 'string');
      t.true((payload.exp as number) - (payload.iat as number) <= 60);
      // Another secret does not verify it.
      await t.throwsAsync(
        jwtVerify(assertion, new TextEncoder().encode(`${secret}x`), { algorithms: ['HS256'] }),
      );
      const next = decodeJwtPart((fake.calls[1]?.form.get('client_assertion') ?? '').split('.')[1]);
      t.not(next.jti, payload.jti);
    },
  );
});

// ---------------------------------------------------------------------------------------------
// hostile answers, unit level
// ---------------------------------------------------------------------------------------------

type Verdict = 'active' | 'inactive' | 503;

const answerCases: Array<[title: string, input: unknown, verdict: Verdict]> = [
  ['{active:true}', { active: true }, 'active'],
  ['{active:false}', { active: false }, 'inactive'],
  ['{active:false} with junk claims', { active: false, scope: 5, exp: 'x' }, 'inactive'],
  [
    'every registered claim well typed',
    {
      active: true,
      scope: 'a b',
      client_id: 'c',
      sub: 's',
      iss: 'https://as.example',
      exp: 2e9,
      nbf: 1e9,
      iat: 1e9,
      aud: ['a', 'b'],
      custom: { nested: [1, 2] },
    },
    'active',
  ],
  ['aud as a string', { active: true, aud: 'a' }, 'active'],
  ['{active:"true"}', { active: 'true' }, 503],
  ['{active:"false"}', { active: 'false' }, 503],
  ['{active:1}', { active: 1 }, 503],
  ['{active:0}', { active: 0 }, 503],
  ['{active:null}', { active: null }, 503],
  ['{active:{}}', { active: {} }, 503],
  ['{}', {}, 503],
  ['null', null, 503],
  ['[]', [], 503],
  ['[{active:true}]', [{ active: true }], 503],
  ['"x"', 'x', 503],
  ['true', true, 503],
  ['42', 42, 503],
  ['undefined', undefined, 503],
  ['exp a string', { active: true, exp: '123' }, 503],
  ['exp Infinity', { active: true, exp: Infinity }, 503],
  ['exp NaN', { active: true, exp: NaN }, 503],
  ['nbf a string', { active: true, nbf: '1' }, 503],
  ['iat an object', { active: true, iat: {} }, 503],
  ['scope an array', { active: true, scope: ['a'] }, 503],
  ['aud a number', { active: true, aud: 5 }, 503],
  ['aud an array with a number', { active: true, aud: ['a', 1] }, 503],
  ['aud an object', { active: true, aud: { a: 1 } }, 503],
  ['iss a number', { active: true, iss: 1 }, 503],
  ['sub a number', { active: true, sub: 1 }, 503],
  ['client_id an array', { active: true, client_id: ['c'] }, 503],
];

for (const [title, input, verdict] of answerCases) {
  test(`parseIntrospectionAnswer: ${title} → ${verdict}`, (t) => {
    if (verdict === 503) {
      const error = t.throws(() => parseIntrospectionAnswer(input), { instanceOf: GatewayError });
      t.is(error?.status, 503);
      t.is(error?.oauthError, 'temporarily_unavailable');
      t.true((error?.retryAfterSeconds ?? 0) >= 1);
      return;
    }
    const answer = parseIntrospectionAnswer(input);
    if (verdict === 'inactive') {
      t.deepEqual(answer, { active: false });
    } else {
      t.true(answer.active);
      t.deepEqual(answer.active ? answer.claims : undefined, input);
    }
  });
}

test('parseIntrospectionAnswer of JSON text with a __proto__ key stays a plain answer', (t) => {
  const answer = parseIntrospectionAnswer(
    JSON.parse('{"active":true,"__proto__":{"scope":"admin"}}'),
  );
  t.true(answer.active);
  t.is(answer.active ? answer.claims.scope : 'unset', undefined);
  t.is(({} as Record<string, unknown>).scope, undefined, 'no prototype was polluted');
});

const NOW = 1_700_000_000;
const ISSUER = 'https://as.example.com';
const noRules: ClaimRules = { issuer: undefined, audience: undefined, clockSkewSeconds: 30 };
const issuerRule: ClaimRules = { ...noRules, issuer: ISSUER };
const audienceRule: ClaimRules = { ...noRules, audience: new Set(['orders-api', 'admin-api']) };

const claimCases: Array<
  [title: string, claims: Record<string, unknown>, rules: ClaimRules, reason: FishingReason | null]
> = [
  ['no claims, no rules', {}, noRules, null],
  ['exp in the future', { exp: NOW + 10 }, noRules, null],
  ['exp past, within the skew', { exp: NOW - 29 }, noRules, null],
  ['exp past, beyond the skew', { exp: NOW - 31 }, noRules, 'expired'],
  ['exp long past', { exp: NOW - 86_400 }, noRules, 'expired'],
  [
    'exp one second past, no skew',
    { exp: NOW - 1 },
    { ...noRules, clockSkewSeconds: 0 },
    'expired',
  ],
  ['nbf now', { nbf: NOW }, { ...noRules, clockSkewSeconds: 0 }, null],
  ['nbf past', { nbf: NOW - 100 }, noRules, null],
  ['nbf future, within the skew', { nbf: NOW + 29 }, noRules, null],
  ['nbf future, beyond the skew', { nbf: NOW + 31 }, noRules, 'expired'],
  [
    'nbf one second ahead, no skew',
    { nbf: NOW + 1 },
    { ...noRules, clockSkewSeconds: 0 },
    'expired',
  ],
  ['iss matches', { iss: ISSUER }, issuerRule, null],
  ['iss differs', { iss: 'https://evil.example.com' }, issuerRule, 'issuer'],
  ['iss differs by a trailing slash', { iss: `${ISSUER}/` }, issuerRule, 'issuer'],
  ['iss differs by case', { iss: ISSUER.toUpperCase() }, issuerRule, 'issuer'],
  ['iss missing while configured', {}, issuerRule, 'issuer'],
  ['iss anything while not configured', { iss: 'https://evil.example.com' }, noRules, null],
  ['aud a matching string', { aud: 'orders-api' }, audienceRule, null],
  ['aud the other configured value', { aud: 'admin-api' }, audienceRule, null],
  ['aud an array containing one', { aud: ['billing', 'orders-api'] }, audienceRule, null],
  ['aud missing while configured', {}, audienceRule, 'audience'],
  ['aud a different string', { aud: 'billing' }, audienceRule, 'audience'],
  ['aud an array without one', { aud: ['billing', 'crm'] }, audienceRule, 'audience'],
  ['aud an empty array', { aud: [] }, audienceRule, 'audience'],
  ['aud differs by case', { aud: 'Orders-API' }, audienceRule, 'audience'],
  ['aud a prefix-extended value', { aud: 'orders-api-v2' }, audienceRule, 'audience'],
  ['aud a space-joined string', { aud: 'orders-api billing' }, audienceRule, 'audience'],
  ['aud anything while not configured', { aud: 'billing' }, noRules, null],
];

for (const [title, claims, rules, reason] of claimCases) {
  test(`checkClaims: ${title} → ${reason ?? 'ok'}`, (t) => {
    t.is(checkClaims(claims, rules, NOW)?.reason ?? null, reason);
  });
}

test('checkClaims compares against a fractional clock: half a second past exp is expired', (t) => {
  t.is(
    checkClaims({ exp: NOW }, { ...noRules, clockSkewSeconds: 0 }, NOW + 0.5)?.reason,
    'expired',
  );
});

test('checkClaims: at exactly exp (no skew) the token is expired (RFC 7519 §4.1.4)', (t) => {
  // "the current date/time MUST be before the expiration date/time".
  t.is(checkClaims({ exp: NOW }, { ...noRules, clockSkewSeconds: 0 }, NOW)?.reason, 'expired');
});

// ---------------------------------------------------------------------------------------------
// hostile answers through the gateway: 503 + Retry-After, counted as errors, never forwarded
// ---------------------------------------------------------------------------------------------

async function assertFailsClosed(
  t: ExecutionContext,
  harness: Harness,
  token: string,
): Promise<void> {
  const before = introspectionErrors(await scrapeMetrics(harness));
  const response = await send(harness, token);
  t.is(response.status, 503);
  t.regex(String(response.headers['retry-after']), /^[1-9]\d*$/);
  t.is(response.json().error, 'temporarily_unavailable');
  t.is(harness.upstream.requests.length, 0, 'never forwarded');
  const after = introspectionErrors(await scrapeMetrics(harness));
  t.is(after - before, 1, 'tokenguard_introspection_requests_total{result="error"} moved by 1');
}

const devFaults: Array<[title: string, fault: IntrospectionFault]> = [
  ['HTTP 500', 'status-500'],
  ['a text/html content type', 'wrong-content-type'],
  ['a JSON body of 1 MiB', 'huge'],
  ['a hang past timeout_ms', 'hang'],
  ['a connection closed before any answer', 'down'],
  ['a body that is not JSON', 'not-json'],
  ['"active": "true"', 'active-string'],
  ['no "active"', 'active-missing'],
];

for (const [title, fault] of devFaults) {
  test(`through the gateway: ${title} → 503 + Retry-After, counted as an error`, async (t) => {
    await withHarness(undefined, async (harness) => {
      const token = harness.as.issue({ scope: 'orders:read' });
      harness.as.setFault(fault);
      await assertFailsClosed(t, harness, token);
    });
  });
}

const over = MAX_INTROSPECTION_RESPONSE_BYTES + 1;

const fakeFaults: Array<[title: string, answer: Answer]> = [
  [
    'HTTP 401 carrying an active body',
    (res) => {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ active: true, scope: 'orders:read' }));
    },
  ],
  [
    'HTTP 302 to another server (never followed)',
    (res) => {
      res.writeHead(302, { location: 'http://127.0.0.1:1/elsewhere', 'content-length': '0' });
      res.end();
    },
  ],
  [
    'HTTP 204',
    (res) => {
      res.writeHead(204);
      res.end();
    },
  ],
  [
    'text/html carrying an active body',
    (res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(JSON.stringify({ active: true, scope: 'orders:read' }));
    },
  ],
  [
    'no content type',
    (res) => {
      res.writeHead(200);
      res.end(JSON.stringify({ active: true, scope: 'orders:read' }));
    },
  ],
  [
    'application/jsonx',
    (res) => {
      res.writeHead(200, { 'content-type': 'application/jsonx' });
      res.end(JSON.stringify({ active: true, scope: 'orders:read' }));
    },
  ],
  [
    `a JSON body of ${over} bytes with Content-Length`,
    (res) => {
      const body = paddedAnswer(over);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    },
  ],
  [
    `a chunked JSON body of ${over} bytes`,
    (res) => {
      const body = paddedAnswer(over);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(body.slice(0, 1000));
      res.end(body.slice(1000));
    },
  ],
  [
    'a connection dropped mid-answer',
    (res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
      res.write('{"active":true,"scope":"orders:read","padding":"', () => {
        setTimeout(() => res.destroy(), 20);
      });
    },
  ],
  [
    'a chunked answer cut off before its last chunk',
    (res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"active":true,', () => {
        setTimeout(() => res.destroy(), 20);
      });
    },
  ],
  [
    'a body that stalls past timeout_ms after the headers',
    (res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"active":true,');
    },
  ],
];

for (const [title, answer] of fakeFaults) {
  test(`through the gateway: ${title} → 503 + Retry-After, counted as an error`, async (t) => {
    await withFakeIntrospection(answer, {}, async (harness, fake) => {
      await assertFailsClosed(t, harness, harness.as.issue());
      t.is(fake.calls.length, 1);
    });
  });
}

const acceptedAnswers: Array<[title: string, answer: Answer]> = [
  [
    `a JSON body of exactly ${MAX_INTROSPECTION_RESPONSE_BYTES} bytes with Content-Length`,
    (res) => {
      const body = paddedAnswer(MAX_INTROSPECTION_RESPONSE_BYTES);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    },
  ],
  [
    `a chunked JSON body of exactly ${MAX_INTROSPECTION_RESPONSE_BYTES} bytes`,
    (res) => {
      const body = paddedAnswer(MAX_INTROSPECTION_RESPONSE_BYTES);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(body.slice(0, 1000));
      res.end(body.slice(1000));
    },
  ],
  [
    'application/json; charset=utf-8',
    (res) => {
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
      res.end(JSON.stringify({ active: true, scope: 'orders:read' }));
    },
  ],
  [
    'Application/JSON',
    (res) => {
      res.writeHead(200, { 'content-type': 'Application/JSON' });
      res.end(JSON.stringify({ active: true, scope: 'orders:read' }));
    },
  ],
];

for (const [title, answer] of acceptedAnswers) {
  test(`through the gateway: ${title} is a valid answer (200)`, async (t) => {
    await withFakeIntrospection(answer, {}, async (harness) => {
      const response = await send(harness, harness.as.issue());
      t.is(response.status, 200);
      t.is(harness.upstream.requests.length, 1);
    });
  });
}
