/**
 * The second level of the token cache, on Redis: `key_prefix + "t:" + SHA-256(token)` holds
 * what a replica needs to rebuild the entry (the kept claims, the scope, the claims the
 * identity headers map) and when it expires — by the same rules as the local cache, so a
 * replica that learns an answer from Redis keeps it no longer than the replica that asked the
 * authorization server. Local hits never come here; a local miss reads Redis first.
 *
 * One introspection per token across the fleet: the first replica to miss takes a short lock
 * (`SET NX PX`), the others poll for its answer for at most `introspection.timeout_ms`, then
 * call the server themselves. Indexes `sub` → hashes and `client_id` → hashes (same TTLs)
 * make revocation by subject exact.
 */
import type { SharedStore } from './store.js';

/** What Redis holds for a token. */
export interface SharedAnswer {
  active: boolean;
  /** The claims the gateway needs (active answers). */
  claims?: Record<string, unknown>;
  /** Epoch ms when the entry expires (the TTL was set from it). */
  expiresAt: number;
  /** Epoch ms when the introspection that produced it started (revocations compare it). */
  startedAt: number;
}

export interface SharedCache {
  get(hash: string): Promise<SharedAnswer | undefined>;
  /** True when this replica holds the token's lock (or the store is down: ask the server). */
  lock(hash: string): Promise<'locked' | 'taken' | 'unavailable'>;
  unlock(hash: string): Promise<void>;
  /** Polls for another replica's answer until `deadline`; undefined when none came. */
  waitFor(hash: string, deadline: number): Promise<SharedAnswer | undefined>;
  set(hash: string, answer: SharedAnswer): Promise<void>;
  /** The token hashes indexed under a subject or client id. */
  hashesOf(index: 'sub' | 'client_id', value: string): Promise<string[] | undefined>;
  /** Deletes the tokens' entries and the named indexes; the number of entries deleted. */
  remove(
    hashes: readonly string[],
    indexes: ReadonlyArray<readonly ['sub' | 'client_id', string]>,
  ): Promise<number | undefined>;
}

const POLL_MS = 25;
/** Deletes the lock only if this replica still holds it. */
const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

export function createSharedCache(
  store: SharedStore,
  options: { lockMs: number; replicaId: string },
): SharedCache {
  const tokenKey = (hash: string) => store.key(`t:${hash}`);
  const lockKey = (hash: string) => store.key(`lock:${hash}`);
  const indexKey = (index: 'sub' | 'client_id', value: string) =>
    store.key(`${index === 'sub' ? 's' : 'c'}:${value}`);

  const parse = (text: string | null | undefined): SharedAnswer | undefined => {
    if (typeof text !== 'string') return undefined;
    try {
      const answer = JSON.parse(text) as SharedAnswer;
      return answer.expiresAt > Date.now() ? answer : undefined;
    } catch {
      return undefined;
    }
  };

  const get = async (hash: string) =>
    parse((await store.run('get', (client) => client.get(tokenKey(hash)))) as string | null);

  return {
    get,
    async lock(hash) {
      const answer = await store.run('lock', (client) =>
        client.set(lockKey(hash), options.replicaId, {
          condition: 'NX',
          expiration: { type: 'PX', value: options.lockMs },
        }),
      );
      if (answer === undefined) return 'unavailable';
      return answer === 'OK' ? 'locked' : 'taken';
    },
    async unlock(hash) {
      await store.run('lock', (client) =>
        client.eval(UNLOCK, { keys: [lockKey(hash)], arguments: [options.replicaId] }),
      );
    },
    async waitFor(hash, deadline) {
      while (Date.now() + POLL_MS < deadline) {
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        const found = await store.run('wait', (client) =>
          client.multi().get(tokenKey(hash)).exists(lockKey(hash)).exec(),
        );
        if (found === undefined) return undefined; // the store went away: ask the server
        const [value, locked] = found as unknown as [string | null, number];
        const answer = parse(value);
        if (answer) return answer;
        if (locked === 0) return undefined; // the holder gave up (the server failed it)
      }
      return undefined;
    },
    async set(hash, answer) {
      const ttl = answer.expiresAt - Date.now();
      if (ttl <= 0) return;
      await store.run('set', (client) => {
        const transaction = client.multi().set(tokenKey(hash), JSON.stringify(answer), {
          expiration: { type: 'PX', value: ttl },
        });
        for (const index of ['sub', 'client_id'] as const) {
          const value = answer.claims?.[index];
          if (typeof value !== 'string' || value === '') continue;
          const key = indexKey(index, value);
          transaction.sAdd(key, hash);
          // The index lives as long as its longest entry.
          transaction.pExpire(key, ttl, 'GT');
          transaction.pExpire(key, ttl, 'NX');
        }
        return transaction.exec();
      });
    },
    async hashesOf(index, value) {
      const members = await store.run('revoke', (client) =>
        client.sMembers(indexKey(index, value)),
      );
      return members === undefined ? undefined : [...members].map(String);
    },
    async remove(hashes, indexes) {
      const deleted = await store.run('revoke', (client) => {
        const transaction = client.multi();
        if (hashes.length > 0) transaction.del(hashes.map(tokenKey));
        for (const [index, value] of indexes) transaction.del(indexKey(index, value));
        return transaction.exec();
      });
      if (deleted === undefined) return undefined;
      return hashes.length > 0 ? Number((deleted as unknown[])[0] ?? 0) : 0;
    },
  };
}
