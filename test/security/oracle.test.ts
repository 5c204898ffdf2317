/**
 * Class 8 of issue 7: an authorization server that answers unknown tokens outside RFC 7662
 * (HTTP 400 invalid_token, or 200 with an OAuth error object — both seen in the wild) made
 * every guess an uncounted, uncached 503 while a real token got 200: unlimited guesses.
 * PRODUCT.md "Token fishing": such an answer about the token itself still counts toward the
 * client's failures. Answers about the gateway's own request (401 for its credentials) or
 * outages (5xx, timeouts) do not: they are not guesses. Class 3 rides along: a
 * sender-constrained token presented as Bearer is a counted failure too.
 */
import test from 'ava';
import type { IntrospectionFault } from '../../src/dev/auth-server.js';
import {
  bearer,
  metricValue,
  request,
  scrapeMetrics,
  unknownToken,
  withHarness,
  type Harness,
} from '../_harness.js';

const MAX_FAILURES = 4;
const FISHER = '127.0.0.31';
const HONEST = '127.0.0.32';

const config = () => ({
  fishing: { window_seconds: 60, max_failures: MAX_FAILURES, block_seconds: 60 },
});

const getOrder = (harness: Harness, from: string, token: string) =>
  request(`${harness.url}/api/orders/1`, { from, headers: bearer(token) });

for (const fault of [
  'unknown-token-400',
  'unknown-token-401',
  'unknown-token-error-200',
  'unknown-token-500',
] as IntrospectionFault[]) {
  test(`an AS answering unknown tokens with ${String(fault)} is no oracle: guesses count, then 429`, async (t) => {
    await withHarness(config, async (harness) => {
      harness.as.setFault(fault);
      // The server answers other clients' tokens meanwhile (what makes a 500 about the token).
      const other = harness.as.issue({ scope: 'orders:read' });
      for (let index = 0; index < MAX_FAILURES; index += 1) {
        harness.gateway.introspection.cache.clear();
        t.is((await getOrder(harness, HONEST, other)).status, 200);
        const reply = await getOrder(harness, FISHER, unknownToken());
        t.is(reply.status, 503, 'fail closed: the answer is not RFC 7662');
      }
      const calls = harness.as.introspectionCalls;
      const blocked = await getOrder(harness, FISHER, unknownToken());
      t.is(blocked.status, 429, 'the guesses counted: the fisher is blocked');
      t.is(harness.as.introspectionCalls, calls, 'and the AS is not asked any more');
      // The server still answers real tokens: another client is served.
      const valid = harness.as.issue({ scope: 'orders:read' });
      t.is((await getOrder(harness, HONEST, valid)).status, 200);
      const metrics = await scrapeMetrics(harness);
      t.is(metricValue(metrics, 'tokenguard_fishing_failures_total', { reason: 'rejected' }), 4);
    });
  });
}

for (const fault of [
  'status-500',
  'down',
  'not-json',
  'wrong-content-type',
] as IntrospectionFault[]) {
  test(`an AS outage (${String(fault)}) gives 503 and blocks nobody`, async (t) => {
    await withHarness(config, async (harness) => {
      harness.as.setFault(fault);
      for (let index = 0; index < MAX_FAILURES + 2; index += 1) {
        t.is((await getOrder(harness, HONEST, unknownToken())).status, 503);
      }
      harness.as.setFault(null);
      const valid = harness.as.issue({ scope: 'orders:read' });
      t.is((await getOrder(harness, HONEST, valid)).status, 200, 'not blocked afterwards');
    });
  });
}

test("an AS refusing the gateway's own credentials (401) blocks nobody", async (t) => {
  await withHarness(
    () => ({ ...config(), introspection: { client_secret: 'not-the-secret' } }),
    async (harness) => {
      for (let index = 0; index < MAX_FAILURES + 2; index += 1) {
        t.is((await getOrder(harness, HONEST, unknownToken())).status, 503);
      }
      const metrics = await scrapeMetrics(harness);
      t.is(metricValue(metrics, 'tokenguard_fishing_failures_total'), 0);
      t.is(metricValue(metrics, 'tokenguard_fishing_blocked_clients'), 0);
    },
  );
});

test('a sender-constrained token as Bearer is a counted failure, from the cache too', async (t) => {
  await withHarness(config, async (harness) => {
    const bound = harness.as.issue({ scope: 'orders:read', cnf: { jkt: 'thumbprint' } });
    for (let index = 0; index < MAX_FAILURES; index += 1) {
      const reply = await getOrder(harness, FISHER, bound);
      t.is(reply.status, 401);
      t.is(reply.json().error, 'invalid_token');
    }
    t.is(harness.as.introspectionCalls, 1, 'answered from the cache after the first call');
    t.is((await getOrder(harness, FISHER, bound)).status, 429);
    const metrics = await scrapeMetrics(harness);
    t.is(
      metricValue(metrics, 'tokenguard_fishing_failures_total', { reason: 'sender_constrained' }),
      MAX_FAILURES,
    );
  });
});
