/**
 * Forwarding with http-proxy 1.18.1 (the chosen stack, unmaintained since 2020), with its
 * known defects neutralised here, each covered by a test:
 * - its `deleteLength` pass turns a chunked DELETE/OPTIONS into `content-length: 0` yet still
 *   pipes the body — request smuggling to the upstream — so the pass is removed;
 * - it rewrites `\` to `/` and collapses `//` after routing (url.parse + urlJoin): with
 *   `toProxy` and no prepended path it forwards `req.url` untouched, and `req.url` is the
 *   already-normalised path the route was matched on;
 * - hop-by-hop fields (and a `Trailer` field, which crashes it) are removed on both sides;
 * - its `proxyReq` event is skipped for requests with `Expect:`, so nothing relies on it for
 *   correctness (headers are rewritten before `web()`; `Expect` is always stripped);
 * - without an error callback a refused connection crashes the process: every call has one;
 * - a client that goes away mid-response leaves the upstream request running: it is destroyed.
 */
import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import type { Logger } from 'pino';
import { upstreamTimeout, upstreamUnreachable, type GatewayError } from '../errors.js';
import type { GatewayMetrics, UpstreamErrorKind } from '../metrics/metrics.js';
import { rewriteResponseHeaders } from './upstream-headers.js';

export interface Forwarder {
  /**
   * Streams the request to the upstream and the response back. Resolves when the response
   * is over — with the kind of upstream failure that cut it short after its headers were
   * sent, else null; rejects with a GatewayError (502/504) when the upstream failed before
   * any response header was sent, so the caller can render it.
   */
  web(req: IncomingMessage, res: ServerResponse): Promise<UpstreamErrorKind | null>;
  /** Proxies an authorised WebSocket upgrade; the socket is the client's. */
  ws(req: IncomingMessage, socket: Duplex, head: Buffer): void;
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

export function createForwarder(options: ForwarderOptions): Forwarder {
  const agent = new http.Agent({ keepAlive: true, scheduling: 'lifo', keepAliveMsecs: 1000 });
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
    ws: true,
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
  const proxyWs = proxy.ws.bind(proxy) as unknown as (
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
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
      });
    },
    ws(req, socket, head) {
      proxyWs(req, socket, head, (error: Error) => {
        const failure = error as NodeJS.ErrnoException;
        recordFailure(socket, classify(failure), failure.code, true);
        if (socket.destroyed) return;
        // Before the upstream's 101 the client still speaks HTTP; after it, only close.
        if ((socket as Duplex & { bytesWritten?: number }).bytesWritten === 0) {
          socket.end('HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
        } else {
          socket.destroy();
        }
      });
    },
    close() {
      proxy.close();
      agent.destroy();
    },
  };
}
