/**
 * PRODUCT.md "What the upstream receives", asserted on what the real echo upstream recorded:
 * identity headers from the introspection answer (and never from the client), hop-by-hop and
 * method-override fields removed, the X-Forwarded-* fields the gateway owns, Authorization,
 * the normalised path — and, the other way, the upstream's hop-by-hop response fields.
 *
 * Tests that run with the default config share one harness and find their own request among
 * the upstream's records by a unique `X-Test-Id`; tests that need another config start their
 * own. Everything is closed in teardown.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import test, { type ExecutionContext } from 'ava';
import type { RecordedRequest } from '../src/dev/echo-api.js';
import {
  rawRequest,
  request,
  startHarness,
  type Harness,
  type HarnessContext,
  type RawResponse,
} from './_harness.js';

/** The gateway and the tests run on one host: the TCP peer the gateway sees is this. */
const PEER = '127.0.0.1';

/** Claim → header mappings of the shared harness, on top of the default three. */
const CLAIM_HEADERS = {
  'X-Claim-Plain': 'plain',
  'X-Claim-Printable': 'printable',
  'X-Claim-Int': 'int',
  'X-Claim-Float': 'float',
  'X-Claim-Negative': 'negative',
  'X-Claim-True': 'yes',
  'X-Claim-False': 'no',
  'X-Claim-List': 'list',
  'X-Claim-Object': 'object',
  'X-Claim-Object-Unicode': 'objectUnicode',
  'X-Claim-Null': 'nothing',
  'X-Claim-Missing': 'absent',
  'X-Claim-Percent': 'percent',
  'X-Claim-Unicode': 'unicode',
  'X-Claim-Astral': 'astral',
  'X-Claim-Crlf': 'crlf',
  'X-Claim-Controls': 'controls',
} as const;

const IDENTITY_HEADERS = {
  'X-Auth-Subject': 'sub',
  'X-Auth-Client-Id': 'client_id',
  'X-Auth-Scope': 'scope',
  ...CLAIM_HEADERS,
};

const sharedConfig = () => ({
  upstream: { timeout_ms: 15_000 },
  introspection: { timeout_ms: 10_000, max_calls_per_second: 10_000 },
  forward: { identity_headers: IDENTITY_HEADERS },
});

let shared: Harness;
let nextId = 0;
const testId = () => `t${(nextId += 1)}-${process.hrtime.bigint()}`;

const bearer = (token: string) => `Bearer ${token}`;

async function withHarness(
  config: (ctx: HarnessContext) => Record<string, unknown>,
  run: (harness: Harness) => Promise<void>,
): Promise<void> {
  const harness = await startHarness({
    config: (ctx) => ({
      upstream: { timeout_ms: 15_000 },
      introspection: { timeout_ms: 10_000 },
      ...config(ctx),
    }),
  });
  try {
    await run(harness);
  } finally {
    await harness.close();
  }
}

/** Sends a request tagged with a fresh X-Test-Id; returns the response and that id. */
async function tagged(
  harness: Harness,
  path: string,
  headers: Record<string, string | string[]> = {},
  method = 'GET',
): Promise<{ response: RawResponse; id: string }> {
  const id = testId();
  const response = await request(harness.url, {
    path,
    method,
    headers: { ...headers, 'X-Test-Id': id },
    timeoutMs: 30_000,
  });
  return { response, id };
}

function recorded(harness: Harness, id: string): RecordedRequest | undefined {
  return harness.upstream.requests.find((seen) => seen.headers['x-test-id'] === id);
}

/** The recorded request, or a failed assertion naming what came back instead. */
function mustHaveReached(
  t: ExecutionContext,
  harness: Harness,
  id: string,
  response?: { status: number; body: string },
): RecordedRequest {
  const seen = recorded(harness, id);
  if (!seen) {
    t.fail(`the upstream never received request ${id}: ${response?.status} ${response?.body}`);
    throw new Error('not forwarded');
  }
  return seen;
}

