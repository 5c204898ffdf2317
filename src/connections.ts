/**
 * Connection discipline on the proxied port, before any request is looked at:
 *
 * - Pipelined requests are decided one at a time, in order. Node emits every pipelined
 *   request at once; a request behind one the gateway refuses with `Connection: close` (or
 *   behind an HTTP/1.0 exchange that closes) would still be executed, although the client
 *   never gets its answer and may well retry it. RFC 9112 §9.6: after a response with
 *   `close`, the server SHOULD NOT process further requests on that connection — so the
 *   next one starts only when the previous response is over, and is dropped if that
 *   response closes the connection.
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
  /** Tells the connection its current request is over (its response written or ended). */
  done(req: IncomingMessage, res: ServerResponse): void;
}

interface ConnectionState {
  busy: boolean;
  closing: boolean;
  /** Pipelined requests waiting their turn: req, res, req, res, … */
  queue: Array<IncomingMessage | ServerResponse> | null;
}

const kState = Symbol('tokenguard.connection');
type Carrier = Socket & { [kState]?: ConnectionState };

export function createConnections(dispatch: Dispatch): Connections {
  const stateOf = (req: IncomingMessage): ConnectionState => {
    const socket = req.socket as Carrier;
    let state = socket[kState];
    if (!state) {
      state = { busy: false, closing: false, queue: null };
      socket[kState] = state;
    }
    return state;
  };
  return {
    accept(req, res) {
      const state = stateOf(req);
      if (state.closing) return; // the connection closes once the answer before is written
      if (state.busy) {
        (state.queue ??= []).push(req, res);
        return;
      }
      state.busy = true;
      dispatch(req, res);
    },
    done(req, res) {
      const state = (req.socket as Carrier | null)?.[kState];
      if (!state) return;
      state.busy = false;
      if (!res.shouldKeepAlive) {
        state.closing = true;
        state.queue = null;
        return;
      }
      const queue = state.queue;
      if (queue === null || queue.length === 0) return;
      const next = queue.shift() as IncomingMessage;
      const nextRes = queue.shift() as ServerResponse;
      state.busy = true;
      dispatch(next, nextRes);
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
