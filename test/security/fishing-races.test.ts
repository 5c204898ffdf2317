/**
 * Class 2 of issue 7 ("fishing races"): the block used to be checked before introspection and
 * the failure recorded after it, so every request of a burst passed the check before the
 * first failure landed — 100 parallel connections, or 40 requests pipelined on one
 * connection, each got its own authorization-server call (64 with max_failures 5), and the
 * fisher held every introspection slot while another client's new valid token got 503.
 * PRODUCT.md "Token fishing": a client's uncached introspections in flight count against what
 * is left of its max_failures, so it makes at most max_failures calls per window whatever
 * its concurrency. Asserted by counting the real authorization server's calls.
 */
import http from 'node:http';
import test from 'ava';
import {
  bearer,
  eventually,
  request,
  scrapeMetrics,
  metricValue,
  unknownToken,
  withHarness,
  type Harness,
} from '../_harness.js';
import { createFishingGuard } from '../../src/fishing/fishing-guard.js';
import { createLogger } from '../../src/log/logger.js';
import { converse, exchange, parseResponses, WEBSOCKET_HEADERS } from './_attack.js';

const silentLogger = () => createLogger('silent');

const MAX_FAILURES = 5;
const FISHER = '127.0.0.21';
const HONEST = '127.0.0.22';

/** A slow authorization server keeps the fisher's calls in flight together. */
const config =
  (extra: Record<string, unknown> = {}) =>
  () => ({
    fishing: { window_seconds: 60, max_failures: MAX_FAILURES, block_seconds: 60 },
    introspection: { timeout_ms: 5000 },
    ...extra,
  });

const getOrder = (harness: Harness, from: string, token: string, agent?: http.Agent) =>
  request(`${harness.url}/api/orders/1`, {
    from,
    headers: bearer(token),
    timeoutMs: 30_000,
    ...(agent ? { agent } : {}),
  });

test('100 parallel connections from one client make at most max_failures AS calls; another client gets 200', async (t) => {
  await withHarness(config(), async (harness) => {
    harness.as.setFault({ delayMs: 300 });
    const valid = harness.as.issue({ scope: 'orders:read' });
    const fishing = Array.from({ length: 100 }, () => getOrder(harness, FISHER, unknownToken()));
    const honest = getOrder(harness, HONEST, valid);
    const replies = await Promise.all(fishing);
    t.is((await honest).status, 200, "the other client's new valid token is served");

    // 1 call for the honest token; the fisher's are bounded by its failure budget.
    t.true(
      harness.as.introspectionCalls <= MAX_FAILURES + 1,
      `${harness.as.introspectionCalls} AS calls`,
    );
    const statuses = replies.map((reply) => reply.status);
    t.is(statuses.filter((status) => status === 401).length, MAX_FAILURES);
    t.true(
      statuses.every((status) => status === 401 || status === 429),
      `only 401 and 429: ${[...new Set(statuses)].join(' ')}`,
    );
    const metrics = await scrapeMetrics(harness);
    t.is(metricValue(metrics, 'tokenguard_fishing_failures_total'), MAX_FAILURES);
  });
});

test('40 requests pipelined on one connection make at most max_failures AS calls', async (t) => {
  await withHarness(config(), async (harness) => {
    harness.as.setFault({ delayMs: 200 });
    let text = '';
    for (let index = 0; index < 40; index += 1) {
      text += `GET /api/orders/1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${unknownToken()}\r\n\r\n`;
    }
    const replies = await exchange(harness.port, text, { from: FISHER, expectResponses: 40 });
    t.is(replies.length, 40, 'every pipelined request is answered');
    t.true(
      harness.as.introspectionCalls <= MAX_FAILURES,
      `${harness.as.introspectionCalls} AS calls`,
    );
    t.is(replies.filter((reply) => reply.status === 401).length, MAX_FAILURES);
    t.true(replies.every((reply) => reply.status === 401 || reply.status === 429));
  });
});

test('HTTP/1.0 and keep-alive bursts, and WebSocket handshakes, share the same budget', async (t) => {
  await withHarness(config(), async (harness) => {
    harness.as.setFault({ delayMs: 200 });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8, localAddress: FISHER });
    try {
      const keepAlive = Array.from({ length: 30 }, () =>
        getOrder(harness, FISHER, unknownToken(), agent),
      );
      const http10 = Array.from({ length: 15 }, () =>
        exchange(
          harness.port,
          `GET /api/orders/1 HTTP/1.0\r\nAuthorization: Bearer ${unknownToken()}\r\n\r\n`,
          { from: FISHER },
        ),
      );
      const upgrades = Array.from({ length: 15 }, () =>
        exchange(
          harness.port,
          `GET /api/orders/1 HTTP/1.1\r\nHost: gw\r\n${WEBSOCKET_HEADERS}Authorization: Bearer ${unknownToken()}\r\n\r\n`,
          { from: FISHER },
        ),
      );
      const statuses = [
        ...(await Promise.all(keepAlive)).map((reply) => reply.status),
        ...(await Promise.all([...http10, ...upgrades])).map((replies) => replies[0]?.status),
      ];
      t.true(
        harness.as.introspectionCalls <= MAX_FAILURES,
        `${harness.as.introspectionCalls} AS calls`,
      );
      t.is(statuses.filter((status) => status === 401).length, MAX_FAILURES);
      t.true(
        statuses.every((status) => status === 401 || status === 429),
        statuses.join(' '),
      );
    } finally {
      agent.destroy();
    }
  });
});

