/**
 * PRODUCT.md "What a request gets", one table row per situation, plus the routing rules
 * ("Routing") that decide which row a request lands in. Every row runs against its own real
 * authorization server, echo upstream and gateway (started here, closed in teardown), and
 * asserts what the contract fixes: the status, the RFC 6750 challenge where one is named, the
 * JSON error body, Retry-After, Cache-Control, and — by counting — whether the upstream was
 * reached and whether the authorization server was asked.
 */
import test, { type ExecutionContext } from 'ava';
import type { IntrospectionFault } from '../src/dev/auth-server.js';
import {
  freePort,
  mergeConfig,
  rawRequest,
  request,
  startHarness,
  type Harness,
  type HarnessContext,
} from './_harness.js';

type Headers = Record<string, string | string[] | undefined>;

interface Reply {
  status: number;
  headers: Headers;
  body: string;
}

type ErrorCode =
  | 'unauthorized'
  | 'invalid_request'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'too_many_requests'
  | 'temporarily_unavailable'
  | 'not_found'
  | 'method_not_allowed'
  | 'bad_gateway'
  | 'gateway_timeout';

interface Expectation {
  status: number;
  /** The JSON body's `error`; `error_description` must then be a string. */
  error?: ErrorCode;
  /**
   * `bare`: exactly `Bearer realm="tokenguard"` (RFC 6750 §3.1, no error code);
   * otherwise a Bearer challenge with these auth-params.
   */
  challenge?: 'bare' | { error: string; scope?: string };
  /** `Retry-After` is an integer number of seconds, at least 1. */
  retryAfter?: true;
  upstream?: 'reached' | 'not reached';
  as?: 'asked' | 'not asked';
  /** For a forwarded request: the request-target the upstream recorded. */
  upstreamUrl?: string;
  upstreamMethod?: string;
}

interface RowEnvironment {
  /** A port on 127.0.0.1 that nothing listens on (a fresh one per row). */
  closedPort: number;
}

type Tokens = Record<string, string>;

interface Row {
  title: string;
  config?: (ctx: HarnessContext, env: RowEnvironment) => Record<string, unknown>;
  /** Runs before the counters are read: mints tokens, earns a block, sets a fault. */
  arrange?: (harness: Harness, t: ExecutionContext) => Promise<Tokens> | Tokens;
  act: (harness: Harness, tokens: Tokens) => Promise<Reply>;
  expect: Expectation;
  also?: (t: ExecutionContext, harness: Harness, reply: Reply) => Promise<void> | void;
}

/** Generous bounds: the machine is shared, and no row asserts on speed. */
const BASE_CONFIG = {
  upstream: { timeout_ms: 15_000 },
  introspection: { timeout_ms: 10_000 },
};

const SHORT_INTROSPECTION_TIMEOUT_MS = 500;

/** Statuses whose responses must never be stored by a cache. */
const NO_STORE_STATUSES = new Set([400, 401, 403, 429, 503]);

const BARE_CHALLENGE = 'Bearer realm="tokenguard"';

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

async function send(
  harness: Harness,
  path: string,
  options: { method?: string; headers?: Record<string, string | string[]> } = {},
): Promise<Reply> {
  const response = await request(harness.url, { ...options, path, timeoutMs: 30_000 });
  return { status: response.status, headers: response.headers, body: response.body };
}

/** A raw exchange on its own connection; `text` should end the request (`\r\n\r\n`). */
async function sendRaw(harness: Harness, text: string): Promise<Reply> {
  return parseRawResponse(await rawRequest(harness.port, text, 5000));
}

function parseRawResponse(text: string): Reply {
  const headEnd = text.indexOf('\r\n\r\n');
  if (headEnd === -1) return { status: 0, headers: {}, body: text };
  const [statusLine = '', ...lines] = text.slice(0, headEnd).split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
  const headers: Headers = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const previous = headers[name];
    headers[name] =
      previous === undefined
        ? value
        : Array.isArray(previous)
          ? [...previous, value]
          : [previous, value];
  }
  let body = text.slice(headEnd + 4);
  if (/chunked/i.test(String(headers['transfer-encoding'] ?? ''))) {
    let decoded = '';
    let rest = body;
    for (;;) {
      const lineEnd = rest.indexOf('\r\n');
      const size = Number.parseInt(rest.slice(0, lineEnd), 16);
      if (lineEnd === -1 || !Number.isFinite(size) || size === 0) break;
      decoded += rest.slice(lineEnd + 2, lineEnd + 2 + size);
      rest = rest.slice(lineEnd + 2 + size + 2);
    }
    body = decoded;
  } else if (headers['content-length'] !== undefined) {
    body = body.slice(0, Number(headers['content-length']));
  }
  return { status, headers, body };
}

