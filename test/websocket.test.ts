/**
 * WebSocket upgrades pass the same checks as any request (PRODUCT.md "What the upstream
 * receives"): Node hands upgrades to `server.on('upgrade')`, past Koa, so every refusal of
 * the status table must still happen there — and the gateway must keep serving afterwards.
 * The client is the `ws` package, as a browser-like client would speak.
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import test, { type ExecutionContext } from 'ava';
import WebSocket from 'ws';
import {
  freePort,
  mintToken,
  rawRequest,
  request,
  withHarness,
  TOKEN_CLIENTS,
  type Harness,
} from './_harness.js';

const reader = TOKEN_CLIENTS[0] as (typeof TOKEN_CLIENTS)[number];

type Handshake =
  | { kind: 'open'; socket: WebSocket }
  | { kind: 'refused'; status: number; headers: IncomingHttpHeaders; body: string }
  | { kind: 'error'; message: string };

/** Opens a WebSocket to the gateway; a refused handshake is reported with its response. */
function handshake(
  harness: Harness,
  path: string,
  headers: Record<string, string> = {},
): Promise<Handshake> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (result: Handshake) => {
      if (settled) return;
      settled = true;
      resolve(result);
    };
    const socket = new WebSocket(`ws://127.0.0.1:${harness.port}${path}`, {
      headers,
      handshakeTimeout: 10_000,
    });
    socket.on('unexpected-response', (req, res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      const done = () => {
        settle({ kind: 'refused', status: res.statusCode ?? 0, headers: res.headers, body });
        req.destroy();
      };
      res.once('end', done);
      res.once('close', done);
      res.once('error', done);
    });
    socket.once('open', () => settle({ kind: 'open', socket }));
    socket.on('error', (error) => settle({ kind: 'error', message: error.message }));
  });
}

/** Sends `data` and resolves the next message (bounded). */
function roundTrip(socket: WebSocket, data: string | Buffer): Promise<Buffer | string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no echo within 10 s')), 10_000);
    socket.once('message', (message, isBinary) => {
      clearTimeout(timer);
      const buffer = Buffer.isBuffer(message)
        ? message
        : Array.isArray(message)
          ? Buffer.concat(message)
          : Buffer.from(message);
      resolve(isBinary ? buffer : buffer.toString('utf8'));
    });
    socket.send(data, { binary: typeof data !== 'string' });
  });
}

function closeSocket(socket: WebSocket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.readyState === WebSocket.CLOSED) {
      resolve();
      return;
    }
    const timer = setTimeout(() => {
      socket.terminate();
      resolve();
    }, 5000);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.close(1000, 'done');
  });
}

function assertRefused(
  t: ExecutionContext,
  result: Handshake,
  status: number,
): asserts result is Extract<Handshake, { kind: 'refused' }> {
  if (result.kind === 'open') result.socket.terminate();
  if (result.kind !== 'refused') {
    t.fail(
      `expected HTTP ${status}, got ${result.kind === 'open' ? 'an open WebSocket' : result.message}`,
    );
    throw new Error('handshake not refused');
  }
  t.is(result.status, status, result.body);
}

/** The gateway still serves a normal authorised request and an auth: none one. */
async function stillServes(t: ExecutionContext, harness: Harness) {
  const token = await mintToken(harness.as, reader);
  const authorised = await request(`${harness.url}/api/orders/1`, {
    headers: { authorization: `Bearer ${token}` },
  });
  t.is(authorised.status, 200, 'an authorised request after the refused handshake');
  const open = await request(`${harness.url}/public/after`);
  t.is(open.status, 200, 'an auth: none request after the refused handshake');
}

test('an upgrade without a token is refused with 401 and the bare Bearer challenge', async (t) => {
  await withHarness(undefined, async (harness) => {
    const result = await handshake(harness, '/api/orders/1');
    assertRefused(t, result, 401);
    t.is(result.headers['www-authenticate'], 'Bearer realm="tokenguard"');
    t.is(JSON.parse(result.body).error, 'unauthorized');
    t.is(harness.upstream.requests.length, 0);
    t.is(harness.as.introspectionCalls, 0);
    await stillServes(t, harness);
  });
});

