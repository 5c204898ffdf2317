/**
 * Token-fishing defence against real servers (PRODUCT.md "Token fishing", issue 3): failed
 * token presentations are counted per client, the request after the `max_failures`-th gets
 * 429 without the authorization server being asked (its call counter does not move), the
 * block expires, other clients are unaffected, and X-Forwarded-For is believed only from
 * trusted proxies. Distinct clients on one machine: Linux routes all of 127.0.0.0/8 to
 * loopback, so each client binds its socket to its own source address (`localAddress`).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import test, { type ExecutionContext } from 'ava';
import {
  eventually,
  bearer,
  request as send,
  unknownToken,
  withHarness,
  type Harness,
  type RawResponse as Reply,
} from './_harness.js';

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const BLOCK_SECONDS = 2;
const MAX_FAILURES = 5;
const FISHING = { window_seconds: 60, max_failures: MAX_FAILURES, block_seconds: BLOCK_SECONDS };

const CLIENT_A = '127.0.0.2';
const CLIENT_B = '127.0.0.3';

const fishingConfig =
  (extra: Record<string, unknown> = {}, fishing: Record<string, unknown> = {}) =>
  () => ({ fishing: { ...FISHING, ...fishing }, ...extra });

/** GET /api/orders/1 (needs an orders:read token) from `from` with `token`. */
const getOrder = (harness: Harness, from: string, token: string, headers = {}) =>
  send(`${harness.url}/api/orders/1`, { from, headers: { ...bearer(token), ...headers } });

/** Sends `count` unknown tokens from `from`; each must be answered 401 invalid_token. */
async function failWithUnknownTokens(
  t: ExecutionContext,
  harness: Harness,
  from: string,
  count = MAX_FAILURES,
  headers: (index: number) => Record<string, string> = () => ({}),
): Promise<string[]> {
  const tokens: string[] = [];
  for (let index = 0; index < count; index += 1) {
    const token = unknownToken();
    tokens.push(token);
    const reply = await getOrder(harness, from, token, headers(index));
    t.is(reply.status, 401, `failure ${index + 1} of ${count} is answered normally`);
    t.is(reply.json().error, 'invalid_token');
  }
  return tokens;
}

function assertBlocked(t: ExecutionContext, reply: Reply, message = 'blocked'): void {
  t.is(reply.status, 429, message);
  if (reply.status !== 429) return;
  const retryAfter = String(reply.headers['retry-after']);
  t.regex(retryAfter, /^\d+$/, 'Retry-After is whole seconds');
  const seconds = Number(retryAfter);
  t.true(seconds >= 1 && seconds <= BLOCK_SECONDS, `Retry-After ${retryAfter} in 1..block_seconds`);
  t.is(reply.json().error, 'too_many_requests');
}

interface LogLine {
  event?: string;
  client?: string;
  failures?: number;
  [key: string]: unknown;
}

const logLines = (harness: Harness): LogLine[] =>
  harness
    .logs()
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as LogLine);

const eventLines = (harness: Harness, event: string) =>
  logLines(harness).filter((line) => line.event === event);

// ---------------------------------------------------------------------------------------------
// (a) blocking after max_failures, without asking the authorization server
// ---------------------------------------------------------------------------------------------

test('max_failures unknown tokens get 401, then the client gets 429 and the AS is not asked', async (t) => {
  await withHarness(fishingConfig(), async (harness) => {
    const { as, upstream } = harness;
    await failWithUnknownTokens(t, harness, CLIENT_A);
    t.is(as.introspectionCalls, MAX_FAILURES);

    const calls = as.introspectionCalls;
    assertBlocked(t, await getOrder(harness, CLIENT_A, unknownToken()), 'the next request: 429');
    t.is(as.introspectionCalls, calls, 'a blocked request does not reach the AS');

    // A valid, never-seen token: refused too, and still not introspected.
    const valid = as.issue({ scope: 'orders:read' });
    assertBlocked(t, await getOrder(harness, CLIENT_A, valid), 'a valid token is refused too');
    t.is(as.introspectionCalls, calls, 'the valid token was not introspected either');
    t.is(upstream.requests.length, 0, 'nothing reached the upstream');
  });
});

