/**
 * Forwarding with http-proxy 1.18.1 (the chosen stack, unmaintained since 2020), with its
 * known defects neutralised here, each covered by a test:
 * - its `deleteLength` pass turns a chunked DELETE/OPTIONS into `content-length: 0` yet still
 *   pipes the body — request smuggling to the upstream — so the pass is removed;
 * - it rewrites the path after routing (url.parse + urlJoin: `\` to `/`, `//` collapsed, and
 *   `/public/http:/x` made `/public/http://x`): with `toProxy` and no prepended path it
 *   skips url.parse, and the agent below sets the upstream request's path back to `req.url`
 *   — the already-normalised path the route was matched on — byte for byte, whatever
 *   http-proxy computed;
 * - hop-by-hop fields (and a `Trailer` field, which crashes it) are removed on both sides;
 * - its `proxyReq` event is skipped for requests with `Expect:`, so nothing relies on it
 *   (headers are rewritten before `web()`, the upstream request is learnt from the agent);
 * - without an error callback a refused connection crashes the process: every call has one;
 * - a client that goes away mid-response leaves the upstream request running: it is destroyed;
 * - its WebSocket pass is not used at all (see websocket.ts).
 *
 * The hot path is lean on purpose: one Exchange object per request carries its state (no
 * WeakMap keyed by the response — that kept every request's object graph alive through the
 * young-generation GC, promoting ~6.7 KB per request), its listeners are shared functions
 * that find the exchange on the response, and one watchdog interval for all exchanges bounds
 * the upstream's silences instead of a timer and a `data` listener per request.
 */
import { performance } from 'node:perf_hooks';
import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import type { Logger } from 'pino';
import type { Readable } from 'node:stream';
import { badRequest, upstreamTimeout, upstreamUnreachable, type GatewayError } from '../errors.js';
import { createBodyOverrideScanner } from '../policy/body-method-override.js';
import type { GatewayMetrics, UpstreamErrorKind } from '../metrics/metrics.js';
import {
  classifyUpstreamError,
  UPSTREAM_TIMEOUT_CODE,
  type RecordUpstreamFailure,
} from './upstream-errors.js';
import { rewriteResponseHeaders } from './upstream-headers.js';
import { createWebSocketForwarder, type UpgradeStatus } from './websocket.js';

export { closeAfterwards, type UpgradeStatus } from './websocket.js';

/** One proxied request, from `web()` to the end of its response. */
export interface Exchange<Context = unknown> {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** Whatever the caller handed to `web()`, for its `onEnd`. */
  readonly context: Context;
  /**
   * The upstream failed before any response header was sent: the response is untouched, and
   * the caller renders this 502/504.
   */
  error: GatewayError | null;
  /** The upstream failed after the response had begun: the client saw it cut short. */
  failure: UpstreamErrorKind | null;
  /** From handing the request over to the upstream's response headers, in ms; -1: none came. */
  readonly upstreamMs: number;
}

export type ExchangeEnded<Context> = (exchange: Exchange<Context>) => void;

export interface Forwarder {
  /**
   * Streams the request to the upstream and the response back; `onEnd` is called once, when
   * the response is over or when the upstream failed before answering (`exchange.error`).
   */
  web<Context>(
    req: IncomingMessage,
    res: ServerResponse,
    onEnd: ExchangeEnded<Context>,
    context: Context,
  ): void;
  /** Proxies an authorised WebSocket handshake (see websocket.ts). */
  ws(
    req: IncomingMessage,
    res: ServerResponse,
    socket: Duplex,
    head: Buffer,
  ): Promise<UpgradeStatus>;
  close(): void;
}

export interface ForwarderOptions {
  upstreamUrl: string;
  timeoutMs: number;
  metrics: GatewayMetrics;
  logger: Logger;
  isDraining: () => boolean;
}

type Pass = (...args: unknown[]) => unknown;

type AddRequest = (this: http.Agent, req: ClientRequest, options: object) => void;
const agentAddRequest = (http.Agent.prototype as unknown as { addRequest: AddRequest }).addRequest;

const kExchange = Symbol('tokenguard.exchange');

interface Carrier {
  [kExchange]?: ExchangeState | undefined;
}

class ExchangeState implements Exchange {
  error: GatewayError | null = null;
  failure: UpstreamErrorKind | null = null;
  upstreamRequest: ClientRequest | null = null;
  upstreamResponse: IncomingMessage | null = null;
  timedOut = false;
  ended = false;
  // The watchdog's list and bookkeeping.
  previous: ExchangeState | null = null;
  next: ExchangeState | null = null;
  lastBytesRead = -1;
  silentSinceMs = 0;
  upstreamMs = -1;
  readonly startedMs = performance.now();

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly onEnd: ExchangeEnded<unknown>,
    readonly context: unknown,
    nowMs: number,
  ) {
    this.silentSinceMs = nowMs;
  }
}

/**
 * The upstream pool. http-proxy builds the upstream request synchronously inside `web()`,
 * and the ClientRequest constructor hands itself to the agent before its head is written:
 * the one place to give it back the exact path, and to learn the upstream request without
 * listening for it. If that ever stops holding (another http-proxy version), the request is
 * refused rather than sent with http-proxy's path.
 */
