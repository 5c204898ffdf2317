/**
 * Fleet mode (PRODUCT.md "Fleet mode", docs/shared-mode.md): the replicas sharing a Redis and
 * a `key_prefix` share the second cache level with one introspection per token, fishing
 * counts and blocks, the authorization server's budget, and revocations. This module wires
 * the pieces and the event channel; each piece falls back to the replica's own state the
 * moment Redis does not answer.
 */
import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { GatewayMetrics } from '../metrics/metrics.js';
import { createFleetBudget, type FleetBudget } from './fleet-budget.js';
import { createFleetFishing, type FleetFishing } from './fleet-fishing.js';
import { createSharedCache, type SharedCache } from './shared-cache.js';
import { createSharedStore, type SharedStore } from './store.js';

/** What a revocation names; every replica evicts what matches. */
export interface RevocationEvent {
  type: 'revoke';
  hashes: string[];
  subs: string[];
  clientIds: string[];
  /** Epoch ms: answers from introspections started before it are not to be cached. */
  at: number;
}

export interface BlockEvent {
  type: 'block';
  client: string;
  until: number;
}

export interface FleetHandlers {
  /** Evict what the revocation names from the local cache. */
  revoke(event: RevocationEvent): void;
  /** Refuse the client from memory until `until`. */
  block(clientKey: string, until: number): void;
  /** Events may have been missed: drop every local copy a missed revocation could concern. */
  eventsLost(): void;
}

export interface Fleet {
  readonly store: SharedStore;
  readonly cache: SharedCache;
  readonly fishing: FleetFishing;
  readonly budget: FleetBudget;
  readonly replicaId: string;
  /** True when a revocation since `startedAt` names the token, its sub or its client_id. */
  revokedSince(
    startedAt: number,
    hash: string,
    claims: Record<string, unknown> | undefined,
  ): boolean;
  /** Records a revocation (this replica's own, or one it was told of). */
  noteRevocation(event: RevocationEvent): void;
  /** Tells every replica (this one included); false when Redis did not take it. */
  publish(event: RevocationEvent): Promise<boolean>;
  start(handlers: FleetHandlers): void;
  close(): Promise<void>;
}

export function createFleet(config: Config, metrics: GatewayMetrics, logger: Logger): Fleet {
  const shared = config.shared;
  if (!shared) throw new Error('createFleet without shared config');
  const replicaId = randomUUID();
  const store = createSharedStore(shared, metrics, logger);
  const introspectionMs = config.introspection.timeout_ms;
  const cache = createSharedCache(store, { lockMs: introspectionMs + 500, replicaId });
  const fishing = createFleetFishing(store, {
    windowSeconds: config.fishing.window_seconds,
    maxFailures: config.fishing.max_failures,
    blockSeconds: config.fishing.block_seconds,
    inFlightTtlMs: introspectionMs * 2,
    replicaId,
  });
  const budget = createFleetBudget(store, {
    callsPerSecond: config.introspection.max_calls_per_second,
    timeoutMs: introspectionMs,
  });
  // Revocations remembered as long as an entry they concern could live.
  const revoked = new LRUCache<string, number>({
    max: 100_000,
    ttl: Math.max(1, config.cache.max_ttl_seconds) * 1000,
  });
  const later = (key: string, at: number) => {
    const known = revoked.get(key);
    if (known === undefined || known < at) revoked.set(key, at);
  };

  return {
    store,
    cache,
    fishing,
    budget,
    replicaId,
    revokedSince(startedAt, hash, claims) {
      const names = [`h:${hash}`];
      if (typeof claims?.sub === 'string') names.push(`s:${claims.sub}`);
      if (typeof claims?.client_id === 'string') names.push(`c:${claims.client_id}`);
      return names.some((name) => (revoked.get(name) ?? -Infinity) >= startedAt);
    },
    noteRevocation(event) {
      for (const hash of event.hashes) later(`h:${hash}`, event.at);
      for (const sub of event.subs) later(`s:${sub}`, event.at);
      for (const clientId of event.clientIds) later(`c:${clientId}`, event.at);
    },
    start(handlers) {
      store.onEvent((event) => {
        if (event.type === 'revoke') {
          const revocation = event as unknown as RevocationEvent;
          if (!Array.isArray(revocation.hashes) || typeof revocation.at !== 'number') return;
          this.noteRevocation(revocation);
          handlers.revoke(revocation);
        } else if (event.type === 'block') {
          const block = event as unknown as BlockEvent;
          if (typeof block.client === 'string' && typeof block.until === 'number') {
            handlers.block(block.client, block.until);
          }
        }
      });
      store.onEventsLost(() => {
        logger.warn(
          { event: 'shared_events_lost' },
          'shared store: event channel lost; local cache dropped (revocations may have been missed)',
        );
        handlers.eventsLost();
      });
      store.start();
    },
    publish: (event) => store.publish(event),
    close: () => store.close(),
  };
}
