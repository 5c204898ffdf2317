/**
 * Connection discipline (red-team findings on issue 7): requests pipelined behind a refusal
 * that closes the connection are never executed (RFC 9112 §9.6); a tokenless client cannot
 * hold connections by trickling headers or opening many at once.
 */
import test from 'ava';
import type { startHarness } from '../_harness.js';
import { withHarness } from '../_harness.js';
import { converse, exchange, parseResponses } from './_attack.js';

const tagged = (line: string, tag: string) =>
  `${line} HTTP/1.1\r\nHost: gateway.test\r\nX-Pipeline: ${tag}\r\n\r\n`;

const executed = (harness: Awaited<ReturnType<typeof startHarness>>, tag: string) =>
  harness.upstream.requests
    .filter((seen) => seen.headers['x-pipeline'] === tag)
    .map((seen) => `${seen.method} ${seen.url}`);

for (const [first, why] of [
  ['GET /a;b', 'a 400 refusal closes the connection'],
  ['TRACE /public/x', 'a 405 refusal closes the connection'],
  ['GET /public/x?_method=DELETE', 'a method-override refusal closes the connection'],
] as const) {
  test(`a request pipelined behind a closing refusal is not executed (${why})`, async (t) => {
    await withHarness(undefined, async (harness) => {
      const tag = `p-${Math.random()}`;
      const replies = await exchange(
        harness.port,
        tagged(first, tag) + tagged('DELETE /public/after', tag),
        { expectResponses: 1 },
      );
      t.is(replies.length, 1, 'one answer, then the connection closed');
      t.true((replies[0]?.status ?? 0) >= 400);
      await new Promise((resolve) => setTimeout(resolve, 300));
      t.deepEqual(executed(harness, tag), [], 'the upstream executed nothing');
    });
  });
}

test('an HTTP/1.0 exchange that closes: nothing pipelined behind it is executed', async (t) => {
  await withHarness(undefined, async (harness) => {
    const tag = `p-${Math.random()}`;
    const text =
      `GET /public/a HTTP/1.0\r\nX-Pipeline: ${tag}\r\n\r\n` +
      `GET /public/b HTTP/1.0\r\nX-Pipeline: ${tag}\r\n\r\n`;
    const replies = await exchange(harness.port, text);
    // Node's parser may refuse the whole conversation (400) — either way, one answer at most.
    t.is(replies.length, 1);
    await new Promise((resolve) => setTimeout(resolve, 300));
    t.false(executed(harness, tag).includes('GET /public/b'), 'the second is never executed');
  });
});

test('keep-alive pipelining still works, in order, one request at a time', async (t) => {
  await withHarness(undefined, async (harness) => {
    const tag = `p-${Math.random()}`;
    const token = harness.as.issue({ scope: 'orders:read' });
    const authorised = `GET /api/orders/1 HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer ${token}\r\nX-Pipeline: ${tag}\r\n\r\n`;
    const text =
      tagged('GET /public/1', tag) +
      authorised +
      tagged('GET /api/orders/2', tag) + // no token: 401, keep-alive (no body)
      tagged('GET /public/3', tag);
    const replies = await exchange(harness.port, text, { expectResponses: 4 });
    t.deepEqual(
      replies.map((reply) => reply.status),
      [200, 200, 401, 200],
    );
    t.deepEqual(executed(harness, tag), ['GET /public/1', 'GET /api/orders/1', 'GET /public/3']);
  });
});

test('headers trickling past server.headers_timeout_seconds: the connection is dropped', async (t) => {
  await withHarness(
    () => ({ server: { host: '127.0.0.1', port: 0, headers_timeout_seconds: 1 } }),
    async (harness) => {
      const client = await converse(harness.port);
      try {
        client.write('GET /public/x HTTP/1.1\r\nHost: gateway.test\r\n');
        let dropped = false;
        // A header line every 300 ms: idle never, but the headers never end.
        for (let index = 0; index < 20 && !dropped; index += 1) {
          await new Promise((resolve) => setTimeout(resolve, 300));
          client.write(`X-Trickle-${index}: y\r\n`);
          dropped = await client.ended(1);
        }
        t.true(dropped || (await client.ended(3000)), 'the gateway ended the connection');
        t.is(harness.upstream.requests.length, 0);
      } finally {
        client.destroy();
      }
    },
  );
});

test('server.max_connections_per_peer: one address cannot hold more; another address still can', async (t) => {
  await withHarness(
    () => ({ server: { host: '127.0.0.1', port: 0, max_connections_per_peer: 5 } }),
    async (harness) => {
      const held = await Promise.all(
        Array.from({ length: 5 }, () => converse(harness.port, '127.0.0.41')),
      );
      try {
        for (const client of held) client.write('GET /public/x HTTP/1.1\r\nHost: gateway.test\r\n');
        const extra = await converse(harness.port, '127.0.0.41');
        t.true(await extra.ended(5000), 'the sixth connection from that address is closed');
        extra.destroy();
        const other = await exchange(
          harness.port,
          'GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n',
          { from: '127.0.0.42' },
        );
        t.is(other[0]?.status, 200, 'another client is served');
        // The held ones are still usable: finishing their headers gets them answered.
        held[0]?.write('\r\n');
        t.true(
          await (held[0] as (typeof held)[number]).until(
            (text) => parseResponses(text).length === 1,
          ),
        );
      } finally {
        for (const client of held) client.destroy();
      }
      // Closing frees the slots: the address is served again.
      let again: number | undefined;
      for (let attempt = 0; attempt < 50 && again !== 200; attempt += 1) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        const replies = await exchange(
          harness.port,
          'GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n',
          { from: '127.0.0.41', timeoutMs: 2000 },
        );
        again = replies[0]?.status;
      }
      t.is(again, 200);
    },
  );
});

