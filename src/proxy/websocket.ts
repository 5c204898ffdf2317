/**
 * WebSocket handshakes (http-proxy's own WebSocket pass is not used: it sends the handshake
 * on the shared keep-alive pool, so a handshake the upstream answers without `101` returns
 * its connection to the pool — with a declared body never sent, the next request is read as
 * that body: request smuggling — and it has no handshake timeout, copies response headers
 * raw, and half-closes the client).
 *
 * Here a handshake goes to the upstream on a connection of its own (never pooled), bounded by
 * `upstream.timeout_ms`; a `101` opens a tunnel, any other answer is relayed with
 * `Connection: close` and both connections are closed after it (PRODUCT.md "What the
 * upstream receives").
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { upstreamTimeout, upstreamUnreachable } from '../errors.js';
import {
  classifyUpstreamError,
  UPSTREAM_TIMEOUT_CODE,
  type RecordUpstreamFailure,
} from './upstream-errors.js';
import { rewriteResponseHeaders } from './upstream-headers.js';

/** What a WebSocket handshake came to, for the access log: the status the client got. */
export type UpgradeStatus = number;

export interface WebSocketForwarder {
  /**
   * Proxies an authorised WebSocket handshake on a connection of its own. Resolves with the
   * upstream's status once it answered (101: the tunnel is open; anything else was relayed
   * and both connections are closing); rejects with a GatewayError (502/504) when the
   * upstream failed before answering — nothing was written to the client then, so the
   * caller renders it on `res`, which owns the client socket until the answer arrives.
   */
  forward(
    req: IncomingMessage,
    res: ServerResponse,
    socket: Duplex,
    head: Buffer,
  ): Promise<UpgradeStatus>;
}

export function createWebSocketForwarder(options: {
  upstream: URL;
  timeoutMs: number;
  recordFailure: RecordUpstreamFailure;
}): WebSocketForwarder {
  const { upstream, timeoutMs, recordFailure } = options;
  const host = upstream.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = Number(upstream.port || (upstream.protocol === 'https:' ? 443 : 80));
  return {
    forward(req, res, socket, head) {
      return new Promise((resolve, reject) => {
        // Never pooled (agent: false): whatever the upstream does with this connection, no
        // other request ever travels on it.
        const handshake = http.request({
          host,
          port,
          method: 'GET',
          path: req.url,
          headers: req.headers,
          agent: false,
        });
        let answered = false;
        const timer = setTimeout(() => {
          handshake.destroy(
            Object.assign(new Error('upstream handshake timed out'), {
              code: UPSTREAM_TIMEOUT_CODE,
            }),
          );
        }, timeoutMs);
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
          const kind = classifyUpstreamError(error);
          recordFailure(kind, error.code, true);
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
          upstreamSocket.setTimeout(timeoutMs, () => upstreamSocket.destroy());
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
    if (HANDSHAKE_OWNED.has(lower) || headers[lower] === undefined) continue;
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
