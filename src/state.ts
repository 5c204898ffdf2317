/** What the stages of the pipeline learn about a request, in the order they learn it. */
import type { Duplex } from 'node:stream';
import type { ParameterizedContext } from 'koa';
import type { CacheEntry, CacheResult } from './cache/token-cache.js';
import type { ClientIdentity } from './fishing/client-key.js';
import type { NormalisedTarget } from './policy/normalize-path.js';
import type { Route } from './policy/route-table.js';

export interface UpgradeRequest {
  socket: Duplex;
  head: Buffer;
}

export interface GatewayState {
  /** Set by the server for `upgrade` and `connect` events (they bypass Koa otherwise). */
  upgrade?: UpgradeRequest;
  target?: NormalisedTarget;
  client?: ClientIdentity;
  route?: Route;
  token?: string;
  /** The request holds one of its client's introspection admissions (fishing guard). */
  admitted?: boolean;
  /** …and one of the fleet's (fleet mode). */
  fleetAdmitted?: boolean;
  /** SHA-256 of the token: the cache key, and (shortened) the log fingerprint. */
  tokenHash?: string;
  cacheResult?: CacheResult;
  /** The status the upstream answered a WebSocket handshake with (101 when it opened). */
  upgradeStatus?: number;
  /** The upstream failed after the response had begun (the client saw it cut short). */
  upstreamFailure?: string;
  /** Ms from handing the request to the upstream to its response headers. */
  upstreamMs?: number;
  /** The gateway answered the request itself (RFC 9728 metadata): outcome `served`. */
  served?: boolean;
  /** The active introspection answer the request was authorised with. */
  grant?: Extract<CacheEntry, { active: true }>;
}

export type GatewayContext = ParameterizedContext<GatewayState>;
export type GatewayMiddleware = (ctx: GatewayContext, next: () => Promise<void>) => Promise<void>;
