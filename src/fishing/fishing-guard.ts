/**
 * Token-fishing defence (PRODUCT.md "Token fishing"; RFC 7662 §4 warns that an open
 * introspection check lets attackers poll for valid tokens). Each client's failed token
 * presentations are counted in a sliding window; the request after the `max_failures`-th
 * failure starts a block of `block_seconds`, during which every request that needs a token
 * gets 429 and the authorization server is not asked. Successes never reset the count: an
 * attacker holding one valid token must not launder guesses with it.
 *
 * Concurrency never multiplies guesses: a client's uncached introspections in flight count
 * against what is left of its budget (`admit` before the call, `release` once its outcome
 * is recorded). Checking the block before the call and counting the failure after it would
 * let 100 parallel connections, or 40 pipelined requests, all pass the check before the
 * first failure lands; with admission, a client makes at most `max_failures` calls per
 * window whatever its concurrency, and never holds more introspection slots than that.
 * Requests beyond its budget wait their turn (bounded), then 503; once the block starts,
 * every waiter gets 429.
 *
 * State lives in a bounded LRU, so a flood of spoofed or distinct sources costs at most
 * `max_clients` entries; blocked clients are kept apart (a small map) so eviction from the
 * LRU can never lift a block early. In-flight admissions are kept apart too: each belongs
 * to a request still running, so they are bounded by the connections the server holds.
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';

export interface FishingGuardOptions {
  windowSeconds: number;
  maxFailures: number;
  blockSeconds: number;
  maxClients: number;
  logger: Logger;
  nowMs?: () => number;
}

/** `admit`'s verdict: go ahead (then `release`), blocked (429), or no turn in time (503). */
export type Admission = 'admitted' | 'blocked' | 'timeout';

export interface FishingGuard {
  /** Seconds left in the client's block (starting one if it is due), or 0. */
  blockedFor(clientKey: string): number;
  recordFailure(clientKey: string): void;
  /**
   * Reserves one uncached introspection for the client: at once while its failures in the
   * window plus its admissions in flight stay under `max_failures`, else when an admission
   * ends and leaves room, at most `waitMs` later. An `admitted` caller must `release` once
   * the request's failure (if any) has been recorded.
   */
  admit(clientKey: string, waitMs: number): Promise<Admission>;
  release(clientKey: string): void;
  /** Admissions in flight for the client (0 when none). */
  inFlight(clientKey: string): number;
  /** The client's failed presentations in the window. */
  failures(clientKey: string): number;
  /**
   * Counts a refusal of a blocked client; true once it gets more than a few per second — a
   * client hammering through its block, whose answers are then held back (the tarpit).
   */
  hammering(clientKey: string): boolean;
  /** Applies a block decided elsewhere (fleet mode: another replica saw the failures). */
  blockUntil(clientKey: string, untilMs: number): void;
  blockedClients(): number;
  trackedClients(): number;
  close(): void;
}