// ── An upgrade or CONNECT pipelined behind requests in progress (red team, round 2) ──
// Node hands `upgrade`/`connect` the socket while an earlier response still owns it; serving
// it then threw ERR_HTTP_SOCKET_ASSIGNED out of the event handler and took the process down.

const UPGRADES = {
  websocket: (tag: string) =>
    `GET /public/ws HTTP/1.1\r\nHost: gateway.test\r\nX-Pipeline: ${tag}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
  h2c: (tag: string) =>
    `GET /public/h2 HTTP/1.1\r\nHost: gateway.test\r\nX-Pipeline: ${tag}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n`,
  connect: (tag: string) =>
    `CONNECT a.test:80 HTTP/1.1\r\nHost: a.test:80\r\nX-Pipeline: ${tag}\r\n\r\n`,
};

for (const [first, expected] of [
  ['GET /nowhere', 404],
  ['GET /public/first', 200],
  ['GET /api/orders/1', 401],
] as const) {
  for (const [kind, upgrade] of Object.entries(UPGRADES)) {
    test(`a ${kind} upgrade pipelined behind "${first}" (${expected}) is not served and crashes nothing`, async (t) => {
      await withHarness(undefined, async (harness) => {
        const tag = `u-${Math.random()}`;
        const conversation = await converse(harness.port);
        try {
          conversation.write(tagged(first, tag) + upgrade(tag));
          t.true(await conversation.ended(10_000), 'the gateway closes the connection');
          const replies = parseResponses(conversation.received());
          t.deepEqual(
            replies.map((reply) => reply.status),
            [expected],
            'the answer before it is written, nothing else',
          );
        } finally {
          conversation.destroy();
        }
        const forwarded = executed(harness, tag);
        t.deepEqual(
          forwarded,
          expected === 200 ? ['GET /public/first'] : [],
          'the upgrade never reached the upstream',
        );
        // Still serving.
        const after = await exchange(harness.port, tagged('GET /public/after', tag));
        t.is(after[0]?.status, 200);
      });
    });
  }
}

test('an upgrade pipelined behind two requests: both are answered in order first', async (t) => {
  await withHarness(undefined, async (harness) => {
    const tag = `u-${Math.random()}`;
    const conversation = await converse(harness.port);
    try {
      conversation.write(
        tagged('GET /public/1', tag) + tagged('GET /public/2', tag) + UPGRADES.websocket(tag),
      );
      t.true(await conversation.ended(10_000));
      t.deepEqual(
        parseResponses(conversation.received()).map((reply) => reply.status),
        [200, 200],
      );
    } finally {
      conversation.destroy();
    }
    t.deepEqual(executed(harness, tag), ['GET /public/1', 'GET /public/2']);
  });
});

test('an upgrade alone on its connection is still served', async (t) => {
  await withHarness(undefined, async (harness) => {
    const tag = `u-${Math.random()}`;
    const conversation = await converse(harness.port);
    try {
      conversation.write(UPGRADES.websocket(tag));
      t.true(await conversation.until((received) => received.includes('\r\n\r\n'), 10_000));
      t.regex(conversation.received(), /^HTTP\/1\.1 101 /);
    } finally {
      conversation.destroy();
    }
  });
});

// ── A connection that is gone takes its waiting requests with it ──

test('requests queued behind bytes Node refuses are never started (no lingering exchange, no false timeout)', async (t) => {
  await withHarness(
    () => ({ upstream: { timeout_ms: 300 } }),
    async (harness) => {
      const tag = `q-${Math.random()}`;
      for (const garbage of ['GET api HTTP/1.1\r\n\r\n', 'GET /public/x HTTP/1.1\r\n\r\n']) {
        // The second line has no Host: Node's own 400, like the unparsable target.
        const replies = await exchange(
          harness.port,
          tagged('GET /public/a', tag) + tagged('GET /public/b', tag) + garbage,
          { expectResponses: 1, timeoutMs: 3000 },
        );
        t.true(replies.length >= 1);
      }
      // Twice the upstream timeout: a request left in the forwarder would be a 504 by now.
      await new Promise((resolve) => setTimeout(resolve, 900));
      const lines = harness
        .logs()
        .split('\n')
        .filter((line) => line.includes('"outcome"'));
      t.false(
        lines.some((line) => line.includes('"status":504') || line.includes('upstream_error')),
        'no request waited for an upstream it was never sent to',
      );
      t.false(harness.logs().includes('"kind":"timeout"'), 'no upstream timeout was counted');
      t.true(executed(harness, tag).length <= 4);
    },
  );
});

// ── Errors are logged without the request's bytes ──

test('a parse error behind a request with a token: no byte of the token reaches the logs', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = harness.as.issue({ scope: 'orders:read' });
    for (const tail of ['GET api/x HTTP/1.1\r\n\r\n', 'GET / HTTP/1.1\r\nBad Header\r\n\r\n']) {
      await exchange(
        harness.port,
        `GET /api/orders/1 HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer ${token}\r\nCookie: session=${token}\r\n\r\n${tail}`,
        { expectResponses: 1, timeoutMs: 3000 },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    const logs = harness.logs();
    t.false(logs.includes(token), 'not as text');
    // Nor as a Buffer's bytes, a typed array or base64 (how serializers render raw data).
    const bytes = [...Buffer.from(token)];
    t.false(logs.includes(bytes.slice(0, 8).join(',')), 'not as a byte array');
    t.false(logs.includes(Buffer.from(token).toString('base64').slice(0, 16)), 'not as base64');
    t.false(logs.includes('rawPacket'));
  });
});
