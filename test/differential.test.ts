/**
 * Differential tests (issue "P3 Unbypassable"): the gateway in front of real servers that
 * other ecosystems use — Apache Tomcat 10, Go's net/http (a bare Handler and a ServeMux), nginx
 * and Caddy 2.6 — started by test/_real-upstreams.ts. A bypass is a request the gateway judges
 * as one thing and the upstream executes as another, so every row asserts both the gateway's status
 * and what the real upstream *executed* (the path it dispatched on, the method, the identity
 * headers it saw), or that it executed nothing. Each row names what motivates it.
 *
 * The contract is PRODUCT.md ("Routing", "What the upstream receives"). Requests are written
 * as raw bytes on their own TCP connection: exact bytes matter here. Each upstream's rows run
 * one at a time (a lane per upstream, since a row reads that upstream's log), the five lanes
 * side by side. Rows that may poison the gateway's pooled upstream connections (upgrade
 * smuggling) get a gateway of their own, closed before the upstream's log is read, so a
 * request stuck in the upstream is recorded (and nothing leaks into the next row).
 * A server that cannot be started fails its rows with the reason; nothing is skipped.
 */
import net from 'node:net';
import test, { type ExecutionContext } from 'ava';
import { startHarness, type Harness } from './_harness.js';
import {
  startRealUpstreams,
  type Executed,
  type RealUpstream,
  type UpstreamName,
} from './_real-upstreams.js';

const UPSTREAMS: readonly UpstreamName[] = ['tomcat', 'go', 'go-mux', 'nginx', 'caddy'];
type Mode = 'deny' | 'authenticate';
const MODES: readonly Mode[] = ['deny', 'authenticate'];

const ROUTES = [
  { name: 'public', prefix: '/public', auth: 'none' },
  { name: 'admin', prefix: '/admin', scopes: ['admin'] },
  { name: 'orders-read', path: '/api/orders/:id', methods: ['GET'], scopes: ['orders:read'] },
  {
    name: 'orders-write',
    prefix: '/api/orders',
    methods: ['POST', 'PUT', 'DELETE'],
    scopes: ['orders:write'],
  },
  { name: 'reports', path: '/reports/:id', methods: ['GET'] },
];

/** The identity the reader token carries, as the upstream must see it. */
const ALICE = {
  'x-auth-subject': 'alice',
  'x-auth-client-id': 'web-app',
  'x-auth-scope': 'orders:read',
};
const IDENTITY_HEADERS = Object.keys(ALICE) as (keyof typeof ALICE)[];

/** Bound for one answer; longer than upstream.timeout_ms, so a 504 still arrives. */
const ANSWER_BOUND_MS = 4000;

// ---------------------------------------------------------------------------------------------
// Real upstreams and the gateways in front of them

let upstreams: Record<UpstreamName, RealUpstream | { error: Error }> | undefined;
const gateways = new Map<string, Promise<Gateway>>();
const extraHarnesses = new Set<Harness>();

interface Gateway {
  harness: Harness;
  port: number;
  reader: string;
}

test.before(async () => {
  upstreams = await startRealUpstreams();
});

test.after.always(async () => {
  const closing: Promise<unknown>[] = [];
  for (const gateway of gateways.values()) {
    closing.push(gateway.then((g) => g.harness.close()).catch(() => undefined));
  }
  for (const harness of extraHarnesses) closing.push(harness.close().catch(() => undefined));
  await Promise.all(closing);
  for (const upstream of Object.values(upstreams ?? {})) {
    if (!('error' in upstream)) await upstream.close();
  }
});

function upstreamOf(name: UpstreamName): RealUpstream {
  const entry = upstreams?.[name];
  if (!entry) throw new Error(`${name}: the real upstreams were not started`);
  if ('error' in entry) throw new Error(`${name} could not be started: ${entry.error.message}`);
  return entry;
}

async function startGateway(upstream: RealUpstream, mode: Mode): Promise<Gateway> {
  const harness = await startHarness({
    config: () => ({
      upstream: { url: upstream.url, timeout_ms: 2000 },
      routes: ROUTES,
      default_action: mode,
    }),
  });
  const reader = harness.as.issue({ scope: 'orders:read', sub: 'alice', client_id: 'web-app' });
  return { harness, port: harness.port, reader };
}

/** The shared gateway of an upstream and mode (started once). */
function sharedGateway(name: UpstreamName, mode: Mode): Promise<Gateway> {
  const key = `${name}/${mode}`;
  let gateway = gateways.get(key);
  if (!gateway) {
    gateway = startGateway(upstreamOf(name), mode);
    gateways.set(key, gateway);
  }
  return gateway;
}