const TOKEN_CHARS = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const AUTH_PARAM = new RegExp(
  `\\s*(${TOKEN_CHARS})\\s*=\\s*(?:"((?:[^"\\\\]|\\\\.)*)"|(${TOKEN_CHARS}))\\s*(?:,|$)`,
  'y',
);

/**
 * RFC 9110 §11.6.1 challenge: `scheme auth-param, auth-param…`. Returns undefined when the
 * header is not one well-formed challenge, or repeats a parameter (RFC 6750 §3: at most once).
 */
function parseChallenge(
  header: string,
): { scheme: string; params: Record<string, string> } | undefined {
  const match = new RegExp(`^(${TOKEN_CHARS})(?: +(.*))?$`).exec(header);
  if (!match) return undefined;
  const rest = match[2] ?? '';
  const params: Record<string, string> = {};
  let index = 0;
  while (index < rest.length) {
    AUTH_PARAM.lastIndex = index;
    const param = AUTH_PARAM.exec(rest);
    if (!param || AUTH_PARAM.lastIndex === index) return undefined;
    const name = (param[1] as string).toLowerCase();
    if (Object.hasOwn(params, name)) return undefined;
    params[name] = param[2] !== undefined ? param[2].replace(/\\(.)/g, '$1') : (param[3] as string);
    index = AUTH_PARAM.lastIndex;
  }
  return { scheme: match[1] as string, params };
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

/** At most `max` harnesses at a time: the machine has two cores, shared. */
function createLimiter(max: number) {
  let active = 0;
  const waiting: Array<() => void> = [];
  return async <T>(run: () => Promise<T>): Promise<T> => {
    if (active < max) active += 1;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await run();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else active -= 1;
    }
  };
}
const limit = createLimiter(3);

const nowSeconds = () => Math.floor(Date.now() / 1000);

// Routes used by several rows, on top of the harness's default ones.
const REPORTS_ROUTE = {
  name: 'reports',
  path: '/api/reports',
  methods: ['GET'],
  scopes: ['reports:read', 'reports:export'],
};

const FAULTS: Array<[string, IntrospectionFault]> = [
  ['drops the connection (down)', 'down'],
  ['hangs past introspection.timeout_ms', 'hang'],
  ['answers only after introspection.timeout_ms', { delayMs: 2500 }],
  ['answers HTTP 500', 'status-500'],
  ['answers a body that is not JSON', 'not-json'],
  ['answers JSON under a non-JSON content type', 'wrong-content-type'],
  ['answers "active": "true" (a string, not a boolean)', 'active-string'],
  ['answers without "active"', 'active-missing'],
  ['answers a 1 MiB body', 'huge'],
];

// Request targets the normaliser must refuse. All are under the `auth: none` prefix
// `/public`, so anything but a refusal would be forwarded.
const REFUSED_TARGETS: Array<[string, string]> = [
  ['/public/%2e%2e%2f', 'encoded dot-segment followed by an encoded /'],
  ['/public/%2fadmin', 'encoded /'],
  ['/public/a%5cb', 'encoded \\'],
  ['/public\\..\\api', 'raw \\'],
  ['/public/..;/x', '.. once a ;parameter is cut off'],
  ['/public/.;v=1/x', '. once a ;parameter is cut off'],
  ['/public/%00', 'encoded NUL'],
  ['/public/a%0Ab', 'encoded LF'],
  ['/public/%7F', 'encoded DEL'],
  ['/..', '.. above the root'],
  ['/public/../../x', '.. above the root after resolving'],
  ['/public/%C0%AE%C0%AE/x', 'overlong UTF-8'],
  ['/public/%FF', 'invalid UTF-8'],
  ['/public/x#fragment', 'a fragment'],
];

