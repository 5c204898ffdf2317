/**
 * Introspection results, cached by the SHA-256 of the token (never the token itself: a heap
 * dump or a debug listing of the cache must not hand out credentials — unlike Oathkeeper,
 * which keys by the raw token). An active answer lives min(max_ttl, exp − now); an inactive
 * one lives negative_ttl, which is what keeps a token-guessing flood off the authorization
 * server. Concurrent lookups of one uncached token share a single introspection call.
 * Errors are never cached: the next request asks again.
 *
 * Active and negative answers live in two LRUs, each bounded on its own: a flood of distinct
 * bad tokens only ever evicts other bad tokens, never a real user's active answer (which
 * would send every real user back to the authorization server after the flood). A negative
 * entry is one shared object; an active one keeps only what the checks and the identity
 * headers need (see service.ts).
 */
import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Claims } from '../introspection/client.js';
import type { IdentityHeaders } from '../proxy/identity-headers.js';
import type { GrantedScopes } from '../policy/scopes.js';

export type CacheEntry =
  | { active: false }
  | {
      active: true;
      claims: Claims;
      scopes: GrantedScopes;
      identityHeaders: IdentityHeaders;
      /** Learnt from the fleet's shared cache (dropped if revocation events may have been missed). */
      fromFleet?: true;
    };

/**
 * `stale`: a miss whose call failed, answered from an active entry past its TTL but within
 * `stale_if_error` (counted as a miss too, when it was decided).
 */
export type CacheResult = 'hit' | 'negative_hit' | 'miss' | 'coalesced' | 'stale';

export interface CacheLookup {
  entry: CacheEntry;
  result: CacheResult;
}

export interface TokenCacheOptions<Requester = unknown> {
  maxEntries: number;
  /** Bound of the negative LRU (default: maxEntries). */
  maxNegativeEntries?: number;
  maxTtlSeconds: number;
  negativeTtlSeconds: number;
  /**
   * Produces the entry on a miss (the introspection call, or the fleet's shared cache), for
   * the first requester; `ttlMs` overrides the TTL the rules give (an answer learnt from the
   * fleet keeps its remaining lifetime; 0: do not cache it).
   */
  load: (token: string, key: string, requester: Requester | undefined) => Promise<Loaded>;
  /** Told of every lookup as it is decided (before a miss's call ends, even if it fails). */
  onLookup?: (result: CacheResult) => void;
  /**
   * How long past its TTL an active entry may still answer a lookup whose load failed with
   * an error `staleOnError` accepts (the authorization server failing, the budget refusing);
   * 0 (default): never. Never past the token's `exp`; a deleted (revoked) entry is gone.
   */
  staleIfErrorSeconds?: number;
  staleOnError?: (error: unknown) => boolean;
  nowSeconds?: () => number;
}

export interface Loaded {
  entry: CacheEntry;
  ttlMs?: number | undefined;
}

/** The one negative entry every inactive answer shares. */
export const INACTIVE: CacheEntry = Object.freeze({ active: false });

export interface TokenCache<Requester = unknown> {
  lookup(token: string, key?: string, requester?: Requester): Promise<CacheLookup>;
  /** A lookup of `key` now would not call `load`: cached (and fresh), or loading already. */
  has(key: string): boolean;
  /** The fresh cached entry, synchronously, without counting a lookup; undefined if none. */
  peek(key: string): CacheEntry | undefined;
  /** Evicts the token's entry; true if there was one. */
  delete(key: string): boolean;
  /** Evicts every active entry `matches`; how many. */
  deleteWhere(matches: (entry: CacheEntry) => boolean): number;
  /** The TTL the rules give an entry (min(max_ttl, exp − now), or negative_ttl). */
  ttlMs(entry: CacheEntry): number;
  /** Active and negative entries together. */
  readonly size: number;
  readonly activeSize: number;
  readonly negativeSize: number;
  clear(): void;
}

/** The cache key, and the basis of the log fingerprint: SHA-256, base64url. */
export function tokenHash(token: string): string {
  // One-shot hashing: no Hash object per request.
  return hash('sha256', token, 'base64url');
}