test('the first 429 carries the full block as Retry-After, and it counts down', async (t) => {
  await withHarness(fishingConfig({}, { block_seconds: 10 }), async (harness) => {
    await failWithUnknownTokens(t, harness, CLIENT_A);
    const first = await getOrder(harness, CLIENT_A, unknownToken());
    t.is(first.status, 429);
    t.is(first.headers['retry-after'], '10', 'the block just started: ceil(10 - ε) = 10');
    await sleep(1200);
    const later = await getOrder(harness, CLIENT_A, unknownToken());
    t.is(later.status, 429);
    const seconds = Number(later.headers['retry-after']);
    t.true(Number.isInteger(seconds), 'whole seconds');
    t.true(seconds >= 1 && seconds <= 9, `time left, rounded up (got ${seconds})`);
  });
});

test('malformed bearer credentials (400) count as failures, without asking the AS', async (t) => {
  await withHarness(fishingConfig(), async (harness) => {
    const malformed = [
      'Bearer a b',
      'Bearer bad@token',
      'Bearer tok,en',
      `Bearer ${'x'.repeat(5000)}`,
      'Bearer "quoted"',
    ];
    for (const authorization of malformed) {
      const reply = await send(`${harness.url}/api/orders/1`, {
        from: CLIENT_A,
        headers: { authorization },
      });
      t.is(reply.status, 400, `${authorization.slice(0, 20)} is malformed`);
      t.is(reply.json().error, 'invalid_request');
    }
    t.is(harness.as.introspectionCalls, 0);
    assertBlocked(t, await getOrder(harness, CLIENT_A, harness.as.issue({ scope: 'orders:read' })));
    t.is(harness.as.introspectionCalls, 0);
  });
});

test('malformed and inactive failures add up to one count', async (t) => {
  await withHarness(fishingConfig(), async (harness) => {
    for (let index = 0; index < 2; index += 1) {
      const reply = await send(`${harness.url}/api/orders/1`, {
        from: CLIENT_A,
        headers: { authorization: 'Bearer a b' },
      });
      t.is(reply.status, 400);
    }
    await failWithUnknownTokens(t, harness, CLIENT_A, MAX_FAILURES - 2);
    assertBlocked(t, await getOrder(harness, CLIENT_A, unknownToken()));
  });
});

test('missing credentials (401 without a token) and 403 do not count as failures', async (t) => {
  await withHarness(fishingConfig(), async (harness) => {
    const { as, url } = harness;
    for (let index = 0; index < 3 * MAX_FAILURES; index += 1) {
      const none = await send(`${url}/api/orders/1`, { from: CLIENT_A });
      t.is(none.status, 401);
      t.is(none.json().error, 'unauthorized');
      const basic = await send(`${url}/api/orders/1`, {
        from: CLIENT_A,
        headers: { authorization: 'Basic dXNlcjpwYXNz' },
      });
      t.is(basic.status, 401, 'another scheme is no bearer credentials at all');
    }
    const noScope = as.issue({ scope: 'profile' });
    for (let index = 0; index < 3 * MAX_FAILURES; index += 1) {
      const forbidden = await getOrder(harness, CLIENT_A, noScope);
      t.is(forbidden.status, 403);
    }
    const valid = await getOrder(harness, CLIENT_A, as.issue({ scope: 'orders:read' }));
    t.is(valid.status, 200, 'not blocked');
    // The count is still at zero: max_failures - 1 more failures still leave the client free.
    await failWithUnknownTokens(t, harness, CLIENT_A, MAX_FAILURES - 1);
    t.is((await getOrder(harness, CLIENT_A, unknownToken())).status, 401, 'still answered');
    t.is(eventLines(harness, 'fishing_block').length, 0);
  });
});

// ---------------------------------------------------------------------------------------------
// (b) auth: none routes, (c) expiry, (d) other clients
// ---------------------------------------------------------------------------------------------

test('auth: none routes still serve a blocked client', async (t) => {
  await withHarness(fishingConfig(), async (harness) => {
    await failWithUnknownTokens(t, harness, CLIENT_A);
    assertBlocked(t, await getOrder(harness, CLIENT_A, unknownToken()));
    const before = harness.upstream.requests.length;
    const open = await send(`${harness.url}/public/page`, { from: CLIENT_A });
    t.is(open.status, 200);
    t.is(harness.upstream.requests.length, before + 1);
    const openWithToken = await send(`${harness.url}/public/page`, {
      from: CLIENT_A,
      headers: bearer(unknownToken()),
    });
    t.is(openWithToken.status, 200, 'a token on a public route is not looked at');
    assertBlocked(t, await getOrder(harness, CLIENT_A, unknownToken()), 'still blocked');
  });
});

