import { blockedForFishing, GatewayError } from '../errors.js';
import type { GatewayMetrics } from '../metrics/metrics.js';
import type { GatewayMiddleware } from '../state.js';
import type { FishingGuard } from './fishing-guard.js';

/** A blocked client's requests that need a token get 429; the AS is not asked. */
export function refuseBlockedClients(
  guard: FishingGuard,
  metrics: GatewayMetrics,
): GatewayMiddleware {
  return async function refuseBlockedClients(ctx, next) {
    const clientKey = ctx.state.client?.key ?? 'unknown';
    const retryAfter = guard.blockedFor(clientKey);
    if (retryAfter > 0) {
      metrics.fishingBlockedRequests.inc();
      throw blockedForFishing(retryAfter);
    }
    try {
      await next();
    } catch (error) {
      if (error instanceof GatewayError && error.fishingReason) {
        guard.recordFailure(clientKey);
        metrics.fishingFailures.inc({ reason: error.fishingReason });
      }
      throw error;
    }
  };
}
