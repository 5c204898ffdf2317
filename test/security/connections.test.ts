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
