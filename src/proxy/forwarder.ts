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
 * - its `proxyReq` event is skipped for requests with `Expect:`, so nothing relies on it for
 *   correctness (headers are rewritten before `web()`; `Expect` is always stripped);
 * - without an error callback a refused connection crashes the process: every call has one;
 * - a client that goes away mid-response leaves the upstream request running: it is destroyed;
 * - its WebSocket pass is not used at all. It sends the handshake on the shared keep-alive
 *   pool, so a handshake the upstream answers without `101` returns its connection to the
 *   pool (with a declared body never sent, the next request is read as that body: request
 *   smuggling); it has no handshake timeout, copies response headers raw, and half-closes
 *   the client. `ws` below makes the handshake on a connection of its own, bounded by
 *   `upstream.timeout_ms`, and closes both connections unless the answer is `101`.
 */
import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import type { Logger } from 'pino';
import { upstreamTimeout, upstreamUnreachable, type GatewayError } from '../errors.js';
import type { GatewayMetrics, UpstreamErrorKind } from '../metrics/metrics.js';
import { rewriteResponseHeaders } from './upstream-headers.js';

/** What a WebSocket handshake came to, for the access log: the status the client got. */
export type UpgradeStatus = number;

export interface Forwarder {
  /**
   * Streams the request to the upstream and the response back. Resolves when the response
   * is over — with the kind of upstream failure that cut it short after its headers were
   * sent, else null; rejects with a GatewayError (502/504) when the upstream failed before
   * any response header was sent, so the caller can render it.
   */
  web(req: IncomingMessage, res: ServerResponse): Promise<UpstreamErrorKind | null>;
  /**
   * Proxies an authorised WebSocket handshake on a connection of its own. Resolves with the
   * upstream's status once it answered (101: the tunnel is open; anything else was relayed
   * and both connections are closing); rejects with a GatewayError (502/504) when the
   * upstream failed before answering — nothing was written to the client then, so the
   * caller renders it on `res`, which owns the client socket until the answer arrives.
   */
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

const TIMEOUT_CODE = 'TOKENGUARD_UPSTREAM_TIMEOUT';

function classify(error: NodeJS.ErrnoException): UpstreamErrorKind {
  if (error.code === TIMEOUT_CODE) return 'timeout';
  if (
    error.code === 'ECONNREFUSED' ||
    error.code === 'EHOSTUNREACH' ||
    error.code === 'ENETUNREACH' ||
    error.code === 'ENOTFOUND' ||
    error.code === 'EAI_AGAIN' ||
    error.code === 'EADDRNOTAVAIL'
  ) {
    return 'connect';
  }
  return 'reset';
}

type Pass = (...args: unknown[]) => unknown;

type AddRequest = (this: http.Agent, req: ClientRequest, options: object) => void;
const agentAddRequest = (http.Agent.prototype as unknown as { addRequest: AddRequest }).addRequest;

/**
 * The upstream pool. http-proxy builds the upstream request synchronously inside `web()`,
 * and the ClientRequest constructor hands itself to the agent before its head is written:
 * the one place to give it back the exact path. If that ever stops holding (another
 * http-proxy version), the request is refused rather than sent with http-proxy's path.
 */
class ExactPathAgent extends http.Agent {
  /** `req.url` of the request being handed to http-proxy right now. */
  nextPath: string | undefined;

  addRequest(req: ClientRequest, options: object): void {
    const path = this.nextPath;
    this.nextPath = undefined;
    if (path === undefined) {
      req.destroy(new Error('upstream request created outside forwarder.web'));
      return;
    }
    req.path = path;
    agentAddRequest.call(this, req, options);
  }
}

export function createForwarder(options: ForwarderOptions): Forwarder {
  const agent = new ExactPathAgent({ keepAlive: true, scheduling: 'lifo', keepAliveMsecs: 1000 });
  const upstream = new URL(options.upstreamUrl);
  const upstreamHost = upstream.hostname.replace(/^\[(.*)\]$/, '$1');
  const upstreamPort = Number(upstream.port || (upstream.protocol === 'https:' ? 443 : 80));
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
    callback: (error: Error) => void,
  ) => void;