const rows: Row[] = [
  // ── route with `auth: none` → forwarded, identity headers still stripped ──
  {
    title: 'auth: none route: forwarded without a token, client identity headers stripped',
    act: (h) =>
      send(h, '/public/hello', {
        headers: { 'X-Auth-Subject': 'mallory', 'x-auth-scope': 'orders:write' },
      }),
    expect: { status: 200, upstream: 'reached', as: 'not asked', upstreamUrl: '/public/hello' },
    also: (t, h) => {
      const seen = h.upstream.requests.at(-1)?.headers ?? {};
      t.is(seen['x-auth-subject'], undefined);
      t.is(seen['x-auth-scope'], undefined);
    },
  },
  {
    title: 'auth: none route: forwarded even with malformed bearer credentials',
    act: (h) => send(h, '/public/hello', { headers: { authorization: 'Bearer a b' } }),
    expect: { status: 200, upstream: 'reached', as: 'not asked' },
  },

  // ── no `Authorization: Bearer` credentials → 401, bare challenge ──
  {
    title: 'no Authorization header: 401 with the bare Bearer challenge',
    act: (h) => send(h, '/api/orders/1'),
    expect: {
      status: 401,
      error: 'unauthorized',
      challenge: 'bare',
      upstream: 'not reached',
      as: 'not asked',
    },
  },
  {
    title: 'Basic credentials are no bearer credentials: 401 with the bare Bearer challenge',
    act: (h) => send(h, '/api/orders/1', { headers: { authorization: 'Basic dXNlcjpwYXNz' } }),
    expect: {
      status: 401,
      error: 'unauthorized',
      challenge: 'bare',
      upstream: 'not reached',
      as: 'not asked',
    },
  },
  {
    title: 'a token in the query string is no bearer credentials: 401 bare challenge',
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:read' }) }),
    act: (h, { token }) => send(h, `/api/orders/1?access_token=${token}`),
    expect: {
      status: 401,
      error: 'unauthorized',
      challenge: 'bare',
      upstream: 'not reached',
      as: 'not asked',
    },
  },

  // ── malformed bearer credentials → 400 invalid_request, AS not asked ──
  ...(
    [
      ['empty (the scheme alone)', () => 'Bearer'],
      ['empty (scheme and a space)', () => 'Bearer '],
      ['illegal character $', (token) => `Bearer ${token}$`],
      ['illegal character ,', (token) => `Bearer ${token.slice(0, 10)},${token.slice(10)}`],
      ['illegal character "', (token) => `Bearer "${token}"`],
      ['= inside the token', (token) => `Bearer ${token.slice(0, 10)}=${token.slice(10)}`],
      ['non-ASCII character', (token) => `Bearer ${token}\u00e9`],
      ['over 4 KiB (4097 bytes)', () => `Bearer ${'a'.repeat(4097)}`],
      ['two tokens in one header', (token, second) => `Bearer ${token} ${second}`],
      [
        'two Bearer credentials in one header',
        (token, second) => `Bearer ${token}, Bearer ${second}`,
      ],
    ] as Array<[string, (token: string, second: string) => string]>
  ).map(([what, authorization]): Row => ({
    title: `malformed bearer credentials, ${what}: 400 invalid_request, AS not asked`,
    // Real, active tokens: a gateway that asked about them would forward the request.
    arrange: ({ as }) => ({
      token: as.issue({ scope: 'orders:read' }),
      second: as.issue({ scope: 'orders:read' }),
    }),
    act: (h, { token = '', second = '' }) =>
      send(h, '/api/orders/1', { headers: { authorization: authorization(token, second) } }),
    expect: {
      status: 400,
      error: 'invalid_request',
      challenge: { error: 'invalid_request' },
      upstream: 'not reached',
      as: 'not asked',
    },
  })),
  {
    title: 'malformed bearer credentials, two Authorization headers: 400, AS not asked',
    arrange: ({ as }) => ({
      token: as.issue({ scope: 'orders:read' }),
      second: as.issue({ scope: 'orders:read' }),
    }),
    act: (h, { token, second }) =>
      sendRaw(
        h,
        'GET /api/orders/1 HTTP/1.1\r\nHost: gateway.test\r\n' +
          `Authorization: Bearer ${token}\r\nAuthorization: Bearer ${second}\r\n` +
          'Connection: close\r\n\r\n',
      ),
    expect: {
      status: 400,
      error: 'invalid_request',
      challenge: { error: 'invalid_request' },
      upstream: 'not reached',
      as: 'not asked',
    },
  },
  {
    title: 'a 4096-byte token is not malformed: the AS is asked (unknown → 401 invalid_token)',
    act: (h) => send(h, '/api/orders/1', { headers: bearer('a'.repeat(4096)) }),
    expect: {
      status: 401,
      error: 'invalid_token',
      challenge: { error: 'invalid_token' },
      upstream: 'not reached',
      as: 'asked',
    },
  },

  // ── inactive, expired, not yet valid, wrong issuer or audience → 401 invalid_token ──
  ...(
    [
      ['inactive', () => ({}), ({ as }) => as.issue({ active: false, scope: 'orders:read' })],
      ['unknown to the authorization server', () => ({}), () => 'bm90LWEtcmVhbC10b2tlbg'],
      [
        'expired (exp 120 s ago, beyond the 30 s skew)',
        () => ({}),
        ({ as }) => as.issue({ scope: 'orders:read', exp: nowSeconds() - 120 }),
      ],
      [
        'not yet valid (nbf 120 s ahead, beyond the 30 s skew)',
        () => ({}),
        ({ as }) => as.issue({ scope: 'orders:read', nbf: nowSeconds() + 120 }),
      ],
      [
        'from another issuer',
        ({ as }) => ({ introspection: { issuer: as.url } }),
        ({ as }) => as.issue({ scope: 'orders:read', iss: 'https://other-issuer.example' }),
      ],
      [
        'for another audience',
        () => ({ introspection: { audience: ['orders-api'] } }),
        ({ as }) => as.issue({ scope: 'orders:read', aud: 'billing-api' }),
      ],
      [
        'for other audiences (aud array without a match)',
        () => ({ introspection: { audience: ['orders-api'] } }),
        ({ as }) => as.issue({ scope: 'orders:read', aud: ['billing-api', 'orders-api-v2'] }),
      ],
      [
        'without aud while an audience is configured',
        () => ({ introspection: { audience: ['orders-api'] } }),
        ({ as }) => as.issue({ scope: 'orders:read' }),
      ],
    ] as Array<[string, (ctx: HarnessContext) => Record<string, unknown>, (h: Harness) => string]>
  ).map(([what, config, mint]): Row => ({
    title: `token ${what}: 401 invalid_token`,
    config,
    arrange: (h) => ({ token: mint(h) }),
    act: (h, { token = '' }) => send(h, '/api/orders/1', { headers: bearer(token) }),
    expect: {
      status: 401,
      error: 'invalid_token',
      challenge: { error: 'invalid_token' },
      upstream: 'not reached',
      as: 'asked',
    },
  })),
  // The same rules, passed: the rows above fail for the reason they name.
  ...(
    [
      [
        'expired only within the 30 s skew',
        () => ({}),
        ({ as }) => as.issue({ scope: 'orders:read', exp: nowSeconds() - 5 }),
      ],
      [
        'not yet valid only within the 30 s skew',
        () => ({}),
        ({ as }) => as.issue({ scope: 'orders:read', nbf: nowSeconds() + 5 }),
      ],
      [
        'from the configured issuer',
        ({ as }) => ({ introspection: { issuer: as.url } }),
        ({ as }) => as.issue({ scope: 'orders:read' }),
      ],
      [
        'whose aud array contains the configured audience',
        () => ({ introspection: { audience: ['orders-api'] } }),
        ({ as }) => as.issue({ scope: 'orders:read', aud: ['billing-api', 'orders-api'] }),
      ],
      [
        'whose aud string is one of the configured audiences',
        () => ({ introspection: { audience: ['billing-api', 'orders-api'] } }),
        ({ as }) => as.issue({ scope: 'orders:read', aud: 'orders-api' }),
      ],
    ] as Array<[string, (ctx: HarnessContext) => Record<string, unknown>, (h: Harness) => string]>
  ).map(([what, config, mint]): Row => ({
    title: `token ${what}: forwarded`,
    config,
    arrange: (h) => ({ token: mint(h) }),
    act: (h, { token = '' }) => send(h, '/api/orders/1', { headers: bearer(token) }),
    expect: { status: 200, upstream: 'reached', as: 'asked', upstreamUrl: '/api/orders/1' },
  })),

  // ── token active, scope missing → 403 insufficient_scope, scope="<required>" ──
  {
    title: 'scope missing: 403 insufficient_scope naming the required scope',
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:write profile' }) }),
    act: (h, { token = '' }) => send(h, '/api/orders/1', { headers: bearer(token) }),
    expect: {
      status: 403,
      error: 'insufficient_scope',
      challenge: { error: 'insufficient_scope', scope: 'orders:read' },
      upstream: 'not reached',
      as: 'asked',
    },
  },
  ...(
    [
      ['a different case (ORDERS:READ)', 'ORDERS:READ'],
      ['a longer word (orders:readx)', 'orders:readx'],
      ['a word prefix (orders)', 'orders'],
    ] as Array<[string, string]>
  ).map(([what, scope]): Row => ({
    title: `scopes are exact words: ${what} does not grant orders:read (403)`,
    arrange: ({ as }) => ({ token: as.issue({ scope }) }),
    act: (h, { token = '' }) => send(h, '/api/orders/1', { headers: bearer(token) }),
    expect: {
      status: 403,
      error: 'insufficient_scope',
      challenge: { error: 'insufficient_scope', scope: 'orders:read' },
      upstream: 'not reached',
    },
  })),
  ...(
    [
      ['reports:read', 403],
      ['reports:export', 403],
      ['reports:export other reports:read', 200],
    ] as Array<[string, number]>
  ).map(([scope, status]): Row => ({
    title: `a route requiring two scopes needs both: token scope "${scope}" → ${status}`,
    config: () => ({ routes: [REPORTS_ROUTE] }),
    arrange: ({ as }) => ({ token: as.issue({ scope }) }),
    act: (h, { token = '' }) => send(h, '/api/reports', { headers: bearer(token) }),
    expect:
      status === 403
        ? {
            status: 403,
            error: 'insufficient_scope',
            challenge: { error: 'insufficient_scope', scope: 'reports:read reports:export' },
            upstream: 'not reached',
          }
        : { status: 200, upstream: 'reached', upstreamUrl: '/api/reports' },
  })),

  // ── client blocked for fishing → 429, Retry-After, AS not asked ──
  {
    title: 'client blocked for fishing: 429 with Retry-After for a valid token, AS not asked',
    config: () => ({ fishing: { max_failures: 3, block_seconds: 120 } }),
    arrange: async (h, t) => {
      for (let attempt = 1; attempt <= 3; attempt += 1) {
        const failure = await send(h, '/api/any/probe', {
          headers: bearer(h.as.issue({ active: false })),
        });
        t.is(failure.status, 401, `failure ${attempt} of max_failures is answered normally`);
      }
      return { token: h.as.issue({ scope: 'orders:read' }) };
    },
    act: (h, { token = '' }) => send(h, '/api/orders/1', { headers: bearer(token) }),
    expect: {
      status: 429,
      error: 'too_many_requests',
      retryAfter: true,
      upstream: 'not reached',
      as: 'not asked',
    },
    also: async (t, h, reply) => {
      t.true(Number(reply.headers['retry-after']) <= 120, 'at most block_seconds');
      const open = await send(h, '/public/still-open');
      t.is(open.status, 200, 'auth: none routes still serve a blocked client');
    },
  },

  // ── authorization server down, slow, or answering garbage → 503, never forwarded ──
  ...FAULTS.map(([what, fault]): Row => ({
    title: `authorization server ${what}: 503, never forwarded`,
    // The short bound only where the fault is slowness: on a loaded machine it can also run
    // out before a fault that answers (a 500) is even asked, and the row would not test it.
    config: () =>
      fault === 'hang' || typeof fault === 'object'
        ? { introspection: { timeout_ms: SHORT_INTROSPECTION_TIMEOUT_MS } }
        : {},
    arrange: ({ as }) => {
      const token = as.issue({ scope: 'orders:read' });
      as.setFault(fault);
      return { token };
    },
    act: (h, { token = '' }) => send(h, '/api/orders/1', { headers: bearer(token) }),
    expect: {
      status: 503,
      error: 'temporarily_unavailable',
      retryAfter: true,
      upstream: 'not reached',
      as: 'asked',
    },
  })),
  {
    title: 'authorization server not listening at all: 503, never forwarded',
    config: (_ctx, { closedPort: port }) => ({
      introspection: { endpoint: `http://127.0.0.1:${port}/oauth2/introspect` },
    }),
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:read' }) }),
    act: (h, { token = '' }) => send(h, '/api/orders/1', { headers: bearer(token) }),
    expect: {
      status: 503,
      error: 'temporarily_unavailable',
      retryAfter: true,
      upstream: 'not reached',
    },
  },

  // ── unmatched route with default_action: deny → 404, upstream not reached ──
  {
    title: 'unmatched route (default_action: deny): 404 even with a valid token',
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:read orders:write' }) }),
    act: (h, { token = '' }) => send(h, '/internal/admin', { headers: bearer(token) }),
    expect: { status: 404, error: 'not_found', upstream: 'not reached' },
  },
  {
    title: 'a method no route lists on a path routes match: PATCH /api/orders/1 → 405 with Allow',
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:read orders:write' }) }),
    act: (h, { token = '' }) =>
      send(h, '/api/orders/1', { method: 'PATCH', headers: bearer(token) }),
    expect: {
      status: 405,
      error: 'method_not_allowed',
      upstream: 'not reached',
      as: 'not asked',
    },
    also: (t, _h, reply) => void t.is(reply.headers.allow, 'GET, HEAD, POST, PUT, DELETE'),
  },
  {
    title: 'default_action authenticate never takes a method the matching routes do not list: 405',
    config: () => ({ default_action: 'authenticate' }),
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:read orders:write' }) }),
    act: (h, { token = '' }) =>
      send(h, '/api/orders/1', { method: 'PATCH', headers: bearer(token) }),
    expect: {
      status: 405,
      error: 'method_not_allowed',
      upstream: 'not reached',
      as: 'not asked',
    },
    also: (t, _h, reply) => void t.is(reply.headers.allow, 'GET, HEAD, POST, PUT, DELETE'),
  },
  {
    title: 'a method on a path no route matches is unmatched: PATCH /nowhere → 404',
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:read orders:write' }) }),
    act: (h, { token = '' }) => send(h, '/nowhere', { method: 'PATCH', headers: bearer(token) }),
    expect: { status: 404, error: 'not_found', upstream: 'not reached' },
  },
  {
    title: '/public//..//admin is /admin, not a public path: 404',
    act: (h) => send(h, '/public//..//admin'),
    expect: { status: 404, error: 'not_found', upstream: 'not reached' },
  },
  {
    title:
      'encoded dot-segments resolve before matching: /public/%2e%2e/api/orders/1 needs a token',
    act: (h) => send(h, '/public/%2e%2e/api/orders/1'),
    expect: {
      status: 401,
      error: 'unauthorized',
      challenge: 'bare',
      upstream: 'not reached',
    },
  },
  {
    title: 'prefix routes are segment-bounded: POST /api/ordersx is not under /api/orders (404)',
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:write' }) }),
    act: (h, { token = '' }) => send(h, '/api/ordersx', { method: 'POST', headers: bearer(token) }),
    expect: { status: 404, error: 'not_found', upstream: 'not reached' },
  },
  {
    title:
      'prefix routes are segment-bounded: /publicity is not under the auth: none /public (404)',
    act: (h) => send(h, '/publicity'),
    expect: { status: 404, error: 'not_found', upstream: 'not reached' },
  },
  {
    title: 'prefix routes cover the prefix and below: POST /api/orders/7/items is forwarded',
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:write' }) }),
    act: (h, { token = '' }) =>
      send(h, '/api/orders/7/items', { method: 'POST', headers: bearer(token) }),
    expect: { status: 200, upstream: 'reached', upstreamUrl: '/api/orders/7/items' },
  },

  // ── default_action: authenticate ──
  {
    title: 'default_action authenticate: an unmatched request with any active token is forwarded',
    config: () => ({ default_action: 'authenticate' }),
    arrange: ({ as }) => ({ token: as.issue({ scope: '' }) }),
    act: (h, { token = '' }) => send(h, '/internal/status', { headers: bearer(token) }),
    expect: { status: 200, upstream: 'reached', as: 'asked', upstreamUrl: '/internal/status' },
  },
  {
    title: 'default_action authenticate: an unmatched request without a token gets 401',
    config: () => ({ default_action: 'authenticate' }),
    act: (h) => send(h, '/internal/status'),
    expect: {
      status: 401,
      error: 'unauthorized',
      challenge: 'bare',
      upstream: 'not reached',
      as: 'not asked',
    },
  },
  {
    title: 'default_action authenticate: an unmatched request with an inactive token gets 401',
    config: () => ({ default_action: 'authenticate' }),
    arrange: ({ as }) => ({ token: as.issue({ active: false }) }),
    act: (h, { token = '' }) => send(h, '/internal/status', { headers: bearer(token) }),
    expect: {
      status: 401,
      error: 'invalid_token',
      challenge: { error: 'invalid_token' },
      upstream: 'not reached',
    },
  },

  // ── path refused by the normaliser → 400, upstream not reached ──
  ...REFUSED_TARGETS.map(([target, what]): Row => ({
    title: `path refused by the normaliser (${what}): ${target} → 400`,
    act: (h) => send(h, target),
    expect: { status: 400, error: 'invalid_request', upstream: 'not reached' },
  })),
  {
    title: 'path refused by the normaliser (asterisk-form target): OPTIONS * → 400',
    act: (h) => sendRaw(h, 'OPTIONS * HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n'),
    expect: { status: 400, error: 'invalid_request', upstream: 'not reached' },
  },

  // ── TRACE and CONNECT → 405 ──
  {
    title: 'TRACE: 405 method_not_allowed, not forwarded',
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:read' }) }),
    act: (h, { token = '' }) => send(h, '/public/x', { method: 'TRACE', headers: bearer(token) }),
    expect: { status: 405, error: 'method_not_allowed', upstream: 'not reached' },
  },
  {
    title: 'CONNECT: 405 method_not_allowed, not forwarded',
    act: (h) =>
      sendRaw(
        h,
        `CONNECT ${new URL(h.upstream.url).host} HTTP/1.1\r\nHost: ${new URL(h.upstream.url).host}\r\n\r\n`,
      ),
    expect: { status: 405, error: 'method_not_allowed', upstream: 'not reached' },
  },

  // ── upstream refuses / times out → 502 / 504 ──
  {
    title: 'upstream refuses the connection: 502 bad_gateway',
    config: (_ctx, { closedPort: port }) => ({ upstream: { url: `http://127.0.0.1:${port}` } }),
    arrange: ({ as }) => ({ token: as.issue({ scope: '' }) }),
    act: (h, { token = '' }) => send(h, '/api/any/thing', { headers: bearer(token) }),
    expect: { status: 502, error: 'bad_gateway', as: 'asked' },
  },
  {
    title: 'upstream answers after upstream.timeout_ms: 504 gateway_timeout',
    config: () => ({ upstream: { timeout_ms: 300 } }),
    arrange: ({ as }) => ({ token: as.issue({ scope: '' }) }),
    act: (h, { token = '' }) => send(h, '/api/any/__slow?ms=3000', { headers: bearer(token) }),
    expect: { status: 504, error: 'gateway_timeout', upstream: 'reached', as: 'asked' },
  },

  // ── routing: HEAD, case, first match ──
  {
    title: 'a GET route matches HEAD: forwarded as HEAD',
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:read' }) }),
    act: (h, { token = '' }) =>
      send(h, '/api/orders/1', { method: 'HEAD', headers: bearer(token) }),
    expect: { status: 200, upstream: 'reached', upstreamMethod: 'HEAD' },
  },
  {
    title: 'a GET route matches HEAD: HEAD without a token gets 401, not 404',
    act: (h) => send(h, '/api/orders/1', { method: 'HEAD' }),
    expect: { status: 401, challenge: 'bare', upstream: 'not reached' },
  },
  {
    title: 'case-insensitive matching: /API/ORDERS/1 without a token gets 401',
    act: (h) => send(h, '/API/ORDERS/1'),
    expect: { status: 401, error: 'unauthorized', challenge: 'bare', upstream: 'not reached' },
  },
  {
    title: 'case-insensitive matching: /API/ORDERS/1 still needs orders:read (403)',
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:write' }) }),
    act: (h, { token = '' }) => send(h, '/API/ORDERS/1', { headers: bearer(token) }),
    expect: {
      status: 403,
      error: 'insufficient_scope',
      challenge: { error: 'insufficient_scope', scope: 'orders:read' },
      upstream: 'not reached',
    },
  },
  {
    title: 'case-insensitive matching: /Api/Orders/1 cannot fall to default_action authenticate',
    config: () => ({ default_action: 'authenticate' }),
    arrange: ({ as }) => ({ token: as.issue({ scope: '' }) }),
    act: (h, { token = '' }) => send(h, '/Api/Orders/1', { headers: bearer(token) }),
    expect: {
      status: 403,
      error: 'insufficient_scope',
      challenge: { error: 'insufficient_scope', scope: 'orders:read' },
      upstream: 'not reached',
    },
  },
  {
    title: 'case-insensitive matching: /API/ORDERS/1 with orders:read is forwarded as sent',
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:read' }) }),
    act: (h, { token = '' }) => send(h, '/API/ORDERS/1', { headers: bearer(token) }),
    expect: { status: 200, upstream: 'reached', upstreamUrl: '/API/ORDERS/1' },
  },
  {
    title: 'routes_case_sensitive: true: /API/ORDERS/1 is unmatched (404)',
    config: () => ({ routes_case_sensitive: true }),
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:read' }) }),
    act: (h, { token = '' }) => send(h, '/API/ORDERS/1', { headers: bearer(token) }),
    expect: { status: 404, error: 'not_found', upstream: 'not reached' },
  },
  {
    title: 'routes_case_sensitive: true: /api/orders/1 still matches',
    config: () => ({ routes_case_sensitive: true }),
    arrange: ({ as }) => ({ token: as.issue({ scope: 'orders:read' }) }),
    act: (h, { token = '' }) => send(h, '/api/orders/1', { headers: bearer(token) }),
    expect: { status: 200, upstream: 'reached', upstreamUrl: '/api/orders/1' },
  },
  // A route list where an earlier route takes what a later one would (the same prefix twice)
  // is refused by `check` and at start-up (test/check.test.ts); what remains is the order
  // that is meant: the specific route first.
  {
    title: 'first match wins: a specific protected path before an open prefix',
    config: () => ({
      routes: [
        { name: 'docs-admin', path: '/docs/admin', scopes: ['docs:admin'] },
        { name: 'docs-open', prefix: '/docs', auth: 'none' },
      ],
    }),
    arrange: ({ as }) => ({ token: as.issue({ scope: 'docs:read' }) }),
    act: (h, { token = '' }) => send(h, '/docs/admin', { headers: bearer(token) }),
    expect: {
      status: 403,
      error: 'insufficient_scope',
      challenge: { error: 'insufficient_scope', scope: 'docs:admin' },
      upstream: 'not reached',
    },
  },
];

