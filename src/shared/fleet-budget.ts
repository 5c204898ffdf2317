/**
 * `introspection.max_calls_per_second` for the fleet, not per replica: a fixed one-second
 * window in Redis (rate-limiter-flexible's RateLimiterRedis on node-redis), consulted after
 * the replica's own fair queue has granted a turn. Over the fleet's budget, the call waits
 * for the next window, bounded by the caller's deadline. Redis away: the replica's own
 * budget alone applies (each replica then allows the whole rate on its own).
 */
import type * as RateLimiterFlexible from 'rate-limiter-flexible';
import { loadModule, type SharedStore } from './store.js';

export interface FleetBudget {
  /** Resolves true once the fleet allows one more call (or Redis is away), false at the deadline. */
  take(deadline: number): Promise<boolean>;
}

export function createFleetBudget(
  store: SharedStore,
  options: { callsPerSecond: number; timeoutMs: number },
): FleetBudget {
  const { RateLimiterRedis, RateLimiterRes } = loadModule(
    'rate-limiter-flexible',
  ) as typeof RateLimiterFlexible;
  const limiter = new RateLimiterRedis({
    storeClient: store.client,
    useRedisPackage: true,
    rejectIfRedisNotReady: true,
    keyPrefix: store.key('budget'),
    points: options.callsPerSecond,
    duration: 1,
  });
  return {
    async take(deadline) {
      for (;;) {
        if (!store.up) return true;
        let wait: number;
        try {
          await store.deadline('budget', limiter.consume('introspection', 1));
          return true;
        } catch (error) {
          if (!(error instanceof RateLimiterRes)) return true; // Redis trouble: local budget only
          wait = error.msBeforeNext;
        }
        if (Date.now() + wait >= deadline) return false;
        await new Promise((resolve) => setTimeout(resolve, Math.max(5, wait)));
      }
    },
  };
}
