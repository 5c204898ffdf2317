/**
 * The upstream of the demo and the test suite: it answers every request with what it saw,
 * and records it, so tests can assert what crossed the gateway. Request bodies go through a
 * hash and are never kept (a 50 MB upload leaves memory flat). A few paths misbehave on
 * purpose, for the gateway's timeout and streaming tests:
 *   /__slow?ms=N      waits N ms before the response headers
 *   /__stall          sends headers and one chunk, then nothing, forever
 *   /__trailer        a chunked body with an `X-Checksum` trailer
 *   /__status?code=N  answers status N
 * They are matched anywhere in the URL, so they work below any route prefix.
 * WebSocket upgrades are accepted (the `ws` package, a devDependency: src/dev only) and
 * echo every message back.
 */
import { createHash } from 'node:crypto';
import http, {
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';

export interface RecordedRequest {
  method: string;
  /** `req.url` exactly as received. */
  url: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  /** Body size; 0 for WebSocket upgrades. */
  bodyBytes: number;
  /** Hex SHA-256 of the body. */
  bodySha256: string;
}

export interface EchoApi {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  /** Every request received, in order of arrival (a request is recorded once its body ends). */
  readonly requests: RecordedRequest[];
  close(): Promise<void>;
}

const EMPTY_SHA256 = createHash('sha256').digest('hex');

function queryNumber(url: string, name: string): number | undefined {
  const value = new URL(url, 'http://echo.invalid').searchParams.get(name);
  if (value === null || !/^\d+$/.test(value)) return undefined;
  return Number(value);
}

export async function startEchoApi(
  options: { host?: string; port?: number } = {},
): Promise<EchoApi> {
  const host = options.host ?? '127.0.0.1';
  const requests: RecordedRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();

  const answer = (req: IncomingMessage, res: ServerResponse, bodyBytes: number) => {
    const url = req.url ?? '';
    const echo = JSON.stringify({ method: req.method, url, headers: req.headers, bodyBytes });

    if (url.includes('/__stall')) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first chunk\n');
      return;
    }
    if (url.includes('/__trailer')) {
      const checksum = createHash('sha256').update(echo).digest('hex');
      res.writeHead(200, { 'content-type': 'application/json', trailer: 'X-Checksum' });
      res.write(echo);
      res.addTrailers({ 'X-Checksum': checksum });
      res.end();
      return;
    }
    const status = url.includes('/__status') ? (queryNumber(url, 'code') ?? 200) : 200;
    const send = () => {
      const noBody = status === 204 || status === 304 || req.method === 'HEAD';
      res.writeHead(status, {
        'content-type': 'application/json',
        ...(noBody ? {} : { 'content-length': Buffer.byteLength(echo) }),
      });
      res.end(noBody ? undefined : echo);
    };
    if (url.includes('/__slow')) {
      const timer = setTimeout(
        () => {
          timers.delete(timer);
          send();
        },
        queryNumber(url, 'ms') ?? 0,
      );
      timers.add(timer);
      return;
    }
    send();
  };

  const server = http.createServer((req, res) => {
    const hash = createHash('sha256');
    let bodyBytes = 0;
    req.on('data', (chunk: Buffer) => {
      bodyBytes += chunk.length;
      hash.update(chunk);
    });
    req.once('end', () => {
      requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        bodyBytes,
        bodySha256: hash.digest('hex'),
      });
      answer(req, res, bodyBytes);
    });
    req.once('error', () => res.destroy());
  });
  // Longer than any test: the gateway's pooled connections must not race an idle close
  // (close() ends them all anyway).
  server.keepAliveTimeout = 65_000;

  const webSockets = new WebSocketServer({ noServer: true });
  webSockets.on('connection', (socket) => {
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
    socket.on('error', () => socket.terminate());
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      bodyBytes: 0,
      bodySha256: EMPTY_SHA256,
    });
    socket.on('error', () => socket.destroy());
    if (String(req.headers.upgrade).toLowerCase() !== 'websocket') {
      socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    webSockets.handleUpgrade(req, socket, head, (ws) => webSockets.emit('connection', ws, req));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    requests,
    close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      for (const client of webSockets.clients) client.terminate();
      return new Promise<void>((resolve) => {
        webSockets.close();
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
