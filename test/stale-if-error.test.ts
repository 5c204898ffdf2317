/**
 * Riding out an authorization-server outage (issue 10): with `cache.stale_if_error_seconds`,
 * an active answer past its TTL still answers while the server fails or the budget refuses —
 * within the window, never past the token's `exp`, never for a revoked or inactive token —
 * counted as `cache_lookups_total{result="stale"}` and logged once per outage. Off by
 * default: the same outage is a 503.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import {
  bearer,
  metricValue,
  request,
  scrapeMetrics,
  unknownToken,
  withHarness,
  type Harness,
} from './_harness.js';

const REVOKE_TOKEN = 'revoke-token-for-the-stale-tests-0123456789';
/** TTLs of one second, so entries go stale within a test. */
const staleConfig = (staleSeconds: number) => () => ({
  cache: { max_ttl_seconds: 1, negative_ttl_seconds: 1, stale_if_error_seconds: staleSeconds },
  introspection: { timeout_ms: 1000 },
  admin: { revoke_token: REVOKE_TOKEN },
});

const get = (harness: Harness, token: string) =>
  request(`${harness.url}/api/orders/1`, { headers: bearer(token) });

const staleLines = (harness: Harness) =>
  harness
    .logs()
    .split('\n')
    .filter((line) => line.includes('"event":"cache_stale_served"'));

test('off by default: an answer past its TTL is not used while the server is down', async (t) => {
  await withHarness(
    () => ({ cache: { max_ttl_seconds: 1 } }),
    async (harness) => {
      const token = harness.as.issue({ scope: 'orders:read' });
      t.is((await get(harness, token)).status, 200);
      await sleep(1300);
      harness.as.setFault('down');
      t.is((await get(harness, token)).status, 503);
    },
  );
});

test('within the window: a stale active answer serves while the server fails, once logged; a fresh answer ends it', async (t) => {
  await withHarness(staleConfig(30), async (harness) => {
    const token = harness.as.issue({ sub: 'alice', scope: 'orders:read' });
    t.is((await get(harness, token)).status, 200);
    await sleep(1300);
    for (const fault of ['down', 'status-500'] as const) {
      harness.as.setFault(fault);
      for (let index = 0; index < 3; index += 1) {
        const reply = await get(harness, token);
        t.is(reply.status, 200, `${fault} #${index}`);
        t.is(JSON.parse(reply.body).headers['x-auth-subject'], 'alice');
      }
    }
    // A token the gateway never saw still gets the outage's 503: nothing stale stands in.
    t.is((await get(harness, harness.as.issue({ scope: 'orders:read' }))).status, 503);
    const metrics = await scrapeMetrics(harness);
    t.is(metricValue(metrics, 'tokenguard_cache_lookups_total', { result: 'stale' }), 6);
    t.is(staleLines(harness).length, 1, 'logged once per outage');

    // The server is back: a fresh answer replaces the stale one, and the next outage is
    // announced again.
    harness.as.setFault(null);
    t.is((await get(harness, token)).status, 200);
    await sleep(1300);
    harness.as.setFault('down');
    t.is((await get(harness, token)).status, 200);
    t.is(staleLines(harness).length, 2);
  });
});

test('never past the window, never past exp', async (t) => {
  await withHarness(staleConfig(1), async (harness) => {
    const token = harness.as.issue({ scope: 'orders:read' });
    t.is((await get(harness, token)).status, 200);
    await sleep(2600); // the 1 s TTL and the 1 s window are both over
    harness.as.setFault('down');
    t.is((await get(harness, token)).status, 503);
  });
  await withHarness(staleConfig(60), async (harness) => {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const token = harness.as.issue({ scope: 'orders:read', exp });
    t.is((await get(harness, token)).status, 200);
    await sleep(Math.max(0, exp * 1000 - Date.now()) + 1200);
    harness.as.setFault('down');
    t.is((await get(harness, token)).status, 503, 'the token expired: nothing stands in');
  });
});

test('a revoked token is never served stale; an inactive answer ends a stale copy', async (t) => {
  await withHarness(staleConfig(60), async (harness) => {
    const revoked = harness.as.issue({ sub: 'mallory', scope: 'orders:read' });
    const kept = harness.as.issue({ sub: 'bob', scope: 'orders:read' });
    t.is((await get(harness, revoked)).status, 200);
    t.is((await get(harness, kept)).status, 200);
    await sleep(1300); // both stale now
    const revocation = await request(`${harness.adminUrl}/admin/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${REVOKE_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ sub: 'mallory' }),
    });
    t.is(revocation.status, 200, revocation.body);
    harness.as.setFault('down');
    t.is((await get(harness, revoked)).status, 503, 'revoked by sub while stale');
    t.is((await get(harness, kept)).status, 200, 'the other token still rides it out');

    // The server says "inactive" for a token it answered before: no stale copy survives that.
    harness.as.setFault(null);
    const turned = harness.as.issue({ scope: 'orders:read' });
    t.is((await get(harness, turned)).status, 200);
    await sleep(1300);
    harness.as.revoke(turned);
    t.is((await get(harness, turned)).status, 401);
    await sleep(1300); // the negative answer is gone too
    harness.as.setFault('down');
    t.is((await get(harness, turned)).status, 503, 'the inactive answer ended the stale copy');
    t.is((await get(harness, unknownToken())).status, 503);
  });
});
