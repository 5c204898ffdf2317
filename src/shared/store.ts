/**
 * The fleet's shared store: one node-redis client (RESP3) for commands and one for the
 * event channel, both failing fast. Nothing on the request path ever waits on a dead or
 * slow Redis: commands are never queued while the connection is down (disableOfflineQueue),
 * each has `shared.timeout_ms`, and an error or a timeout makes `run` answer `undefined` at
 * once — the caller then does what a single replica does (PRODUCT.md "Fleet mode": fall back
 * to local state, stay ready, fail closed). The client reconnects by itself; the
 * `tokenguard_shared_store_up` gauge follows it.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type * as NodeRedis from 'redis';
import type { RedisClientType } from 'redis';
import type { SharedConfig } from '../config/schema.js';
import type { GatewayMetrics } from '../metrics/metrics.js';

/** Synchronous loading of the fleet's CommonJS dependencies, when fleet mode is on. */
export const loadModule = createRequire(import.meta.url);

export type SharedOp =
  'get' | 'set' | 'lock' | 'wait' | 'fishing' | 'budget' | 'revoke' | 'publish';

export const SHARED_OPS: readonly SharedOp[] = [
  'get',
  'set',
  'lock',
  'wait',
  'fishing',
  'budget',
  'revoke',
  'publish',
];

export type Redis = RedisClientType;

/** How long the store stays down, once tripped, before the next attempt. */
const BACKOFF_MS = 1000;
/**
 * Timeouts in a row that trip the store. One slow answer (a GC pause, a busy core) costs only
 * its own request a fallback; a Redis that hangs trips it after a few, and then costs nothing.
 */
const TRIP_AFTER = 3;

export interface SharedStore {
  /** Both connections are ready: shared state is in use. */
  readonly up: boolean;
  /** `key_prefix` + name. */
  key(name: string): string;
  /** The command client (commands time out after `timeout_ms`), for rate-limiter-flexible. */
  readonly client: Redis;
  /** Bounds an operation made through `client` by `timeout_ms` (counted as `op` when it fails). */
  deadline<T>(op: SharedOp, pending: Promise<T>): Promise<T>;
  /** Runs `command` if the store is up; its answer, or undefined on any error or timeout. */
  run<T>(op: SharedOp, command: (client: Redis) => Promise<T>): Promise<T | undefined>;
  /** Publishes an event to every replica of the fleet (this one included). */
  publish(event: object): Promise<boolean>;
  /** Told of every event; and, with `lost`, whenever events may have been missed. */
  onEvent(handler: (event: Record<string, unknown>) => void): void;
  onEventsLost(handler: () => void): void;
  /** Connects in the background; resolves at once. */
  start(): void;
  close(): Promise<void>;
}

