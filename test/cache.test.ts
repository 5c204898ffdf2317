/**
 * The token cache, end to end: a real authorization server, upstream and gateway per test.
 * Whether the cache answered is decided by counting the authorization server's introspection
 * calls (as ory/oathkeeper's tests do), never by timing. The rules under test (PRODUCT.md
 * "Config" → cache, issue #2 "Cache"): an active answer lives min(max_ttl, exp − now), an
 * inactive one negative_ttl, concurrent lookups of one token make one call, errors are never
 * cached, a cached answer never skips a check, and the key is the token's SHA-256.
 *
 * Every test is serial: several wait for a TTL to run out, and two shared cores running ten
 * gateways at once would make "before the TTL ends" a matter of luck.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import { tokenHash } from '../src/cache/token-cache.js';
import type { IntrospectionFault } from '../src/dev/auth-server.js';
import {
  withHarness,
  metricValue,
  scrapeMetrics,
  request,
  type Harness,
  type RawResponse,
} from './_harness.js';

/** A request with `Authorization: Bearer token` (GET /api/orders/1 unless told otherwise). */
function send(
  harness: Harness,
  token: string,
  options: { method?: string; path?: string } = {},
): Promise<RawResponse> {
  return request(`${harness.url}${options.path ?? '/api/orders/1'}`, {
    method: options.method ?? 'GET',
    headers: { authorization: `Bearer ${token}` },
    timeoutMs: 30_000,
  });
}

const lookups = (text: string, result: string) =>
  metricValue(text, 'tokenguard_cache_lookups_total', { result });

/** Sleeps until the wall clock has passed `epochMs`. */
const sleepUntil = (epochMs: number) => sleep(Math.max(0, epochMs - Date.now()));

/** An `exp` at least `seconds` (and under `seconds + 1`) from now, in whole seconds. */
const expIn = (seconds: number) => Math.ceil(Date.now() / 1000) + seconds;

// ---------------------------------------------------------------------------------------------
// (a) hits
// ---------------------------------------------------------------------------------------------

