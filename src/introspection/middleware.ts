import { blockedForFishing, clientGuessesInFlight, invalidToken } from '../errors.js';
import { tokenHash } from '../cache/token-cache.js';
import type { FishingGuard } from '../fishing/fishing-guard.js';
import { traceparentOf, type RequestIds } from '../request-id.js';
import type { GatewayMetrics } from '../metrics/metrics.js';
import type { FleetFishing } from '../shared/fleet-fishing.js';
import type { GatewayContext, GatewayMiddleware } from '../state.js';
import { checkClaims, type ClaimRules } from './check-claims.js';
import type { IntrospectionService } from './service.js';

/**
 * Asks the cache, and through it the authorization server, whether the token is active. A
 * lookup that would call the authorization server first takes one of the client's
 * admissions (PRODUCT.md "Token fishing": its uncached introspections in flight count
 * against what is left of its failure budget); refuseBlockedClients releases it.
 */
export function introspectToken(
  introspection: IntrospectionService,
  guard: FishingGuard,
  options: {
    admissionWaitMs: number;
    fleet?: FleetFishing | undefined;
    requestIds: RequestIds;
    /** Counts `client_inflight` refusals (the client's own guesses in flight). */
    metrics: Pick<GatewayMetrics, 'introspectionRejections'>;
  },
): GatewayMiddleware {
  const { fleet, requestIds, metrics } = options;
  const inflight = metrics.introspectionRejections.labels('client_inflight');
  return async function introspectToken(ctx, next) {
    const token = ctx.state.token as string;
    const key = tokenHash(token);
    ctx.state.tokenHash = key;
    const clientKey = ctx.state.client?.key ?? 'unknown';
    if (!introspection.cache.has(key)) {
      const admission = await guard.admit(clientKey, options.admissionWaitMs);
      if (admission === 'blocked') {
        throw blockedForFishing(guard.blockedFor(clientKey) || 1, guard.hammering(clientKey));
      }
      if (admission === 'timeout') {
        inflight.inc();
        throw clientGuessesInFlight();
      }
      ctx.state.admitted = true;
      if (fleet) {
        const admitted = await admitAcrossTheFleet(
          ctx,
          fleet,
          guard,
          clientKey,
          options.admissionWaitMs,
        );
        if (!admitted) {
          inflight.inc();
          throw clientGuessesInFlight();
        }
      }
    }
    // A client with failed presentations in the window waits behind the others for budget.
    const suspect = guard.failures(clientKey) > 0;
    const { entry, result } = await introspection.lookup(token, key, {
      clientKey,
      suspect,
      requestId: requestIds.of(ctx.req),
      traceparent: traceparentOf(ctx.req),
    });
    ctx.state.cacheResult = result;
    if (!entry.active) throw invalidToken('inactive', 'introspection: active is false');
    ctx.state.grant = entry;
    await next();
  };
}

/** exp / nbf / iss / aud / binding, on every request: a cached answer never skips a check. */
export function validateToken(rules: ClaimRules): GatewayMiddleware {
  return async function validateToken(ctx, next) {
    const grant = ctx.state.grant;
    if (grant) {
      const failure = checkClaims(grant.claims, rules, Date.now() / 1000);
      if (failure) throw invalidToken(failure.reason, failure.detail);
    }
    await next();
  };
}

const FLEET_RETRY_MS = 50;

/**
 * Fleet mode: the admission must also hold across the replicas (failures + in flight <
 * max_failures, atomically in Redis). Waits its turn like a local admission; Redis away:
 * the local admission alone stands. False when its turn did not come within `waitMs`.
 */
async function admitAcrossTheFleet(
  ctx: GatewayContext,
  fleet: FleetFishing,
  guard: FishingGuard,
  clientKey: string,
  waitMs: number,
): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const admission = await fleet.admit(clientKey);
    if (admission.verdict === 'admitted') {
      ctx.state.fleetAdmitted = true;
      return true;
    }
    if (admission.verdict === 'unavailable') return true;
    if (admission.verdict === 'blocked') {
      guard.blockUntil(clientKey, admission.until);
      throw blockedForFishing(guard.blockedFor(clientKey) || 1, guard.hammering(clientKey));
    }
    if (Date.now() + FLEET_RETRY_MS >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, FLEET_RETRY_MS));
  }
}
