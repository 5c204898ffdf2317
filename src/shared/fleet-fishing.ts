/**
 * Token fishing counted across the fleet (PRODUCT.md "Fleet mode"): a client's failures
 * live in one Redis sorted set per client (a sliding window, as on a single replica), its
 * uncached introspections in flight in one counter, and its block in one key — all changed
 * by Lua scripts, so every check-and-change is atomic across replicas. A new block is
 * published to every replica, which then refuses the client from memory: a blocked flood
 * costs no Redis round trip, and neither does any cache hit.
 *
 * How closely the in-flight rule holds fleet-wide: exactly, while Redis answers — an
 * admission is granted only if failures + in-flight < max_failures, atomically. A replica
 * that loses Redis falls back to its own count, so during a partition each replica may
 * admit up to max_failures on its own. In-flight counters expire (twice the introspection
 * timeout) so a replica that dies mid-call cannot hold a client's budget forever.
 */
import type { SharedStore } from './store.js';

export type FleetAdmission =
  { verdict: 'admitted' | 'wait' | 'unavailable' } | { verdict: 'blocked'; until: number };

export interface FleetFishing {
  admit(clientKey: string): Promise<FleetAdmission>;
  release(clientKey: string): Promise<void>;
  /** Records a failure; when it starts a block, every replica is told. */
  recordFailure(clientKey: string): Promise<void>;
}

/** KEYS: failures, in-flight, block. ARGV: now, window ms, max, in-flight ttl ms. */
const ADMIT = `
local blocked = redis.call('PTTL', KEYS[3])
if blocked > 0 then return -blocked end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
local failures = redis.call('ZCARD', KEYS[1])
local inflight = tonumber(redis.call('GET', KEYS[2]) or '0')
if failures + inflight >= tonumber(ARGV[3]) then return 0 end
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1`;

/** KEYS: in-flight. */
const RELEASE = `
local left = redis.call('DECR', KEYS[1])
if left <= 0 then redis.call('DEL', KEYS[1]) end
return left`;

/**
 * KEYS: failures, block. ARGV: now, window ms, max, block ms, a unique member.
 * Returns the block's end (ms) when this failure starts one, else 0.
 */
const FAIL = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[4]) then
    redis.call('DEL', KEYS[1])
    return tonumber(ARGV[1]) + tonumber(ARGV[4])
  end
end
return 0`;

export function createFleetFishing(
  store: SharedStore,
  options: {
    windowSeconds: number;
    maxFailures: number;
    blockSeconds: number;
    inFlightTtlMs: number;
    replicaId: string;
  },
): FleetFishing {
  const keys = (clientKey: string) => ({
    failures: store.key(`f:${clientKey}`),
    inFlight: store.key(`i:${clientKey}`),
    block: store.key(`b:${clientKey}`),
  });
  let sequence = 0;
  return {
    async admit(clientKey) {
      const { failures, inFlight, block } = keys(clientKey);
      const verdict = await store.run('fishing', (client) =>
        client.eval(ADMIT, {
          keys: [failures, inFlight, block],
          arguments: [
            String(Date.now()),
            String(options.windowSeconds * 1000),
            String(options.maxFailures),
            String(options.inFlightTtlMs),
          ],
        }),
      );
      if (typeof verdict !== 'number') return { verdict: 'unavailable' };
      if (verdict < 0) return { verdict: 'blocked', until: Date.now() - verdict };
      return { verdict: verdict === 1 ? 'admitted' : 'wait' };
    },
    async release(clientKey) {
      await store.run('fishing', (client) =>
        client.eval(RELEASE, { keys: [keys(clientKey).inFlight] }),
      );
    },
    async recordFailure(clientKey) {
      const { failures, block } = keys(clientKey);
      sequence += 1;
      const now = Date.now();
      const until = await store.run('fishing', (client) =>
        client.eval(FAIL, {
          keys: [failures, block],
          arguments: [
            String(now),
            String(options.windowSeconds * 1000),
            String(options.maxFailures),
            String(options.blockSeconds * 1000),
            `${options.replicaId}:${now}:${sequence}`,
          ],
        }),
      );
      if (typeof until === 'number' && until > 0) {
        await store.publish({ type: 'block', client: clientKey, until });
      }
    },
  };
}
