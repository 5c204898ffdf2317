/**
 * The one error type of the data path. Every refusal the gateway makes is a GatewayError:
 * `status` and `oauthError` are what the client sees (RFC 6750 §3.1 codes plus the
 * gateway's own), `description` is a public, generic sentence, and `detail` is private —
 * it goes to the logs only, never into a response (as in node-oidc-provider's errors).
 */

/**
 * `tokenguard_requests_total{outcome}`: bounded, fixed set. `served`: answered by the gateway
 * itself, never forwarded (RFC 9728 protected-resource metadata).
 */
export type Outcome =
  | 'forwarded'
  | 'served'
  | 'unauthorized'
  | 'forbidden'
  | 'bad_request'
  | 'throttled'
  | 'not_found'
  | 'unavailable'
  | 'upstream_error';

/**
 * `tokenguard_fishing_failures_total{reason}`: PRODUCT.md's five, plus `sender_constrained`
 * (a DPoP- or certificate-bound token presented as plain Bearer) and `rejected` (the
 * authorization server refused to answer about the token in RFC 7662's terms).
 */
export type FishingReason =
  'malformed' | 'inactive' | 'expired' | 'audience' | 'issuer' | 'sender_constrained' | 'rejected';

export type OAuthError =
  | 'invalid_request'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'unauthorized'
  | 'not_found'
  | 'method_not_allowed'
  | 'too_many_requests'
  | 'bad_gateway'
  | 'temporarily_unavailable'
  | 'gateway_timeout';

export interface GatewayErrorOptions {
  status: number;
  oauthError: OAuthError;
  code: string;
  description: string;
  outcome: Outcome;
  detail?: string | undefined;
  /** Set when this refusal counts as a failed token presentation (PRODUCT.md "Token fishing"). */
  fishingReason?: FishingReason | undefined;
  retryAfterSeconds?: number | undefined;
  /** For 403 insufficient_scope: the scope the route requires (RFC 6750 §3). */
  requiredScope?: string | undefined;
  /** Force `Connection: close` on the response (e.g. an unread request body). */
  closeConnection?: boolean | undefined;
  /** For 405: the `Allow` field (RFC 9110 §15.5.6). */
  allow?: string | undefined;
  /** Hold the answer back for a moment (a blocked client hammering: the tarpit). */
  hold?: boolean | undefined;
}

export class GatewayError extends Error {
  readonly status: number;
  readonly oauthError: OAuthError;
  readonly code: string;
  readonly description: string;
  readonly outcome: Outcome;
  readonly detail: string | undefined;
  readonly fishingReason: FishingReason | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly requiredScope: string | undefined;
  readonly closeConnection: boolean;
  readonly allow: string | undefined;
  readonly hold: boolean;

  constructor(options: GatewayErrorOptions) {
    super(options.description);
    this.name = 'GatewayError';
    this.status = options.status;
    this.oauthError = options.oauthError;
    this.code = options.code;
    this.description = options.description;
    this.outcome = options.outcome;
    this.detail = options.detail;
    this.fishingReason = options.fishingReason;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.requiredScope = options.requiredScope;
    this.closeConnection = options.closeConnection ?? false;
    this.allow = options.allow;
    this.hold = options.hold ?? false;
  }
}

/** Retry-After for authorization-server trouble: long enough not to stampede it. */
export const AUTHORIZATION_SERVER_RETRY_AFTER_SECONDS = 5;

export const missingCredentials = (): GatewayError =>
  new GatewayError({
    status: 401,
    oauthError: 'unauthorized',
    code: 'TOKENGUARD_NO_CREDENTIALS',
    description: 'bearer token required',
    outcome: 'unauthorized',
  });

export const malformedCredentials = (detail: string): GatewayError =>
  new GatewayError({
    status: 400,
    oauthError: 'invalid_request',
    code: 'TOKENGUARD_MALFORMED_CREDENTIALS',
    description: 'malformed bearer credentials',
    outcome: 'bad_request',
    detail,
    fishingReason: 'malformed',
  });

export const invalidToken = (reason: FishingReason, detail: string): GatewayError =>
  new GatewayError({
    status: 401,
    oauthError: 'invalid_token',
    code: `TOKENGUARD_TOKEN_${reason.toUpperCase()}`,
    // One public sentence for every reason: which check failed goes to the logs, not to a prober.
    description: 'the access token is invalid',
    outcome: 'unauthorized',
    detail,
    fishingReason: reason,
  });