export function createSharedStore(
  config: SharedConfig,
  metrics: GatewayMetrics,
  logger: Logger,
): SharedStore {
  const { redis } = config;
  const url = new URL(redis.url);
  const prefix = redis.key_prefix;
  const channel = `${prefix}events`;
  const tls = url.protocol === 'rediss:';
  const socket = {
    connectTimeout: Math.max(1000, redis.timeout_ms * 10),
    // Reconnect quickly, then every 2 s: a replica recovers by itself when Redis returns.
    reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 2000),
    ...(tls
      ? {
          tls: true as const,
          servername: url.hostname,
          ...(redis.tls_ca_file ? { ca: readFileSync(redis.tls_ca_file) } : {}),
        }
      : {}),
  };
  const options = {
    url: redis.url,
    RESP: 3 as const,
    disableOfflineQueue: true,
    // node-redis's own command timeout (5 s by default) bounds only the wait to be written, and
    // costs an AbortSignal.timeout per command that lives its full 5 s: 12,000 live timers and
    // 10 MB of old-generation garbage after 2000 cache misses. Deadlines are withDeadline's.
    commandOptions: { timeout: 0 },
    socket,
    ...(redis.username !== undefined ? { username: redis.username } : {}),
    ...(redis.password !== undefined ? { password: redis.password } : {}),
  };
  // Loaded here, in fleet mode only: node-redis and rate-limiter-flexible cost a single
  // replica ~20 MiB of resident memory for nothing.
  const { createClient } = loadModule('redis') as typeof NodeRedis;
  const base = createClient(options) as unknown as Redis;
  const subscriber = base.duplicate() as unknown as Redis;
  const eventHandlers: Array<(event: Record<string, unknown>) => void> = [];
  const lostHandlers: Array<() => void> = [];
  let subscribed = false;
  let closed = false;

  const upGauge = metrics.sharedStoreUp;
  /**
   * After a connection error, or `TRIP_AFTER` timeouts in a row, the store counts as down for
   * a moment: a Redis that hangs (connected, silent) costs the next misses nothing instead of
   * `timeout_ms` each.
   */
  let downUntil = 0;
  let timeoutsInARow = 0;
  const isUp = () => base.isReady && subscriber.isReady && subscribed && Date.now() >= downUntil;
  upGauge.set(0);

  let lastErrorLog = 0;
  const logError = (what: string, error: unknown) => {
    // Once a second at most: a dead Redis must not flood the logs.
    const now = Date.now();
    if (now - lastErrorLog < 1000) return;
    lastErrorLog = now;
    logger.warn(
      { event: 'shared_store_error', what, code: (error as { code?: string }).code },
      `shared store: ${(error as Error).message ?? String(error)}`,
    );
  };
  for (const [name, client] of [
    ['commands', base],
    ['events', subscriber],
  ] as const) {
    client.on('error', (error: unknown) => logError(name, error));
    client.on('ready', () => upGauge.set(isUp() ? 1 : 0));
    client.on('end', () => upGauge.set(0));
    client.on('reconnecting', () => {
      upGauge.set(0);
      if (client === subscriber && subscribed) {
        subscribed = false;
        // Pub/sub is at-most-once: what was published meanwhile is lost.
        for (const handler of lostHandlers) handler();
      }
    });
  }
  subscriber.on('ready', () => {
    if (closed) return;
    void subscriber
      .subscribe(channel, (message: string) => {
        let event: Record<string, unknown>;
        try {
          event = JSON.parse(message) as Record<string, unknown>;
        } catch {
          return;
        }
        for (const handler of eventHandlers) handler(event);
      })
      .then(
        () => {
          subscribed = true;
          upGauge.set(isUp() ? 1 : 0);
          logger.info({ event: 'shared_store_up' }, 'shared store connected');
        },
        (error: unknown) => logError('subscribe', error),
      );
  });

  const errors = metrics.sharedStoreErrors;
  const duration = metrics.sharedStoreDuration;
  /**
   * `timeout_ms` on every command, enforced here: a Redis that is connected but silent
   * (paused, swapping, partitioned without a reset) never answers, and node-redis gives a
   * written command no deadline of its own.
   */
  const withDeadline = <T>(pending: Promise<T>): Promise<T> => {
    pending.catch(() => undefined); // a late answer or error after the deadline is dropped
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        // Timers run before I/O in a turn of the event loop: after a stall (GC, a burst of
        // work) the answer may be read already but not yet handled. setImmediate runs after
        // that I/O, so only an answer that truly did not come counts as a timeout.
        setImmediate(() =>
          reject(Object.assign(new Error('shared store timed out'), { code: 'ETIMEDOUT' })),
        );
      }, redis.timeout_ms);
    });
    return Promise.race([pending, deadline]).finally(() => clearTimeout(timer));
  };
  const failed = (op: SharedOp, error: unknown) => {
    errors.inc({ op });
    logError(op, error);
    const timedOut = (error as { code?: string }).code === 'ETIMEDOUT';
    if (timedOut && ++timeoutsInARow < TRIP_AFTER) return;
    timeoutsInARow = 0;
    downUntil = Date.now() + BACKOFF_MS;
    upGauge.set(0);
    setTimeout(() => upGauge.set(isUp() ? 1 : 0), BACKOFF_MS + 10).unref();
  };

  return {
    get up() {
      return isUp();
    },
    key: (name) => prefix + name,
    client: base,
    async run(op, command) {
      if (!isUp()) return undefined;
      const started = performance.now();
      try {
        const answer = await withDeadline(command(base));
        timeoutsInARow = 0;
        duration.observe({ op }, (performance.now() - started) / 1000);
        return answer;
      } catch (error) {
        failed(op, error);
        return undefined;
      }
    },
    async publish(event) {
      if (!isUp()) return false;
      try {
        await withDeadline(base.publish(channel, JSON.stringify(event)));
        timeoutsInARow = 0;
        return true;
      } catch (error) {
        failed('publish', error);
        return false;
      }
    },
    async deadline(op, pending) {
      try {
        const answer = await withDeadline(pending);
        timeoutsInARow = 0;
        return answer;
      } catch (error) {
        // Only errors are failures: a rate limiter's "over the limit" answer is an answer.
        if (error instanceof Error) failed(op, error);
        throw error;
      }
    },
    onEvent: (handler) => eventHandlers.push(handler),
    onEventsLost: (handler) => lostHandlers.push(handler),
    start() {
      for (const client of [base, subscriber]) {
        client.connect().catch((error: unknown) => logError('connect', error));
      }
    },
    async close() {
      closed = true;
      upGauge.set(0);
      await Promise.allSettled([base.close(), subscriber.close()]);
    },
  };
}