for (const row of rows) {
  test(row.title, async (t) => {
    const env: RowEnvironment = { closedPort: await freePort() };
    await limit(async () => {
      const harness = await startHarness({
        config: (ctx) => mergeConfig(BASE_CONFIG, row.config?.(ctx, env) ?? {}),
      });
      try {
        const tokens = (await row.arrange?.(harness, t)) ?? {};
        const upstreamBefore = harness.upstream.requests.length;
        const asBefore = harness.as.introspectionCalls;
        const reply = await row.act(harness, tokens);
        assertReply(t, row.expect, reply);

        const upstreamCalls = harness.upstream.requests.length - upstreamBefore;
        if (row.expect.upstream === 'reached') {
          t.is(upstreamCalls, 1, 'the upstream received the request once');
          const seen = harness.upstream.requests.at(-1);
          if (row.expect.upstreamUrl !== undefined) t.is(seen?.url, row.expect.upstreamUrl);
          if (row.expect.upstreamMethod !== undefined) {
            t.is(seen?.method, row.expect.upstreamMethod);
          }
        } else if (row.expect.upstream === 'not reached') {
          t.is(upstreamCalls, 0, 'the upstream was not reached');
        }
        const asCalls = harness.as.introspectionCalls - asBefore;
        if (row.expect.as === 'asked') t.true(asCalls >= 1, 'the authorization server was asked');
        else if (row.expect.as === 'not asked') {
          t.is(asCalls, 0, 'the authorization server was not asked');
        }
        await row.also?.(t, harness, reply);
      } finally {
        await harness.close();
      }
    });
  });
}

