/**
 * Scope strategies and `any_scopes` end to end: a real authorization server issues tokens
 * with the scopes each row names, a real gateway decides, a real upstream counts what
 * reached it. Every row runs twice per gateway — the first request introspects (Koa
 * pipeline), the second is a cache hit (the cached pass when it is on) — and against a
 * gateway with the cached pass off, so both paths are held to the same table. A 403 names
 * what the route needs in `scope=` (RFC 6750 §3).
 */
import test from 'ava';
import { explainRequest } from '../src/commands/explain.js';
import { bearer, request, startHarness, type Harness } from './_harness.js';

const ROUTES = [
  { name: 'reports', prefix: '/reports', scopes: ['reports.read'], scope_match: 'hierarchic' },
  { name: 'files', prefix: '/files', scopes: ['files.read'], scope_match: 'wildcard' },
  {
    name: 'orders',
    prefix: '/orders',
    scopes: ['orders.read'],
    any_scopes: ['region.eu', 'region.all'],
  },
  { name: 'either', prefix: '/either', any_scopes: ['a.x', 'b'], scope_match: 'hierarchic' },
  { name: 'exact', prefix: '/exact', scopes: ['reports.read'] },
];

/** [path, token scope, status, scope= of the 403] */
const ROWS: [string, string, 200 | 403, string?][] = [
  ['/reports/1', 'reports.read', 200],
  ['/reports/1', 'reports', 200],
  ['/reports/1', 'reports.read.own', 403, 'reports.read'],
  ['/reports/1', 'reportsx', 403, 'reports.read'],
  ['/reports/1', 'reports.*', 403, 'reports.read'],
  ['/files/1', 'files.*', 200],
  ['/files/1', '*', 200],
  ['/files/1', 'files.read', 200],
  ['/files/1', 'files', 403, 'files.read'],
  ['/files/1', 'files.read.*', 403, 'files.read'],
  ['/files/1', 'files*', 403, 'files.read'],
  ['/orders/1', 'orders.read region.all', 200],
  ['/orders/1', 'region.eu orders.read', 200],
  ['/orders/1', 'orders.read', 403, 'orders.read region.eu'],
  ['/orders/1', 'region.eu region.all', 403, 'orders.read region.eu'],
  ['/orders/1', 'orders region.eu', 403, 'orders.read region.eu'],
  ['/either/1', 'a', 200],
  ['/either/1', 'b.y', 403, 'a.x'],
  ['/either/1', '', 403, 'a.x'],
  ['/exact/1', 'reports', 403, 'reports.read'],
  ['/exact/1', 'reports.read', 200],
];

const configFor = () => ({ routes: ROUTES });

let on: Harness;
let off: Harness;

test.before(async () => {
  [on, off] = await Promise.all([
    startHarness({ config: configFor }),
    startHarness({ config: configFor, gateway: { cachedPass: false } }),
  ]);
});

test.after.always(async () => {
  await Promise.all([on?.close(), off?.close()]);
});

for (const [path, scope, status, challengeScope] of ROWS) {
  test(`${path} with scope ${JSON.stringify(scope)}: ${status}`, async (t) => {
    for (const harness of [on, off]) {
      const token = harness.as.issue({ scope });
      for (const attempt of ['introspected', 'cached']) {
        const response = await request(`${harness.url}${path}`, { headers: bearer(token) });
        const label = `${harness === on ? 'cached pass on' : 'cached pass off'}, ${attempt}`;
        t.is(response.status, status, label);
        if (status === 403) {
          t.is(
            response.headers['www-authenticate'],
            `Bearer realm="tokenguard", error="insufficient_scope", error_description="the access token does not carry the required scope", scope="${challengeScope}"`,
            label,
          );
          t.is(response.json().error, 'insufficient_scope', label);
        }
      }
      const reached = harness.upstream.requests.filter(
        (recorded) => recorded.headers.authorization === `Bearer ${token}`,
      ).length;
      t.is(reached, status === 200 ? 2 : 0, 'upstream reached');
    }
  });
}

test('a cache hit is decided by the cached pass under every strategy', async (t) => {
  const token = on.as.issue({ scope: 'reports files.* orders.read region.all a' });
  for (const path of ['/reports/x', '/files/x', '/orders/x', '/either/x']) {
    await request(`${on.url}${path}`, { headers: bearer(token) });
  }
  // Only the cached pass peeks at the cache (the pipeline looks up): count its active hits.
  const cache = on.gateway.introspection.cache;
  const peek = cache.peek.bind(cache);
  let peeked = 0;
  cache.peek = (key) => {
    const entry = peek(key);
    if (entry?.active) peeked += 1;
    return entry;
  };
  try {
    for (const path of ['/reports/x', '/files/x', '/orders/x', '/either/x']) {
      const response = await request(`${on.url}${path}`, { headers: bearer(token) });
      t.is(response.status, 200, path);
    }
  } finally {
    cache.peek = peek;
  }
  t.is(peeked, 4);
});

test('explain shows the strategy and any_scopes', (t) => {
  const text = explainRequest(on.config, 'GET', '/orders/1');
  t.regex(
    text,
    /requires: an active token with scope orders\.read \(all of them\) and one of region\.eu region\.all \(any_scopes\); scope_match exact/,
  );
  t.regex(
    explainRequest(on.config, 'GET', '/reports/1'),
    /scope_match hierarchic: a granted scope also grants the scopes below it/,
  );
  t.regex(
    explainRequest(on.config, 'GET', '/files/1'),
    /scope_match wildcard: granted scopes are patterns/,
  );
  t.regex(
    explainRequest(on.config, 'GET', '/either/1'),
    /requires: an active token with one of a\.x b \(any_scopes\); scope_match hierarchic/,
  );
});
