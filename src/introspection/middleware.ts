import { invalidToken } from '../errors.js';
import { tokenHash } from '../cache/token-cache.js';
import type { GatewayMiddleware } from '../state.js';
import { checkClaims, type ClaimRules } from './check-claims.js';
import type { IntrospectionService } from './service.js';

/** Asks the cache, and through it the authorization server, whether the token is active. */
export function introspectToken(introspection: IntrospectionService): GatewayMiddleware {
  return async function introspectToken(ctx, next) {
    const token = ctx.state.token as string;
    const key = tokenHash(token);
    ctx.state.tokenHash = key;
    const { entry, result } = await introspection.lookup(token, key);
    ctx.state.cacheResult = result;
    if (!entry.active) throw invalidToken('inactive', 'introspection: active is false');
    ctx.state.grant = entry;
    await next();
  };
}

/** exp / nbf / iss / aud, on every request: a cached answer never skips a check. */
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
