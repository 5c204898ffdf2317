/**
 * Shielding the authorization server and bounding the gateway's own memory (issue 3): a
 * global budget of concurrent introspection calls and of calls per second for uncached
 * tokens — over budget, unknown tokens get 503 while cached tokens keep passing — and a
 * per-client fishing state that stays bounded however many distinct sources fail. The
 * authorization server's call counter is the proof that it was not asked.
 */
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import test from 'ava';
import pino from 'pino';
import { createFishingGuard } from '../src/fishing/fishing-guard.js';
import {
  eventually,
  bearer,
  metricValue,
  request as send,
  scrapeMetrics,
  unknownToken,
  withHarness,
} from './_harness.js';

const REJECTIONS = 'tokenguard_introspection_rejections_total';

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** Runs `jobs` with at most `width` in flight. */
async function inBatches<T>(count: number, width: number, job: (index: number) => Promise<T>) {
  const results: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const index = next;
      next += 1;
      results[index] = await job(index);
    }
  };
  await Promise.all(Array.from({ length: width }, worker));
  return results;
}

/** A real collection: `global.gc` when exposed, else the V8 flag turned on at run time. */
function collectGarbage(): void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) {
    exposed();
    return;
  }
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

const MB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The introspection budget
// ---------------------------------------------------------------------------------------------

/** `count` requests, each from its own client address (127.0.0.50 and up), run together. */
const fromDistinctClients = (url: string, tokens: string[], firstOctet = 50) =>
  Promise.all(
    tokens.map((token, index) =>
      send(`${url}/api/orders/1`, {
        from: `127.0.${Math.floor((firstOctet + index) / 250)}.${((firstOctet + index) % 250) + 2}`,
        headers: bearer(token),
      }),
    ),
  );

test('over max_concurrent, uncached lookups wait their turn: the AS never sees more, a cached token keeps passing', async (t) => {
  const config = () => ({ introspection: { max_concurrent: 2, timeout_ms: 8000 } });
  await withHarness(config, async ({ as, url }) => {
    const cached = as.issue({ scope: 'orders:read' });
    t.is((await send(`${url}/api/orders/1`, { headers: bearer(cached) })).status, 200);
    as.setFault({ delayMs: 400 });
    const before = as.introspectionCalls;
    const burst = fromDistinctClients(
      url,
      Array.from({ length: 6 }, () => unknownToken()),
    );
    t.true(await eventually(() => as.introspectionCalls >= before + 2, 10_000));
    for (let index = 0; index < 3; index += 1) {
      const reply = await send(`${url}/api/orders/1`, { headers: bearer(cached) });
      t.is(reply.status, 200, `cached token while the budget is spent (${index + 1})`);
    }
    const replies = await burst;
    t.deepEqual(
      replies.map((reply) => reply.status),
      [401, 401, 401, 401, 401, 401],
      'every waiting lookup got its turn: no 503',
    );
    t.is(as.introspectionCalls - before, 6);
    t.is(as.maxConcurrentIntrospections, 2, 'never more than max_concurrent at the AS');
  });
});

test('a lookup whose turn does not come within introspection.timeout_ms gets 503 with Retry-After', async (t) => {
  const config = () => ({ introspection: { max_concurrent: 1, timeout_ms: 700 } });
  await withHarness(config, async (harness) => {
    const { as, url } = harness;
    const cached = as.issue({ scope: 'orders:read' });
    t.is((await send(`${url}/api/orders/1`, { headers: bearer(cached) })).status, 200);
    as.setFault('hang');
    const before = as.introspectionCalls;
    const replies = await fromDistinctClients(
      url,
      Array.from({ length: 5 }, () => unknownToken()),
    );
    t.true(replies.every((reply) => reply.status === 503));
    for (const reply of replies) {
      t.regex(String(reply.headers['retry-after']), /^[1-9]\d*$/);
      t.is(reply.json().error, 'temporarily_unavailable');
    }
    const reached = as.introspectionCalls - before;
    t.true(reached <= 2, 'the waiters never reached the AS');
    // On-call tells "our budget ran out" from "the AS is failing": the waiters are counted
    // as the budget's concurrency, the calls that hung as AS errors.
    const metrics = await scrapeMetrics(harness);
    t.is(metricValue(metrics, REJECTIONS, { reason: 'budget_concurrency' }), 5 - reached);
    t.is(metricValue(metrics, REJECTIONS, { reason: 'budget_rate' }), 0);
    t.is(
      metricValue(metrics, 'tokenguard_introspection_requests_total', { result: 'error' }),
      reached,
    );
    t.is((await send(`${url}/api/orders/1`, { headers: bearer(cached) })).status, 200);
  });
});

