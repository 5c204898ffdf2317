import { createHash, randomBytes } from 'node:crypto';
/**
 * Integration-test harness: a real development authorization server, a real echo upstream
 * and a real gateway between them, all on 127.0.0.1 port 0, closed in teardown. The config
 * goes through the real loader (YAML text → parseConfig), so tests exercise what an operator
 * would write. The HTTP clients here are deliberately raw: fetch and undici normalise paths
 * and headers, and the gateway's tests need to send exactly the bytes they mean.
 */
import type { IncomingHttpHeaders } from 'node:http';
import http from 'node:http';
import net from 'node:net';
import { stringify } from 'yaml';
import { createGateway, type Gateway, type GatewayOptions } from '../src/app.js';
import { parseConfig } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import {
  startDevAuthorizationServer,
  type DevAuthorizationServer,
  type DevClient,
} from '../src/dev/auth-server.js';
import { startEchoApi, type EchoApi } from '../src/dev/echo-api.js';
import { createLogger } from '../src/log/logger.js';

/** The gateway's client at the authorization server; the secret needs form-encoding. */
export const INTROSPECTION_CLIENT = { id: 'tokenguard', secret: 's3cret:with%chars' } as const;

/** Clients that may mint tokens at `as.tokenEndpoint` (client_credentials). */
export const TOKEN_CLIENTS: readonly DevClient[] = [
  { id: 'reader', secret: 'reader-secret', scope: 'orders:read' },
  { id: 'writer', secret: 'writer-secret', scope: 'orders:read orders:write' },
];

export interface HarnessContext {
  as: DevAuthorizationServer;
  upstream: EchoApi;
}

export interface Harness {
  as: DevAuthorizationServer;
  upstream: EchoApi;
  gateway: Gateway;
  /** The validated config the gateway runs with. */
  config: Config;
  /** `http://127.0.0.1:PORT` of the proxied port. */
  url: string;
  /** `http://127.0.0.1:PORT` of the admin port (/metrics /healthz /readyz). */
  adminUrl: string;
  /** The proxied port. */
  port: number;
  /** Everything the gateway logged so far, as text (one JSON object per line). */
  logs: () => string;
  /** Drains the gateway (100 ms grace), then closes the authorization server and upstream. */
  close(): Promise<void>;
}

export interface HarnessOptions {
  /**
   * A plain config object merged over the defaults one level deep: each top-level section
   * of the override replaces the keys it names inside that section (`routes`, a list, is
   * replaced whole); a key set to `undefined` is removed. Scalars go through `${ENV}`
   * interpolation like any config file's.
   */
  config?: (ctx: HarnessContext) => Record<string, unknown>;
  /**
   * The whole config as YAML text, used verbatim instead of the defaults (not with
   * `config`). The environment it is interpolated with holds HARNESS_AS_URL,
   * HARNESS_INTROSPECTION_ENDPOINT, HARNESS_UPSTREAM_URL, HARNESS_CLIENT_ID and
   * HARNESS_CLIENT_SECRET. Remember `port: 0` for both server and admin.
   */
  yaml?: string;
  /** Extra environment variables for `${ENV}` interpolation (over process.env). */
  env?: Record<string, string>;
  /** createGateway's options (e.g. `cachedPass: false`: every request through Koa). */
  gateway?: GatewayOptions;
}

/** The routes every test gateway starts with (the harness's and the CLI child's). */
export const TEST_ROUTES = [
  { name: 'public', prefix: '/public', auth: 'none' },
  { name: 'orders-read', path: '/api/orders/:id', methods: ['GET'], scopes: ['orders:read'] },
  {
    name: 'orders-write',
    prefix: '/api/orders',
    methods: ['POST', 'PUT', 'DELETE'],
    scopes: ['orders:write'],
  },
  { name: 'any-token', prefix: '/api/any' },
];

export function defaultConfig({ as, upstream }: HarnessContext): Record<string, unknown> {
  return {
    server: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    upstream: { url: upstream.url, timeout_ms: 2000 },
    introspection: {
      endpoint: as.introspectionEndpoint,
      client_id: INTROSPECTION_CLIENT.id,
      client_secret: INTROSPECTION_CLIENT.secret,
      timeout_ms: 1000,
    },
    cache: {},
    fishing: {},
    routes: TEST_ROUTES,
    forward: {
      identity_headers: {
        'X-Auth-Subject': 'sub',
        'X-Auth-Client-Id': 'client_id',
        'X-Auth-Scope': 'scope',
      },
    },
    log: { level: 'info', access_log: true },
  };
}

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

