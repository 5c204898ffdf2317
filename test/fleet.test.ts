/**
 * Fleet mode (issue 9, PRODUCT.md "Fleet mode") with a real Redis and three real gateway
 * processes sharing it: one introspection per token across the fleet, a fisher blocked after
 * max_failures spread over the replicas, a revocation by sub refused by every replica within
 * 1 s, Redis killed mid-traffic (no 5xx for cached tokens, local counters, the gauge at 0,
 * recovery) and a Redis that hangs (the request path is not held by it).
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { parse, stringify } from 'yaml';
import { spawnCli, writeTempConfig } from './_child.js';
import { startFleet, revoke, REVOKE_TOKEN, type Fleet } from './_fleet.js';
import { eventuallyAsync, unknownToken } from './_harness.js';

const withFleet = async (run: (fleet: Fleet) => Promise<void>, override = {}) => {
  const fleet = await startFleet({ override });
  try {
    await run(fleet);
  } finally {
    await fleet.close();
  }
};

/** One fleet for the tests that leave Redis alone; each uses its own client addresses. */
let shared: Fleet;
test.before(async () => {
  shared = await startFleet();
});
test.after.always(async () => {
  await shared?.close();
});
const onSharedFleet = (run: (fleet: Fleet) => Promise<void>) => run(shared);

test.serial(
  'a token used through all three replicas is introspected once; concurrent first uses too',
  async (t) => {
    await onSharedFleet(async (fleet) => {
      const start = fleet.as.introspectionCalls;
      const token = fleet.as.issue({ scope: 'orders:read', sub: 'alice' });
      for (const index of [0, 1, 2, 0, 1, 2]) t.is((await fleet.get(index, token)).status, 200);
      t.is(fleet.as.introspectionCalls - start, 1, 'one call for six requests on three replicas');

      // Concurrent first uses: the Redis lock makes the other replicas wait for the answer.
      fleet.as.setFault({ delayMs: 300 });
      const fresh = fleet.as.issue({ scope: 'orders:read', sub: 'bob' });
      const before = fleet.as.introspectionCalls;
      const replies = await Promise.all([0, 1, 2, 0, 1, 2].map((index) => fleet.get(index, fresh)));
      t.deepEqual(
        replies.map((reply) => reply.status),
        [200, 200, 200, 200, 200, 200],
      );
      t.is(fleet.as.introspectionCalls - before, 1, 'one call for the fleet');

      // An inactive answer is shared too: a bad token costs the server one call, not three.
      const bad = unknownToken();
      for (const index of [0, 1, 2]) t.is((await fleet.get(index, bad, '127.0.0.60')).status, 401);
      t.is(fleet.as.introspectionCalls - before, 2);
      fleet.as.setFault(null);
    });
  },
);

test.serial(
  'a fisher is blocked after max_failures failures spread across the three replicas',
  async (t) => {
    await onSharedFleet(async (fleet) => {
      const fisher = '127.0.0.61';
      let index = 0;
      for (let failure = 0; failure < 5; failure += 1) {
        const reply = await fleet.get(index, unknownToken(), fisher);
        t.is(reply.status, 401, `failure ${failure + 1} on replica ${index}`);
        index = (index + 1) % 3;
      }
      const valid = fleet.as.issue({ scope: 'orders:read' });
      const calls = fleet.as.introspectionCalls;
      for (const replica of [0, 1, 2]) {
        t.is(
          (await fleet.get(replica, valid, fisher)).status,
          429,
          `blocked on replica ${replica}`,
        );
      }
      t.is(fleet.as.introspectionCalls, calls, 'a blocked client reaches no server');
      t.is((await fleet.get(1, valid, '127.0.0.62')).status, 200, 'another client is served');
    });
  },
);

test.serial('parallel guesses across the fleet make at most max_failures calls', async (t) => {
  await onSharedFleet(async (fleet) => {
    fleet.as.setFault({ delayMs: 200 });
    const start = fleet.as.introspectionCalls;
    const fisher = '127.0.0.63';
    const replies = await Promise.all(
      Array.from({ length: 45 }, (_, index) => fleet.get(index % 3, unknownToken(), fisher)),
    );
    const calls = fleet.as.introspectionCalls - start;
    fleet.as.setFault(null);
    t.true(calls <= 5, `${calls} calls`);
    t.true(replies.every((reply) => [401, 429, 503].includes(reply.status)));
  });
});