test('an upgrade with a bogus token is refused with 401 invalid_token', async (t) => {
  await withHarness(undefined, async (harness) => {
    const result = await handshake(harness, '/api/orders/1', {
      authorization: 'Bearer bogus-token-value',
    });
    assertRefused(t, result, 401);
    t.regex(String(result.headers['www-authenticate']), /^Bearer /);
    t.regex(String(result.headers['www-authenticate']), /error="invalid_token"/);
    t.is(JSON.parse(result.body).error, 'invalid_token');
    t.is(harness.upstream.requests.length, 0);
    await stillServes(t, harness);
  });
});

test('an upgrade with malformed credentials is refused with 400 invalid_request', async (t) => {
  await withHarness(undefined, async (harness) => {
    const result = await handshake(harness, '/api/orders/1', { authorization: 'Bearer a b' });
    assertRefused(t, result, 400);
    t.regex(String(result.headers['www-authenticate']), /error="invalid_request"/);
    t.is(harness.as.introspectionCalls, 0);
    t.is(harness.upstream.requests.length, 0);
    await stillServes(t, harness);
  });
});

test('an upgrade with a valid token missing the scope is refused with 403', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = harness.as.issue({ scope: 'orders:write profile' });
    const result = await handshake(harness, '/api/orders/1', { authorization: `Bearer ${token}` });
    assertRefused(t, result, 403);
    const challenge = String(result.headers['www-authenticate']);
    t.regex(challenge, /error="insufficient_scope"/);
    t.regex(challenge, /scope="orders:read"/);
    t.is(harness.upstream.requests.length, 0);
    await stillServes(t, harness);
  });
});

