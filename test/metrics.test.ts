/**
 * The metric catalogue of PRODUCT.md ("Metrics"), scraped from a live gateway's admin port
 * in the Prometheus text format: every metric exists with its type and exactly its label
 * names, prom-client's default metrics are there, every metric moves when the behaviour it
 * counts happens (value read before, act, value read after), label values stay bounded
 * (no raw path, client address or token ever becomes one), and the histograms resolve both
 * sub-millisecond cache hits and multi-second authorization-server stalls.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import test, { type ExecutionContext } from 'ava';
import {
  startHttpServer,
  freePort,
  bearer,
  defaultConfig,
  request as send,
  unknownToken,
  withHarness,
  type Harness,
  type HarnessContext,
  type RawResponse as Reply,
} from './_harness.js';

// ---------------------------------------------------------------------------------------------
// The contract (PRODUCT.md "Metrics"), written out here rather than imported from src/
// ---------------------------------------------------------------------------------------------

type MetricType = 'counter' | 'gauge' | 'histogram';

const CATALOGUE: ReadonlyArray<{ name: string; type: MetricType; labels: string[] }> = [
  { name: 'tokenguard_requests_total', type: 'counter', labels: ['route', 'outcome'] },
  { name: 'tokenguard_request_duration_seconds', type: 'histogram', labels: ['route', 'outcome'] },
  { name: 'tokenguard_introspection_requests_total', type: 'counter', labels: ['result'] },
  { name: 'tokenguard_introspection_duration_seconds', type: 'histogram', labels: ['result'] },
  { name: 'tokenguard_cache_lookups_total', type: 'counter', labels: ['result'] },
  { name: 'tokenguard_cache_entries', type: 'gauge', labels: [] },
  { name: 'tokenguard_fishing_failures_total', type: 'counter', labels: ['reason'] },
  { name: 'tokenguard_fishing_blocked_requests_total', type: 'counter', labels: [] },
  { name: 'tokenguard_fishing_blocked_clients', type: 'gauge', labels: [] },
  { name: 'tokenguard_upstream_errors_total', type: 'counter', labels: ['kind'] },
  { name: 'tokenguard_introspection_rejections_total', type: 'counter', labels: ['reason'] },
  { name: 'tokenguard_upstream_duration_seconds', type: 'histogram', labels: [] },
];

const OUTCOMES = [
  'forwarded',
  'served',
  'unauthorized',
  'forbidden',
  'bad_request',
  'throttled',
  'not_found',
  'unavailable',
  'upstream_error',
];
/** The bounded value set of each label that has one. */
const LABEL_VALUES: Record<string, Record<string, readonly string[]>> = {
  tokenguard_requests_total: { outcome: OUTCOMES },
  tokenguard_request_duration_seconds: { outcome: OUTCOMES },
  tokenguard_introspection_requests_total: { result: ['active', 'inactive', 'error'] },
  tokenguard_introspection_duration_seconds: { result: ['active', 'inactive', 'error'] },
  tokenguard_cache_lookups_total: { result: ['hit', 'negative_hit', 'miss', 'coalesced', 'stale'] },
  tokenguard_fishing_failures_total: {
    // The contract's five, plus the two this project added (README "Token fishing").
    reason: [
      'malformed',
      'inactive',
      'expired',
      'audience',
      'issuer',
      'sender_constrained',
      'rejected',
    ],
  },
  tokenguard_upstream_errors_total: { kind: ['connect', 'timeout', 'reset'] },
  tokenguard_introspection_rejections_total: {
    reason: [
      'budget_concurrency',
      'budget_rate',
      'budget_queue_full',
      'fleet_budget_rate',
      'client_inflight',
    ],
  },
};

/** The harness's route names, plus the two pseudo-labels. */
const PSEUDO_ROUTES = ['__unmatched__', '__default__'];
const HARNESS_ROUTES = ['public', 'orders-read', 'orders-write', 'any-token'];