export function createFishingGuard(options: FishingGuardOptions): FishingGuard {
  const nowMs = options.nowMs ?? Date.now;
  const windowMs = options.windowSeconds * 1000;
  /** Failure timestamps per client, oldest first, at most max_failures kept. */
  const failures = new LRUCache<string, number[]>({ max: options.maxClients });
  /** Block end per blocked client; bounded too — by the same budget. */
  const blocks = new Map<string, number>();
  /** Refusals per blocked client in the current second (cleared with the block). */
  const refusals = new Map<string, { second: number; count: number }>();
  /** Admissions in flight and requests waiting for one, per client that has any. */
  const pending = new Map<string, Pending>();

  const unblockExpired = (now: number): void => {
    for (const [key, until] of blocks) {
      if (until > now) continue;
      blocks.delete(key);
      refusals.delete(key);
      options.logger.info({ event: 'fishing_unblock', client: key }, 'client unblocked');
    }
  };
  // Unblocks are logged promptly even when the client never comes back.
  const sweeper = setInterval(() => unblockExpired(nowMs()), 1000);
  sweeper.unref();

  const recentFailures = (key: string, now: number): number[] | undefined => {
    const list = failures.get(key);
    if (!list) return undefined;
    while (list.length > 0 && (list[0] as number) <= now - windowMs) list.shift();
    return list;
  };

  const failureCount = (key: string, now: number): number => recentFailures(key, now)?.length ?? 0;

  /** Hands free budget to waiters in arrival order; all of them learn of a block. */
  const wakeWaiters = (key: string, entry: Pending): void => {
    while (entry.waiters.length > 0) {
      const now = nowMs();
      if (guard.blockedFor(key) > 0) {
        for (const waiter of entry.waiters.splice(0)) waiter.settle('blocked');
        break;
      }
      if (failureCount(key, now) + entry.inFlight >= options.maxFailures) break;
      entry.inFlight += 1;
      (entry.waiters.shift() as Waiter).settle('admitted');
    }
    if (entry.inFlight === 0 && entry.waiters.length === 0) pending.delete(key);
  };

  const guard: FishingGuard = {
    blockedFor(clientKey) {
      const now = nowMs();
      const until = blocks.get(clientKey);
      if (until !== undefined) {
        if (until > now) return Math.max(1, Math.ceil((until - now) / 1000));
        blocks.delete(clientKey);
        refusals.delete(clientKey);
        options.logger.info({ event: 'fishing_unblock', client: clientKey }, 'client unblocked');
      }
      const list = recentFailures(clientKey, now);
      if (!list || list.length < options.maxFailures) return 0;
      if (blocks.size >= options.maxClients) unblockExpired(now);
      if (blocks.size >= options.maxClients) {
        // Still full: the oldest block gives way (bounded memory beats a perfect memory).
        const oldest = blocks.keys().next().value;
        if (oldest !== undefined) blocks.delete(oldest);
      }
      blocks.set(clientKey, now + options.blockSeconds * 1000);
      failures.delete(clientKey);
      options.logger.warn(
        {
          event: 'fishing_block',
          client: clientKey,
          failures: list.length,
          window_seconds: options.windowSeconds,
          block_seconds: options.blockSeconds,
        },
        'client blocked for token fishing',
      );
      return options.blockSeconds;
    },
    recordFailure(clientKey) {
      const now = nowMs();
      const list = recentFailures(clientKey, now) ?? [];
      list.push(now);
      if (list.length > options.maxFailures) list.shift();
      failures.set(clientKey, list);
    },
    admit(clientKey, waitMs) {
      if (guard.blockedFor(clientKey) > 0) return Promise.resolve('blocked');
      let entry = pending.get(clientKey);
      if (!entry) {
        entry = { inFlight: 0, waiters: [] };
        pending.set(clientKey, entry);
      }
      if (
        entry.waiters.length === 0 &&
        failureCount(clientKey, nowMs()) + entry.inFlight < options.maxFailures
      ) {
        entry.inFlight += 1;
        return Promise.resolve('admitted');
      }
      const queue = entry;
      return new Promise<Admission>((resolve) => {
        const waiter: Waiter = {
          settle(admission) {
            clearTimeout(timer);
            resolve(admission);
          },
        };
        const timer = setTimeout(() => {
          const at = queue.waiters.indexOf(waiter);
          if (at !== -1) queue.waiters.splice(at, 1);
          if (queue.inFlight === 0 && queue.waiters.length === 0) pending.delete(clientKey);
          resolve('timeout');
        }, waitMs);
        queue.waiters.push(waiter);
      });
    },
    release(clientKey) {
      const entry = pending.get(clientKey);
      if (!entry || entry.inFlight === 0) return;
      entry.inFlight -= 1;
      wakeWaiters(clientKey, entry);
    },
    inFlight: (clientKey) => pending.get(clientKey)?.inFlight ?? 0,
    failures: (clientKey) => failureCount(clientKey, nowMs()),
    blockUntil(clientKey, untilMs) {
      const known = blocks.get(clientKey);
      if (untilMs <= nowMs() || (known !== undefined && known >= untilMs)) return;
      if (known === undefined) {
        options.logger.warn(
          {
            event: 'fishing_block',
            client: clientKey,
            fleet: true,
            block_seconds: options.blockSeconds,
          },
          'client blocked for token fishing (fleet)',
        );
      }
      blocks.set(clientKey, untilMs);
      failures.delete(clientKey);
      const entry = pending.get(clientKey);
      if (entry) wakeWaiters(clientKey, entry);
    },
    hammering(clientKey) {
      if (!blocks.has(clientKey)) return false;
      const second = Math.floor(nowMs() / 1000);
      const seen = refusals.get(clientKey);
      if (!seen || seen.second !== second) {
        refusals.set(clientKey, { second, count: 1 });
        return false;
      }
      seen.count += 1;
      return seen.count > HAMMERING_PER_SECOND;
    },
    blockedClients() {
      unblockExpired(nowMs());
      return blocks.size;
    },
    trackedClients: () => failures.size,
    close() {
      clearInterval(sweeper);
      for (const entry of pending.values()) {
        for (const waiter of entry.waiters.splice(0)) waiter.settle('timeout');
      }
      pending.clear();
    },
  };
  return guard;
}

/** Refusals per second a blocked client gets at once; the ones beyond are held back. */
const HAMMERING_PER_SECOND = 10;

interface Waiter {
  settle(admission: Admission): void;
}

interface Pending {
  inFlight: number;
  waiters: Waiter[];
}
