/**
 * Tools for the adversarial suite: raw TCP conversations from a chosen source address (each
 * of 127.0.0.0/8 is a distinct client to the gateway), pipelined requests, and a parser that
 * splits a byte stream into the HTTP responses it holds. Every wait is bounded.
 */
import net from 'node:net';

export interface RawReply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface Conversation {
  socket: net.Socket;
  write(text: string): void;
  received(): string;
  /** Resolves once `predicate(received)` holds, or false after `timeoutMs`. */
  until(predicate: (received: string) => boolean, timeoutMs?: number): Promise<boolean>;
  /** True once the gateway ended its side (FIN) — within `timeoutMs`. */
  ended(timeoutMs?: number): Promise<boolean>;
  /** True once the connection is fully closed by the gateway — within `timeoutMs`. */
  closed(timeoutMs?: number): Promise<boolean>;
  /**
   * True once the gateway let go of the connection entirely, within `timeoutMs`: after its
   * FIN, the client keeps probing with a byte every 250 ms, which a socket the gateway
   * still holds swallows and a released one answers with a reset.
   */
  released(timeoutMs?: number): Promise<boolean>;
  destroy(): void;
}

/** Opens a connection from `from` (default 127.0.0.1); the caller keeps its own side open. */
export async function converse(port: number, from = '127.0.0.1'): Promise<Conversation> {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress: from, allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let received = '';
  let ended = false;
  let closed = false;
  const listeners = new Set<() => void>();
  const notify = () => {
    for (const listener of listeners) listener();
  };
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1');
    notify();
  });
  socket.on('error', () => undefined);
  socket.once('end', () => {
    ended = true;
    notify();
  });
  socket.once('close', () => {
    ended = true;
    closed = true;
    notify();
  });
  const waitFor = (condition: () => boolean, timeoutMs: number) =>
    new Promise<boolean>((resolve) => {
      if (condition()) {
        resolve(true);
        return;
      }
      const check = () => {
        if (!condition()) return;
        listeners.delete(check);
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        resolve(condition());
      }, timeoutMs);
      listeners.add(check);
    });
  return {
    socket,
    write: (text) => {
      socket.write(text, 'latin1');
    },
    received: () => received,
    until: (predicate, timeoutMs = 10_000) => waitFor(() => predicate(received), timeoutMs),
    ended: (timeoutMs = 10_000) => waitFor(() => ended, timeoutMs),
    closed: (timeoutMs = 10_000) => waitFor(() => closed, timeoutMs),
    async released(timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      if (!(await waitFor(() => ended, timeoutMs))) return false;
      while (!closed && Date.now() < deadline) {
        if (socket.writable) socket.write('x');
        await waitFor(() => closed, 250);
      }
      return closed;
    },
    destroy: () => socket.destroy(),
  };
}

/**
 * Splits a byte stream into HTTP/1.x responses (Content-Length or chunked bodies; a body
 * without either runs to the end of the stream).
 */
export function parseResponses(stream: string): RawReply[] {
  const replies: RawReply[] = [];
  let rest = stream;
  while (rest.startsWith('HTTP/')) {
    const headEnd = rest.indexOf('\r\n\r\n');
    if (headEnd === -1) break;
    const [statusLine = '', ...lines] = rest.slice(0, headEnd).split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    rest = rest.slice(headEnd + 4);
    let body = '';
    if (status === 101 || status === 204 || status === 304) {
      body = '';
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      for (;;) {
        const lineEnd = rest.indexOf('\r\n');
        if (lineEnd === -1) break;
        const size = Number.parseInt(rest.slice(0, lineEnd), 16);
        rest = rest.slice(lineEnd + 2);
        if (!Number.isFinite(size) || size === 0) {
          rest = rest.slice(rest.indexOf('\r\n') + 2);
          break;
        }
        body += rest.slice(0, size);
        rest = rest.slice(size + 2);
      }
    } else if (headers['content-length'] !== undefined) {
      const length = Number(headers['content-length']);
      body = rest.slice(0, length);
      rest = rest.slice(length);
    } else {
      body = rest;
      rest = '';
    }
    replies.push({ status, headers, body });
  }
  return replies;
}

/** Sends `text` on a fresh connection from `from`; returns the responses once it closes or falls silent. */
export async function exchange(
  port: number,
  text: string,
  options: { from?: string; expectResponses?: number; timeoutMs?: number } = {},
): Promise<RawReply[]> {
  const conversation = await converse(port, options.from);
  try {
    conversation.write(text);
    const wanted = options.expectResponses ?? 1;
    await conversation.until(
      (received) =>
        parseResponses(received).length >= wanted &&
        // the last body is complete when a Content-Length or chunked end is there
        completeReplies(received) >= wanted,
      options.timeoutMs ?? 15_000,
    );
    return parseResponses(conversation.received());
  } finally {
    conversation.destroy();
  }
}

function completeReplies(stream: string): number {
  const replies = parseResponses(stream);
  const last = replies.at(-1);
  if (!last) return 0;
  const length = last.headers['content-length'];
  if (length !== undefined && last.body.length < Number(length)) return replies.length - 1;
  return replies.length;
}

export const WEBSOCKET_HEADERS =
  'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