/** A gateway for one row only; `close` it before reading the upstream's log. */
async function ownGateway(
  name: UpstreamName,
  mode: Mode,
): Promise<Gateway & { close(): Promise<void> }> {
  const gateway = await startGateway(upstreamOf(name), mode);
  extraHarnesses.add(gateway.harness);
  let closing: Promise<void> | undefined;
  return {
    ...gateway,
    close() {
      extraHarnesses.delete(gateway.harness);
      closing ??= gateway.harness.close();
      return closing;
    },
  };
}

/** One row at a time per upstream: a row's reading of the upstream's log is its own. */
const lanes = new Map<UpstreamName, Promise<unknown>>();
function inLane<T>(name: UpstreamName, run: () => Promise<T>): Promise<T> {
  const previous = lanes.get(name) ?? Promise.resolve();
  const result = previous.then(run, run);
  lanes.set(
    name,
    result.catch(() => undefined),
  );
  return result;
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 on a TCP connection

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A client connection that writes exact bytes and reads framed responses (bounded). */
class RawConnection {
  private buffer = Buffer.alloc(0);
  private ended = false;
  private wake: () => void = () => undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    const end = () => {
      this.ended = true;
      this.wake();
    };
    socket.once('end', end);
    socket.once('close', end);
    socket.on('error', end);
  }

  static open(port: number): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => resolve(new RawConnection(socket)));
      socket.once('error', reject);
    });
  }

  write(text: string): void {
    this.socket.write(text, 'latin1');
  }

  private async waitForChange(deadline: number): Promise<boolean> {
    if (this.ended || Date.now() >= deadline) return false;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, deadline - Date.now());
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    return true;
  }

  /** The next complete response (1xx skipped); undefined when none came within `boundMs`. */
  async response(boundMs = ANSWER_BOUND_MS): Promise<Reply | undefined> {
    const deadline = Date.now() + boundMs;
    for (;;) {
      const parsed = parseResponse(this.buffer, this.ended);
      if (parsed) {
        this.buffer = this.buffer.subarray(parsed.consumed);
        if (parsed.reply.status >= 100 && parsed.reply.status < 200) continue;
        return parsed.reply;
      }
      if (!(await this.waitForChange(deadline))) {
        const last = parseResponse(this.buffer, true);
        return last?.reply;
      }
    }
  }

  /** True when the peer closed the connection within `boundMs`. */
  async closed(boundMs = ANSWER_BOUND_MS): Promise<boolean> {
    const deadline = Date.now() + boundMs;
    while (!this.ended) {
      if (!(await this.waitForChange(deadline))) break;
    }
    return this.ended;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function parseResponse(
  buffer: Buffer,
  ended: boolean,
): { reply: Reply; consumed: number } | undefined {
  const headEnd = buffer.indexOf('\r\n\r\n');
  if (headEnd === -1) return undefined;
  const [statusLine = '', ...lines] = buffer.subarray(0, headEnd).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  const bodyStart = headEnd + 4;
  if ((status >= 100 && status < 200) || status === 204 || status === 304) {
    return { reply: { status, headers, body: '' }, consumed: bodyStart };
  }
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    let at = bodyStart;
    let body = '';
    for (;;) {
      const lineEnd = buffer.indexOf('\r\n', at);
      if (lineEnd === -1) return undefined;
      const size = Number.parseInt(buffer.subarray(at, lineEnd).toString('latin1'), 16);
      if (!Number.isFinite(size)) return undefined;
      if (size === 0) {
        const trailerEnd = buffer.indexOf('\r\n\r\n', lineEnd);
        if (trailerEnd === -1) return undefined;
        return { reply: { status, headers, body }, consumed: trailerEnd + 4 };
      }
      if (buffer.length < lineEnd + 2 + size + 2) return undefined;
      body += buffer.subarray(lineEnd + 2, lineEnd + 2 + size).toString('utf8');
      at = lineEnd + 2 + size + 2;
    }
  }
  if (headers['content-length'] !== undefined) {
    const length = Number(headers['content-length']);
    if (buffer.length < bodyStart + length) return undefined;
    const body = buffer.subarray(bodyStart, bodyStart + length).toString('utf8');
    return { reply: { status, headers, body }, consumed: bodyStart + length };
  }
  if (!ended) return undefined;
  return {
    reply: { status, headers, body: buffer.subarray(bodyStart).toString('utf8') },
    consumed: buffer.length,
  };
}

