import type { GatewayMiddleware } from '../state.js';
import type { ClientIdentifier } from './client-key.js';

export function identifyClient(identifier: ClientIdentifier): GatewayMiddleware {
  return async function identifyClient(ctx, next) {
    ctx.state.client = identifier.identify(ctx.req);
    await next();
  };
}
