/**
 * Shields the authorization server, fairly: at most `max_concurrent` introspection calls in
 * flight and at most `max_calls_per_second` started per second (a token bucket with one
 * second of burst). Only uncached tokens spend budget, so tokens already in the cache keep
 * passing whatever happens here.
 *
 * Over budget, a lookup waits its turn instead of failing at once — a cold start (a deploy,
 * a restart, a morning peak) is a burst the server can take a moment later — for at most
 * `introspection.timeout_ms`, then 503. Turns are shared between clients, not between
 * requests: each client with lookups waiting gets the next free call in round-robin order,
 * so a client with many requests in flight cannot starve the others. Clients with recent
 * failed presentations wait in a second line, served only when nobody else waits, and are
 * the first shed when the line is full: under a guessing flood, legitimate clients keep
 * their share of the server.
 */
/**
 * `queue_full`: the waiting line was full; `concurrency` / `rate`: the turn did not come in
 * time, and this limit was the one holding calls back when it ran out; `closed`: the gateway
 * is stopping.
 */
export type BudgetRefusal = 'queue_full' | 'concurrency' | 'rate' | 'closed';

export interface Requester {
  /** The fishing client key: turns are shared per client. */
  clientKey: string;
  /** The client has failed presentations in the window: served last, shed first. */
  suspect: boolean;
  /**
   * What follows the call to the authorization server (the first requester's, when several
   * wait for one call): the request id and a W3C `traceparent`.
   */
  requestId?: string;
  traceparent?: string;
}

export interface IntrospectionBudget {
  /** Resolves with null once a call may start (then `release` it), or why it may not. */
  acquire(requester: Requester, waitMs: number): Promise<BudgetRefusal | null>;
  release(): void;
  /** Lookups waiting for a turn. */
  readonly waiting: number;
  close(): void;
}

interface Waiter {
  resolve(verdict: BudgetRefusal | null): void;
  timer: NodeJS.Timeout;
  line: Line;
  clientKey: string;
}

/** Waiters per client, in round-robin order of the clients (a Map keeps insertion order). */
type Line = Map<string, Waiter[]>;

const GRANTED = Promise.resolve(null);

export function createIntrospectionBudget(options: {
  maxConcurrent: number;
  maxCallsPerSecond: number;
  /** Lookups that may wait at once; beyond it, a suspect waiter is shed or the newcomer refused. */
  maxWaiting?: number;
  nowMs?: () => number;
}): IntrospectionBudget {
  const nowMs = options.nowMs ?? Date.now;
  const maxWaiting = options.maxWaiting ?? Math.max(1024, options.maxConcurrent * 32);
  let inFlight = 0;
  let tokens = options.maxCallsPerSecond;
  let refilledAt = nowMs();
  let waiting = 0;
  let refillTimer: NodeJS.Timeout | undefined;
  const normal: Line = new Map();
  const suspects: Line = new Map();

  const take = (): boolean => {
    if (inFlight >= options.maxConcurrent) return false;
    const now = nowMs();
    tokens = Math.min(
      options.maxCallsPerSecond,
      tokens + ((now - refilledAt) / 1000) * options.maxCallsPerSecond,
    );
    refilledAt = now;
    if (tokens < 1) return false;
    tokens -= 1;
    inFlight += 1;
    return true;
  };

  const remove = (waiter: Waiter): void => {
    const queue = waiter.line.get(waiter.clientKey);
    if (!queue) return;
    const at = queue.indexOf(waiter);
    if (at === -1) return;
    queue.splice(at, 1);
    if (queue.length === 0) waiter.line.delete(waiter.clientKey);
    waiting -= 1;
  };

  /** The next waiter: the first client in line gives up its oldest, then goes to the back. */
  const next = (line: Line): Waiter | undefined => {
    for (const [clientKey, queue] of line) {
      const waiter = queue.shift() as Waiter;
      line.delete(clientKey);
      if (queue.length > 0) line.set(clientKey, queue);
      waiting -= 1;
      return waiter;
    }
    return undefined;
  };

  const dispatch = (): void => {
    while (waiting > 0 && take()) {
      const waiter = next(normal) ?? next(suspects);
      if (!waiter) break;
      clearTimeout(waiter.timer);
      waiter.resolve(null);
    }
    // Waiting on the rate, not on a call to end: wake when the next token is due.
    if (waiting > 0 && inFlight < options.maxConcurrent && refillTimer === undefined) {
      const dueMs = Math.max(1, Math.ceil(((1 - tokens) / options.maxCallsPerSecond) * 1000));
      refillTimer = setTimeout(() => {
        refillTimer = undefined;
        dispatch();
      }, dueMs);
    }
  };

  const shedOneSuspect = (): boolean => {
    const waiter = next(suspects);
    if (!waiter) return false;
    clearTimeout(waiter.timer);
    waiter.resolve('queue_full');
    return true;
  };

  return {
    acquire(requester, waitMs) {
      if (waiting === 0 && take()) return GRANTED;
      if (waiting >= maxWaiting && (requester.suspect || !shedOneSuspect())) {
        return Promise.resolve('queue_full');
      }
      const line = requester.suspect ? suspects : normal;
      return new Promise((resolve) => {
        const waiter: Waiter = {
          resolve,
          line,
          clientKey: requester.clientKey,
          timer: setTimeout(() => {
            remove(waiter);
            resolve(inFlight >= options.maxConcurrent ? 'concurrency' : 'rate');
          }, waitMs),
        };
        const queue = line.get(requester.clientKey);
        if (queue) queue.push(waiter);
        else line.set(requester.clientKey, [waiter]);
        waiting += 1;
        dispatch();
      });
    },
    release() {
      inFlight -= 1;
      dispatch();
    },
    get waiting() {
      return waiting;
    },
    close() {
      clearTimeout(refillTimer);
      for (const line of [normal, suspects]) {
        for (const queue of line.values()) {
          for (const waiter of queue) {
            clearTimeout(waiter.timer);
            waiter.resolve('closed');
          }
        }
        line.clear();
      }
      waiting = 0;
    },
  };
}