test.serial(
  'a revocation by sub is refused by every replica within 1 s; the CLI revokes too',
  async (t) => {
    await onSharedFleet(async (fleet) => {
      const token = fleet.as.issue({ scope: 'orders:read', sub: 'carol' });
      const other = fleet.as.issue({ scope: 'orders:read', sub: 'dave' });
      for (const index of [0, 1, 2]) {
        t.is((await fleet.get(index, token)).status, 200);
        t.is((await fleet.get(index, other)).status, 200);
      }
      fleet.as.revoke(token); // the server knows; the caches do not, until told
      t.is((await fleet.get(2, token)).status, 200, 'still cached before the revocation');

      const revoked = await revoke(fleet, 0, { sub: 'carol' });
      t.is(revoked.status, 200, revoked.body);
      t.true(revoked.json().revoked >= 1);
      const deadline = Date.now() + 1000;
      for (const index of [0, 1, 2]) {
        let status = 0;
        while (Date.now() < deadline) {
          // Each replica polled from its own address: its 401s are not one client's failures.
          status = (await fleet.get(index, token, `127.0.1.${index + 1}`)).status;
          if (status === 401) break;
        }
        t.is(status, 401, `replica ${index} refuses the revoked subject within 1 s`);
      }
      for (const index of [0, 1, 2]) t.is((await fleet.get(index, other)).status, 200);

      // The CLI, by client id (the dev AS's default client id).
      const third = fleet.as.issue({ scope: 'orders:read', sub: 'erin', client_id: 'mobile' });
      t.is((await fleet.get(1, third)).status, 200);
      fleet.as.revoke(third);
      // The CLI reads the admin port from the config: the fleet's is ephemeral, so it gets a copy
      // naming replica 1's.
      const config = parse(await readFile(fleet.configFile, 'utf8')) as { admin: { port: number } };
      config.admin.port = Number(
        new URL((fleet.replicas[1] as { adminUrl: string }).adminUrl).port,
      );
      const { file, cleanup } = await writeTempConfig(stringify(config));
      try {
        const cli = spawnCli(['revoke', '--config', file, '--client-id', 'mobile']);
        const exit = await cli.waitForExit(20_000);
        t.is(exit?.code, 0, cli.stderr());
        t.regex(cli.stdout(), /^200 \{"revoked":\d+\}/);
      } finally {
        await cleanup();
      }
      for (const index of [0, 1, 2]) {
        t.true(
          await eventuallyAsync(
            async () => (await fleet.get(index, third, `127.0.2.${index + 1}`)).status === 401,
            1000,
          ),
          `replica ${index} refuses the revoked client id`,
        );
      }
    });
  },
);

test.serial(
  'POST /admin/revoke: 401 without or with a wrong token, 400 for a bad body',
  async (t) => {
    await onSharedFleet(async (fleet) => {
      t.is((await revoke(fleet, 0, { sub: 'x' }, 'wrong-token-0123456789')).status, 401);
      t.is((await revoke(fleet, 0, { nope: 1 })).status, 400);
      t.is((await revoke(fleet, 0, { token_hashes: ['short'] })).status, 400);
      t.is((await revoke(fleet, 0, {})).status, 400);
      const ok = await revoke(fleet, 0, { tokens: [unknownToken()] });
      t.is(ok.status, 200, ok.body);
      t.false(ok.body.includes(REVOKE_TOKEN));
    });
  },
);