/** Every value of the fields whose name matches, as the upstream received them. */
function fieldValues(seen: RecordedRequest, name: RegExp): string[] {
  const values: string[] = [];
  for (let index = 0; index < seen.rawHeaders.length; index += 2) {
    if (name.test(seen.rawHeaders[index] as string))
      values.push(seen.rawHeaders[index + 1] as string);
  }
  return values;
}

/** `X-Auth-Subject` in any casing, with `_` or `-` between the words. */
const SUBJECT_FIELD = /^x[-_]auth[-_]subject$/i;

function parseRawResponse(text: string): { status: number; headers: Record<string, string> } {
  const headEnd = text.indexOf('\r\n\r\n');
  const [statusLine = '', ...lines] = text
    .slice(0, headEnd === -1 ? undefined : headEnd)
    .split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0), headers };
}

// ── identity headers from the introspection answer ──

interface ClaimRow {
  header: keyof typeof CLAIM_HEADERS;
  what: string;
  /** The claim as the introspection answer carries it; `undefined`: left out. */
  claim: unknown;
  /** The header value the upstream must receive; `undefined`: no such header. */
  expected: string | undefined;
}

const CLAIM_ROWS: ClaimRow[] = [
  { header: 'X-Claim-Plain', what: 'a string, as it is', claim: 'alice', expected: 'alice' },
  {
    header: 'X-Claim-Printable',
    what: 'printable ASCII and spaces, as they are',
    claim: 'a "quoted" \\back\\, semi; eq=~!{x}',
    expected: 'a "quoted" \\back\\, semi; eq=~!{x}',
  },
  { header: 'X-Claim-Int', what: 'an integer, as JSON', claim: 42, expected: '42' },
  { header: 'X-Claim-Float', what: 'a fraction, as JSON', claim: 1.5, expected: '1.5' },
  { header: 'X-Claim-Negative', what: 'a negative number, as JSON', claim: -7, expected: '-7' },
  { header: 'X-Claim-True', what: 'true, as JSON', claim: true, expected: 'true' },
  { header: 'X-Claim-False', what: 'false, as JSON', claim: false, expected: 'false' },
  {
    header: 'X-Claim-List',
    what: 'an array, joined with a space',
    claim: ['admin', 'ops', 'dev'],
    expected: 'admin ops dev',
  },
  {
    header: 'X-Claim-Object',
    what: 'an object, as JSON text',
    claim: { role: 'admin', level: 3, tags: ['a', 'b'] },
    expected: '{"role":"admin","level":3,"tags":["a","b"]}',
  },
  {
    header: 'X-Claim-Object-Unicode',
    what: 'an object with non-ASCII text, as percent-encoded JSON text',
    claim: { name: 'Zoë' },
    expected: '{"name":"Zo%C3%AB"}',
  },
  { header: 'X-Claim-Null', what: 'null, absent', claim: null, expected: undefined },
  { header: 'X-Claim-Missing', what: 'missing, absent', claim: undefined, expected: undefined },
  {
    header: 'X-Claim-Percent',
    what: '% encoded, so %41 stays distinct from A',
    claim: '50% off %41',
    expected: '50%25 off %2541',
  },
  {
    header: 'X-Claim-Unicode',
    what: 'non-ASCII as UTF-8 upper-case hex',
    claim: 'Zoë Ångström 日本',
    expected: 'Zo%C3%AB %C3%85ngstr%C3%B6m %E6%97%A5%E6%9C%AC',
  },
  {
    header: 'X-Claim-Astral',
    what: 'a character outside the BMP as its four UTF-8 bytes',
    claim: 'ok 😀',
    expected: 'ok %F0%9F%98%80',
  },
  {
    header: 'X-Claim-Crlf',
    what: 'CR/LF encoded, so no header can be injected',
    claim: 'alice\r\nX-Injected: yes',
    expected: 'alice%0D%0AX-Injected: yes',
  },
  {
    header: 'X-Claim-Controls',
    what: 'NUL, TAB and DEL encoded',
    claim: 'a\u0000b\tc\u007f',
    expected: 'a%00b%09c%7F',
  },
];

/** The one request of the claim table, made once by the shared harness. */
let claimRequest: RecordedRequest | undefined;

