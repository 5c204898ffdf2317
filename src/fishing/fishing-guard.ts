/**
 * Token-fishing defence (PRODUCT.md "Token fishing"; RFC 7662 §4 warns that an open
 * introspection check lets attackers poll for valid tokens). Each client's failed token
 * presentations are counted in a sliding window; the request after the `max_failures`-th
 * failure starts a block of `block_seconds`, during which every request that needs a token
 * gets 429 and the authorization server is not asked. Successes never reset the count: an
 * attacker holding one valid token must not launder guesses with it.
 *
 * State lives in a bounded LRU, so a flood of spoofed or distinct sources costs at most
 * `max_clients` entries; blocked clients are kept apart (a small map) so eviction from the
 * LRU can never lift a block early.
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

export interface FishingGuard {
  /** Seconds left in the client's block (starting one if it is due), or 0. */
  blockedFor(clientKey: string): number;
  recordFailure(clientKey: string): void;
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

  const unblockExpired = (now: number): void => {
    for (const [key, until] of blocks) {
      if (until > now) continue;
      blocks.delete(key);
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

  return {
    blockedFor(clientKey) {
      const now = nowMs();
      const until = blocks.get(clientKey);
      if (until !== undefined) {
        if (until > now) return Math.max(1, Math.ceil((until - now) / 1000));
        blocks.delete(clientKey);
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
    blockedClients() {
      unblockExpired(nowMs());
      return blocks.size;
    },
    trackedClients: () => failures.size,
    close: () => clearInterval(sweeper),
  };
}