test('over max_calls_per_second, the AS sees at most the budget; the rest wait, then 503', async (t) => {
  const rate = 3;
  const config = () => ({ introspection: { max_calls_per_second: rate, timeout_ms: 1000 } });
  await withHarness(config, async (harness) => {
    const { as, url } = harness;
    const cached = as.issue({ scope: 'orders:read' });
    t.is((await send(`${url}/api/orders/1`, { headers: bearer(cached) })).status, 200);
    await sleep(1200); // the bucket refills to its burst of `rate`

    const before = as.introspectionCalls;
    const started = Date.now();
    const replies = await fromDistinctClients(
      url,
      Array.from({ length: 20 }, () => unknownToken()),
    );
    const elapsedSeconds = (Date.now() - started) / 1000;
    const reached = as.introspectionCalls - before;
    // A bucket of `rate` plus what it refilled while the burst ran — never all twenty.
    const allowed = rate + Math.ceil(elapsedSeconds * rate);
    t.true(reached <= allowed, `${reached} calls reached the AS, at most ${allowed} allowed`);
    t.true(reached >= rate);
    const refused = replies.filter((reply) => reply.status === 503);
    t.is(refused.length, 20 - reached, 'every token that did not reach the AS got 503');
    t.is(replies.filter((reply) => reply.status === 401).length, reached);
    const metrics = await scrapeMetrics(harness);
    t.is(metricValue(metrics, REJECTIONS, { reason: 'budget_rate' }), refused.length);
    t.is(metricValue(metrics, REJECTIONS, { reason: 'budget_concurrency' }), 0);
    t.is(metricValue(metrics, 'tokenguard_introspection_requests_total', { result: 'error' }), 0);

    const calls = as.introspectionCalls;
    for (let index = 0; index < 3; index += 1) {
      const reply = await send(`${url}/api/orders/1`, { headers: bearer(cached) });
      t.is(reply.status, 200, 'the cached token keeps passing');
    }
    t.is(as.introspectionCalls, calls, 'cache hits spend no budget and reach no AS');
  });
});

test('turns are shared between clients: a busy client cannot starve another', async (t) => {
  const config = () => ({
    introspection: { max_concurrent: 1, timeout_ms: 3000 },
    fishing: { max_failures: 1000 },
  });
  await withHarness(config, async ({ as, url }) => {
    as.setFault({ delayMs: 60 });
    const busy = Array.from({ length: 60 }, () =>
      send(`${url}/api/orders/1`, { from: '127.0.0.61', headers: bearer(unknownToken()) }),
    );
    t.true(await eventually(() => as.introspectionCalls >= 1, 5000));
    const mine = Array.from({ length: 3 }, () => as.issue({ scope: 'orders:read' }));
    const served = await Promise.all(
      mine.map((token) =>
        send(`${url}/api/orders/1`, { from: '127.0.0.62', headers: bearer(token) }),
      ),
    );
    t.deepEqual(
      served.map((reply) => reply.status),
      [200, 200, 200],
      'the other client was served although 60 lookups queued before it',
    );
    // Round robin: once both clients wait, they alternate — its three calls are at most two
    // turns apart, however many the busy client had queued.
    const turns = as.introspectedTokens;
    const positions = mine.map((token) => turns.indexOf(token));
    t.true(positions.every((position) => position >= 0));
    t.true(
      Math.max(...positions) - Math.min(...positions) <= 4,
      `its calls were turns ${positions.join(', ')}`,
    );
    const statuses = (await Promise.all(busy)).map((reply) => reply.status);
    t.true(
      statuses.every((status) => status === 401 || status === 503),
      statuses.join(' '),
    );
  });
});