export const insufficientScope = (requiredScope: string): GatewayError =>
  new GatewayError({
    status: 403,
    oauthError: 'insufficient_scope',
    code: 'TOKENGUARD_INSUFFICIENT_SCOPE',
    description: 'the access token does not carry the required scope',
    outcome: 'forbidden',
    requiredScope,
  });

export const blockedForFishing = (retryAfterSeconds: number, hold = false): GatewayError =>
  new GatewayError({
    hold,
    status: 429,
    oauthError: 'too_many_requests',
    code: 'TOKENGUARD_CLIENT_BLOCKED',
    description: 'too many failed token presentations',
    outcome: 'throttled',
    retryAfterSeconds,
  });

export const authorizationServerUnavailable = (code: string, detail: string): GatewayError =>
  new GatewayError({
    status: 503,
    oauthError: 'temporarily_unavailable',
    code,
    description: 'the token could not be checked; try again later',
    outcome: 'unavailable',
    detail,
    retryAfterSeconds: AUTHORIZATION_SERVER_RETRY_AFTER_SECONDS,
  });

export const introspectionOverBudget = (detail: string): GatewayError =>
  new GatewayError({
    status: 503,
    oauthError: 'temporarily_unavailable',
    code: 'TOKENGUARD_INTROSPECTION_BUDGET',
    description: 'the token could not be checked; try again later',
    outcome: 'unavailable',
    detail,
    retryAfterSeconds: 1,
  });

export const routeNotFound = (): GatewayError =>
  new GatewayError({
    status: 404,
    oauthError: 'not_found',
    code: 'TOKENGUARD_NO_ROUTE',
    description: 'no route matches this request',
    outcome: 'not_found',
  });

export const methodNotAllowed = (method: string): GatewayError =>
  new GatewayError({
    status: 405,
    oauthError: 'method_not_allowed',
    code: 'TOKENGUARD_METHOD_REFUSED',
    description: `${method} is never forwarded`,
    outcome: 'bad_request',
    closeConnection: true,
  });

/** Routes match the path but none the method: never `default_action` (PRODUCT.md "Routing"). */
export const routeMethodNotAllowed = (method: string, allow: string): GatewayError =>
  new GatewayError({
    status: 405,
    oauthError: 'method_not_allowed',
    code: 'TOKENGUARD_METHOD_NOT_ALLOWED',
    description: `${method} is not allowed on this path`,
    outcome: 'bad_request',
    allow,
  });

/**
 * A client's uncached introspections in flight already use what is left of its failure
 * budget, and its turn did not come within `introspection.timeout_ms` (PRODUCT.md "Token
 * fishing": concurrency never multiplies guesses).
 */
export const clientGuessesInFlight = (): GatewayError =>
  new GatewayError({
    status: 503,
    oauthError: 'temporarily_unavailable',
    code: 'TOKENGUARD_CLIENT_INFLIGHT',
    description: 'the token could not be checked; try again later',
    outcome: 'unavailable',
    detail: "the client's uncached introspections in flight use up its failure budget",
    retryAfterSeconds: 1,
  });

/**
 * The authorization server answered about this token outside RFC 7662 (an HTTP 4xx for one
 * token while it answers others): still fail closed with 503, but count it as the client's
 * failure, or a non-compliant server becomes an unlimited, uncounted oracle.
 */
export const tokenRejectedByAuthorizationServer = (detail: string): GatewayError =>
  new GatewayError({
    status: 503,
    oauthError: 'temporarily_unavailable',
    code: 'TOKENGUARD_INTROSPECTION_REJECTED_TOKEN',
    description: 'the token could not be checked; try again later',
    outcome: 'unavailable',
    detail,
    fishingReason: 'rejected',
    retryAfterSeconds: AUTHORIZATION_SERVER_RETRY_AFTER_SECONDS,
  });

export const badRequest = (code: string, description: string, detail?: string): GatewayError =>
  new GatewayError({
    status: 400,
    oauthError: 'invalid_request',
    code,
    description,
    outcome: 'bad_request',
    detail,
    closeConnection: true,
  });

export const upstreamUnreachable = (detail: string): GatewayError =>
  new GatewayError({
    status: 502,
    oauthError: 'bad_gateway',
    code: 'TOKENGUARD_UPSTREAM_UNREACHABLE',
    description: 'the upstream service could not be reached',
    outcome: 'upstream_error',
    detail,
  });

export const upstreamTimeout = (detail: string): GatewayError =>
  new GatewayError({
    status: 504,
    oauthError: 'gateway_timeout',
    code: 'TOKENGUARD_UPSTREAM_TIMEOUT',
    description: 'the upstream service did not answer in time',
    outcome: 'upstream_error',
    detail,
  });