test.before(async () => {
  shared = await startHarness({ config: sharedConfig });
  const claims: Record<string, unknown> = { sub: 'alice', client_id: 'app-1', scope: 'read' };
  for (const row of CLAIM_ROWS) claims[CLAIM_HEADERS[row.header]] = row.claim;
  const token = shared.as.issue(claims);
  const { id } = await tagged(shared, '/api/any/claims', {
    authorization: bearer(token),
    // Forged copies of the headers whose claim is null or missing: they must not survive.
    'X-Claim-Null': 'forged',
    x_claim_missing: 'forged',
  });
  claimRequest = recorded(shared, id);
});

test.after.always(async () => {
  await shared?.close();
});

for (const row of CLAIM_ROWS) {
  test(`identity header from a claim: ${row.what} (${row.header})`, (t) => {
    if (!claimRequest) return t.fail('the claim request was not forwarded');
    const name = new RegExp(`^${row.header.replaceAll('-', '[-_]')}$`, 'i');
    const values = fieldValues(claimRequest, name);
    if (row.expected === undefined) {
      t.deepEqual(values, [], 'the header is absent');
      return;
    }
    t.deepEqual(values, [row.expected], 'exactly one field, with this value');
    const decoded = decodeURIComponent(row.expected);
    if (typeof row.claim === 'string') t.is(decoded, row.claim, 'decoding gives back the claim');
    else if (typeof row.claim === 'object' && !Array.isArray(row.claim)) {
      t.deepEqual(JSON.parse(decoded), row.claim, 'decoding gives back the claim');
    }
  });
}

test('a claim with CR/LF injects no header at the upstream', (t) => {
  if (!claimRequest) return t.fail('the claim request was not forwarded');
  t.is(claimRequest.headers['x-injected'], undefined);
});

test('the default identity headers carry sub, client_id and scope', (t) => {
  if (!claimRequest) return t.fail('the claim request was not forwarded');
  t.is(claimRequest.headers['x-auth-subject'], 'alice');
  t.is(claimRequest.headers['x-auth-client-id'], 'app-1');
  t.is(claimRequest.headers['x-auth-scope'], 'read');
});

// ── an identity header over 8 KiB after encoding: an authorization-server fault ──

const SIZE_ROWS: Array<[string, string, boolean]> = [
  ['8192 ASCII characters (exactly 8 KiB) is forwarded', 'x'.repeat(8192), true],
  ['8193 ASCII characters is a 503', 'x'.repeat(8193), false],
  ['1366 × "é" (2732 bytes raw, 8196 encoded) is a 503', 'é'.repeat(1366), false],
  ['2731 × "%" (2731 bytes raw, 8193 encoded) is a 503', '%'.repeat(2731), false],
];

for (const [what, value, forwarded] of SIZE_ROWS) {
  test(`identity header size: ${what}`, async (t) => {
    const token = shared.as.issue({ sub: 'alice', plain: value });
    const { response, id } = await tagged(shared, '/api/any/size', {
      authorization: bearer(token),
    });
    if (forwarded) {
      t.is(response.status, 200, response.body);
      t.deepEqual(fieldValues(mustHaveReached(t, shared, id, response), /^x-claim-plain$/i), [
        value,
      ]);
      return;
    }
    t.is(response.status, 503, response.body);
    t.is(response.json().error, 'temporarily_unavailable');
    t.regex(String(response.headers['retry-after']), /^[1-9]\d*$/);
    t.is(recorded(shared, id), undefined, 'never forwarded');
  });
}

// ── client-sent identity headers: removed in any casing and `_` spelling ──

const SPELLINGS = [
  'X-Auth-Subject',
  'x-auth-subject',
  'X-AUTH-SUBJECT',
  'X_Auth_Subject',
  'x_auth_subject',
  'X_AUTH_SUBJECT',
  'X-Auth_Subject',
];

