/**
 * Shields the authorization server: at most `max_concurrent` introspection calls in flight
 * and at most `max_calls_per_second` started per second (a token bucket with one second of
 * burst). Only uncached tokens spend budget, so when a distributed guessing attack drains
 * it, tokens already in the cache keep passing while unknown ones get 503.
 */
export interface IntrospectionBudget {
  /** Takes a slot, or returns why none is free. */
  tryAcquire(): null | 'concurrency' | 'rate';
  release(): void;
}

export function createIntrospectionBudget(options: {
  maxConcurrent: number;
  maxCallsPerSecond: number;
  nowMs?: () => number;
}): IntrospectionBudget {
  const nowMs = options.nowMs ?? Date.now;
  let inFlight = 0;
  let tokens = options.maxCallsPerSecond;
  let refilledAt = nowMs();
  return {
    tryAcquire() {
      if (inFlight >= options.maxConcurrent) return 'concurrency';
      const now = nowMs();
      tokens = Math.min(
        options.maxCallsPerSecond,
        tokens + ((now - refilledAt) / 1000) * options.maxCallsPerSecond,
      );
      refilledAt = now;
      if (tokens < 1) return 'rate';
      tokens -= 1;
      inFlight += 1;
      return null;
    },
    release() {
      inFlight -= 1;
    },
  };
}