interface RequestSpec {
  method?: string;
  target: string;
  /** Sent in order, exactly as given. */
  headers?: readonly (readonly [string, string])[];
  /** `Host: 127.0.0.1:PORT` unless given (a string, several, or null for none). */
  host?: string | readonly string[] | null;
  body?: string;
  version?: string;
}

/** The request's bytes; Content-Length is the body's unless a header gives one. */
function requestText(spec: RequestSpec, gatewayPort: number): string {
  const lines = [`${spec.method ?? 'GET'} ${spec.target} HTTP/${spec.version ?? '1.1'}`];
  const hosts =
    spec.host === undefined
      ? [`127.0.0.1:${gatewayPort}`]
      : spec.host === null
        ? []
        : [spec.host].flat();
  for (const host of hosts) lines.push(`Host: ${host}`);
  const headers = spec.headers ?? [];
  for (const [name, value] of headers) lines.push(`${name}: ${value}`);
  const framed = headers.some(([name]) => /^(content-length|transfer-encoding)$/i.test(name));
  if (spec.body !== undefined && !framed)
    lines.push(`Content-Length: ${Buffer.byteLength(spec.body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${spec.body ?? ''}`;
}

/** One request on a fresh connection; status 0 when no answer came within the bound. */
async function send(port: number, spec: RequestSpec, boundMs = ANSWER_BOUND_MS): Promise<Reply> {
  const connection = await RawConnection.open(port);
  try {
    connection.write(requestText(spec, port));
    return (await connection.response(boundMs)) ?? { status: 0, headers: {}, body: '' };
  } finally {
    connection.destroy();
  }
}

const bearer = (token: string) => ['Authorization', `Bearer ${token}`] as const;

const WEBSOCKET_HANDSHAKE = [
  ['Connection', 'Upgrade'],
  ['Upgrade', 'websocket'],
  ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
  ['Sec-WebSocket-Version', '13'],
] as const;

// ---------------------------------------------------------------------------------------------
// What a row expects the upstream to have executed

interface Expected {
  method: string;
  /** The path the server dispatched on (decoded, as it decodes it). */
  path: string;
  /** The request-target it received, when the row fixes it (query included). */
  rawTarget?: string;
  host?: string;
  /** `alice`: exactly the reader token's identity headers; `none`: no identity header at all. */
  identity: 'alice' | 'none';
  /** Fields that must not have reached it. */
  absent?: readonly string[];
}

const show = (records: readonly Executed[]) =>
  records.length === 0
    ? 'nothing'
    : records
        .map(
          (r) => `${r.method} ${r.rawTarget} → ${r.handler} ${r.path} ${JSON.stringify(r.headers)}`,
        )
        .join('\n  ');

/**
 * The identity fields it saw, whatever their spelling (`X_Auth_Subject` is one to nginx with
 * underscores_in_headers, and to any CGI/WSGI-style server), with every value they had.
 */
function identitySeen(record: Executed): Record<string, string[]> {
  const seen: Record<string, string[]> = {};
  for (const [name, value] of Object.entries(record.headers)) {
    const canonical = name.replaceAll('_', '-');
    if ((IDENTITY_HEADERS as string[]).includes(canonical)) (seen[canonical] ??= []).push(value);
  }
  return seen;
}

function assertIdentity(t: ExecutionContext, record: Executed, identity: 'alice' | 'none') {
  const expected: Record<string, string[]> = {};
  if (identity === 'alice') for (const name of IDENTITY_HEADERS) expected[name] = [ALICE[name]];
  t.deepEqual(
    identitySeen(record),
    expected,
    `${record.server} saw identity headers ${JSON.stringify(record.headers)}`,
  );
}

function assertExecutedOnce(t: ExecutionContext, records: readonly Executed[], expected: Expected) {
  t.is(
    records.length,
    1,
    `the upstream should have executed exactly one request; it executed ${show(records)}`,
  );
  const [record] = records;
  if (!record) return;
  t.is(record.method, expected.method, `method executed: ${show(records)}`);
  t.is(record.path, expected.path, `path dispatched on: ${show(records)}`);
  if (expected.rawTarget !== undefined)
    t.is(record.rawTarget, expected.rawTarget, 'request-target received');
  if (expected.host !== undefined) t.is(record.headers.host, expected.host, 'Host received');
  assertIdentity(t, record, expected.identity);
  for (const name of expected.absent ?? []) {
    t.is(record.headers[name], undefined, `${name} must not reach the upstream`);
  }
}

function assertExecutedNothing(t: ExecutionContext, records: readonly Executed[]) {
  t.deepEqual(
    records.map((r) => `${r.method} ${r.rawTarget}`),
    [],
    `the upstream executed ${show(records)}`,
  );
}

// ---------------------------------------------------------------------------------------------
// Row tables

interface Row {
  /** Shown in the title: the request in short and what motivates it. */
  title: string;
  why: string;
  modes?: readonly Mode[];
  request: (gateway: Gateway) => RequestSpec;
  status: number;
  /** The upstream's execution, or null for "executed nothing". */
  executed: Expected | null;
  also?: (t: ExecutionContext, reply: Reply) => void;
}

/** The reader token (orders:read, no admin scope) is sent unless a row says otherwise. */
const get =
  (target: string, token = true) =>
  (gateway: Gateway): RequestSpec => ({
    target,
    headers: token ? [bearer(gateway.reader)] : [],
  });

const refused = (target: string, why: string, token = true): Row => ({
  title: `${target} → 400`,
  why,
  request: get(target, token),
  status: 400,
  executed: null,
});

const publicPath = (target: string, path: string, why: string, query = ''): Row => ({
  title: `${target} → ${path}${query}`,
  why,
  request: get(target, false),
  status: 200,
  executed: { method: 'GET', path, rawTarget: `${path}${query}`, identity: 'none' },
});

/** b. Path differentials: the gateway and the server must agree on the path, or refuse it. */
const PATH_ROWS: Row[] = [
  refused(
    '/admin;x=1/users',
    'servlet path parameters: Tomcat maps /admin;x=1/users as /admin/users (Breaking Parser Logic, Black Hat 2018)',
  ),
  refused('/admin;/users', 'empty path parameter: Tomcat cuts ";" before mapping'),
  refused(
    '/public/..;/admin',
    '"..;" traversal: Tomcat resolves it as ".." behind a proxy that does not (Breaking Parser Logic, Black Hat 2018)',
  ),
  refused('/public/%2e%2e;/admin', 'encoded dot-segment with a path parameter'),
  refused('/admin%3Bx/users', 'encoded ";": PRODUCT.md refuses a ";" anywhere in the path'),
  refused('/public/%252e%252e/admin', 'double decoding walks up (CWE-174; IIS CVE-2001-0333)'),
  refused('/public/a%252fadmin', '"%252f" becomes an encoded "/" after one decode'),
  refused('/public/a%255cadmin', '"%255c" becomes an encoded "\\" after one decode'),
  refused('/public/..%2fadmin', 'encoded "/": Tomcat once decoded it (CVE-2007-0450)'),
  refused('/public/..%5cadmin', 'encoded "\\": a Windows upstream reads it as a separator'),
  refused('/public/%C0%AE%C0%AE/admin', 'overlong UTF-8 dot (IIS CVE-2000-0884)'),
  refused('/public/%00/x', 'encoded NUL truncates C strings'),
  refused(
    '/adm%C4%B1n/users',
    'U+0131 dotless ı: Java equalsIgnoreCase and .NET OrdinalIgnoreCase read /admin',
  ),
  refused('/adm%C4%B0n/users', 'U+0130 İ: lower-cases to an ASCII i'),
  refused('/admin/%C5%BFecret', 'U+017F long s: upper-cases to an ASCII S'),
  refused('/%E2%84%AAey', 'U+212A Kelvin sign: lower-cases to an ASCII k'),
  // With the reader token: under authenticate, a path the gateway did not read as /admin would
  // be forwarded, and Caddy's `path /admin /admin/*` would run its admin handle (/admin.,
  // /admin%20, /Admin.).
  ...[
    '/admin.',
    '/admin./users',
    '/admin..',
    '/admin%20',
    '/admin%2E',
    '/admin%2E%20',
    '/Admin.',
    '/public.',
    '/public/x.',
  ].map((target) =>
    refused(
      target,
      "red team: Caddy's path matcher, IIS and Windows trim trailing dots and spaces (a segment ending in . or space is refused)",
    ),
  ),
  {
    title: '/public\\..\\admin → 400',
    why: 'raw "\\": a Windows or Java upstream resolves it as "/" (Tomcat ALLOW_BACKSLASH)',
    request: get('/public\\..\\admin/users'),
    status: 400,
    executed: null,
  },
  {
    title: '/ADMIN/users without a token → 401',
    why: 'case-insensitive routes: a case-insensitive upstream (IIS, ASP.NET, Spring with lower-casing) serves /ADMIN as /admin',
    request: get('/ADMIN/users', false),
    status: 401,
    executed: null,
  },
  {
    title: '/Admin/users without a token → 401',
    why: 'case-insensitive routes',
    request: get('/Admin/users', false),
    status: 401,
    executed: null,
  },
  {
    title: '/%61dmin/users without a token → 401',
    why: 'encoded unreserved characters are decoded before matching (RFC 3986 §6.2.2.2)',
    request: get('/%61dmin/users', false),
    status: 401,
    executed: null,
  },
  {
    title: '/public/%2e%2e/admin/users without a token → 401',
    why: 'encoded dot-segments are removed before matching (Apache httpd CVE-2021-41773)',
    request: get('/public/%2e%2e/admin/users', false),
    status: 401,
    executed: null,
  },
  publicPath(
    '/public/http:/x',
    '/public/http:/x',
    'nothing rewrites the path after routing (http-proxy urlJoin turns "http:/" into "http://")',
  ),
  publicPath('/public//x', '/public/x', '"//" merged before routing, and forwarded merged'),
  publicPath('/public/./x', '/public/x', 'dot-segment removal (RFC 3986 §5.2.4)'),
  publicPath('/public/a/../x', '/public/x', 'dot-segment removal (RFC 3986 §5.2.4)'),
  publicPath(
    '/public/%78?q=%2e%2e',
    '/public/x',
    'unreserved escapes decoded in the path, the query untouched',
    '?q=%2e%2e',
  ),
];

/** c. Method differentials. */
const METHOD_ROWS: Row[] = [
  ...['_method', '_METHOD', '%5Fmethod'].map((name): Row => ({
    title: `POST /public/x?${name}=DELETE → 400`,
    why: 'method-override middleware (Rack::MethodOverride, Express method-override, Spring HiddenHttpMethodFilter) would execute a DELETE',
    request: () => ({ method: 'POST', target: `/public/x?${name}=DELETE`, body: '' }),
    status: 400,
    executed: null,
  })),
  {
    title: 'X-HTTP-Method-Override: DELETE never reaches the upstream',
    why: 'method-override headers (Google APIs, ASP.NET, Spring) turn an authorised GET into a DELETE',
    request: () => ({
      target: '/public/x',
      headers: [
        ['X-HTTP-Method-Override', 'DELETE'],
        ['X-HTTP-Method', 'DELETE'],
        ['X-Method-Override', 'DELETE'],
      ],
    }),
    status: 200,
    executed: {
      method: 'GET',
      path: '/public/x',
      identity: 'none',
      absent: ['x-http-method-override', 'x-http-method', 'x-method-override'],
    },
  },
  ...['PUT', 'PATCH', 'PROPFIND', 'DELETE'].map((method): Row => ({
    title: `${method} /reports/1 (a GET-only route) → 405 with Allow`,
    why: 'a route matching the path but not the method is 405, never default_action (PRODUCT.md "Routing")',
    request: (gateway) => ({
      method,
      target: '/reports/1',
      headers: [bearer(gateway.reader)],
      body: '',
    }),
    status: 405,
    executed: null,
    also(t, reply) {
      t.regex(reply.headers.allow ?? '', /\bGET\b/, `Allow: ${reply.headers.allow}`);
    },
  })),
  {
    title: 'TRACE /public/x → 405',
    why: 'TRACE reflects credentials (cross-site tracing, CVE-2004-2320 class)',
    request: () => ({ method: 'TRACE', target: '/public/x' }),
    status: 405,
    executed: null,
  },
];

/** d. Host. */
const HOST_ROWS: Row[] = [
  {
    title: 'absolute-form target with another Host → the upstream gets the target authority',
    why: 'RFC 9112 §3.2.2: a server MUST ignore Host for an absolute-form target; the upstream must see the same authority',
    request: () => ({ target: 'http://api.example:8080/public/x', host: 'evil.example' }),
    status: 200,
    executed: {
      method: 'GET',
      path: '/public/x',
      rawTarget: '/public/x',
      host: 'api.example:8080',
      identity: 'none',
    },
  },
  {
    title: 'HTTP/1.1 without Host → 400',
    why: 'RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host',
    request: () => ({ target: '/public/x', host: null }),
    status: 400,
    executed: null,
  },
  {
    title: 'WebSocket handshake without Host → 400',
    why: 'RFC 9112 §3.2 holds for upgrades too (Node does not check them)',
    request: () => ({ target: '/public/ws', host: null, headers: WEBSOCKET_HANDSHAKE }),
    status: 400,
    executed: null,
  },
  {
    title: 'two Host fields → 400',
    why: 'RFC 9112 §3.2: more than one Host is 400; servers keep the first or the last',
    request: (gateway) => ({
      target: '/public/x',
      host: [`127.0.0.1:${gateway.port}`, 'evil.example'],
    }),
    status: 400,
    executed: null,
  },
  {
    title: 'WebSocket handshake with two Host fields → 400',
    why: 'RFC 9112 §3.2 holds for upgrades too',
    request: (gateway) => ({
      target: '/public/ws',
      host: [`127.0.0.1:${gateway.port}`, 'evil.example'],
      headers: WEBSOCKET_HANDSHAKE,
    }),
    status: 400,
    executed: null,
  },
];

/** e. Identity forgery: the upstream sees the gateway's identity headers only. */
function forgery(
  title: string,
  why: string,
  headers: readonly (readonly [string, string])[],
): Row[] {
  return [
    {
      title: `${title} on an auth: none route → no identity`,
      why,
      request: () => ({ target: '/public/x', headers }),
      status: 200,
      executed: { method: 'GET', path: '/public/x', identity: 'none' },
    },
    {
      title: `${title} with a token → the token's identity`,
      why,
      request: (gateway) => ({
        target: '/api/orders/1',
        headers: [...headers, bearer(gateway.reader)],
      }),
      status: 200,
      executed: { method: 'GET', path: '/api/orders/1', identity: 'alice' },
    },
  ];
}

const IDENTITY_ROWS: Row[] = [
  ...forgery(
    'X-Auth-Subject: root',
    'a client-sent identity header (PRODUCT.md "What the upstream receives")',
    [
      ['X-Auth-Subject', 'root'],
      ['X-Auth-Client-Id', 'root-client'],
      ['X-Auth-Scope', 'admin'],
    ],
  ),
  ...forgery(
    'x_auth_subject: root',
    '"_" for "-": nginx (underscores_in_headers), CGI, WSGI and PHP read both as HTTP_X_AUTH_SUBJECT',
    [
      ['x_auth_subject', 'root'],
      ['X_Auth_Scope', 'admin'],
    ],
  ),
  ...forgery('X-AUTH-SUBJECT: root', 'field names are case-insensitive (RFC 9110 §5.1)', [
    ['X-AUTH-SUBJECT', 'root'],
    ['x-auth-client-id', 'root-client'],
  ]),
  ...forgery(
    'Connection: X-Auth-Subject',
    "a Connection option naming the identity header must not remove the gateway's (RFC 9110 §7.6.1)",
    [
      ['Connection', 'keep-alive, X-Auth-Subject, X-Auth-Scope'],
      ['X-Auth-Subject', 'root'],
    ],
  ),
  ...forgery('two X-Auth-Subject fields', 'servers keep the first, the last, or join them', [
    ['X-Auth-Subject', 'root'],
    ['X-Auth-Subject', 'root2'],
  ]),
  {
    title: 'X-Auth-Subject on a WebSocket handshake → no identity',
    why: 'upgrades bypass Koa in Node; they must be stripped the same way',
    request: () => ({
      target: '/public/ws',
      headers: [...WEBSOCKET_HANDSHAKE, ['X-Auth-Subject', 'root'], ['x_auth_subject', 'root']],
    }),
    status: 200,
    executed: { method: 'GET', path: '/public/ws', identity: 'none' },
  },
];

function declareRows(group: string, rows: readonly Row[], modes: readonly Mode[] = ['deny']) {
  for (const name of UPSTREAMS) {
    for (const mode of modes) {
      for (const row of rows) {
        if (row.modes && !row.modes.includes(mode)) continue;
        test(`${name} [${mode}] ${group}: ${row.title}`, (t) =>
          inLane(name, async () => {
            const upstream = upstreamOf(name);
            const gateway = await sharedGateway(name, mode);
            await upstream.clear();
            const reply = await send(gateway.port, row.request(gateway));
            const records = await upstream.executed();
            t.log(`why: ${row.why}`);
            t.is(
              reply.status,
              row.status,
              `gateway answered ${reply.status}: ${reply.body.slice(0, 300)}`,
            );
            if (row.executed) assertExecutedOnce(t, records, row.executed);
            else assertExecutedNothing(t, records);
            row.also?.(t, reply);
          }));
      }
    }
  }
}

declareRows('b. path', PATH_ROWS, MODES);
declareRows('c. method', METHOD_ROWS, MODES);
declareRows('d. host', HOST_ROWS);
declareRows('e. identity', IDENTITY_ROWS);

// ---------------------------------------------------------------------------------------------
// a. Upgrade smuggling (each row on a gateway of its own: it may poison the upstream pool)

const SMUGGLED_PATH = '/admin/users';
/**
 * The smuggled request, after blank lines: nginx and Tomcat skip CR/LF before a request line
 * (RFC 9112 §2.2), so the attack works whatever the exact length the upstream discards, within
 * the padding.
 */
const PADDING = '\r\n'.repeat(64);
const SMUGGLED = `${PADDING}GET ${SMUGGLED_PATH} HTTP/1.1\r\nHost: x\r\nX-Auth-Subject: root\r\n\r\n`;

const carrier = (body = SMUGGLED): RequestSpec => ({ method: 'POST', target: '/public/y', body });

/** Nothing smuggled ran: no /admin/users, and no request with a client-chosen identity. */
function assertNothingSmuggled(t: ExecutionContext, records: readonly Executed[]) {
  const smuggled = records.filter(
    (r) => r.path === SMUGGLED_PATH || Object.values(identitySeen(r)).flat().includes('root'),
  );
  t.deepEqual(
    smuggled.map((r) => `${r.method} ${r.rawTarget}`),
    [],
    `smuggled into the upstream: ${show(smuggled)}`,
  );
}

/**
 * How many bytes the upstream will read as the head of the carrier POST, measured with an
 * empty-bodied POST through the same gateway (so no server counts body bytes in it): nginx
 * logs $request_length; Tomcat and Go give the fields, and a head is `name: value\r\n` per
 * field whatever the case of the names. The carrier's head is longer by the digits of its
 * Content-Length beyond the one of `0`.
 */
async function carrierHeadLength(upstream: RealUpstream, gateway: Gateway): Promise<number> {
  await upstream.clear();
  const reply = await send(gateway.port, carrier(''));
  const [record] = await upstream.executed();
  await upstream.clear();
  if (reply.status !== 200 || !record) {
    throw new Error(
      `calibration POST: gateway answered ${reply.status}, upstream executed ${show(record ? [record] : [])}`,
    );
  }
  let emptyHead: number;
  if (upstream.name === 'nginx') {
    emptyHead = Number(record.record.requestLength);
  } else {
    emptyHead = `POST ${record.rawTarget} HTTP/1.1\r\n`.length + 2;
    for (const [name, value] of Object.entries(record.headers)) {
      emptyHead += name.length + value.length + 4;
    }
  }
  return emptyHead + String(Buffer.byteLength(SMUGGLED)).length - 1;
}

const upgradeWithBody = (
  target: string,
  framing: readonly (readonly [string, string])[],
): RequestSpec => ({ target, headers: [...WEBSOCKET_HANDSHAKE, ...framing] });

/** The upgrade whose declared body is the carrier's head and half the padding. */
const poisonedUpgrade = (headLength: number) =>
  upgradeWithBody('/public/ws', [['Content-Length', String(headLength + PADDING.length / 2)]]);

interface SmuggleRow {
  title: string;
  why: string;
  run(
    t: ExecutionContext,
    upstream: RealUpstream,
    gateway: Gateway & { close(): Promise<void> },
  ): Promise<void>;
}

const SMUGGLE_ROWS: SmuggleRow[] = [
  ...(
    [
      ['Content-Length: 40', [['Content-Length', '40']]],
      ['Transfer-Encoding: chunked', [['Transfer-Encoding', 'chunked']]],
    ] as const
  ).map(([label, framing]): SmuggleRow => ({
    title: `WebSocket handshake declaring a body (${label}), none sent → 400, never forwarded`,
    why: 'an upgrade with a body: an upstream that answers without 101 reads the next bytes on its connection as that body (PRODUCT.md; Go waits for it and hangs)',
    async run(t, upstream, gateway) {
      const reply = await send(gateway.port, upgradeWithBody('/public/ws', framing));
      await gateway.close();
      const records = await upstream.executed();
      t.log(
        `gateway answered ${reply.status || 'nothing'}; upstream executed:\n  ${show(records)}`,
      );
      assertExecutedNothing(t, records);
      t.is(reply.status, 400, reply.body.slice(0, 200));
    },
  })),
  {
    title:
      'upgrade with Content-Length, then a public POST carrying a request on a second connection → nothing smuggled',
    why: 'request smuggling through the pooled upstream connection: the upstream answers the upgrade with 200, discards the POST head as the upgrade body and executes the POST body as a request',
    async run(t, upstream, gateway) {
      const headLength = await carrierHeadLength(upstream, gateway);
      const first = await send(gateway.port, poisonedUpgrade(headLength));
      const second = await send(gateway.port, carrier());
      await gateway.close();
      const records = await upstream.executed();
      t.log(
        `carrier head ${headLength} bytes; gateway answered ${first.status || 'nothing'}, then ` +
          `${second.status || 'nothing'} ${second.body.slice(0, 120)}; upstream executed:\n  ${show(records)}`,
      );
      assertNothingSmuggled(t, records);
      t.is(first.status, 400, 'the upgrade with a body is refused');
      t.is(second.status, 200, 'the carrier POST is served');
      t.deepEqual(
        records.map((r) => `${r.method} ${r.path}`),
        ['POST /public/y'],
        'the upstream executes the carrier POST and nothing else',
      );
    },
  },
  {
    title:
      'upgrade with Content-Length, then a public POST carrying a request on the same connection → nothing smuggled',
    why: "request smuggling on one client connection: the bytes after an upgrade's head must never reach the upstream",
    async run(t, upstream, gateway) {
      const headLength = await carrierHeadLength(upstream, gateway);
      const connection = await RawConnection.open(gateway.port);
      let first: Reply | undefined;
      let closed: boolean;
      try {
        connection.write(
          requestText(poisonedUpgrade(headLength), gateway.port) +
            requestText(carrier(), gateway.port),
        );
        first = await connection.response();
        closed = await connection.closed();
      } finally {
        connection.destroy();
      }
      await gateway.close();
      const records = await upstream.executed();
      t.log(
        `gateway answered ${first?.status ?? 'nothing'}; upstream executed:\n  ${show(records)}`,
      );
      assertNothingSmuggled(t, records);
      assertExecutedNothing(t, records);
      t.is(first?.status, 400, 'the upgrade with a body is refused');
      t.true(closed, "a refused upgrade's connection is closed once the refusal is written");
    },
  },
  {
    title:
      'bodiless WebSocket handshake answered 200 (not 101) → answer passed back, both connections closed',
    why: 'PRODUCT.md: an upgrade never travels on a pooled upstream connection, and unless the upstream answers 101 both connections are closed after its answer',
    async run(t, upstream, gateway) {
      await upstream.clear();
      const connection = await RawConnection.open(gateway.port);
      let reply: Reply | undefined;
      let closed: boolean;
      try {
        connection.write(
          requestText({ target: '/public/ws', headers: WEBSOCKET_HANDSHAKE }, gateway.port),
        );
        reply = await connection.response();
        // Anything more on this connection must not be executed.
        connection.write(requestText({ target: '/public/after-handshake' }, gateway.port));
        closed = await connection.closed();
      } finally {
        connection.destroy();
      }
      const after = await send(gateway.port, { target: '/public/after' });
      const records = await upstream.executed();
      t.log(
        `gateway answered ${reply?.status ?? 'nothing'}, then ${after.status || 'nothing'}; ` +
          `upstream executed:\n  ${show(records)}`,
      );
      t.deepEqual(
        records.map((r) => `${r.method} ${r.path}`),
        ['GET /public/ws', 'GET /public/after'],
        'the handshake and the next request, each executed once, and nothing else',
      );
      const [handshake, next] = records;
      if (handshake && next) {
        t.not(
          next.remotePort,
          handshake.remotePort,
          "the upgrade's upstream connection is not reused",
        );
        assertIdentity(t, next, 'none');
        t.is(next.headers.upgrade, undefined, 'the next request carries no Upgrade');
      }
      t.is(reply?.status, 200, "the upstream's answer to the handshake is passed back");
      t.true(closed, 'the gateway closes the client connection after a non-101 answer');
      t.is(after.status, 200, 'the next request is served');
    },
  },
];

for (const name of UPSTREAMS) {
  for (const row of SMUGGLE_ROWS) {
    test(`${name} [deny] a. upgrade smuggling: ${row.title}`, (t) =>
      inLane(name, async () => {
        const upstream = upstreamOf(name);
        const gateway = await ownGateway(name, 'deny');
        try {
          await upstream.clear();
          t.log(`why: ${row.why}`);
          await row.run(t, upstream, gateway);
        } finally {
          await gateway.close();
        }
      }));
  }
}
