/**
 * Class 1 and 7 of issue 7: the upgrade path. A handshake travelled on the shared keep-alive
 * pool with its Content-Length, so an upstream that answered without 101 and then read the
 * promised body ate the next request (with nginx: a forged-identity GET executed for an
 * unauthenticated attacker); refused upgrades half-closed their socket and kept it forever.
 * PRODUCT.md: an upgrade with a body gets 400; an upgrade never travels on a pooled upstream
 * connection; unless the upstream answers 101 both connections are closed after its answer;
 * `upstream.timeout_ms` bounds the handshake; a refused upgrade's socket is closed once the
 * refusal is written. Asserted on what a real upstream saw, connection by connection.
 */
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import test from 'ava';
import WebSocket from 'ws';
import { eventually, startHarness, type Harness } from '../_harness.js';
import { converse, exchange, parseResponses, WEBSOCKET_HEADERS } from './_attack.js';

interface Seen {
  connection: number;
  method: string;
  url: string;
  subject: string | undefined;
  bodyBytes: number;
}

/**
 * A plain Node API (no 'upgrade' listener: Node 20 serves a handshake as an ordinary request,
 * 200 on a keep-alive connection), recording which connection each request came on and which
 * connections are closed.
 */
async function startPlainApi() {
  const seen: Seen[] = [];
  const closedConnections = new Set<number>();
  let connections = 0;
  const ids = new WeakMap<net.Socket, number>();
  const server = http.createServer((req, res) => {
    let bodyBytes = 0;
    req.on('data', (chunk: Buffer) => {
      bodyBytes += chunk.length;
    });
    req.on('end', () => {
      seen.push({
        connection: ids.get(req.socket) ?? -1,
        method: req.method ?? '',
        url: req.url ?? '',
        subject: req.headers['x-auth-subject'] as string | undefined,
        bodyBytes,
      });
      res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': 'plain' });
      res.end('plain answer\n');
    });
  });
  server.on('connection', (socket: net.Socket) => {
    connections += 1;
    const id = connections;
    ids.set(socket, id);
    socket.once('close', () => closedConnections.add(id));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    closedConnections,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function withPlainApi(
  run: (harness: Harness, api: Awaited<ReturnType<typeof startPlainApi>>) => Promise<void>,
  extra: Record<string, unknown> = {},
) {
  const api = await startPlainApi();
  const harness = await startHarness({
    config: () => ({ upstream: { url: api.url, timeout_ms: 1000 }, ...extra }),
  });
  try {
    await run(harness, api);
  } finally {
    await harness.close();
    await api.close();
  }
}

const handshake = (path: string, extra = '') =>
  `GET ${path} HTTP/1.1\r\nHost: gateway.test\r\n${WEBSOCKET_HEADERS}${extra}\r\n`;

const SMUGGLED = 'GET /admin/users HTTP/1.1\r\nHost: x\r\nX-Auth-Subject: root\r\n\r\n';

test('the smuggling attack end to end: the upstream never executes the smuggled request', async (t) => {
  await withPlainApi(async (harness, api) => {
    // 1. A public handshake promising a body it never sends.
    const [first] = await exchange(
      harness.port,
      handshake('/public/ws', `Content-Length: ${SMUGGLED.length}\r\n`),
    );
    t.is(first?.status, 400);
    // 2. The attacker's next public request carries the request to smuggle as its body.
    const [second] = await exchange(
      harness.port,
      `POST /public/y HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: ${SMUGGLED.length}\r\nConnection: close\r\n\r\n${SMUGGLED}`,
    );
    t.is(second?.status, 200);
    t.true(await eventually(() => api.seen.length >= 1, 5000));
    await new Promise((resolve) => setTimeout(resolve, 200));
    t.deepEqual(
      api.seen.map((seen) => `${seen.method} ${seen.url} ${seen.subject ?? '-'} ${seen.bodyBytes}`),
      [`POST /public/y - ${SMUGGLED.length}`],
      'exactly the public POST, with its body, executed once',
    );
  });
});

test('a handshake the upstream answers without 101: relayed, then both connections closed, never reused', async (t) => {
  await withPlainApi(async (harness, api) => {
    const client = await converse(harness.port);
    try {
      client.write(handshake('/public/ws'));
      t.true(await client.until((received) => /plain answer\n$/.test(received)));
      const [answer] = parseResponses(client.received());
      t.is(answer?.status, 200, 'the upstream answer is relayed');
      t.is(answer?.headers.connection, 'close');
      t.is(answer?.headers['x-upstream'], 'plain');
      t.true(await client.ended(), 'the gateway ends the client connection');
      const handshakeConnection = api.seen[0]?.connection;
      t.true(
        await eventually(() => api.closedConnections.has(handshakeConnection ?? -1), 5000),
        'the upstream connection of the handshake is closed',
      );
    } finally {
      client.destroy();
    }
    // The next requests are executed alone, on other upstream connections.
    for (let index = 0; index < 3; index += 1) {
      const [reply] = await exchange(
        harness.port,
        'GET /public/next HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n',
      );
      t.is(reply?.status, 200);
    }
    const handshakeConnection = api.seen[0]?.connection;
    const later = api.seen.slice(1);
    t.deepEqual(
      later.map((seen) => seen.url),
      ['/public/next', '/public/next', '/public/next'],
    );
    t.false(later.some((seen) => seen.connection === handshakeConnection));
    // The access log records what the client got, not a 101 that never happened.
    const access = harness
      .logs()
      .split('\n')
      .filter((line) => line.includes('"event":"access"') && line.includes('/public/ws'));
    t.is(access.length, 1);
    t.regex(access[0] ?? '', /"status":200/);
  });
});

test('upstream.timeout_ms bounds the handshake: an upstream that never answers gives 504', async (t) => {
  const sockets = new Set<net.Socket>();
  const silent = net.createServer((socket) => {
    sockets.add(socket);
    socket.resume();
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const { port } = silent.address() as AddressInfo;
  const harness = await startHarness({
    config: () => ({ upstream: { url: `http://127.0.0.1:${port}`, timeout_ms: 300 } }),
  });
  try {
    const [reply] = await exchange(harness.port, handshake('/public/ws'));
    t.is(reply?.status, 504);
    t.is(JSON.parse(reply?.body ?? '{}').error, 'gateway_timeout');
    t.true(
      await eventually(() => [...sockets].every((socket) => socket.destroyed), 5000),
      "the gateway closed the silent upstream's connection",
    );
  } finally {
    await harness.close();
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  }
});

const REFUSALS: Array<[string, string, number]> = [
  ['an unauthenticated WebSocket handshake', handshake('/api/orders/1'), 401],
  ['a WebSocket handshake with a body', handshake('/public/ws', 'Content-Length: 5\r\n'), 400],
  ['CONNECT', 'CONNECT gateway.test:443 HTTP/1.1\r\nHost: gateway.test:443\r\n\r\n', 405],
  [
    'an h2c upgrade',
    'GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n',
    400,
  ],
];

for (const [what, text, status] of REFUSALS) {
  test(`${what} is refused with ${status} and its socket closed, even if the client keeps its side open`, async (t) => {
    await withPlainApi(async (harness, api) => {
      // 25 at once, none of them closing its own side: each must be closed by the gateway.
      const clients = await Promise.all(Array.from({ length: 25 }, () => converse(harness.port)));
      try {
        for (const client of clients) client.write(text);
        for (const client of clients) {
          t.true(await client.until((received) => parseResponses(received).length === 1));
          t.is(parseResponses(client.received())[0]?.status, status);
        }
        const closed = await Promise.all(clients.map((client) => client.released()));
        t.true(closed.every(Boolean), `${closed.filter(Boolean).length} of 25 released`);
        t.is(api.seen.length, 0, 'the upstream executed nothing');
      } finally {
        for (const client of clients) client.destroy();
      }
    });
  });
}

test('an authorised WebSocket still opens and echoes through the new upgrade path', async (t) => {
  const harness = await startHarness();
  try {
    const token = harness.as.issue({ scope: 'orders:read', sub: 'alice' });
    const socket = new WebSocket(`ws://127.0.0.1:${harness.port}/api/orders/1`, {
      headers: { authorization: `Bearer ${token}`, 'x-auth-subject': 'root' },
    });
    const echoed = await new Promise<string>((resolve, reject) => {
      socket.once('open', () => socket.send('ping'));
      socket.once('message', (data) => resolve(String(data)));
      socket.once('error', reject);
    });
    t.is(echoed, 'ping');
    socket.close();
    const seen = harness.upstream.requests.at(-1);
    t.is(seen?.headers['x-auth-subject'], 'alice');
    t.is(seen?.headers['content-length'], undefined);
    const access = harness
      .logs()
      .split('\n')
      .find((line) => line.includes('"event":"access"'));
    t.regex(access ?? '', /"status":101/);
  } finally {
    await harness.close();
  }
});

test('a pooled upstream connection never carries a handshake: keep-alive traffic and upgrades interleaved', async (t) => {
  await withPlainApi(async (harness, api) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
    try {
      for (let round = 0; round < 5; round += 1) {
        await new Promise<void>((resolve, reject) => {
          http
            .get(`${harness.url}/public/k${round}`, { agent }, (res) => {
              res.resume();
              res.once('end', resolve);
            })
            .once('error', reject);
        });
        await exchange(harness.port, handshake(`/public/ws${round}`));
      }
    } finally {
      agent.destroy();
    }
    const handshakeConnections = new Set(
      api.seen.filter((seen) => seen.url.startsWith('/public/ws')).map((seen) => seen.connection),
    );
    const pooledConnections = new Set(
      api.seen.filter((seen) => seen.url.startsWith('/public/k')).map((seen) => seen.connection),
    );
    t.is(handshakeConnections.size, 5, 'each handshake had a connection of its own');
    for (const connection of handshakeConnections) t.false(pooledConnections.has(connection));
  });
});

test('an upstream answering a plain request with 101 gets a 502, not a hung client', async (t) => {
  const sockets = new Set<net.Socket>();
  const rogue = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('data', () =>
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n',
      ),
    );
  });
  await new Promise<void>((resolve) => rogue.listen(0, '127.0.0.1', resolve));
  const { port } = rogue.address() as AddressInfo;
  const harness = await startHarness({
    config: () => ({ upstream: { url: `http://127.0.0.1:${port}`, timeout_ms: 500 } }),
  });
  try {
    const [reply] = await exchange(
      harness.port,
      'GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n',
    );
    t.is(reply?.status, 502);
    t.true(
      await eventually(() => harness.logs().includes('"event":"access"'), 5000),
      'the request was recorded',
    );
  } finally {
    await harness.close();
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => rogue.close(() => resolve()));
  }
});
