/**
 * What the logs tell the people running the gateway (issue 10): a wrong introspection
 * credential is one clear error line a minute, not a 503 per request that reads like an
 * authorization-server outage.
 */
import test from 'ava';
import { bearer, metricValue, request, scrapeMetrics, withHarness } from './_harness.js';

const parsed = (text: string) =>
  text
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);

test("the authorization server refusing the gateway's own credentials: 503s, and one error line that says what to fix", async (t) => {
  await withHarness(
    () => ({ introspection: { client_secret: 'not-the-registered-secret' } }),
    async (harness) => {
      const tokens = Array.from({ length: 4 }, () => harness.as.issue({ scope: 'orders:read' }));
      for (const token of tokens) {
        const reply = await request(`${harness.url}/api/orders/1`, { headers: bearer(token) });
        t.is(reply.status, 503);
      }
      const errors = parsed(harness.logs()).filter(
        (line) => line.event === 'introspection_credentials_rejected',
      );
      t.is(errors.length, 1, 'once a minute, not once per request');
      const [line] = errors;
      t.is(line?.level, 50);
      t.is(line?.status, 401);
      t.is(line?.oauth_error, 'invalid_client');
      t.regex(String(line?.msg), /introspection\.client_id/);
      for (const token of tokens) t.false(harness.logs().includes(token));
      t.false(harness.logs().includes('not-the-registered-secret'));
      // An AS fault, not the budget: on-call's dashboards tell the two apart.
      const metrics = await scrapeMetrics(harness);
      t.is(metricValue(metrics, 'tokenguard_introspection_requests_total', { result: 'error' }), 4);
      t.is(metricValue(metrics, 'tokenguard_introspection_rejections_total'), 0);
    },
  );
});

test('the upstream latency stands apart: upstream_ms on forwarded lines and its own histogram, none for refusals', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = harness.as.issue({ scope: 'orders:read' });
    for (let index = 0; index < 3; index += 1) {
      t.is(
        (await request(`${harness.url}/api/orders/${index}`, { headers: bearer(token) })).status,
        200,
      );
    }
    t.is((await request(`${harness.url}/api/orders/9`)).status, 401);
    await new Promise((resolve) => setTimeout(resolve, 50)); // access lines leave once per turn
    const lines = parsed(harness.logs()).filter((line) => line.event === 'access');
    const forwarded = lines.filter((line) => line.outcome === 'forwarded');
    t.is(forwarded.length, 3);
    for (const line of forwarded) {
      t.is(typeof line.upstream_ms, 'number');
      t.true((line.upstream_ms as number) <= (line.latency_ms as number), JSON.stringify(line));
    }
    const refused = lines.filter((line) => line.outcome === 'unauthorized');
    t.is(refused.length, 1);
    t.false('upstream_ms' in (refused[0] ?? {}));
    const metrics = await scrapeMetrics(harness);
    t.is(metricValue(metrics, 'tokenguard_upstream_duration_seconds_count'), 3);
  });
});