test('the block expires after block_seconds; the client then starts from a clean count', async (t) => {
  await withHarness(fishingConfig(), async (harness) => {
    const { as } = harness;
    const valid = as.issue({ scope: 'orders:read' });
    await failWithUnknownTokens(t, harness, CLIENT_A);
    const blockedAt = Date.now();
    assertBlocked(t, await getOrder(harness, CLIENT_A, valid));
    // Requests during the block do not extend it: it is counted from the block.
    while (Date.now() - blockedAt < BLOCK_SECONDS * 1000 - 700) {
      const during = await getOrder(harness, CLIENT_A, unknownToken());
      if (Date.now() - blockedAt < BLOCK_SECONDS * 1000 - 200) assertBlocked(t, during);
      await sleep(250);
    }
    await sleep(Math.max(0, blockedAt + BLOCK_SECONDS * 1000 + 600 - Date.now()));
    const after = await getOrder(harness, CLIENT_A, valid);
    t.is(after.status, 200, 'the valid token works again');
    const oneFailure = await getOrder(harness, CLIENT_A, unknownToken());
    t.is(oneFailure.status, 401, 'a single new failure is answered normally');
    t.is((await getOrder(harness, CLIENT_A, valid)).status, 200);
  });
});

test('another client is unaffected while the first is blocked', async (t) => {
  await withHarness(fishingConfig(), async (harness) => {
    const { as } = harness;
    await failWithUnknownTokens(t, harness, CLIENT_A);
    assertBlocked(t, await getOrder(harness, CLIENT_A, unknownToken()));

    const valid = as.issue({ scope: 'orders:read' });
    t.is((await getOrder(harness, CLIENT_B, valid)).status, 200, 'B: valid token forwarded');
    const calls = as.introspectionCalls;
    t.is((await getOrder(harness, CLIENT_B, unknownToken())).status, 401, 'B: 401, not 429');
    t.is(as.introspectionCalls, calls + 1, "B's unknown token is introspected");
    assertBlocked(t, await getOrder(harness, CLIENT_A, valid), 'A is still blocked');
  });
});

// ---------------------------------------------------------------------------------------------
// (e) X-Forwarded-For
// ---------------------------------------------------------------------------------------------

test('an untrusted peer cannot change its client key with X-Forwarded-For', async (t) => {
  await withHarness(fishingConfig(), async (harness) => {
    await failWithUnknownTokens(t, harness, CLIENT_A, MAX_FAILURES, (index) => ({
      'x-forwarded-for': `198.51.100.${index + 1}`,
    }));
    const reply = await getOrder(harness, CLIENT_A, unknownToken(), {
      'x-forwarded-for': '198.51.100.200',
    });
    assertBlocked(t, reply, 'all failures counted against the socket address');
    assertBlocked(t, await getOrder(harness, CLIENT_A, unknownToken()), 'without XFF too');
    const other = await getOrder(harness, CLIENT_B, harness.as.issue({ scope: 'orders:read' }), {
      'x-forwarded-for': '198.51.100.1',
    });
    t.is(other.status, 200, 'claiming a blocked XFF address does not block another peer');
  });
});

test('behind a trusted proxy, failures count per X-Forwarded-For client', async (t) => {
  const config = fishingConfig({ server: { trusted_proxies: ['127.0.0.1/32'] } });
  await withHarness(config, async (harness) => {
    const { as } = harness;
    const proxy = '127.0.0.1';
    await failWithUnknownTokens(t, harness, proxy, MAX_FAILURES, () => ({
      'x-forwarded-for': '203.0.113.7',
    }));
    const valid = as.issue({ scope: 'orders:read' });
    const calls = as.introspectionCalls;
    assertBlocked(
      t,
      await getOrder(harness, proxy, valid, { 'x-forwarded-for': '203.0.113.7' }),
      '203.0.113.7 is blocked',
    );
    t.is(as.introspectionCalls, calls);
    // Anything left of the right-most untrusted entry was written by the client: no escape.
    assertBlocked(
      t,
      await getOrder(harness, proxy, valid, { 'x-forwarded-for': '192.0.2.99, 203.0.113.7' }),
      'prepending an address does not change the client',
    );
    // A trusted hop right of it is skipped.
    assertBlocked(
      t,
      await getOrder(harness, proxy, valid, { 'x-forwarded-for': '203.0.113.7, 127.0.0.1' }),
      'trusted hops are skipped',
    );
    const other = await getOrder(harness, proxy, valid, { 'x-forwarded-for': '203.0.113.8' });
    t.is(other.status, 200, '203.0.113.8 is not blocked');
    const direct = await getOrder(harness, proxy, valid);
    t.is(direct.status, 200, 'the proxy itself (no XFF) is not blocked');
  });
});