test.serial('a second request with the same active token is a cache hit', async (t) => {
  await withHarness(undefined, async (harness) => {
    const { as, upstream } = harness;
    const token = as.issue({ scope: 'orders:read' });
    const before = await scrapeMetrics(harness);

    t.is((await send(harness, token)).status, 200);
    t.is(as.introspectionCalls, 1);
    t.is((await send(harness, token, { path: '/api/orders/2' })).status, 200);
    t.is(as.introspectionCalls, 1, 'the second request is answered from the cache');
    t.is(upstream.requests.length, 2);

    const after = await scrapeMetrics(harness);
    t.is(lookups(after, 'miss') - lookups(before, 'miss'), 1);
    t.is(lookups(after, 'hit') - lookups(before, 'hit'), 1);
    t.is(
      metricValue(after, 'tokenguard_introspection_requests_total', { result: 'active' }) -
        metricValue(before, 'tokenguard_introspection_requests_total', { result: 'active' }),
      1,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// (b) (c) TTL of an active answer: min(max_ttl, exp − now)
// ---------------------------------------------------------------------------------------------

test.serial('an active entry lives no longer than the token: exp caps max_ttl', async (t) => {
  await withHarness(
    () => ({ cache: { max_ttl_seconds: 300 }, introspection: { clock_skew_seconds: 0 } }),
    async (harness) => {
      const { as } = harness;
      const exp = expIn(2);
      const token = as.issue({ scope: 'orders:read', exp });

      t.is((await send(harness, token)).status, 200);
      t.is(as.introspectionCalls, 1);
      t.is((await send(harness, token)).status, 200);
      t.is(as.introspectionCalls, 1, 'before exp the entry is cached');

      await sleepUntil(exp * 1000 + 500);
      // The dev AS still answers active (it forgets the token after an hour); the gateway's
      // own exp check refuses it. What matters here is that the cache was asked to let go.
      const late = await send(harness, token);
      t.is(as.introspectionCalls, 2, 'after exp the entry is gone: the AS is asked again');
      t.is(late.status, 401);
    },
  );
});

test.serial('max_ttl_seconds caps an entry whose exp is far away', async (t) => {
  await withHarness(
    () => ({ cache: { max_ttl_seconds: 1 } }),
    async (harness) => {
      const { as } = harness;
      const token = as.issue({ scope: 'orders:read', exp: expIn(3600) });

      t.is((await send(harness, token)).status, 200);
      t.is((await send(harness, token)).status, 200);
      t.is(as.introspectionCalls, 1);

      await sleep(1300);
      t.is((await send(harness, token)).status, 200);
      t.is(as.introspectionCalls, 2, 'past max_ttl the AS is asked again');
      t.is((await send(harness, token)).status, 200);
      t.is(as.introspectionCalls, 2, 'and the fresh answer is cached again');
    },
  );
});

test.serial('max_ttl_seconds 0 disables caching of active answers', async (t) => {
  await withHarness(
    () => ({ cache: { max_ttl_seconds: 0 } }),
    async (harness) => {
      const { as } = harness;
      const token = as.issue({ scope: 'orders:read' });
      for (let i = 1; i <= 3; i += 1) {
        t.is((await send(harness, token)).status, 200);
        t.is(as.introspectionCalls, i);
      }
      t.is(harness.gateway.introspection.cache.size, 0);
    },
  );
});

// ---------------------------------------------------------------------------------------------
// (d) inactive answers: negative_ttl
// ---------------------------------------------------------------------------------------------

test.serial('an inactive answer is cached for negative_ttl_seconds', async (t) => {
  await withHarness(
    () => ({ cache: { negative_ttl_seconds: 1 } }),
    async (harness) => {
      const { as, upstream } = harness;
      const token = as.issue({ active: false });
      const before = await scrapeMetrics(harness);

      t.is((await send(harness, token)).status, 401);
      t.is((await send(harness, token)).status, 401);
      t.is(as.introspectionCalls, 1, 'the second presentation is a negative hit');
      const after = await scrapeMetrics(harness);
      t.is(lookups(after, 'negative_hit') - lookups(before, 'negative_hit'), 1);

      await sleep(1300);
      t.is((await send(harness, token)).status, 401);
      t.is(as.introspectionCalls, 2, 'past negative_ttl the AS is asked again');
      t.is(upstream.requests.length, 0);
    },
  );
});

test.serial('negative_ttl_seconds 0 disables caching of inactive answers', async (t) => {
  await withHarness(
    () => ({ cache: { negative_ttl_seconds: 0 } }),
    async (harness) => {
      const { as } = harness;
      const token = as.issue({ active: false });
      for (let i = 1; i <= 3; i += 1) {
        t.is((await send(harness, token)).status, 401);
        t.is(as.introspectionCalls, i);
      }
      t.is(harness.gateway.introspection.cache.size, 0);
    },
  );
});

// ---------------------------------------------------------------------------------------------
// (e) coalescing
// ---------------------------------------------------------------------------------------------

test.serial('50 concurrent requests with one uncached token make exactly one call', async (t) => {
  await withHarness(
    () => ({ introspection: { timeout_ms: 10_000 } }),
    async (harness) => {
      const { as, upstream } = harness;
      const token = as.issue({ scope: 'orders:read' });
      as.setFault({ delayMs: 300 });
      const before = await scrapeMetrics(harness);

      const responses = await Promise.all(
        Array.from({ length: 50 }, (_, i) => send(harness, token, { path: `/api/orders/${i}` })),
      );

      t.deepEqual(
        responses.map((response) => response.status),
        Array.from({ length: 50 }, () => 200),
      );
      t.is(as.introspectionCalls, 1);
      t.is(upstream.requests.length, 50);

      const after = await scrapeMetrics(harness);
      const delta = (result: string) => lookups(after, result) - lookups(before, result);
      t.is(delta('miss'), 1);
      t.is(
        metricValue(after, 'tokenguard_cache_lookups_total') -
          metricValue(before, 'tokenguard_cache_lookups_total'),
        50,
      );
      // Requests that arrive while the call is in flight wait on it; a straggler arriving after
      // it ended is a plain hit. Either way none of them asked the AS.
      t.is(delta('coalesced') + delta('hit'), 49);
      t.true(delta('coalesced') >= 1, 'concurrent lookups were coalesced');
    },
  );
});

test.serial(
  'concurrent lookups that share a failing call all fail, and none is cached',
  async (t) => {
    await withHarness(undefined, async (harness) => {
      const { as, upstream } = harness;
      const token = as.issue({ scope: 'orders:read' });
      as.setFault('hang');

      const responses = await Promise.all(Array.from({ length: 10 }, () => send(harness, token)));
      t.deepEqual(
        responses.map((response) => response.status),
        Array.from({ length: 10 }, () => 503),
      );
      t.is(upstream.requests.length, 0);
      t.is(as.introspectionCalls, 1, 'the ten lookups shared one call');
      const calls = as.introspectionCalls;

      as.setFault(null);
      t.is((await send(harness, token)).status, 200);
      t.is(as.introspectionCalls, calls + 1);
    });
  },
);

// ---------------------------------------------------------------------------------------------
// (f) a cached answer never skips a check
// ---------------------------------------------------------------------------------------------

test.serial(
  'scope is re-checked on a hit: allowed on one route, 403 on another, one call',
  async (t) => {
    await withHarness(undefined, async (harness) => {
      const { as, upstream } = harness;
      const token = as.issue({ scope: 'orders:read' });
      const before = await scrapeMetrics(harness);

      t.is((await send(harness, token)).status, 200);
      const write = await send(harness, token, { method: 'POST', path: '/api/orders' });
      t.is(write.status, 403);
      t.is(write.json().error, 'insufficient_scope');
      t.regex(String(write.headers['www-authenticate']), /scope="orders:write"/);
      t.is(as.introspectionCalls, 1, 'the 403 came from the cached answer');
      t.is(upstream.requests.length, 1);

      const after = await scrapeMetrics(harness);
      t.is(lookups(after, 'hit') - lookups(before, 'hit'), 1);
    });
  },
);

test.serial('audience is re-checked on a hit: a wrong aud is 401 cached or not', async (t) => {
  await withHarness(
    () => ({ introspection: { audience: ['orders-api'] } }),
    async (harness) => {
      const { as, upstream } = harness;
      const wrong = as.issue({ scope: 'orders:read', aud: 'billing-api' });
      const first = await send(harness, wrong);
      t.is(first.status, 401);
      t.is(first.json().error, 'invalid_token');
      t.is((await send(harness, wrong)).status, 401, 'the cached answer is refused too');
      t.is(as.introspectionCalls, 1);

      const right = as.issue({ scope: 'orders:read', aud: ['billing-api', 'orders-api'] });
      t.is((await send(harness, right)).status, 200);
      t.is((await send(harness, right)).status, 200);
      t.is(as.introspectionCalls, 2);
      t.is(upstream.requests.length, 2);
    },
  );
});

test.serial('issuer is re-checked on a hit: a wrong iss is 401 cached or not', async (t) => {
  await withHarness(
    () => ({ introspection: { issuer: 'https://issuer.example' } }),
    async (harness) => {
      const { as, upstream } = harness;
      const wrong = as.issue({ scope: 'orders:read', iss: 'https://evil.example' });
      t.is((await send(harness, wrong)).status, 401);
      t.is((await send(harness, wrong)).status, 401);
      t.is(as.introspectionCalls, 1);

      const right = as.issue({ scope: 'orders:read', iss: 'https://issuer.example' });
      t.is((await send(harness, right)).status, 200);
      t.is((await send(harness, right)).status, 200);
      t.is(as.introspectionCalls, 2);
      t.is(upstream.requests.length, 2);
    },
  );
});

test.serial(
  'a token that expires while cached is refused after exp, never forwarded',
  async (t) => {
    await withHarness(
      () => ({ cache: { max_ttl_seconds: 300 }, introspection: { clock_skew_seconds: 0 } }),
      async (harness) => {
        const { as, upstream } = harness;
        const exp = expIn(1);
        const token = as.issue({ scope: 'orders:read', exp });
        t.is((await send(harness, token)).status, 200);
        t.is(upstream.requests.length, 1);

        await sleepUntil(exp * 1000 + 500);
        const late = await send(harness, token);
        t.is(late.status, 401);
        t.is(late.json().error, 'invalid_token');
        t.is(upstream.requests.length, 1, 'the expired token never reached the upstream');
      },
    );
  },
);

// ---------------------------------------------------------------------------------------------
// (g) errors are never cached
// ---------------------------------------------------------------------------------------------

const faults: Array<{ fault: IntrospectionFault; title: string }> = [
  { fault: 'status-500', title: 'HTTP 500' },
  { fault: 'not-json', title: 'a body that is not JSON' },
  { fault: 'active-string', title: '"active": "true"' },
  { fault: 'down', title: 'a dropped connection' },
];

for (const { fault, title } of faults) {
  test.serial(
    `an error is never cached: ${title} → 503, then the next request asks again`,
    async (t) => {
      await withHarness(undefined, async (harness) => {
        const { as, upstream } = harness;
        const token = as.issue({ scope: 'orders:read' });
        as.setFault(fault);

        const failed = await send(harness, token);
        t.is(failed.status, 503);
        t.truthy(failed.headers['retry-after']);
        const callsWhileFaulty = as.introspectionCalls;
        t.true(callsWhileFaulty >= 1);
        t.is(harness.gateway.introspection.cache.size, 0);

        as.setFault(null);
        const recovered = await send(harness, token);
        t.is(recovered.status, 200);
        t.is(as.introspectionCalls, callsWhileFaulty + 1, 'the AS is asked again');
        t.is(upstream.requests.length, 1);
      });
    },
  );
}

test.serial(
  'two failures in a row make two calls: the error is not cached even briefly',
  async (t) => {
    await withHarness(undefined, async (harness) => {
      const { as } = harness;
      const token = as.issue({ scope: 'orders:read' });
      as.setFault('status-500');
      t.is((await send(harness, token)).status, 503);
      t.is((await send(harness, token)).status, 503);
      t.is(as.introspectionCalls, 2);
    });
  },
);

// ---------------------------------------------------------------------------------------------
// (h) tokens are never cache keys, log content or metric content
// ---------------------------------------------------------------------------------------------

test.serial(
  'tokens appear in neither the logs nor the metrics, and key the cache hashed',
  async (t) => {
    await withHarness(undefined, async (harness) => {
      const { as } = harness;
      const reader = as.issue({ scope: 'orders:read' });
      const inactive = as.issue({ active: false });
      const unlucky = as.issue({ scope: 'orders:read' });

      t.is((await send(harness, reader)).status, 200);
      t.is((await send(harness, reader)).status, 200);
      t.is((await send(harness, reader, { method: 'POST', path: '/api/orders' })).status, 403);
      t.is((await send(harness, inactive)).status, 401);
      as.setFault('status-500');
      t.is((await send(harness, unlucky)).status, 503);
      as.setFault(null);

      t.true(harness.gateway.introspection.cache.size >= 1);
      // The logger is asynchronous: let the last access lines land.
      await sleep(200);
      const logs = harness.logs();
      const metrics = await scrapeMetrics(harness);
      t.true(logs.includes('"event":"access"'), 'the requests were logged');
      for (const token of [reader, inactive, unlucky]) {
        t.false(logs.includes(token), 'no token in the logs');
        t.false(metrics.includes(token), 'no token in the metrics');
      }

      for (const token of [reader, inactive, unlucky, 'a', 'x'.repeat(4096)]) {
        const key = tokenHash(token);
        t.not(key, token);
        t.regex(key, /^[A-Za-z0-9_-]{43}$/, 'SHA-256, base64url, unpadded');
        t.is(key, createHash('sha256').update(token).digest('base64url'));
      }
    });
  },
);

// ---------------------------------------------------------------------------------------------
// (i) max_entries
// ---------------------------------------------------------------------------------------------

test.serial('max_entries bounds the cache, least recently used out first', async (t) => {
  await withHarness(
    () => ({ cache: { max_entries: 5 } }),
    async (harness) => {
      const { as } = harness;
      const tokens = Array.from({ length: 20 }, () => as.issue({ scope: 'orders:read' }));
      for (const token of tokens) t.is((await send(harness, token)).status, 200);
      t.is(as.introspectionCalls, 20);

      t.true(harness.gateway.introspection.cache.size <= 5);
      const gauge = metricValue(await scrapeMetrics(harness), 'tokenguard_cache_entries');
      t.true(gauge <= 5, `tokenguard_cache_entries is ${gauge}`);
      t.true(gauge >= 1);

      t.is((await send(harness, tokens[19] as string)).status, 200);
      t.is(as.introspectionCalls, 20, 'the most recent token is still cached');
      t.is((await send(harness, tokens[0] as string)).status, 200);
      t.is(as.introspectionCalls, 21, 'the oldest one was evicted');
    },
  );
});