export function createTokenCache<Requester = unknown>(
  options: TokenCacheOptions<Requester>,
): TokenCache<Requester> {
  const nowSeconds = options.nowSeconds ?? (() => Date.now() / 1000);
  const staleMs = (options.staleIfErrorSeconds ?? 0) * 1000;
  const active = new LRUCache<string, CacheEntry>({
    max: options.maxEntries,
    ttlAutopurge: false,
    // With stale-if-error on, an expired entry stays (unseen by get, has and peek) until the
    // LRU evicts it or a fresh answer replaces it.
    noDeleteOnStaleGet: staleMs > 0,
  });
  const negative = new LRUCache<string, CacheEntry>({
    max: options.maxNegativeEntries ?? options.maxEntries,
    ttlAutopurge: false,
  });
  const get = (key: string): CacheEntry | undefined => active.get(key) ?? negative.get(key);
  const inFlight = new Map<string, Promise<Loaded>>();
  const onLookup = options.onLookup ?? (() => undefined);

  const ttlMs = (entry: CacheEntry): number => {
    if (!entry.active) return options.negativeTtlSeconds * 1000;
    const exp = entry.claims.exp as number | undefined;
    const untilExp = exp === undefined ? Infinity : exp - nowSeconds();
    return Math.floor(Math.min(options.maxTtlSeconds, untilExp) * 1000);
  };

  /** The entry past its TTL that may stand in for a failed load, or undefined. */
  const staleStandIn = (key: string, error: unknown): CacheEntry | undefined => {
    if (staleMs === 0 || !(options.staleOnError?.(error) ?? false)) return undefined;
    const entry = active.get(key, { allowStale: true });
    if (entry === undefined || !entry.active) return undefined;
    // getRemainingTTL is negative by how long the entry has been stale.
    if (-active.getRemainingTTL(key) > staleMs) return undefined;
    const exp = entry.claims.exp as number | undefined;
    if (exp !== undefined && exp <= nowSeconds()) return undefined;
    onLookup('stale');
    return entry;
  };

  return {
    async lookup(token, key = tokenHash(token), requester) {
      const cached = get(key);
      if (cached) {
        const result = cached.active ? 'hit' : 'negative_hit';
        onLookup(result);
        return { entry: cached, result };
      }
      const pending = inFlight.get(key);
      if (pending) {
        onLookup('coalesced');
        try {
          return { entry: (await pending).entry, result: 'coalesced' };
        } catch (error) {
          const stale = staleStandIn(key, error);
          if (stale === undefined) throw error;
          return { entry: stale, result: 'stale' };
        }
      }
      onLookup('miss');
      const loading = options.load(token, key, requester);
      inFlight.set(key, loading);
      try {
        const { entry, ttlMs: override } = await loading;
        const ttl = Math.min(override ?? Infinity, ttlMs(entry));
        if (ttl > 0) (entry.active ? active : negative).set(key, entry, { ttl });
        // An inactive answer ends any stale copy's standing.
        if (!entry.active) active.delete(key);
        return { entry, result: 'miss' };
      } catch (error) {
        const stale = staleStandIn(key, error);
        if (stale === undefined) throw error;
        return { entry: stale, result: 'stale' };
      } finally {
        inFlight.delete(key);
      }
    },
    has: (key) => active.has(key) || negative.has(key) || inFlight.has(key),
    delete: (key) => active.delete(key) || negative.delete(key),
    deleteWhere(matches) {
      const doomed: string[] = [];
      if (staleMs > 0) {
        // Entries past their TTL too: a revoked token must not come back as a stale answer.
        for (const [key, { value }] of active.dump()) if (matches(value)) doomed.push(key);
      } else {
        for (const [key, entry] of active.entries()) if (matches(entry)) doomed.push(key);
      }
      for (const key of doomed) active.delete(key);
      return doomed.length;
    },
    ttlMs,
    peek: get,
    get size() {
      return active.size + negative.size;
    },
    get activeSize() {
      return active.size;
    },
    get negativeSize() {
      return negative.size;
    },
    clear() {
      active.clear();
      negative.clear();
    },
  };
}
