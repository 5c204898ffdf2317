import { missingCredentials } from '../errors.js';
import type { GatewayMiddleware } from '../state.js';
import { readBearerCredentials } from './extract-bearer-token.js';

export function extractBearerToken(): GatewayMiddleware {
  return async function extractBearerToken(ctx, next) {
    const credentials = readBearerCredentials(ctx.req);
    if (credentials.kind === 'absent') throw missingCredentials();
    ctx.state.token = credentials.token;
    await next();
  };
}