for (const spelling of SPELLINGS) {
  test(`a client's ${spelling} is replaced by the claim on a token route`, async (t) => {
    const token = shared.as.issue({ sub: 'alice' });
    const { response, id } = await tagged(shared, '/api/any/spelling', {
      authorization: bearer(token),
      [spelling]: 'mallory',
    });
    t.is(response.status, 200, response.body);
    t.deepEqual(fieldValues(mustHaveReached(t, shared, id, response), SUBJECT_FIELD), ['alice']);
  });

  test(`a client's ${spelling} is removed on an auth: none route`, async (t) => {
    const { response, id } = await tagged(shared, '/public/spelling', { [spelling]: 'mallory' });
    t.is(response.status, 200, response.body);
    t.deepEqual(fieldValues(mustHaveReached(t, shared, id, response), SUBJECT_FIELD), []);
  });

  test(`a client's ${spelling} is removed when the token has no sub claim`, async (t) => {
    const token = shared.as.issue({ sub: undefined });
    const { response, id } = await tagged(shared, '/api/any/spelling', {
      authorization: bearer(token),
      [spelling]: 'mallory',
    });
    t.is(response.status, 200, response.body);
    t.deepEqual(fieldValues(mustHaveReached(t, shared, id, response), SUBJECT_FIELD), []);
  });
}

for (const [route, sub, expected] of [
  ['/api/any/spellings', 'alice', ['alice']],
  ['/public/spellings', undefined, []],
] as Array<[string, string | undefined, string[]]>) {
  test(`every spelling at once in one request is removed (${route})`, async (t) => {
    const id = testId();
    const authorization = route.startsWith('/api')
      ? `Authorization: ${bearer(shared.as.issue({ sub, scope: 'orders:read' }))}\r\n`
      : '';
    const forged = SPELLINGS.map((spelling, index) => `${spelling}: mallory-${index}\r\n`).join('');
    const reply = parseRawResponse(
      await rawRequest(
        shared.port,
        `GET ${route} HTTP/1.1\r\nHost: gateway.test\r\n${authorization}${forged}` +
          `X_AUTH_SCOPE: admin\r\nx-auth_client-ID: evil\r\nX-Test-Id: ${id}\r\nConnection: close\r\n\r\n`,
        5000,
      ),
    );
    t.is(reply.status, 200);
    const seen = mustHaveReached(t, shared, id);
    t.deepEqual(fieldValues(seen, SUBJECT_FIELD), expected);
    t.deepEqual(
      fieldValues(seen, /^x[-_]auth[-_]scope$/i),
      route.startsWith('/api') ? ['orders:read'] : [],
    );
    t.deepEqual(
      fieldValues(seen, /^x[-_]auth[-_]client[-_]id$/i),
      route.startsWith('/api') ? ['dev-client'] : [],
    );
  });
}

// ── Connection: a client can remove its own fields, never the injected ones ──

test('Connection: X-Auth-Subject, X-Custom removes X-Custom but not the injected X-Auth-Subject', async (t) => {
  const token = shared.as.issue({ sub: 'alice' });
  const { response, id } = await tagged(shared, '/api/any/connection', {
    authorization: bearer(token),
    connection: 'X-Auth-Subject, X-Custom',
    'X-Auth-Subject': 'mallory',
    'X-Custom': 'hop',
    'X-Other': 'end-to-end',
  });
  t.is(response.status, 200, response.body);
  const seen = mustHaveReached(t, shared, id, response);
  t.deepEqual(fieldValues(seen, SUBJECT_FIELD), ['alice']);
  t.is(seen.headers['x-custom'], undefined);
  t.is(seen.headers['x-other'], 'end-to-end', 'fields Connection does not name pass');
});

test('Connection: X-Auth-Subject, X-Custom on an auth: none route removes both', async (t) => {
  const { response, id } = await tagged(shared, '/public/connection', {
    connection: 'X-Auth-Subject, X-Custom',
    'X-Auth-Subject': 'mallory',
    'X-Custom': 'hop',
    'X-Other': 'end-to-end',
  });
  t.is(response.status, 200, response.body);
  const seen = mustHaveReached(t, shared, id, response);
  t.deepEqual(fieldValues(seen, SUBJECT_FIELD), []);
  t.is(seen.headers['x-custom'], undefined);
  t.is(seen.headers['x-other'], 'end-to-end');
});

// ── hop-by-hop request fields never reach the upstream ──