test('a fisher never holds more introspection slots than its failure budget', async (t) => {
  // max_concurrent just above max_failures: if the fisher could take every slot, the honest
  // client's uncached lookup would be refused for budget (503) instead of served.
  await withHarness(
    config({ introspection: { timeout_ms: 5000, max_concurrent: MAX_FAILURES + 1 } }),
    async (harness) => {
      harness.as.setFault({ delayMs: 400 });
      const fishing = Array.from({ length: 60 }, () => getOrder(harness, FISHER, unknownToken()));
      // The fisher's first calls are at the authorization server (held there 400 ms).
      t.true(await eventually(() => harness.as.introspectionCalls >= MAX_FAILURES, 10_000));
      const honest = await getOrder(harness, HONEST, harness.as.issue({ scope: 'orders:read' }));
      await Promise.all(fishing);
      t.is(honest.status, 200, honest.body);
    },
  );
});

// ── the admission rules themselves, on the guard (no network, real timers) ──

const guardOptions = { windowSeconds: 60, maxFailures: 3, blockSeconds: 60, maxClients: 100 };

test('admission: in flight plus failures never exceed max_failures; waiters go in order', async (t) => {
  const guard = createFishingGuard({ ...guardOptions, logger: silentLogger() });
  try {
    t.deepEqual(await Promise.all([1, 2, 3].map(() => guard.admit('c', 5000))), [
      'admitted',
      'admitted',
      'admitted',
    ]);
    t.is(guard.inFlight('c'), 3);
    const order: string[] = [];
    const fourth = guard.admit('c', 5000).then((verdict) => order.push(`4:${verdict}`));
    const fifth = guard.admit('c', 5000).then((verdict) => order.push(`5:${verdict}`));
    // Another client is not affected.
    t.is(await guard.admit('other', 5000), 'admitted');
    guard.release('c'); // a success: the fourth takes the turn
    await fourth;
    t.deepEqual(order, ['4:admitted']);
    guard.recordFailure('c');
    guard.release('c'); // a failure: 1 failure + 2 in flight = 3, the fifth still waits
    t.is(guard.inFlight('c'), 2);
    guard.recordFailure('c');
    guard.recordFailure('c');
    guard.release('c'); // 3 failures: the block starts, the waiter learns of it
    await fifth;
    t.deepEqual(order, ['4:admitted', '5:blocked']);
    t.true(guard.blockedFor('c') > 0);
    t.is(await guard.admit('c', 5000), 'blocked');
  } finally {
    guard.close();
  }
});

test('admission: a waiter whose turn does not come within its wait gets timeout', async (t) => {
  const guard = createFishingGuard({ ...guardOptions, logger: silentLogger() });
  try {
    for (let index = 0; index < 3; index += 1) t.is(await guard.admit('c', 5000), 'admitted');
    t.is(await guard.admit('c', 50), 'timeout');
    // The timed-out waiter left no trace: releasing all three frees the client entirely.
    for (let index = 0; index < 3; index += 1) guard.release('c');
    t.is(guard.inFlight('c'), 0);
    t.is(await guard.admit('c', 50), 'admitted');
  } finally {
    guard.close();
  }
});

test('hammering: a blocked client past a few refusals a second has its answers held back', (t) => {
  let now = 1_000_000;
  const guard = createFishingGuard({
    ...guardOptions,
    maxFailures: 1,
    logger: silentLogger(),
    nowMs: () => now,
  });
  try {
    t.false(guard.hammering('c'), 'not blocked: never held');
    guard.recordFailure('c');
    t.true(guard.blockedFor('c') > 0);
    const verdicts = Array.from({ length: 15 }, () => guard.hammering('c'));
    t.deepEqual(
      verdicts,
      [...Array.from({ length: 10 }, () => false), ...Array.from({ length: 5 }, () => true)],
      'the first ten refusals of a second go at once, the rest are held',
    );
    now += 1000;
    t.false(guard.hammering('c'), 'a new second starts a new count');
    t.false(guard.hammering('other'), 'only blocked clients are counted');
  } finally {
    guard.close();
  }
});

test('a hammering blocked client cannot pipeline around the tarpit: each request waits for the answer before it', async (t) => {
  await withHarness(
    () => ({ fishing: { window_seconds: 60, max_failures: 1, block_seconds: 60 } }),
    async (harness) => {
      const from = '127.0.0.31';
      await getOrder(harness, from, unknownToken()); // blocked from here on
      // More than a few refusals a second: hammering, so its answers are held.
      for (let index = 0; index < 15; index += 1)
        await exchange(harness.port, `GET /api/orders/h HTTP/1.1\r\nHost: gw\r\n\r\n`, { from });
      const pipelined = Array.from(
        { length: 20 },
        (_, index) => `GET /api/orders/p${index} HTTP/1.1\r\nHost: gw\r\n\r\n`,
      ).join('');
      const decided = () =>
        harness
          .logs()
          .split('\n')
          .filter((line) => /"path":"\/api\/orders\/p\d+"/.test(line)).length;
      const conversation = await converse(harness.port, from);
      try {
        conversation.write(pipelined);
        t.true(await conversation.until((received) => received.includes('\r\n\r\n'), 10_000));
        const answered = parseResponses(conversation.received()).length;
        t.is(parseResponses(conversation.received())[0]?.status, 429);
        // Decided so far: those answered, and at most the one now held.
        t.true(
          decided() <= answered + 1,
          `${decided()} requests decided when ${answered} were answered`,
        );
      } finally {
        conversation.destroy();
      }
    },
  );
});
