/**
 * Validity checks on an active introspection answer, run on every request — a cached answer
 * never skips them (the clock moves, and `aud`/`iss` rules are the gateway's, not the AS's).
 * RFC 7662 §2.2 leaves `exp`, `nbf`, `iss` and `aud` optional; when a rule is configured, a
 * missing claim fails it.
 *
 * A sender-constrained token — `token_type` DPoP (RFC 9449 §7) or any `cnf` confirmation
 * claim (`jkt`, `x5t#S256`: RFC 9449 §6, RFC 8705 §3) — is bound to a key or certificate
 * whose possession the Bearer scheme never proves. Accepted as Bearer, the binding would
 * mean nothing to whoever stole the token, so it is refused here.
 */
import type { FishingReason } from '../errors.js';
import type { Claims } from './client.js';

export interface ClaimRules {
  issuer: string | undefined;
  audience: ReadonlySet<string> | undefined;
  clockSkewSeconds: number;
}

export interface ClaimFailure {
  reason: FishingReason;
  detail: string;
}

export function checkClaims(
  claims: Claims,
  rules: ClaimRules,
  nowSeconds: number,
): ClaimFailure | null {
  const { exp, nbf } = claims as { exp?: number; nbf?: number };
  // RFC 7519 §4.1.4: the current time MUST be before `exp` (plus the leeway).
  if (exp !== undefined && nowSeconds >= exp + rules.clockSkewSeconds) {
    return { reason: 'expired', detail: 'token expired (exp)' };
  }
  // A token that is not valid yet is outside its validity window just as an expired one.
  if (nbf !== undefined && nowSeconds + rules.clockSkewSeconds < nbf) {
    return { reason: 'expired', detail: 'token not valid yet (nbf)' };
  }
  if (isSenderConstrained(claims)) {
    return {
      reason: 'sender_constrained',
      detail: 'token is sender-constrained (token_type DPoP or cnf) but presented as Bearer',
    };
  }
  if (rules.issuer !== undefined && claims.iss !== rules.issuer) {
    return { reason: 'issuer', detail: 'iss does not match introspection.issuer' };
  }
  if (rules.audience !== undefined) {
    const aud = claims.aud as string | string[] | undefined;
    const audiences = typeof aud === 'string' ? [aud] : (aud ?? []);
    if (!audiences.some((value) => rules.audience?.has(value))) {
      return { reason: 'audience', detail: 'aud contains none of introspection.audience' };
    }
  }
  return null;
}

export function isSenderConstrained(claims: Claims): boolean {
  const tokenType = claims.token_type;
  return (
    (claims.cnf !== undefined && claims.cnf !== null) ||
    (typeof tokenType === 'string' && tokenType.toLowerCase() === 'dpop')
  );
}