// ---------------------------------------------------------------------------------------------
// A Prometheus text-format parser (exposition format 0.0.4)
// ---------------------------------------------------------------------------------------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Scrape {
  types: Map<string, string>;
  samples: Sample[];
}

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  // prom-client writes `Nan`; Prometheus (Go's ParseFloat) reads NaN in any case.
  if (text.toLowerCase() === 'nan') return NaN;
  const value = Number(text);
  if (Number.isNaN(value)) throw new Error(`not a sample value: ${text}`);
  return value;
}

function parseSample(line: string): Sample {
  const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0];
  if (!name) throw new Error(`not a sample line: ${line}`);
  const labels: Record<string, string> = {};
  let index = name.length;
  if (line[index] === '{') {
    index += 1;
    while (line[index] !== '}') {
      const labelName = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(line.slice(index));
      if (!labelName) throw new Error(`bad label in: ${line}`);
      index += labelName[0].length;
      let value = '';
      while (line[index] !== '"') {
        if (index >= line.length) throw new Error(`unterminated label value in: ${line}`);
        if (line[index] === '\\') {
          const escaped = line[index + 1];
          value += escaped === 'n' ? '\n' : (escaped ?? '');
          index += 2;
        } else {
          value += line[index];
          index += 1;
        }
      }
      index += 1; // closing quote
      labels[labelName[1] as string] = value;
      if (line[index] === ',') index += 1;
    }
    index += 1; // closing brace
  }
  const [value] = line.slice(index).trim().split(/\s+/);
  return { name, labels, value: parseValue(value ?? '') };
}

function parseExposition(text: string): Scrape {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const type = /^# TYPE (\S+) (\S+)$/.exec(line);
      if (type) types.set(type[1] as string, type[2] as string);
      continue;
    }
    samples.push(parseSample(line));
  }
  return { types, samples };
}

/** The samples of one family: the metric itself, or a histogram's _bucket/_sum/_count. */
function familySamples(scrape: Scrape, family: string): Sample[] {
  return scrape.samples.filter(
    (sample) =>
      sample.name === family ||
      (scrape.types.get(family) === 'histogram' &&
        [`${family}_bucket`, `${family}_sum`, `${family}_count`].includes(sample.name)),
  );
}

/** Sum of the samples named `name` whose labels include all of `labels`; 0 when none. */
function valueOf(scrape: Scrape, name: string, labels: Record<string, string> = {}): number {
  return scrape.samples
    .filter((sample) => sample.name === name)
    .filter((sample) =>
      Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
    )
    .reduce((sum, sample) => sum + sample.value, 0);
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

const nowSeconds = () => Math.floor(Date.now() / 1000);

async function scrape(harness: Harness): Promise<Scrape> {
  const reply = await send(`${harness.adminUrl}/metrics`);
  if (reply.status !== 200) throw new Error(`/metrics answered ${reply.status}`);
  return parseExposition(reply.body);
}

/** Scrapes until `done` holds (metrics of a response may land just after it) or 3 s pass. */
async function scrapeUntil(harness: Harness, done: (scrape: Scrape) => boolean): Promise<Scrape> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const current = await scrape(harness);
    if (done(current) || Date.now() > deadline) return current;
    await sleep(25);
  }
}

interface Selector {
  name: string;
  labels?: Record<string, string>;
}

/**
 * Reads every selector, runs `act`, reads again (waiting until the first selector moved by
 * at least its expected delta), and asserts each selector moved by exactly its delta.
 */