  // The upstream request of each response, so a client that goes away can cancel it.
  const upstreamRequests = new WeakMap<ServerResponse, ClientRequest>();
  const timedOut = new WeakSet<ClientRequest>();
  proxy.on('proxyReq', (proxyReq, req, res) => {
    upstreamRequests.set(res, proxyReq);
    // `upstream.timeout_ms` bounds the upstream's own silences: the wait for the response
    // headers once the request body is in, and each gap between body chunks. A silence the
    // client causes — its body still arriving, or it not reading ours (backpressure pauses
    // the upstream response) — is not the upstream's, and re-arms the timer.
    const timer = setTimeout(function checkUpstreamSilence() {
      if (!req.complete || res.writableNeedDrain) {
        timer.refresh();
        return;
      }
      timedOut.add(proxyReq);
      proxyReq.destroy(Object.assign(new Error('upstream timed out'), { code: TIMEOUT_CODE }));
    }, options.timeoutMs);
    const refresh = () => timer.refresh();
    req.once('end', refresh);
    proxyReq.once('response', (proxyRes: IncomingMessage) => {
      refresh();
      proxyRes.on('data', refresh);
    });
    proxyReq.once('close', () => clearTimeout(timer));
  });

  // Each response's upstream failure, counted and logged once whichever event reports it.
  const failures = new WeakMap<object, UpstreamErrorKind>();
  const recordFailure = (
    key: object,
    kind: UpstreamErrorKind,
    code: string | undefined,
    websocket = false,
  ): void => {
    if (failures.has(key)) return;
    failures.set(key, kind);
    options.metrics.upstreamErrors.inc({ kind });
    options.logger.warn({ event: 'upstream_error', kind, code, websocket }, 'upstream error');
  };

  proxy.on('proxyRes', (proxyRes, _req, res) => {
    rewriteResponseHeaders(proxyRes.headers);
    proxyRes.headers.connection =
      res.shouldKeepAlive && !options.isDraining() ? 'keep-alive' : 'close';
    // An upstream that dies mid-body must not leave the client waiting for the rest.
    proxyRes.once('close', () => {
      if (proxyRes.complete || res.destroyed) return; // done, or the client went first
      const upstreamRequest = upstreamRequests.get(res);
      const kind = upstreamRequest && timedOut.has(upstreamRequest) ? 'timeout' : 'reset';
      recordFailure(res, kind, kind === 'timeout' ? TIMEOUT_CODE : 'ECONNRESET');
      res.destroy();
    });
  });

  return {
    web(req, res) {
      return new Promise((resolve, reject) => {
        let settled = false;
        const settle = (error?: GatewayError) => {
          if (settled) return;
          settled = true;
          if (error) reject(error);
          else resolve(failures.get(res) ?? null);
        };
        res.once('close', () => {
          if (!res.writableFinished) upstreamRequests.get(res)?.destroy();
          settle();
        });
        agent.nextPath = req.url;
        proxyWeb(req, res, (error: Error) => {
          if (settled && res.writableEnded) return;
          const failure = error as NodeJS.ErrnoException;
          const kind = classify(failure);
          recordFailure(res, kind, failure.code);
          if (res.headersSent) {
            res.destroy();
            settle();
            return;
          }
          const detail = `upstream ${kind}: ${failure.code ?? failure.message}`;
          settle(kind === 'timeout' ? upstreamTimeout(detail) : upstreamUnreachable(detail));
        });
        agent.nextPath = undefined;
      });
    },
    ws(req, res, socket, head) {
      return new Promise((resolve, reject) => {
        // Never pooled (agent: false): whatever the upstream does with this connection, no
        // other request ever travels on it.
        const handshake = http.request({
          host: upstreamHost,
          port: upstreamPort,
          method: 'GET',
          path: req.url,
          headers: req.headers,
          agent: false,
        });
        let answered = false;
        const timer = setTimeout(() => {
          handshake.destroy(
            Object.assign(new Error('upstream handshake timed out'), { code: TIMEOUT_CODE }),
          );
        }, options.timeoutMs);
        const clientGone = () => handshake.destroy();
        socket.once('close', clientGone);
        const answer = () => {
          answered = true;
          clearTimeout(timer);
          socket.off('close', clientGone);
          // From here on the gateway writes raw bytes: Koa's response gives the socket up.
          res.detachSocket(socket as Socket);
        };
        handshake.once('error', (error: NodeJS.ErrnoException) => {
          clearTimeout(timer);
          socket.off('close', clientGone);
          if (answered || socket.destroyed) {
            socket.destroy();
            return;
          }
          const kind = classify(error);
          recordFailure(socket, kind, error.code, true);
          const detail = `upstream ${kind}: ${error.code ?? error.message}`;
          reject(kind === 'timeout' ? upstreamTimeout(detail) : upstreamUnreachable(detail));
        });
        handshake.once('upgrade', (upstreamRes, upstreamSocket: Socket, upstreamHead: Buffer) => {
          answer();
          if (!WEBSOCKET.test(upstreamRes.headers.upgrade ?? '')) {
            // A 101 to another protocol than the one authorised: nothing is tunnelled.
            upstreamSocket.destroy();
            socket.write(BAD_GATEWAY_HEAD);
            closeAfterwards(socket);
            resolve(502);
            return;
          }
          socket.write(responseHead(upstreamRes, 'HTTP/1.1 101 Switching Protocols', true));
          tunnel(socket as Socket, upstreamSocket, head, upstreamHead);
          resolve(101);
        });
        handshake.once('response', (upstreamRes: IncomingMessage) => {
          answer();
          const status = upstreamRes.statusCode ?? 502;
          socket.write(
            responseHead(
              upstreamRes,
              `HTTP/1.1 ${status} ${upstreamRes.statusMessage ?? ''}`,
              false,
            ),
          );
          const upstreamSocket = upstreamRes.socket;
          // The relayed answer is bounded like any response: each upstream silence.
          upstreamSocket.setTimeout(options.timeoutMs, () => upstreamSocket.destroy());
          socket.once('close', () => upstreamSocket.destroy());
          upstreamRes.pipe(socket, { end: false });
          upstreamRes.once('close', () => {
            upstreamSocket.destroy();
            closeAfterwards(socket);
          });
          resolve(status);
        });
        handshake.end();
      });
    },
    close() {
      proxy.close();
      agent.destroy();
    },
  };
}