class ExchangeAgent extends http.Agent {
  /** The exchange being handed to http-proxy right now. */
  current: ExchangeState | null = null;
  /** Told when the upstream answers a plain request with `101` (see onUnexpectedUpgrade). */
  onUpgrade: (this: ClientRequest) => void = () => undefined;

  addRequest(req: ClientRequest, options: object): void {
    const exchange = this.current;
    this.current = null;
    if (exchange === null) {
      req.destroy(new Error('upstream request created outside forwarder.web'));
      return;
    }
    req.path = exchange.req.url as string;
    exchange.upstreamRequest = req;
    (req as ClientRequest & Carrier)[kExchange] = exchange;
    // A 101 to a request that asked for no upgrade: Node detaches and destroys the socket
    // without an 'error' or a 'response' unless someone listens.
    req.on('upgrade', this.onUpgrade);
    agentAddRequest.call(this, req, options);
  }
}

export function createForwarder(options: ForwarderOptions): Forwarder {
  const agent = new ExchangeAgent({ keepAlive: true, scheduling: 'lifo', keepAliveMsecs: 1000 });
  const upstream = new URL(options.upstreamUrl);
  const proxy = httpProxy.createProxyServer({
    // Pre-parsed, and no per-call options below: given either, http-proxy copies its options
    // and re-parses the target URL on every request.
    target: {
      protocol: upstream.protocol,
      host: upstream.host,
      hostname: upstream.hostname,
      port: upstream.port || (upstream.protocol === 'https:' ? '443' : '80'),
      path: '/',
    } as unknown as string,
    agent,
    toProxy: true,
    prependPath: false,
    xfwd: false,
    changeOrigin: false,
  });
  const passes = proxy as unknown as { webPasses: Pass[] };
  passes.webPasses = passes.webPasses.filter((pass) => pass.name === 'stream');
  if (passes.webPasses.length !== 1)
    throw new Error('unexpected http-proxy version: no stream pass');

  // A last resort: http-proxy emits 'error' when no callback is given; it must never throw.
  proxy.on('error', (error) => {
    options.logger.error({ err: { code: (error as NodeJS.ErrnoException).code } }, 'proxy error');
  });
  proxy.on('econnreset', () => undefined);

  // http-proxy accepts (req, res, callback) but its types insist on an options object.
  const proxyWeb = proxy.web.bind(proxy) as unknown as (
    req: IncomingMessage,
    res: ServerResponse,
    callback: (error: Error, req: IncomingMessage, res: ServerResponse) => void,
  ) => void;
  // With a per-call `buffer` (the stream piped upstream instead of the request itself).
  const proxyWebFrom = proxy.web.bind(proxy) as unknown as (
    req: IncomingMessage,
    res: ServerResponse,
    options: { buffer: Readable },
    callback: (error: Error, req: IncomingMessage, res: ServerResponse) => void,
  ) => void;

  const recordFailure: RecordUpstreamFailure = (kind, code, websocket = false) => {
    options.metrics.upstreamErrors.inc({ kind });
    options.logger.warn({ event: 'upstream_error', kind, code, websocket }, 'upstream error');
  };

  /** Ends the exchange once: unlinks it from the watchdog and tells the caller. */
  const end = (exchange: ExchangeState): void => {
    if (exchange.ended) return;
    exchange.ended = true;
    unwatch(exchange);
    (exchange.res as Carrier)[kExchange] = undefined;
    exchange.onEnd(exchange);
  };

  /** The exchange's upstream failed; counted and logged once whichever event reports it. */
  const fail = (exchange: ExchangeState, kind: UpstreamErrorKind, code: string | undefined) => {
    if (exchange.failure !== null || exchange.error !== null) return;
    recordFailure(kind, code);
    const { res } = exchange;
    if (res.headersSent) {
      exchange.failure = kind;
      res.destroy();
      return;
    }
    const detail = `upstream ${kind}: ${code ?? 'unknown'}`;
    exchange.error = kind === 'timeout' ? upstreamTimeout(detail) : upstreamUnreachable(detail);
    end(exchange);
  };

  function onProxyError(this: void, error: Error, _req: IncomingMessage, res: ServerResponse) {
    const exchange = (res as Carrier)[kExchange];
    if (!exchange) return; // over already (the client went away first)
    const failure = error as NodeJS.ErrnoException;
    const kind = exchange.timedOut ? 'timeout' : classifyUpstreamError(failure);
    fail(exchange, kind, kind === 'timeout' ? UPSTREAM_TIMEOUT_CODE : failure.code);
  }

  function onResponseClose(this: ServerResponse) {
    const exchange = (this as Carrier)[kExchange];
    if (!exchange) return;
    // The client went away before the end: the upstream request has no reader any more.
    if (!this.writableFinished) exchange.upstreamRequest?.destroy();
    end(exchange);
  }

  function onUpstreamResponseClose(this: IncomingMessage) {
    const exchange = (this as IncomingMessage & Carrier)[kExchange];
    if (!exchange || this.complete || exchange.res.destroyed) return; // done, or the client went first
    // An upstream that dies mid-body must not leave the client waiting for the rest.
    const kind = exchange.timedOut ? 'timeout' : 'reset';
    fail(exchange, kind, kind === 'timeout' ? UPSTREAM_TIMEOUT_CODE : 'ECONNRESET');
  }

  agent.onUpgrade = function onUnexpectedUpgrade(this: ClientRequest) {
    const exchange = (this as ClientRequest & Carrier)[kExchange];
    this.socket?.destroy();
    if (exchange && !exchange.ended) fail(exchange, 'reset', 'UNEXPECTED_101');
  };

  proxy.on('proxyRes', (proxyRes: IncomingMessage, _req: IncomingMessage, res: ServerResponse) => {
    const exchange = (res as Carrier)[kExchange];
    rewriteResponseHeaders(proxyRes.headers);
    proxyRes.headers.connection =
      res.shouldKeepAlive && !options.isDraining() ? 'keep-alive' : 'close';
    if (!exchange) return;
    exchange.upstreamMs = performance.now() - exchange.startedMs;
    exchange.upstreamResponse = proxyRes;
    (proxyRes as IncomingMessage & Carrier)[kExchange] = exchange;
    proxyRes.on('close', onUpstreamResponseClose);
  });

  // ── the watchdog: `upstream.timeout_ms` bounds the upstream's own silences ──
  // The wait for the response headers once the request body is in, and each gap in the
  // response body. A silence the client causes — its body still arriving, or it not reading
  // ours (backpressure pauses the upstream response) — is not the upstream's. One interval
  // for every exchange; a silence is noticed within one tick after timeout_ms.
  let head: ExchangeState | null = null;
  const watch = (exchange: ExchangeState): void => {
    exchange.next = head;
    if (head) head.previous = exchange;
    head = exchange;
  };
  const unwatch = (exchange: ExchangeState): void => {
    if (exchange.previous) exchange.previous.next = exchange.next;
    else if (head === exchange) head = exchange.next;
    if (exchange.next) exchange.next.previous = exchange.previous;
    exchange.previous = null;
    exchange.next = null;
  };
  const tickMs = Math.min(1000, Math.max(10, Math.floor(options.timeoutMs / 10)));
  const watchdog = setInterval(() => {
    const now = Date.now();
    let next: ExchangeState | null;
    for (let exchange = head; exchange !== null; exchange = next) {
      next = exchange.next; // ending an exchange below unlinks it
      const socket = exchange.upstreamRequest?.socket as Socket | null | undefined;
      const bytesRead = socket ? socket.bytesRead : -1;
      if (
        bytesRead !== exchange.lastBytesRead ||
        !exchange.req.complete ||
        exchange.res.writableNeedDrain
      ) {
        exchange.lastBytesRead = bytesRead;
        exchange.silentSinceMs = now;
        continue;
      }
      if (now - exchange.silentSinceMs < options.timeoutMs) continue;
      if (exchange.timedOut) {
        // Destroying the upstream request reported nothing for another whole timeout: end
        // the exchange here rather than leave the client (and this list) waiting forever.
        if (now - exchange.silentSinceMs >= 2 * options.timeoutMs) {
          fail(exchange, 'timeout', UPSTREAM_TIMEOUT_CODE);
          if (!exchange.ended) exchange.res.destroy();
        }
        continue;
      }
      exchange.timedOut = true;
      exchange.upstreamRequest?.destroy(
        Object.assign(new Error('upstream timed out'), { code: UPSTREAM_TIMEOUT_CODE }),
      );
    }
  }, tickMs);
  watchdog.unref();

  const websockets = createWebSocketForwarder({
    upstream,
    timeoutMs: options.timeoutMs,
    recordFailure,
  });

  return {
    web(req, res, onEnd, context) {
      const exchange = new ExchangeState(
        req,
        res,
        onEnd as ExchangeEnded<unknown>,
        context,
        Date.now(),
      );
      (res as Carrier)[kExchange] = exchange;
      watch(exchange);
      res.on('close', onResponseClose);
      const scanner = createBodyOverrideScanner(req.method, req.headers);
      agent.current = exchange;
      if (scanner === null) {
        proxyWeb(req, res, onProxyError);
      } else {
        // A form body streams through the method-override scanner (body-method-override.ts).
        scanner.once('error', (error: Error) => {
          if (exchange.ended) return;
          exchange.upstreamRequest?.destroy();
          exchange.error = badRequest(
            'TOKENGUARD_METHOD_OVERRIDE',
            'method override parameters are not accepted',
            error.message,
          );
          end(exchange);
        });
        req.pipe(scanner);
        proxyWebFrom(req, res, { buffer: scanner }, onProxyError);
      }
      agent.current = null;
    },
    ws: (req, res, socket, head) => websockets.forward(req, res, socket, head),
    close() {
      clearInterval(watchdog);
      proxy.close();
      agent.destroy();
    },
  };
}
