import { blockedForFishing, GatewayError } from '../errors.js';
import type { GatewayMetrics } from '../metrics/metrics.js';
import type { GatewayMiddleware } from '../state.js';
import type { FleetFishing } from '../shared/fleet-fishing.js';
import type { FishingGuard } from './fishing-guard.js';

/**
 * A blocked client's requests that need a token get 429; the AS is not asked. Around the
 * rest of the authentication stages it records the request's failed presentation, then
 * releases the client's introspection admission (introspectToken takes it on a cache miss)
 * — in that order, so a waiting request of the same client sees the failure before it can
 * take the freed turn.
 */
export function refuseBlockedClients(
  guard: FishingGuard,
  metrics: GatewayMetrics,
  /** Fleet mode: failures and admissions counted across the replicas too. */
  fleet?: FleetFishing,
): GatewayMiddleware {
  return async function refuseBlockedClients(ctx, next) {
    const clientKey = ctx.state.client?.key ?? 'unknown';
    const retryAfter = guard.blockedFor(clientKey);
    if (retryAfter > 0) {
      metrics.fishingBlockedRequests.inc();
      throw blockedForFishing(retryAfter, guard.hammering(clientKey));
    }
    try {
      await next();
    } catch (error) {
      if (error instanceof GatewayError) {
        if (error.fishingReason) {
          guard.recordFailure(clientKey);
          metrics.fishingFailures.inc({ reason: error.fishingReason });
          // Recorded before the admission is released, so no replica admits past it.
          if (fleet) await fleet.recordFailure(clientKey);
        } else if (error.code === BLOCKED) {
          metrics.fishingBlockedRequests.inc();
        }
      }
      throw error;
    } finally {
      if (ctx.state.fleetAdmitted && fleet) await fleet.release(clientKey);
      if (ctx.state.admitted) guard.release(clientKey);
    }
  };
}

const BLOCKED = blockedForFishing(1).code;