test.serial(
  'Redis killed mid-traffic: cached tokens keep passing, counters go local, the gauge drops, then all recovers',
  async (t) => {
    await withFleet(async (fleet) => {
      const token = fleet.as.issue({ scope: 'orders:read', sub: 'frank' });
      for (const index of [0, 1, 2]) t.is((await fleet.get(index, token)).status, 200);
      t.is(await fleet.metric(0, 'tokenguard_shared_store_up'), 1);

      // Traffic while Redis dies.
      let stop = false;
      const statuses: number[] = [];
      const traffic = (async () => {
        let index = 0;
        while (!stop) {
          statuses.push((await fleet.get(index, token)).status);
          index = (index + 1) % 3;
        }
      })();
      await new Promise((resolve) => setTimeout(resolve, 200));
      await fleet.redis.kill();
      await new Promise((resolve) => setTimeout(resolve, 1000));
      stop = true;
      await traffic;
      t.true(statuses.length > 0);
      t.deepEqual([...new Set(statuses)], [200], 'no 5xx for cached tokens while Redis died');
      for (const index of [0, 1, 2]) {
        t.is(
          await fleet.metric(index, 'tokenguard_shared_store_up'),
          0,
          `replica ${index}: gauge 0`,
        );
      }
      // A new token is still served (each replica on its own), and fishing counts locally.
      const fresh = fleet.as.issue({ scope: 'orders:read' });
      t.is((await fleet.get(0, fresh)).status, 200);
      const fisher = '127.0.0.64';
      for (let failure = 0; failure < 5; failure += 1) {
        t.is((await fleet.get(1, unknownToken(), fisher)).status, 401);
      }
      t.is((await fleet.get(1, fresh, fisher)).status, 429, 'the local count blocks');

      // Redis returns: the replicas reconnect by themselves and share again.
      await fleet.redis.restart();
      for (const index of [0, 1, 2]) {
        let up = 0;
        const deadline = Date.now() + 10_000;
        while (Date.now() < deadline && up !== 1) {
          up = await fleet.metric(index, 'tokenguard_shared_store_up');
          if (up !== 1) await new Promise((resolve) => setTimeout(resolve, 100));
        }
        t.is(up, 1, `replica ${index} reconnected`);
      }
      const after = fleet.as.issue({ scope: 'orders:read' });
      const calls = fleet.as.introspectionCalls;
      for (const index of [0, 1, 2]) t.is((await fleet.get(index, after)).status, 200);
      t.is(fleet.as.introspectionCalls - calls, 1, 'one call across the fleet again');
    });
  },
);

test.serial(
  'a Redis that hangs holds no request: cache hits and misses are answered',
  async (t) => {
    await withFleet(async (fleet) => {
      const cached = fleet.as.issue({ scope: 'orders:read' });
      for (const index of [0, 1, 2]) t.is((await fleet.get(index, cached)).status, 200);
      fleet.redis.pause();
      try {
        for (const index of [0, 1, 2]) {
          t.is((await fleet.get(index, cached)).status, 200, 'a hit never touches Redis');
          const fresh = fleet.as.issue({ scope: 'orders:read' });
          const reply = await fleet.get(index, fresh);
          t.is(reply.status, 200, 'a miss falls back to the server after timeout_ms');
        }
        const errors = await fleet.metric(0, 'tokenguard_shared_store_errors_total');
        t.true(errors >= 1, 'the timeouts were counted');
      } finally {
        fleet.redis.resume();
      }
    });
  },
);

test.serial(
  'introspection.max_calls_per_second is a budget for the fleet, not per replica',
  async (t) => {
    await withFleet(
      async (fleet) => {
        const rate = 3;
        await new Promise((resolve) => setTimeout(resolve, 1100)); // a fresh one-second window
        const started = Date.now();
        const replies = await Promise.all(
          Array.from({ length: 24 }, (_, index) =>
            fleet.get(index % 3, fleet.as.issue({ scope: 'orders:read' }), `127.0.3.${index + 1}`),
          ),
        );
        const seconds = (Date.now() - started) / 1000;
        const calls = fleet.as.introspectionCalls;
        // One window's rate plus what the windows that opened while it ran allow — per fleet.
        const allowed = rate * (Math.ceil(seconds) + 1);
        t.true(calls <= allowed, `${calls} calls in ${seconds.toFixed(1)} s, at most ${allowed}`);
        t.true(calls < 3 * rate * Math.ceil(seconds), 'fewer than three replicas each at the rate');
        const served = replies.filter((reply) => reply.status === 200).length;
        t.is(served, calls, 'every call served its request; the rest waited, then 503');
        t.true(replies.every((reply) => reply.status === 200 || reply.status === 503));
      },
      { introspection: { max_calls_per_second: 3, timeout_ms: 1000 } },
    );
  },
);