const HOP_BY_HOP: Array<{ name: string; lines: string[]; absent: string[] }> = [
  {
    name: 'Connection (and the field it names)',
    lines: ['Connection: close, X-Hop-Marker', 'X-Hop-Marker: 1'],
    absent: ['x-hop-marker'],
  },
  { name: 'Keep-Alive', lines: ['Keep-Alive: timeout=5, max=1000'], absent: ['keep-alive'] },
  { name: 'TE', lines: ['TE: trailers, deflate'], absent: ['te'] },
  { name: 'Trailer', lines: ['Trailer: X-Checksum'], absent: ['trailer'] },
  { name: 'Upgrade (not a WebSocket handshake)', lines: ['Upgrade: h2c'], absent: ['upgrade'] },
  {
    name: 'Proxy-Authorization',
    lines: ['Proxy-Authorization: Basic cHJveHk6c2VjcmV0'],
    absent: ['proxy-authorization'],
  },
  {
    name: 'Proxy-Connection',
    lines: ['Proxy-Connection: keep-alive'],
    absent: ['proxy-connection'],
  },
];

for (const row of HOP_BY_HOP) {
  test(`hop-by-hop ${row.name} never reaches the upstream`, async (t) => {
    const id = testId();
    const token = shared.as.issue({ sub: 'alice' });
    const connection = row.lines.some((line) => /^connection:/i.test(line))
      ? ''
      : 'Connection: close\r\n';
    const reply = parseRawResponse(
      await rawRequest(
        shared.port,
        'GET /api/any/hop HTTP/1.1\r\nHost: gateway.test\r\n' +
          `Authorization: ${bearer(token)}\r\nX-Test-Id: ${id}\r\nX-Control: kept\r\n` +
          `${row.lines.map((line) => `${line}\r\n`).join('')}${connection}\r\n`,
        5000,
      ),
    );
    t.is(reply.status, 200);
    const seen = mustHaveReached(t, shared, id);
    for (const name of row.absent) t.is(seen.headers[name], undefined, `${name} was removed`);
    t.notRegex(String(seen.headers.connection ?? ''), /x-hop-marker|close/i);
    t.is(seen.headers['x-control'], 'kept', 'end-to-end fields pass');
  });
}

test('an h2c upgrade is refused or stripped, never passed to the upstream', async (t) => {
  const id = testId();
  const reply = parseRawResponse(
    await rawRequest(
      shared.port,
      'GET /public/h2c HTTP/1.1\r\nHost: gateway.test\r\n' +
        'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n' +
        `X-Test-Id: ${id}\r\n\r\n`,
      3000,
    ),
  );
  t.not(reply.status, 101, 'the protocol is never switched');
  t.true(reply.status === 400 || reply.status === 200, `status ${reply.status}`);
  const seen = recorded(shared, id);
  if (reply.status === 200) t.truthy(seen, 'a 200 came from the upstream');
  t.is(seen?.headers.upgrade, undefined);
  t.is(seen?.headers['http2-settings'], undefined);
});

// ── method overrides never reach the upstream ──

for (const override of ['X-HTTP-Method-Override', 'X-HTTP-Method', 'X-Method-Override']) {
  test(`method override ${override} never reaches the upstream`, async (t) => {
    const token = shared.as.issue({ scope: 'orders:read' });
    const { response, id } = await tagged(shared, '/api/orders/1', {
      authorization: bearer(token),
      [override]: 'DELETE',
    });
    t.is(response.status, 200, response.body);
    const seen = mustHaveReached(t, shared, id, response);
    t.is(seen.method, 'GET');
    t.is(seen.headers[override.toLowerCase()], undefined);
  });
}

// ── X-Forwarded-* ──

test('X-Forwarded-For from an untrusted peer: the client value is dropped, the peer appended', async (t) => {
  const { response, id } = await tagged(shared, '/public/xff', {
    'X-Forwarded-For': '203.0.113.9',
  });
  t.is(response.status, 200, response.body);
  const seen = mustHaveReached(t, shared, id, response);
  t.deepEqual(fieldValues(seen, /^x-forwarded-for$/i), [PEER]);
});

