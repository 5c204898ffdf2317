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