test('an upgrade from a client blocked for fishing is refused with 429, without asking the AS', async (t) => {
  await withHarness(
    () => ({ fishing: { max_failures: 2, window_seconds: 60, block_seconds: 60 } }),
    async (harness) => {
      for (let attempt = 0; attempt < 2; attempt += 1) {
        const failed = await request(`${harness.url}/api/orders/1`, {
          headers: { authorization: `Bearer fishing-attempt-${attempt}` },
        });
        t.is(failed.status, 401);
      }
      const token = await mintToken(harness.as, reader);
      const callsBefore = harness.as.introspectionCalls;
      const result = await handshake(harness, '/api/orders/1', {
        authorization: `Bearer ${token}`,
      });
      assertRefused(t, result, 429);
      t.is(JSON.parse(result.body).error, 'too_many_requests');
      const retryAfter = Number(result.headers['retry-after']);
      t.true(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After ${retryAfter}`);
      t.is(harness.as.introspectionCalls, callsBefore, 'the AS was not asked');
      t.is(harness.upstream.requests.length, 0);

      // Still blocked for token routes, still served on auth: none ones.
      const blocked = await request(`${harness.url}/api/orders/1`, {
        headers: { authorization: `Bearer ${token}` },
      });
      t.is(blocked.status, 429);
      const open = await request(`${harness.url}/public/after`);
      t.is(open.status, 200);
    },
  );
});

test('an upgrade with a valid token opens, echoes, and the upstream sees identity headers only from the gateway', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = await mintToken(harness.as, reader);
    const result = await handshake(harness, '/api/orders/9?stream=1', {
      authorization: `Bearer ${token}`,
      'X-Auth-Subject': 'mallory',
      x_auth_scope: 'orders:write admin',
      'X-Auth-Client-Id': 'forged',
      'X-Forwarded-For': '6.6.6.6',
      'X-HTTP-Method-Override': 'DELETE',
    });
    if (result.kind !== 'open') {
      t.fail(`the handshake was refused: ${JSON.stringify(result)}`);
      return;
    }
    try {
      t.is(await roundTrip(result.socket, 'hello over the gateway'), 'hello over the gateway');
      const binary = Buffer.from([0, 1, 2, 250, 255]);
      t.deepEqual(await roundTrip(result.socket, binary), binary);
      const large = 'x'.repeat(200_000);
      t.is(await roundTrip(result.socket, large), large);
    } finally {
      await closeSocket(result.socket);
    }

    t.is(harness.upstream.requests.length, 1);
    const seen = harness.upstream.requests[0];
    t.is(seen?.method, 'GET');
    t.is(seen?.url, '/api/orders/9?stream=1');
    const headers = seen?.headers ?? {};
    t.is(String(headers.upgrade).toLowerCase(), 'websocket');
    t.regex(String(headers.connection), /upgrade/i);
    t.truthy(headers['sec-websocket-key']);
    t.is(headers['x-auth-subject'], reader.id);
    t.is(headers['x-auth-client-id'], reader.id);
    t.is(headers['x-auth-scope'], reader.scope);
    t.is(headers.x_auth_scope, undefined);
    t.is(headers['x-forwarded-for'], '127.0.0.1');
    t.is(headers['x-http-method-override'], undefined);
    t.is(headers.authorization, `Bearer ${token}`);
    const rawNames = (seen?.rawHeaders ?? []).filter((_, index) => index % 2 === 0);
    t.is(
      rawNames.filter((name) => /^x[-_]auth[-_]/i.test(name)).length,
      3,
      `exactly the injected identity headers: ${rawNames.join(', ')}`,
    );
    t.false(JSON.stringify(headers).includes('mallory'));
    t.false(JSON.stringify(headers).includes('forged'));

    await stillServes(t, harness);
  });
});

test('an upgrade on an auth: none route opens without a token, client identity headers stripped', async (t) => {
  await withHarness(undefined, async (harness) => {
    const result = await handshake(harness, '/public/socket', { 'X-Auth-Subject': 'mallory' });
    if (result.kind !== 'open') {
      t.fail(`the handshake was refused: ${JSON.stringify(result)}`);
      return;
    }
    try {
      t.is(await roundTrip(result.socket, 'ping'), 'ping');
    } finally {
      await closeSocket(result.socket);
    }
    const headers = harness.upstream.requests[0]?.headers ?? {};
    t.is(headers['x-auth-subject'], undefined);
  });
});

test('an upgrade to an unmatched route gets 404, one with a refused path 400', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = await mintToken(harness.as, reader);
    const unmatched = await handshake(harness, '/nowhere', { authorization: `Bearer ${token}` });
    assertRefused(t, unmatched, 404);
    const raw = await rawRequest(
      harness.port,
      'GET /public/%2e%2e/%2e%2e/api/orders/1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n' +
        'Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      1000,
    );
    t.regex(raw, /^HTTP\/1\.1 400 /, raw.slice(0, 200));
    t.is(harness.upstream.requests.length, 0);
    await stillServes(t, harness);
  });
});

test('an h2c upgrade is refused with 400 and never reaches the upstream', async (t) => {
  await withHarness(undefined, async (harness) => {
    for (const path of ['/public/x', '/api/orders/1']) {
      const raw = await rawRequest(
        harness.port,
        `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n` +
          'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n',
        1000,
      );
      t.regex(raw, /^HTTP\/1\.1 400 /, `${path}: ${raw.slice(0, 200)}`);
      t.false(raw.includes('101 Switching Protocols'));
    }
    t.is(harness.upstream.requests.length, 0);
    await stillServes(t, harness);
  });
});

test('an upgrade with two Host fields is refused with 400', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = await mintToken(harness.as, reader);
    const raw = await rawRequest(
      harness.port,
      'GET /api/orders/1 HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n' +
        `Authorization: Bearer ${token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      1000,
    );
    t.regex(raw, /^HTTP\/1\.1 400 /, raw.slice(0, 200));
    t.is(harness.upstream.requests.length, 0);
    await stillServes(t, harness);
  });
});

test('an authorised upgrade to an upstream that refuses connections gets 502', async (t) => {
  const deadPort = await freePort();
  await withHarness(
    () => ({ upstream: { url: `http://127.0.0.1:${deadPort}`, timeout_ms: 2000 } }),
    async (harness) => {
      const token = await mintToken(harness.as, reader);
      for (let attempt = 0; attempt < 2; attempt += 1) {
        const result = await handshake(harness, '/api/orders/1', {
          authorization: `Bearer ${token}`,
        });
        assertRefused(t, result, 502);
      }
      const health = await request(`${harness.adminUrl}/healthz`);
      t.is(health.status, 200);
      const plain = await request(`${harness.url}/public/x`);
      t.is(plain.status, 502, 'plain requests still get an answer');
    },
  );
});