test('X-Forwarded-For without a client value is the peer', async (t) => {
  const { response, id } = await tagged(shared, '/public/xff');
  t.is(response.status, 200, response.body);
  t.deepEqual(fieldValues(mustHaveReached(t, shared, id, response), /^x-forwarded-for$/i), [PEER]);
});

test('X-Forwarded-For from a trusted proxy: the client value is kept and the peer appended', async (t) => {
  await withHarness(
    () => ({ server: { trusted_proxies: ['127.0.0.1/32'] } }),
    async (harness) => {
      const { response, id } = await tagged(harness, '/public/xff', {
        'X-Forwarded-For': '203.0.113.9',
      });
      t.is(response.status, 200, response.body);
      const seen = mustHaveReached(t, harness, id, response);
      t.deepEqual(fieldValues(seen, /^x-forwarded-for$/i), [`203.0.113.9, ${PEER}`]);
    },
  );
});

test('X-Forwarded-For from a trusted proxy: repeated client fields are kept in order, the peer appended', async (t) => {
  await withHarness(
    () => ({ server: { trusted_proxies: ['127.0.0.1/32'] } }),
    async (harness) => {
      const { response, id } = await tagged(harness, '/public/xff', {
        'X-Forwarded-For': ['198.51.100.1', '203.0.113.9'],
      });
      t.is(response.status, 200, response.body);
      const seen = mustHaveReached(t, harness, id, response);
      t.deepEqual(fieldValues(seen, /^x-forwarded-for$/i), [`198.51.100.1, 203.0.113.9, ${PEER}`]);
    },
  );
});

test('X-Forwarded-Proto and X-Forwarded-Host are set by the gateway, client copies replaced', async (t) => {
  const token = shared.as.issue({ sub: 'alice' });
  const { response, id } = await tagged(shared, '/api/any/forwarded', {
    authorization: bearer(token),
    host: 'shop.example:8443',
    'X-Forwarded-Proto': 'https',
    'X-Forwarded-Host': 'evil.example',
  });
  t.is(response.status, 200, response.body);
  const seen = mustHaveReached(t, shared, id, response);
  t.deepEqual(fieldValues(seen, /^x-forwarded-proto$/i), ['http']);
  t.deepEqual(fieldValues(seen, /^x-forwarded-host$/i), ['shop.example:8443']);
});

test('X-Forwarded-Host is the request Host on an auth: none route too', async (t) => {
  const { response, id } = await tagged(shared, '/public/forwarded', {
    host: 'www.example',
    'X-Forwarded-Host': 'evil.example',
    'X-Forwarded-Proto': 'https',
  });
  t.is(response.status, 200, response.body);
  const seen = mustHaveReached(t, shared, id, response);
  t.deepEqual(fieldValues(seen, /^x-forwarded-host$/i), ['www.example']);
  t.deepEqual(fieldValues(seen, /^x-forwarded-proto$/i), ['http']);
});

// ── Authorization ──

test('Authorization is forwarded as sent by default', async (t) => {
  const token = shared.as.issue({ sub: 'alice' });
  const { response, id } = await tagged(shared, '/api/any/authorization', {
    authorization: bearer(token),
  });
  t.is(response.status, 200, response.body);
  t.deepEqual(fieldValues(mustHaveReached(t, shared, id, response), /^authorization$/i), [
    bearer(token),
  ]);
});

test('Authorization is removed with forward.strip_authorization: true', async (t) => {
  await withHarness(
    () => ({ forward: { strip_authorization: true } }),
    async (harness) => {
      const token = harness.as.issue({ sub: 'alice' });
      const { response, id } = await tagged(harness, '/api/any/authorization', {
        authorization: bearer(token),
      });
      t.is(response.status, 200, response.body);
      const seen = mustHaveReached(t, harness, id, response);
      t.deepEqual(fieldValues(seen, /^authorization$/i), []);
      t.is(seen.headers['x-auth-subject'], 'alice', 'the request was authorised with it');
    },
  );
});

// ── the upstream receives exactly the normalised path, the query untouched ──