const WEBSOCKET = /^websocket$/i;
const BAD_GATEWAY_HEAD =
  'HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: 0\r\n\r\n';

/** Response fields the gateway sets itself when it relays a handshake answer. */
const HANDSHAKE_OWNED = new Set(['connection', 'upgrade', 'transfer-encoding']);

/**
 * The head of a relayed handshake answer: the upstream's fields in its order and casing,
 * without hop-by-hop ones; `Connection: Upgrade` for a 101, else `Connection: close` — the
 * answer's body is relayed decoded and delimited by the close.
 */
function responseHead(upstreamRes: IncomingMessage, statusLine: string, upgraded: boolean): string {
  const headers = { ...upstreamRes.headers };
  rewriteResponseHeaders(headers);
  let head = `${statusLine}\r\n`;
  const raw = upstreamRes.rawHeaders;
  for (let index = 0; index < raw.length; index += 2) {
    const name = raw[index] as string;
    const lower = name.toLowerCase();
    if (HANDSHAKE_OWNED.has(lower) || !(lower in headers)) continue;
    head += `${name}: ${raw[index + 1] as string}\r\n`;
  }
  head += upgraded ? 'Connection: Upgrade\r\nUpgrade: websocket\r\n' : 'Connection: close\r\n';
  return `${head}\r\n`;
}

/** Both directions of an open WebSocket; either side closing closes the other. */
function tunnel(client: Socket, upstream: Socket, clientHead: Buffer, upstreamHead: Buffer): void {
  for (const socket of [client, upstream]) {
    socket.setTimeout(0);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 0);
  }
  upstream.on('error', () => client.destroy());
  client.on('error', () => upstream.destroy());
  upstream.once('close', () => client.destroy());
  client.once('close', () => upstream.destroy());
  if (upstreamHead.length > 0) client.write(upstreamHead);
  if (clientHead.length > 0) upstream.write(clientHead);
  upstream.pipe(client);
  client.pipe(upstream);
}

/** Ends the client side once everything is written, then lets go of the socket. */
export function closeAfterwards(socket: Duplex): void {
  if (socket.destroyed) return;
  socket.end();
  // Whatever the client still sends is read and dropped until it closes its side too, or
  // for a short while: closing on unread bytes would reset the connection and could wipe
  // out the answer before the client reads it.
  socket.resume();
  const linger = setTimeout(() => socket.destroy(), LINGER_MS);
  socket.once('close', () => clearTimeout(linger));
  socket.once('end', () => socket.destroy());
}

const LINGER_MS = 2000;