test('a client with recent failures waits behind the others', async (t) => {
  const config = () => ({
    introspection: { max_concurrent: 1, timeout_ms: 5000 },
    fishing: { max_failures: 1000 },
  });
  await withHarness(config, async ({ as, url }) => {
    const suspect = '127.0.0.71';
    // One failure makes the client a suspect.
    t.is(
      (await send(`${url}/api/orders/1`, { from: suspect, headers: bearer(unknownToken()) }))
        .status,
      401,
    );
    as.setFault({ delayMs: 300 });
    const blocker = send(`${url}/api/orders/1`, {
      from: '127.0.0.72',
      headers: bearer(unknownToken()),
    });
    t.true(
      await eventually(
        () => as.maxConcurrentIntrospections >= 1 && as.introspectionCalls >= 2,
        5000,
      ),
    );
    // The suspect asks first, an honest client second; the slot frees for the honest one.
    const suspectToken = unknownToken();
    const honestToken = as.issue({ scope: 'orders:read' });
    const suspectReply = send(`${url}/api/orders/1`, {
      from: suspect,
      headers: bearer(suspectToken),
    });
    await sleep(50);
    const honestReply = send(`${url}/api/orders/1`, {
      from: '127.0.0.73',
      headers: bearer(honestToken),
    });
    t.is((await honestReply).status, 200);
    t.is((await suspectReply).status, 401);
    await blocker;
    const turns = as.introspectedTokens;
    t.true(
      turns.indexOf(honestToken) < turns.indexOf(suspectToken),
      'the honest client went first',
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Bounded fishing state
// ---------------------------------------------------------------------------------------------

test.serial('100,000 distinct failing keys leave the fishing state and the heap bounded', (t) => {
  const maxClients = 10_000;
  collectGarbage();
  const heapBefore = process.memoryUsage().heapUsed;
  const guard = createFishingGuard({
    windowSeconds: 60,
    maxFailures: 5,
    blockSeconds: 300,
    maxClients,
    logger: pino({ level: 'silent' }),
  });
  try {
    let blocked = 0;
    for (let index = 0; index < 100_000; index += 1) {
      const key = `10.${(index >> 16) & 255}.${(index >> 8) & 255}.${index & 255}`;
      guard.recordFailure(key);
      guard.recordFailure(key);
      if (guard.blockedFor(key) > 0) blocked += 1;
    }
    t.is(blocked, 0, 'two failures each: nobody blocked');
    t.true(guard.trackedClients() <= maxClients, `tracked ${guard.trackedClients()}`);
    t.true(guard.trackedClients() > 0);
    collectGarbage();
    const growth = process.memoryUsage().heapUsed - heapBefore;
    // Measured: ~3 MB for 10,000 kept clients; keeping all 100,000 would cost over 20 MB.
    t.true(growth < 15 * MB, `heap grew ${(growth / MB).toFixed(1)} MB`);
  } finally {
    guard.close();
  }
});

test.serial('blocked clients are bounded by max_clients too', (t) => {
  const maxClients = 1000;
  const guard = createFishingGuard({
    windowSeconds: 60,
    maxFailures: 1,
    blockSeconds: 300,
    maxClients,
    logger: pino({ level: 'silent' }),
  });
  try {
    let blocked = 0;
    for (let index = 0; index < 30_000; index += 1) {
      const key = `2001:db8:${index.toString(16)}::/64`;
      guard.recordFailure(key);
      if (guard.blockedFor(key) === 300) blocked += 1;
    }
    t.is(blocked, 30_000, 'one failure with max_failures 1: each next request is blocked');
    t.true(guard.blockedClients() <= maxClients, `blocked ${guard.blockedClients()}`);
    t.true(guard.trackedClients() <= maxClients);
  } finally {
    guard.close();
  }
});

test('2,000 distinct X-Forwarded-For clients failing through the gateway stay within max_clients', async (t) => {
  const config = () => ({
    server: { trusted_proxies: ['127.0.0.1/32'] },
    fishing: { max_clients: 500 },
    log: { level: 'warn', access_log: false },
  });
  await withHarness(config, async ({ as, url, gateway }) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    try {
      const statuses = await inBatches(2000, 16, async (index) => {
        const reply = await send(`${url}/api/orders/1`, {
          agent,
          headers: {
            authorization: 'Bearer not@a-token',
            'x-forwarded-for': `198.18.${index >> 8}.${index & 255}`,
          },
        });
        return reply.status;
      });
      t.is(statuses.filter((status) => status === 400).length, 2000, 'every one a failure');
    } finally {
      agent.destroy();
    }
    t.is(as.introspectionCalls, 0);
    t.true(
      gateway.fishing.trackedClients() <= 500,
      `tracked clients ${gateway.fishing.trackedClients()}`,
    );
    t.true(gateway.fishing.trackedClients() > 0);
  });
});

test('blocked X-Forwarded-For clients through the gateway stay within max_clients', async (t) => {
  const config = () => ({
    server: { trusted_proxies: ['127.0.0.1/32'] },
    fishing: { max_clients: 200, max_failures: 1, block_seconds: 300 },
    log: { level: 'error', access_log: false },
  });
  await withHarness(config, async ({ url, gateway, adminUrl }) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    try {
      const statuses = await inBatches(600, 16, async (index) => {
        const headers = {
          authorization: 'Bearer not@a-token',
          'x-forwarded-for': `198.19.${index >> 8}.${index & 255}`,
        };
        const first = await send(`${url}/api/orders/1`, { agent, headers });
        const second = await send(`${url}/api/orders/1`, { agent, headers });
        return [first.status, second.status];
      });
      t.true(statuses.every(([first]) => first === 400));
      t.true(
        statuses.every(([, second]) => second === 429),
        'each client was blocked',
      );
    } finally {
      agent.destroy();
    }
    const blocked = gateway.fishing.blockedClients();
    t.true(blocked <= 200 && blocked > 0, `blocked clients ${blocked}`);
    t.true(gateway.fishing.trackedClients() <= 200);
    const scrape = await send(`${adminUrl}/metrics`);
    const gauge = /^tokenguard_fishing_blocked_clients (\S+)$/m.exec(scrape.body);
    t.truthy(gauge);
    t.true(Number(gauge?.[1]) <= 200, 'the gauge shows the bounded count');
  });
});