const PATHS: Array<[string, string]> = [
  ['/public//a/./b/../c?x=a//b', '/public/a/c?x=a//b'],
  ['/public/%7e', '/public/~'],
  ['/public/%7Euser/%41%62%2D%5f%2Ex', '/public/~user/Ab-_.x'],
  ['/public/a/%2e%2E/b', '/public/b'],
  ['/public/a/b/..', '/public/a/'],
  ['/public/./a', '/public/a'],
  ['/public/a%20b', '/public/a%20b'],
  ['/public/x?q=%7e&r=a/../b&s=%2F&t=..%2F', '/public/x?q=%7e&r=a/../b&s=%2F&t=..%2F'],
  ['http://gateway.test/public//abs?x=1', '/public/abs?x=1'],
  // http-proxy's urlJoin turned the first `http:/` into `http://` after routing.
  ['/public/http:/x', '/public/http:/x'],
  ['/public/https:/x?u=http:/y', '/public/https:/x?u=http:/y'],
  ['/public/a/http:/b/https:/c', '/public/a/http:/b/https:/c'],
];

for (const [sent, expected] of PATHS) {
  test(`the upstream receives ${sent} as ${expected}`, async (t) => {
    const { response, id } = await tagged(shared, sent);
    t.is(response.status, 200, response.body);
    t.is(mustHaveReached(t, shared, id, response).url, expected);
  });
}

test('an absolute-form target: the upstream Host is its authority, not the Host field (RFC 9112 §3.2.2)', async (t) => {
  const id = testId();
  const raw = await rawRequest(
    shared.port,
    `GET http://api.example:8080/public/abs HTTP/1.1\r\nHost: evil.example\r\nX-Test-Id: ${id}\r\nConnection: close\r\n\r\n`,
  );
  t.regex(raw, /^HTTP\/1\.1 200 /);
  const seen = mustHaveReached(t, shared, id);
  t.is(seen.url, '/public/abs');
  t.is(seen.headers.host, 'api.example:8080');
  t.is(seen.headers['x-forwarded-host'], 'api.example:8080');
});

test('a protected route is forwarded on its normalised path', async (t) => {
  const token = shared.as.issue({ scope: 'orders:read' });
  const { response, id } = await tagged(shared, '/api//orders/./7/../1?expand=a//b', {
    authorization: bearer(token),
  });
  t.is(response.status, 200, response.body);
  t.is(mustHaveReached(t, shared, id, response).url, '/api/orders/1?expand=a//b');
});

// ── the upstream's hop-by-hop response fields never reach the client ──

test("the upstream's hop-by-hop response fields do not reach the client", async (t) => {
  const api = http.createServer((req, res) => {
    req.resume();
    req.once('end', () => {
      res.writeHead(200, {
        'Content-Type': 'text/plain',
        'Content-Length': '2',
        Connection: 'X-Secret, X-Internal-Route',
        'X-Secret': 'the upstream only',
        'X-Internal-Route': 'pod-7',
        'Keep-Alive': 'timeout=99, max=7',
        'Proxy-Connection': 'keep-alive',
        Upgrade: 'h2c',
        'X-Public': 'visible',
      });
      res.end('ok');
    });
  });
  await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
  const apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  try {
    await withHarness(
      () => ({ upstream: { url: apiUrl, timeout_ms: 15_000 } }),
      async (harness) => {
        const response = await request(`${harness.url}/public/response`, { timeoutMs: 30_000 });
        t.is(response.status, 200);
        t.is(response.body, 'ok');
        t.is(response.headers['x-public'], 'visible', 'end-to-end fields pass');
        t.is(response.headers['x-secret'], undefined);
        t.is(response.headers['x-internal-route'], undefined);
        t.notRegex(String(response.headers['keep-alive'] ?? ''), /timeout=99|max=7/);
        t.is(response.headers['proxy-connection'], undefined);
        t.is(response.headers.upgrade, undefined);
        t.notRegex(String(response.headers.connection ?? ''), /x-secret|x-internal-route/i);
      },
    );
  } finally {
    await new Promise<void>((resolve) => {
      api.close(() => resolve());
      api.closeAllConnections();
    });
  }
});