async function assertMoves(
  t: ExecutionContext,
  harness: Harness,
  act: () => Promise<unknown>,
  expected: ReadonlyArray<[Selector, number]>,
): Promise<void> {
  const before = await scrape(harness);
  await act();
  const delta = (after: Scrape, { name, labels }: Selector) =>
    valueOf(after, name, labels) - valueOf(before, name, labels);
  const after = await scrapeUntil(harness, (current) =>
    expected.every(([selector, by]) => delta(current, selector) >= by),
  );
  for (const [selector, by] of expected) {
    t.is(
      delta(after, selector),
      by,
      `${selector.name}${JSON.stringify(selector.labels ?? {})} moves by ${by}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// The catalogue: names, types, label names
// ---------------------------------------------------------------------------------------------

test('every metric of PRODUCT.md is exported with its type and exactly its label names', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = harness.as.issue({ scope: 'orders:read' });
    const reply = await send(`${harness.url}/api/orders/1`, { headers: bearer(token) });
    t.is(reply.status, 200);
    const metrics = await scrapeUntil(
      harness,
      (current) => valueOf(current, 'tokenguard_requests_total') >= 1,
    );

    for (const { name, type, labels } of CATALOGUE) {
      t.is(metrics.types.get(name), type, `${name} is a ${type}`);
      const samples = familySamples(metrics, name);
      t.true(samples.length > 0, `${name} has samples`);
      for (const sample of samples) {
        const expected = sample.name.endsWith('_bucket') ? [...labels, 'le'] : labels;
        t.deepEqual(
          Object.keys(sample.labels).sort(),
          [...expected].sort(),
          `${sample.name} carries exactly ${expected.join(', ') || 'no labels'}`,
        );
        for (const [label, allowed] of Object.entries(LABEL_VALUES[name] ?? {})) {
          t.true(
            allowed.includes(sample.labels[label] ?? ''),
            `${sample.name}{${label}="${sample.labels[label]}"} is in the bounded set`,
          );
        }
      }
      if (type === 'histogram') {
        for (const suffix of ['_bucket', '_sum', '_count']) {
          t.true(
            samples.some((sample) => sample.name === `${name}${suffix}`),
            `${name}${suffix} is exported`,
          );
        }
      }
    }
  });
});

test("prom-client's default process_* and nodejs_* metrics are exported", async (t) => {
  await withHarness(undefined, async (harness) => {
    const metrics = await scrape(harness);
    t.is(metrics.types.get('process_cpu_user_seconds_total'), 'counter');
    t.is(metrics.types.get('nodejs_eventloop_lag_seconds'), 'gauge');
    t.is(metrics.types.get('process_resident_memory_bytes'), 'gauge');
    t.true(metrics.samples.some((sample) => sample.name === 'process_cpu_user_seconds_total'));
    t.true(metrics.samples.some((sample) => sample.name === 'nodejs_eventloop_lag_seconds'));
  });
});

test('the admin /metrics answers in the Prometheus text format', async (t) => {
  await withHarness(undefined, async (harness) => {
    const reply = await send(`${harness.adminUrl}/metrics`);
    t.is(reply.status, 200);
    t.regex(String(reply.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  });
});

test('both histograms resolve sub-millisecond hits and multi-second stalls', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = harness.as.issue({ scope: 'orders:read' });
    t.is((await send(`${harness.url}/api/orders/1`, { headers: bearer(token) })).status, 200);
    const metrics = await scrapeUntil(
      harness,
      (current) => valueOf(current, 'tokenguard_requests_total') >= 1,
    );
    for (const family of [
      'tokenguard_request_duration_seconds',
      'tokenguard_introspection_duration_seconds',
    ]) {
      const bounds = metrics.samples
        .filter((sample) => sample.name === `${family}_bucket`)
        .map((sample) => parseValue(sample.labels.le ?? ''))
        .filter((bound) => Number.isFinite(bound));
      t.true(
        bounds.some((bound) => bound <= 0.0005),
        `${family} has a sub-millisecond bucket`,
      );
      t.true(
        bounds.some((bound) => bound >= 5),
        `${family} has a multi-second bucket`,
      );
      t.true(
        metrics.samples.some(
          (sample) => sample.name === `${family}_bucket` && sample.labels.le === '+Inf',
        ),
        `${family} has the +Inf bucket`,
      );
    }
  });
});

// ---------------------------------------------------------------------------------------------
// tokenguard_requests_total / tokenguard_request_duration_seconds: one per outcome
// ---------------------------------------------------------------------------------------------

interface OutcomeCase {
  outcome: string;
  route: string;
  status: number;
  setup?: (harness: Harness, from: string) => Promise<void>;
  act: (harness: Harness, from: string) => Promise<Reply>;
  cleanup?: (harness: Harness) => void;
}

const FROM = '127.0.0.9';
const ordersGet = (harness: Harness, from: string, headers: Record<string, string> = {}) =>
  send(`${harness.url}/api/orders/1`, { from, headers });

const OUTCOME_CASES: OutcomeCase[] = [
  {
    outcome: 'forwarded',
    route: 'orders-read',
    status: 200,
    act: (h, from) => ordersGet(h, from, bearer(h.as.issue({ scope: 'orders:read' }))),
  },
  {
    outcome: 'unauthorized',
    route: 'orders-read',
    status: 401,
    act: (h, from) => ordersGet(h, from),
  },
  {
    outcome: 'forbidden',
    route: 'orders-read',
    status: 403,
    act: (h, from) => ordersGet(h, from, bearer(h.as.issue({ scope: 'profile' }))),
  },
  {
    outcome: 'bad_request',
    route: 'orders-read',
    status: 400,
    act: (h, from) => ordersGet(h, from, { authorization: 'Bearer two tokens' }),
  },
  {
    outcome: 'throttled',
    route: 'orders-read',
    status: 429,
    async setup(h, from) {
      for (let index = 0; index < 3; index += 1) {
        await ordersGet(h, from, bearer(unknownToken()));
      }
    },
    act: (h, from) => ordersGet(h, from, bearer(unknownToken())),
  },
  {
    outcome: 'not_found',
    route: '__unmatched__',
    status: 404,
    act: (h, from) => send(`${h.url}/nowhere/at/all`, { from }),
  },
  {
    outcome: 'unavailable',
    route: 'orders-read',
    status: 503,
    async setup(h) {
      h.as.setFault('down');
    },
    act: (h, from) => ordersGet(h, from, bearer(unknownToken())),
    cleanup: (h) => h.as.setFault(null),
  },
  {
    outcome: 'upstream_error',
    route: 'any-token',
    status: 504,
    act: (h, from) =>
      send(`${h.url}/api/any/__slow?ms=4000`, {
        from,
        headers: bearer(h.as.issue()),
      }),
  },
];

for (const testCase of OUTCOME_CASES) {
  test(`requests_total and request_duration_seconds move for outcome ${testCase.outcome}`, async (t) => {
    const config = () => ({
      upstream: { timeout_ms: 500 },
      fishing: { max_failures: 3, block_seconds: 60 },
    });
    await withHarness(config, async (harness) => {
      await testCase.setup?.(harness, FROM);
      const labels = { route: testCase.route, outcome: testCase.outcome };
      let status = 0;
      await assertMoves(
        t,
        harness,
        async () => {
          status = (await testCase.act(harness, FROM)).status;
        },
        [
          [{ name: 'tokenguard_requests_total', labels }, 1],
          [{ name: 'tokenguard_requests_total' }, 1],
          [{ name: 'tokenguard_request_duration_seconds_count', labels }, 1],
          [
            {
              name: 'tokenguard_request_duration_seconds_bucket',
              labels: { ...labels, le: '+Inf' },
            },
            1,
          ],
        ],
      );
      testCase.cleanup?.(harness);
      t.is(status, testCase.status, `the request got ${testCase.status}`);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Introspection and cache
// ---------------------------------------------------------------------------------------------

const INTROSPECTION_CASES: Array<{
  result: string;
  token: (harness: Harness) => string;
  fault?: 'status-500';
}> = [
  { result: 'active', token: (h) => h.as.issue({ scope: 'orders:read' }) },
  { result: 'inactive', token: () => unknownToken() },
  { result: 'error', token: () => unknownToken(), fault: 'status-500' },
];

for (const { result, token, fault } of INTROSPECTION_CASES) {
  test(`introspection_requests_total and introspection_duration_seconds move for ${result}`, async (t) => {
    await withHarness(undefined, async (harness) => {
      if (fault) harness.as.setFault(fault);
      const calls = harness.as.introspectionCalls;
      await assertMoves(t, harness, () => ordersGet(harness, FROM, bearer(token(harness))), [
        [{ name: 'tokenguard_introspection_requests_total', labels: { result } }, 1],
        [{ name: 'tokenguard_introspection_requests_total' }, 1],
        [{ name: 'tokenguard_introspection_duration_seconds_count', labels: { result } }, 1],
      ]);
      t.is(harness.as.introspectionCalls, calls + 1);
    });
  });
}

test('cache_lookups_total moves for miss, then hit', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = harness.as.issue({ scope: 'orders:read' });
    await assertMoves(t, harness, () => ordersGet(harness, FROM, bearer(token)), [
      [{ name: 'tokenguard_cache_lookups_total', labels: { result: 'miss' } }, 1],
      [{ name: 'tokenguard_cache_lookups_total', labels: { result: 'hit' } }, 0],
    ]);
    await assertMoves(t, harness, () => ordersGet(harness, FROM, bearer(token)), [
      [{ name: 'tokenguard_cache_lookups_total', labels: { result: 'hit' } }, 1],
      [{ name: 'tokenguard_cache_lookups_total', labels: { result: 'miss' } }, 0],
    ]);
  });
});

test('cache_lookups_total moves for negative_hit', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = unknownToken();
    await assertMoves(t, harness, () => ordersGet(harness, FROM, bearer(token)), [
      [{ name: 'tokenguard_cache_lookups_total', labels: { result: 'miss' } }, 1],
    ]);
    const calls = harness.as.introspectionCalls;
    await assertMoves(t, harness, () => ordersGet(harness, FROM, bearer(token)), [
      [{ name: 'tokenguard_cache_lookups_total', labels: { result: 'negative_hit' } }, 1],
      [{ name: 'tokenguard_cache_lookups_total', labels: { result: 'miss' } }, 0],
    ]);
    t.is(harness.as.introspectionCalls, calls);
  });
});

test('cache_lookups_total moves for coalesced lookups of one token in flight', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = harness.as.issue({ scope: 'orders:read' });
    harness.as.setFault({ delayMs: 500 });
    const calls = harness.as.introspectionCalls;
    await assertMoves(
      t,
      harness,
      () =>
        Promise.all([
          ordersGet(harness, FROM, bearer(token)),
          ordersGet(harness, FROM, bearer(token)),
        ]),
      [
        [{ name: 'tokenguard_cache_lookups_total', labels: { result: 'miss' } }, 1],
        [{ name: 'tokenguard_cache_lookups_total', labels: { result: 'coalesced' } }, 1],
      ],
    );
    t.is(harness.as.introspectionCalls, calls + 1, 'one call for both');
  });
});

test('the cache_entries gauge follows the cache', async (t) => {
  await withHarness(undefined, async (harness) => {
    await assertMoves(
      t,
      harness,
      () => ordersGet(harness, FROM, bearer(harness.as.issue({ scope: 'orders:read' }))),
      [[{ name: 'tokenguard_cache_entries' }, 1]],
    );
    await assertMoves(t, harness, () => ordersGet(harness, FROM, bearer(unknownToken())), [
      [{ name: 'tokenguard_cache_entries' }, 1],
    ]);
    harness.gateway.introspection.cache.clear();
    const metrics = await scrape(harness);
    t.is(valueOf(metrics, 'tokenguard_cache_entries'), 0, 'and goes back down');
  });
});

// ---------------------------------------------------------------------------------------------
// Fishing
// ---------------------------------------------------------------------------------------------

const AUDIENCE = 'orders-api';
const claimsConfig = ({ as }: HarnessContext) => ({
  introspection: { issuer: as.issuer, audience: [AUDIENCE] },
});

const FAILURE_CASES: Array<{
  reason: string;
  status: number;
  headers: (harness: Harness) => Record<string, string>;
}> = [
  { reason: 'malformed', status: 400, headers: () => ({ authorization: 'Bearer bad@token' }) },
  { reason: 'inactive', status: 401, headers: () => bearer(unknownToken()) },
  {
    reason: 'expired',
    status: 401,
    headers: (h) =>
      bearer(h.as.issue({ scope: 'orders:read', aud: AUDIENCE, exp: nowSeconds() - 3600 })),
  },
  {
    reason: 'audience',
    status: 401,
    headers: (h) => bearer(h.as.issue({ scope: 'orders:read', aud: 'another-api' })),
  },
  {
    reason: 'issuer',
    status: 401,
    headers: (h) =>
      bearer(h.as.issue({ scope: 'orders:read', aud: AUDIENCE, iss: 'https://evil.example' })),
  },
];

for (const { reason, status, headers } of FAILURE_CASES) {
  test(`fishing_failures_total moves for reason ${reason}, and only for it`, async (t) => {
    await withHarness(claimsConfig, async (harness) => {
      let got = 0;
      await assertMoves(
        t,
        harness,
        async () => {
          got = (await ordersGet(harness, FROM, headers(harness))).status;
        },
        [
          [{ name: 'tokenguard_fishing_failures_total', labels: { reason } }, 1],
          [{ name: 'tokenguard_fishing_failures_total' }, 1],
        ],
      );
      t.is(got, status);
    });
  });
}

test('fishing_failures_total does not move for a valid token, 401 without token, 403, 503', async (t) => {
  await withHarness(claimsConfig, async (harness) => {
    const valid = harness.as.issue({ scope: 'orders:read', aud: AUDIENCE });
    const noScope = harness.as.issue({ scope: 'profile', aud: AUDIENCE });
    await assertMoves(
      t,
      harness,
      async () => {
        t.is((await ordersGet(harness, FROM, bearer(valid))).status, 200);
        t.is((await ordersGet(harness, FROM)).status, 401);
        t.is((await ordersGet(harness, FROM, bearer(noScope))).status, 403);
        harness.as.setFault('down');
        t.is((await ordersGet(harness, FROM, bearer(unknownToken()))).status, 503);
        harness.as.setFault(null);
        // A marker that does count, so the scrape is known to be after all of the above.
        t.is((await ordersGet(harness, FROM, { authorization: 'Bearer bad@' })).status, 400);
      },
      [
        [{ name: 'tokenguard_fishing_failures_total' }, 1],
        [{ name: 'tokenguard_fishing_failures_total', labels: { reason: 'malformed' } }, 1],
      ],
    );
  });
});

test('fishing_blocked_requests_total moves once per 429', async (t) => {
  const config = () => ({ fishing: { max_failures: 2, block_seconds: 60 } });
  await withHarness(config, async (harness) => {
    for (let index = 0; index < 2; index += 1) {
      t.is((await ordersGet(harness, FROM, bearer(unknownToken()))).status, 401);
    }
    await assertMoves(
      t,
      harness,
      async () => {
        for (let index = 0; index < 3; index += 1) {
          t.is((await ordersGet(harness, FROM, bearer(unknownToken()))).status, 429);
        }
      },
      [
        [{ name: 'tokenguard_fishing_blocked_requests_total' }, 3],
        [{ name: 'tokenguard_requests_total', labels: { outcome: 'throttled' } }, 3],
        [{ name: 'tokenguard_fishing_failures_total' }, 0],
      ],
    );
  });
});

test('the fishing_blocked_clients gauge counts blocked clients and falls back after block_seconds', async (t) => {
  const blockSeconds = 3;
  const config = () => ({ fishing: { max_failures: 2, block_seconds: blockSeconds } });
  await withHarness(config, async (harness) => {
    const block = async (from: string) => {
      for (let index = 0; index < 2; index += 1) {
        await ordersGet(harness, from, bearer(unknownToken()));
      }
      t.is((await ordersGet(harness, from, bearer(unknownToken()))).status, 429);
    };
    t.is(valueOf(await scrape(harness), 'tokenguard_fishing_blocked_clients'), 0);
    await block('127.0.0.2');
    t.is(valueOf(await scrape(harness), 'tokenguard_fishing_blocked_clients'), 1, 'one blocked');
    await block('127.0.0.3');
    t.is(valueOf(await scrape(harness), 'tokenguard_fishing_blocked_clients'), 2, 'two blocked');

    await sleep(blockSeconds * 1000 + 200);
    const deadline = Date.now() + 5000;
    let value = valueOf(await scrape(harness), 'tokenguard_fishing_blocked_clients');
    while (value !== 0 && Date.now() < deadline) {
      await sleep(100);
      value = valueOf(await scrape(harness), 'tokenguard_fishing_blocked_clients');
    }
    t.is(value, 0, 'back to 0 once the blocks expired, without further requests');
  });
});

// ---------------------------------------------------------------------------------------------
// Upstream errors
// ---------------------------------------------------------------------------------------------

test('upstream_errors_total{kind=connect} moves when the upstream refuses connections', async (t) => {
  const port = await freePort();
  const config = () => ({ upstream: { url: `http://127.0.0.1:${port}` } });
  await withHarness(config, async (harness) => {
    let status = 0;
    await assertMoves(
      t,
      harness,
      async () => {
        status = (await send(`${harness.url}/public/page`)).status;
      },
      [
        [{ name: 'tokenguard_upstream_errors_total', labels: { kind: 'connect' } }, 1],
        [{ name: 'tokenguard_upstream_errors_total' }, 1],
        [
          {
            name: 'tokenguard_requests_total',
            labels: { route: 'public', outcome: 'upstream_error' },
          },
          1,
        ],
      ],
    );
    t.is(status, 502);
  });
});

test('upstream_errors_total{kind=timeout} moves when the upstream is slower than timeout_ms', async (t) => {
  const config = () => ({ upstream: { timeout_ms: 300 } });
  await withHarness(config, async (harness) => {
    let status = 0;
    await assertMoves(
      t,
      harness,
      async () => {
        status = (await send(`${harness.url}/public/__slow?ms=4000`)).status;
      },
      [
        [{ name: 'tokenguard_upstream_errors_total', labels: { kind: 'timeout' } }, 1],
        [{ name: 'tokenguard_upstream_errors_total' }, 1],
      ],
    );
    t.is(status, 504);
  });
});

test('upstream_errors_total{kind=timeout} moves when a response body falls silent past timeout_ms', async (t) => {
  const config = () => ({ upstream: { timeout_ms: 300 } });
  await withHarness(config, async (harness) => {
    await assertMoves(
      t,
      harness,
      async () => {
        // Headers and one chunk, then silence: the client sees the response cut.
        await send(`${harness.url}/public/__stall`).catch(() => undefined);
      },
      [
        [{ name: 'tokenguard_upstream_errors_total', labels: { kind: 'timeout' } }, 1],
        [{ name: 'tokenguard_upstream_errors_total' }, 1],
      ],
    );
  });
});

test('upstream_errors_total{kind=reset} moves when the upstream drops the connection before answering', async (t) => {
  const upstream = await startHttpServer((req) => req.socket.destroy());
  try {
    const config = () => ({ upstream: { url: upstream.url } });
    await withHarness(config, async (harness) => {
      let status = 0;
      await assertMoves(
        t,
        harness,
        async () => {
          status = (await send(`${harness.url}/public/page`)).status;
        },
        [
          [{ name: 'tokenguard_upstream_errors_total', labels: { kind: 'reset' } }, 1],
          [{ name: 'tokenguard_upstream_errors_total' }, 1],
        ],
      );
      t.is(status, 502);
    });
  } finally {
    await upstream.close();
  }
});

test('upstream_errors_total{kind=reset} moves when the upstream destroys the socket mid-response', async (t) => {
  const upstream = await startHttpServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100000' });
    res.write('x'.repeat(1000));
    setTimeout(() => res.socket?.destroy(), 50);
  });
  try {
    const config = () => ({ upstream: { url: upstream.url } });
    await withHarness(config, async (harness) => {
      let truncated = false;
      await assertMoves(
        t,
        harness,
        async () => {
          try {
            const reply = await send(`${harness.url}/public/page`);
            truncated = reply.body.length < 100_000;
          } catch {
            truncated = true; // the client saw the connection end early
          }
        },
        [
          [{ name: 'tokenguard_upstream_errors_total', labels: { kind: 'reset' } }, 1],
          [{ name: 'tokenguard_upstream_errors_total' }, 1],
        ],
      );
      t.true(truncated, 'the client did not get a complete response');
    });
  } finally {
    await upstream.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Bounded label values
// ---------------------------------------------------------------------------------------------

function allLabelValues(metrics: Scrape): string[] {
  return metrics.samples.flatMap((sample) => Object.values(sample.labels));
}

function assertNothingLeaks(t: ExecutionContext, metrics: Scrape, secrets: readonly string[]) {
  const values = allLabelValues(metrics);
  for (const secret of secrets) {
    const leaked = values.find((value) => value.includes(secret));
    t.is(leaked, undefined, `no label value contains ${secret.slice(0, 24)}`);
  }
}

const routeLabels = (metrics: Scrape) =>
  new Set(
    metrics.samples
      .filter((sample) => sample.name.startsWith('tokenguard_request'))
      .map((sample) => sample.labels.route ?? ''),
  );

test('label values stay bounded: no raw path, client address or token, route is a configured label', async (t) => {
  const itemsPattern = '/api/items/:id';
  const config = (ctx: HarnessContext) => ({
    routes: [
      ...(defaultConfig(ctx).routes as unknown[]),
      { path: itemsPattern, methods: ['GET'] }, // no name: the label is the pattern
    ],
  });
  await withHarness(config, async (harness) => {
    const secrets: string[] = [];
    const clients: string[] = [];
    await Promise.all(
      Array.from({ length: 50 }, async (_, index) => {
        const from = `127.0.0.${index + 2}`;
        clients.push(from);
        const piece = randomBytes(8).toString('hex');
        const token = unknownToken();
        const itemToken = unknownToken();
        secrets.push(piece, token, itemToken);
        const unmatched = await send(`${harness.url}/zz-${piece}/x`, {
          from,
          headers: bearer(token),
        });
        t.is(unmatched.status, 404);
        const item = await send(`${harness.url}/api/items/${piece}`, {
          from,
          headers: bearer(itemToken),
        });
        t.is(item.status, 401);
        const refused = await send(`${harness.url}/`, { from, path: `/yy-${piece}%2Fetc` });
        t.is(refused.status, 400);
      }),
    );
    const metrics = await scrapeUntil(
      harness,
      (current) => valueOf(current, 'tokenguard_requests_total') >= 150,
    );
    t.is(valueOf(metrics, 'tokenguard_requests_total'), 150);
    assertNothingLeaks(t, metrics, [...secrets, ...clients]);

    const routes = routeLabels(metrics);
    const allowed = new Set([...HARNESS_ROUTES, itemsPattern, ...PSEUDO_ROUTES]);
    for (const route of routes) t.true(allowed.has(route), `route="${route}" is configured`);
    t.true(routes.has(itemsPattern), 'an unnamed route is labelled with its pattern');
    t.true(routes.has('__unmatched__'), 'unmatched requests share one pseudo-label');
    t.is(
      valueOf(metrics, 'tokenguard_requests_total', { route: '__unmatched__' }),
      100,
      '404s and refused paths',
    );
  });
});

test('with default_action authenticate, unmatched paths share the __default__ label', async (t) => {
  const config = () => ({ default_action: 'authenticate' });
  await withHarness(config, async (harness) => {
    const secrets: string[] = [];
    const valid = harness.as.issue({ scope: 'orders:read' });
    secrets.push(valid);
    for (let index = 0; index < 20; index += 1) {
      const piece = randomBytes(8).toString('hex');
      secrets.push(piece);
      const reply = await send(`${harness.url}/other-${piece}`, {
        from: `127.0.0.${index + 2}`,
        headers: bearer(valid),
      });
      t.is(reply.status, 200);
    }
    const metrics = await scrapeUntil(
      harness,
      (current) => valueOf(current, 'tokenguard_requests_total') >= 20,
    );
    t.is(
      valueOf(metrics, 'tokenguard_requests_total', { route: '__default__', outcome: 'forwarded' }),
      20,
    );
    assertNothingLeaks(t, metrics, secrets);
    for (const route of routeLabels(metrics)) {
      t.true([...HARNESS_ROUTES, ...PSEUDO_ROUTES].includes(route), `route="${route}"`);
    }
  });
});