function assertReply(t: ExecutionContext, expected: Expectation, reply: Reply): void {
  t.is(reply.status, expected.status, `response body: ${reply.body}`);

  if (expected.error !== undefined) {
    t.regex(String(reply.headers['content-type'] ?? ''), /^application\/json\b/);
    let body: { error?: unknown; error_description?: unknown } = {};
    try {
      body = JSON.parse(reply.body) as typeof body;
    } catch {
      t.fail(`the error body is not JSON: ${reply.body}`);
    }
    t.is(body.error, expected.error);
    t.is(typeof body.error_description, 'string');
  }

  const challenge = single(reply.headers['www-authenticate']);
  if (expected.challenge === 'bare') {
    t.is(challenge, BARE_CHALLENGE);
  } else if (expected.challenge !== undefined) {
    const parsed = parseChallenge(challenge ?? '');
    if (!parsed) {
      t.fail(`WWW-Authenticate is not one well-formed challenge: ${String(challenge)}`);
      return;
    }
    t.is(parsed.scheme.toLowerCase(), 'bearer');
    t.is(parsed.params.realm, 'tokenguard');
    t.is(parsed.params.error, expected.challenge.error);
    if (expected.challenge.scope !== undefined) {
      t.is(parsed.params.scope, expected.challenge.scope);
    }
  }

  if (expected.retryAfter) {
    const retryAfter = single(reply.headers['retry-after']) ?? '';
    t.regex(retryAfter, /^[1-9]\d*$/, `Retry-After is whole seconds ≥ 1, got "${retryAfter}"`);
  }

  if (NO_STORE_STATUSES.has(expected.status)) {
    const directives = (single(reply.headers['cache-control']) ?? '')
      .split(',')
      .map((directive) => directive.trim().toLowerCase());
    t.true(directives.includes('no-store'), 'Cache-Control: no-store');
  }
}
