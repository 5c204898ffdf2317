/**
 * Connection discipline on the proxied port, before any request is looked at:
 *
 * - Pipelined requests are decided one at a time, in order. Node emits every pipelined
 *   request at once; a request behind one the gateway refuses with `Connection: close` (or
 *   behind an HTTP/1.0 exchange that closes) would still be executed, although the client
 *   never gets its answer and may well retry it. RFC 9112 §9.6: after a response with
 *   `close`, the server SHOULD NOT process further requests on that connection — so the
 *   next one starts only when the previous response is over (written, or its connection
 *   gone: the response's `close`), and is dropped if that response closes the connection.
 *   "Over" is the response's own event, not the handler's return: an answer held back (the
 *   tarpit) holds the requests behind it too.
 * - A connection that is gone takes its waiting requests with it: they are never started
 *   (nobody would read their answers, and they would wait for an upstream timeout).
 * - An upgrade or CONNECT pipelined behind requests still in progress is not served: Node
 *   hands the socket over while an earlier response still owns it. The answers before it
 *   are written, then the connection closes.
 * - Connections are bounded in all (`server.max_connections`) and per peer address
 *   (`server.max_connections_per_peer`, trusted proxies exempt — every client behind them
 *   shares their address), so a tokenless client trickling headers cannot take every file
 *   descriptor; `server.headers_timeout_seconds` bounds how long headers may trickle.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export type Dispatch = (req: IncomingMessage, res: ServerResponse) => void;

export interface Connections {
  /** The request handler: dispatches now, or after the connection's current request. */
  accept(req: IncomingMessage, res: ServerResponse): void;
  /**
   * An upgrade or CONNECT arrived on `socket`: true when the connection is free for it;
   * false when requests before it are still in progress — the connection then closes once
   * their answers are written, and the upgrade must not be served.
   */
  upgradeMayStart(socket: Socket): boolean;
}

interface ConnectionState {
  /** The response in progress. */
  current: ServerResponse | null;
  closing: boolean;
  /** Close the connection once the requests in progress are answered. */
  endWhenIdle: boolean;
  /** Pipelined requests waiting their turn: req, res, req, res, … */
  queue: Array<IncomingMessage | ServerResponse> | null;
}

const kState = Symbol('tokenguard.connection');
type Carrier = Socket & { [kState]?: ConnectionState; _httpMessage?: ServerResponse | null };

function forget(this: Carrier): void {
  const state = this[kState];
  if (!state) return;
  state.closing = true;
  state.queue = null;
}

export function createConnections(dispatch: Dispatch): Connections {
  const stateOf = (socket: Carrier): ConnectionState => {
    let state = socket[kState];
    if (!state) {
      state = { current: null, closing: false, endWhenIdle: false, queue: null };
      socket[kState] = state;
      socket.once('close', forget);
    }
    return state;
  };

  const start = (state: ConnectionState, req: IncomingMessage, res: ServerResponse) => {
    state.current = res;
    res.on('close', over);
    dispatch(req, res);
  };

  /** The current response is over (`close` follows `finish`, or the connection went). */
  function over(this: ServerResponse): void {
    const socket = this.req.socket as Carrier | null;
    const state = socket?.[kState];
    if (!state || state.current !== this) return;
    state.current = null;
    if (!this.shouldKeepAlive || state.closing || socket?.destroyed !== false) {
      state.closing = true;
      state.queue = null;
      return;
    }
    const queue = state.queue;
    if (queue === null || queue.length === 0) {
      if (state.endWhenIdle) socket?.end();
      return;
    }
    start(state, queue.shift() as IncomingMessage, queue.shift() as ServerResponse);
  }

  return {
    accept(req, res) {
      const socket = req.socket as Carrier | null;
      if (!socket || socket.destroyed) return; // gone before its turn: nothing to answer
      const state = stateOf(socket);
      if (state.closing) return; // the connection closes once the answer before is written
      if (state.current !== null) {
        (state.queue ??= []).push(req, res);
        return;
      }
      start(state, req, res);
    },
    upgradeMayStart(socket) {
      const carrier = socket as Carrier;
      const state = carrier[kState];
      const inProgress = state?.current ?? carrier._httpMessage ?? null;
      if (inProgress === null) return true;
      const own = stateOf(carrier);
      own.endWhenIdle = true;
      // Answered already but not yet flushed (Node still holds the socket for it).
      if (own.current === null) inProgress.once('close', () => carrier.end());
      return false;
    },
  };
}

/** Caps connections in all and per peer address (trusted proxies exempt). */
export function limitConnections(
  server: Server,
  options: { max: number; perPeer: number; isTrustedPeer: (address: string) => boolean },
): void {
  server.maxConnections = options.max;
  const perPeer = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress;
    if (address === undefined || options.isTrustedPeer(address)) return;
    const count = (perPeer.get(address) ?? 0) + 1;
    if (count > options.perPeer) {
      socket.destroy();
      return;
    }
    perPeer.set(address, count);
    socket.once('close', () => {
      const left = (perPeer.get(address) ?? 1) - 1;
      if (left <= 0) perPeer.delete(address);
      else perPeer.set(address, left);
    });
  });
}
