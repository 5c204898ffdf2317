/**
 * Revocation push (PRODUCT.md "Fleet mode"): `POST /admin/revoke` names tokens (their
 * SHA-256, or the raw tokens — hashed at once, never kept or logged), subjects or client ids;
 * every replica evicts the matching entries from its local cache, and the shared cache loses
 * them too, so their next request is introspected afresh and the authorization server
 * decides. A revoked subject's tokens found through the fleet's index (`sub` → hashes) are
 * evicted exactly; the local cache is searched by its entries' claims. An introspection
 * already under way when the revocation arrives is served but never remembered.
 *
 * Authorization: `Bearer <admin.revoke_token>`, compared in constant time (SHA-256 of both
 * sides, so the lengths leak nothing either).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { tokenHash, type TokenCache } from '../cache/token-cache.js';
import type { GatewayMetrics } from '../metrics/metrics.js';
import type { Fleet, RevocationEvent } from '../shared/fleet.js';

export interface RevocationRequest {
  token_hashes?: string[];
  tokens?: string[];
  sub?: string | string[];
  client_id?: string | string[];
}

export type RevocationOutcome =
  | { status: 200; revoked: number }
  | { status: 400; reason: string }
  /** Evicted here, but the fleet could not be told (Redis away): retry. */
  | { status: 503; revoked: number };

export interface Revoker {
  /** True when `authorization` carries the revoke token. */
  authorized(authorization: string | undefined): boolean;
  revoke(body: unknown): Promise<RevocationOutcome>;
  /** Applies a revocation to this replica's cache (own, or told by the fleet). */
  evictLocally(event: RevocationEvent): number;
}

const HASH = /^[A-Za-z0-9_-]{43}$/;
const MAX_ITEMS = 10_000;
/** A second delete after this: answers that were being written when the first one ran. */
const SECOND_DELETE_MS = 1000;

const digest = (value: string) => createHash('sha256').update(value).digest();

export function createRevoker(options: {
  revokeToken: string | undefined;
  cache: TokenCache;
  fleet: Fleet | undefined;
  metrics: GatewayMetrics;
  logger: Logger;
}): Revoker {
  const { cache, fleet, metrics, logger } = options;
  const expected = options.revokeToken === undefined ? undefined : digest(options.revokeToken);

  const evictLocally = (event: RevocationEvent): number => {
    let evicted = 0;
    for (const hash of event.hashes) if (cache.delete(hash)) evicted += 1;
    if (event.subs.length > 0 || event.clientIds.length > 0) {
      const subs = new Set(event.subs);
      const clientIds = new Set(event.clientIds);
      evicted += cache.deleteWhere(
        (entry) =>
          entry.active &&
          ((typeof entry.claims.sub === 'string' && subs.has(entry.claims.sub)) ||
            (typeof entry.claims.client_id === 'string' && clientIds.has(entry.claims.client_id))),
      );
    }
    return evicted;
  };

  return {
    authorized(authorization) {
      if (expected === undefined || authorization === undefined) return false;
      const match = /^Bearer +(\S+)$/i.exec(authorization);
      return match !== null && timingSafeEqual(digest(match[1] as string), expected);
    },
    evictLocally,
    async revoke(body) {
      const request = parseRequest(body);
      if (typeof request === 'string') return { status: 400, reason: request };
      const hashes = new Set(request.hashes);
      for (const token of request.tokens) hashes.add(tokenHash(token));
      // The fleet's index makes revocation by subject exact across every replica's tokens.
      let fleetReached = fleet === undefined || fleet.store.up;
      if (fleet && fleetReached) {
        for (const [index, values] of [
          ['sub', request.subs],
          ['client_id', request.clientIds],
        ] as const) {
          for (const value of values) {
            const known = await fleet.cache.hashesOf(index, value);
            if (known === undefined) fleetReached = false;
            else for (const hash of known) hashes.add(hash);
          }
        }
      }
      const event: RevocationEvent = {
        type: 'revoke',
        hashes: [...hashes],
        subs: request.subs,
        clientIds: request.clientIds,
        at: Date.now(),
      };
      fleet?.noteRevocation(event);
      let revoked = evictLocally(event);
      if (fleet && fleetReached) {
        const indexes = [
          ...request.subs.map((sub) => ['sub', sub] as const),
          ...request.clientIds.map((clientId) => ['client_id', clientId] as const),
        ];
        const deleted = await fleet.cache.remove(event.hashes, indexes);
        const told = await fleet.publish(event);
        if (deleted === undefined || !told) fleetReached = false;
        else revoked = Math.max(revoked, deleted);
        setTimeout(() => void fleet.cache.remove(event.hashes, indexes), SECOND_DELETE_MS).unref();
      }
      if (request.hashes.length + request.tokens.length > 0)
        metrics.revocations.inc({ by: 'token' });
      if (request.subs.length > 0) metrics.revocations.inc({ by: 'sub' });
      if (request.clientIds.length > 0) metrics.revocations.inc({ by: 'client_id' });
      logger.info(
        {
          event: 'revocation',
          tokens: event.hashes.length,
          subs: request.subs.length,
          client_ids: request.clientIds.length,
          evicted: revoked,
          fleet: fleet === undefined ? 'off' : fleetReached ? 'told' : 'unreachable',
        },
        'revocation',
      );
      return fleetReached ? { status: 200, revoked } : { status: 503, revoked };
    },
  };
}

interface ParsedRequest {
  hashes: string[];
  tokens: string[];
  subs: string[];
  clientIds: string[];
}

/** The body's shape, or why it is refused. */
function parseRequest(body: unknown): ParsedRequest | string {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return 'the body must be a JSON object';
  }
  const fields = body as Record<string, unknown>;
  for (const name of Object.keys(fields)) {
    if (!['token_hashes', 'tokens', 'sub', 'client_id'].includes(name))
      return `unknown field ${name}`;
  }
  const list = (name: string, single: boolean): string[] | string => {
    const value = fields[name];
    if (value === undefined) return [];
    const items = single && typeof value === 'string' ? [value] : value;
    if (!Array.isArray(items) || !items.every((item) => typeof item === 'string' && item !== '')) {
      return `${name} must be ${single ? 'a string or ' : ''}a list of non-empty strings`;
    }
    if (items.length > MAX_ITEMS) return `${name}: at most ${MAX_ITEMS} per request`;
    return items as string[];
  };
  const hashes = list('token_hashes', false);
  const tokens = list('tokens', false);
  const subs = list('sub', true);
  const clientIds = list('client_id', true);
  for (const value of [hashes, tokens, subs, clientIds])
    if (typeof value === 'string') return value;
  const parsed = { hashes, tokens, subs, clientIds } as ParsedRequest;
  if (parsed.hashes.some((hash) => !HASH.test(hash))) {
    return 'token_hashes must be SHA-256 digests in base64url (43 characters)';
  }
  if (
    parsed.hashes.length + parsed.tokens.length + parsed.subs.length + parsed.clientIds.length ===
    0
  ) {
    return 'name at least one of token_hashes, tokens, sub, client_id';
  }
  return parsed;
}