// ---------------------------------------------------------------------------------------------
// (f) successes do not launder failures; sliding window
// ---------------------------------------------------------------------------------------------

test('successful requests do not reset the failure count', async (t) => {
  await withHarness(fishingConfig(), async (harness) => {
    const valid = harness.as.issue({ scope: 'orders:read' });
    for (let index = 0; index < MAX_FAILURES; index += 1) {
      t.is((await getOrder(harness, CLIENT_A, valid)).status, 200, `success ${index + 1}`);
      t.is((await getOrder(harness, CLIENT_A, unknownToken())).status, 401);
    }
    t.is((await getOrder(harness, CLIENT_A, valid)).status, 429, 'blocked despite the successes');
    assertBlocked(t, await getOrder(harness, CLIENT_A, valid));
  });
});

test('failures older than window_seconds no longer count', async (t) => {
  await withHarness(fishingConfig({}, { window_seconds: 1 }), async (harness) => {
    await failWithUnknownTokens(t, harness, CLIENT_A, MAX_FAILURES - 1);
    await sleep(1300);
    await failWithUnknownTokens(t, harness, CLIENT_A, MAX_FAILURES - 1);
    const valid = harness.as.issue({ scope: 'orders:read' });
    t.is((await getOrder(harness, CLIENT_A, valid)).status, 200, 'the old failures slid out');
  });
});

test('a block lasts block_seconds even when the window is shorter', async (t) => {
  await withHarness(fishingConfig({}, { window_seconds: 1, block_seconds: 4 }), async (harness) => {
    await failWithUnknownTokens(t, harness, CLIENT_A);
    t.is((await getOrder(harness, CLIENT_A, unknownToken())).status, 429);
    await sleep(1500);
    const valid = harness.as.issue({ scope: 'orders:read' });
    const later = await getOrder(harness, CLIENT_A, valid);
    t.is(later.status, 429, 'the window slid past the failures, the block holds');
  });
});

// ---------------------------------------------------------------------------------------------
// (g) logs, (h) authorization-server outages
// ---------------------------------------------------------------------------------------------

test('a block and an unblock each log one structured line with the client key, no token', async (t) => {
  await withHarness(fishingConfig(), async (harness) => {
    const valid = harness.as.issue({ scope: 'orders:read' });
    const tokens = await failWithUnknownTokens(t, harness, CLIENT_A);
    for (let index = 0; index < 3; index += 1) {
      assertBlocked(t, await getOrder(harness, CLIENT_A, valid));
    }
    const blocks = eventLines(harness, 'fishing_block');
    t.is(blocks.length, 1, 'one block line, however many 429s');
    t.is(blocks[0]?.client, CLIENT_A);
    t.is(blocks[0]?.failures, MAX_FAILURES, 'the line carries the count');

    const unblocked = await eventually(
      () => eventLines(harness, 'fishing_unblock').length > 0,
      BLOCK_SECONDS * 1000 + 5000,
    );
    t.true(unblocked, 'the unblock is logged even if the client does not come back');
    t.is((await getOrder(harness, CLIENT_A, valid)).status, 200);
    const unblocks = eventLines(harness, 'fishing_unblock');
    t.is(unblocks.length, 1, 'one unblock line');
    t.is(unblocks[0]?.client, CLIENT_A);
    t.is(eventLines(harness, 'fishing_block').length, 1);

    const logs = harness.logs();
    for (const token of [...tokens, valid]) t.false(logs.includes(token), 'no token in logs');
  });
});

test('authorization-server outages (503) do not count as failures', async (t) => {
  await withHarness(fishingConfig(), async (harness) => {
    const { as } = harness;
    for (const fault of ['down', 'status-500', 'not-json'] as const) {
      as.setFault(fault);
      for (let index = 0; index < MAX_FAILURES + 1; index += 1) {
        const reply = await getOrder(harness, CLIENT_A, unknownToken());
        t.is(reply.status, 503, `${fault}: 503, not 429`);
        t.is(reply.json().error, 'temporarily_unavailable');
      }
    }
    as.setFault(null);
    const valid = as.issue({ scope: 'orders:read' });
    t.is((await getOrder(harness, CLIENT_A, valid)).status, 200, 'not blocked');
    t.is(eventLines(harness, 'fishing_block').length, 0);
  });
});