/** One level deep: sections merge key by key, everything else is replaced. */
export function mergeConfig(
  base: Record<string, unknown>,
  override: Record<string, unknown>,
): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(override)) {
    const current = merged[key];
    merged[key] = isPlainObject(current) && isPlainObject(value) ? { ...current, ...value } : value;
  }
  const dropUndefined = (object: Record<string, unknown>) => {
    for (const [key, value] of Object.entries(object)) {
      if (value === undefined) delete object[key];
      else if (isPlainObject(value)) dropUndefined(value);
    }
  };
  dropUndefined(merged);
  return merged;
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  if (options.yaml !== undefined && options.config !== undefined) {
    throw new TypeError('startHarness: give `yaml` or `config`, not both');
  }
  const as = await startDevAuthorizationServer({
    introspectionClients: [INTROSPECTION_CLIENT],
    clients: [...TOKEN_CLIENTS],
  });
  const upstream = await startEchoApi();
  const lines: string[] = [];
  try {
    const ctx = { as, upstream };
    const text =
      options.yaml ?? stringify(mergeConfig(defaultConfig(ctx), options.config?.(ctx) ?? {}));
    const config = parseConfig(text, 'harness.yaml', {
      ...process.env,
      HARNESS_AS_URL: as.url,
      HARNESS_INTROSPECTION_ENDPOINT: as.introspectionEndpoint,
      HARNESS_UPSTREAM_URL: upstream.url,
      HARNESS_CLIENT_ID: INTROSPECTION_CLIENT.id,
      HARNESS_CLIENT_SECRET: INTROSPECTION_CLIENT.secret,
      ...options.env,
    });
    const logger = createLogger(config.log.level, {
      write(line: string) {
        lines.push(line);
      },
    });
    const gateway = createGateway(config, logger, options.gateway);
    const { proxy, admin } = await gateway.listen();
    return {
      as,
      upstream,
      gateway,
      config,
      url: `http://127.0.0.1:${proxy.port}`,
      adminUrl: `http://127.0.0.1:${admin.port}`,
      port: proxy.port,
      logs: () => lines.join(''),
      async close() {
        await gateway.drain(100);
        await Promise.all([as.close(), upstream.close()]);
      },
    };
  } catch (error) {
    await Promise.all([as.close(), upstream.close()]);
    throw error;
  }
}

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** Header names and values as received, in order. */
  rawHeaders: string[];
  body: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json(): any;
}

export interface RequestOptions {
  method?: string;
  /** Arrays are sent as repeated header fields. A `host` entry replaces the default one. */
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
  /** Sent as the request target exactly as given (`/a/../b`, `/%2e%2e/x`); else the URL's. */
  path?: string;
  /** The whole exchange must end within this (default 20 s), or the promise rejects. */
  timeoutMs?: number;
  /** Source address of the connection (any of 127.0.0.0/8): a distinct client for the gateway. */
  from?: string;
  /** A keep-alive agent for floods; a fresh connection per request otherwise. */
  agent?: http.Agent;
}

/**
 * A node:http request on a fresh connection (no agent, no keep-alive reuse between calls).
 * The path is not normalised: what is given is what goes on the wire.
 */
export function request(url: string, options: RequestOptions = {}): Promise<RawResponse> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: target.hostname,
      port: target.port,
      method: options.method ?? 'GET',
      path: options.path ?? `${target.pathname}${target.search}`,
      headers: options.headers,
      localAddress: options.from,
      agent: options.agent ?? false,
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`request to ${url} took over ${options.timeoutMs ?? 20_000} ms`));
    }, options.timeoutMs ?? 20_000);
    req.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      res.once('end', () => {
        clearTimeout(timer);
        const body = Buffer.concat(chunks).toString('utf8');
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body,
          json: () => JSON.parse(body),
        });
      });
    });
    req.end(options.body);
  });
}

/**
 * Writes `text` as raw bytes on a TCP connection to 127.0.0.1:`port` and returns everything
 * received until the server closes the connection or `silenceMs` (default 2 s) pass without
 * a byte — for duplicate Host fields, absolute-form targets, TRACE, smuggling attempts.
 */
export function rawRequest(port: number, text: string, silenceMs = 2000): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ host: '127.0.0.1', port });
    let timer: NodeJS.Timeout | undefined;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    const armSilenceTimer = () => {
      clearTimeout(timer);
      timer = setTimeout(finish, silenceMs);
    };
    socket.on('connect', () => {
      socket.write(text, 'latin1');
      armSilenceTimer();
    });
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      armSilenceTimer();
    });
    socket.once('end', finish);
    socket.once('close', finish);
    socket.once('error', finish);
  });
}

/** Mints a token through the real token endpoint (client_credentials, HTTP Basic). */
export async function mintToken(
  as: DevAuthorizationServer,
  client: Pick<DevClient, 'id' | 'secret'>,
  scope?: string,
): Promise<string> {
  const form = new URLSearchParams({ grant_type: 'client_credentials' });
  if (scope !== undefined) form.set('scope', scope);
  const formEncode = (value: string) => new URLSearchParams({ v: value }).toString().slice(2);
  const credentials = Buffer.from(`${formEncode(client.id)}:${formEncode(client.secret)}`);
  const response = await request(as.tokenEndpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${credentials.toString('base64')}`,
    },
    body: form.toString(),
  });
  if (response.status !== 200) {
    throw new Error(`token endpoint answered ${response.status}: ${response.body}`);
  }
  return (response.json() as { access_token: string }).access_token;
}

/** Runs `run` against a fresh harness built with `config`, and always closes it. */
export async function withHarness(
  config: ((ctx: HarnessContext) => Record<string, unknown>) | undefined,
  run: (harness: Harness) => Promise<void>,
): Promise<void> {
  const harness = await startHarness(config ? { config } : {});
  try {
    await run(harness);
  } finally {
    await harness.close();
  }
}

export const bearer = (token: string): Record<string, string> => ({
  authorization: `Bearer ${token}`,
});

/** A well-formed token the authorization server never issued: introspection says inactive. */
export const unknownToken = (): string => randomBytes(24).toString('base64url');

/** True once `condition` holds; false if it still does not after `timeoutMs` (bounded polling). */
export async function eventually(
  condition: () => boolean,
  timeoutMs: number,
  stepMs = 20,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, stepMs));
  }
  return true;
}

/** True once the async `condition` holds; false if it still does not after `timeoutMs`. */
export async function eventuallyAsync(
  condition: () => Promise<boolean>,
  timeoutMs: number,
  stepMs = 20,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, stepMs));
  }
  return true;
}

/** A port that was free a moment ago (bound on 127.0.0.1:0, then released): nothing listens. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The gateway's /metrics text. */
export async function scrapeMetrics(harness: Pick<Harness, 'adminUrl'>): Promise<string> {
  const response = await request(`${harness.adminUrl}/metrics`);
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
  return response.body;
}

/** The sum of every sample of `name` whose labels include `labels` (0 when there is none). */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const seen = new Map(
      [...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]),
    );
    if (Object.entries(labels).every(([key, value]) => seen.get(key) === value)) {
      total += Number(match[3]);
    }
  }
  return total;
}

/** A throw-away node:http server on 127.0.0.1:0 (a misbehaving upstream); closed by the caller. */
export async function startHttpServer(handler: http.RequestListener) {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface StreamOutcome {
  status: number;
  bytes: number;
  sha256: string;
  /** The body ended as framed, not cut short. */
  complete: boolean;
  error?: string;
  /** The test's own bound fired: the client was left hanging. */
  timedOut: boolean;
}

/**
 * GETs `url`, hashing the body as it arrives, and reports how it ended within `boundMs`.
 * `onData` sees the response and the byte count after each chunk (to pause reading).
 */
export function fetchStream(
  url: string,
  boundMs: number,
  onData?: (res: http.IncomingMessage, bytes: number) => void,
): Promise<StreamOutcome> {
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    let status = 0;
    let bytes = 0;
    let done = false;
    const finish = (outcome: Pick<StreamOutcome, 'complete' | 'timedOut' | 'error'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve({ status, bytes, sha256: hash.digest('hex'), ...outcome });
    };
    const req = http.get(url, { agent: false }, (res: http.IncomingMessage) => {
      status = res.statusCode ?? 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        hash.update(chunk);
        onData?.(res, bytes);
      });
      res.once('end', () => finish({ complete: res.complete, timedOut: false }));
      res.once('error', (error) =>
        finish({ complete: false, error: error.message, timedOut: false }),
      );
      res.once('close', () => finish({ complete: res.complete, timedOut: false }));
    });
    req.once('error', (error) =>
      finish({ complete: false, error: error.message, timedOut: false }),
    );
    const timer = setTimeout(() => finish({ complete: false, timedOut: true }), boundMs);
  });
}
