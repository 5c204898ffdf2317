/**
 * RFC 7662 client. Calls are authenticated (§2.1: the endpoint MUST be protected), go over
 * a keep-alive undici pool, and are bounded in time. The answer is hostile input, checked
 * the way oauth4webapi's processIntrospectionResponse does: status 200, a JSON content type,
 * a size cap, a JSON object, and `active` a real boolean — anything else fails closed.
 */
import { createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Pool } from 'undici';
import { SignJWT } from 'jose';
import {
  authorizationServerUnavailable,
  tokenRejectedByAuthorizationServer,
  type GatewayError,
} from '../errors.js';
import type { IntrospectionConfig } from '../config/schema.js';

/** An introspection answer bigger than this is garbage. */
export const MAX_INTROSPECTION_RESPONSE_BYTES = 64 * 1024;

export type Claims = Readonly<Record<string, unknown>>;

export type IntrospectionAnswer = { active: false } | { active: true; claims: Claims };

export interface IntrospectionClient {
  readonly endpoint: URL;
  /** `context`: the request id and `traceparent` to send along (the requester's). */
  introspect(token: string, context?: CallContext): Promise<IntrospectionAnswer>;
  close(): Promise<void>;
}

export interface CallContext {
  requestId?: string | undefined;
  traceparent?: string | undefined;
}

export interface IntrospectionClientOptions {
  endpoint: URL;
  /** The header the request id travels in (forward.request_id_header); default X-Request-Id. */
  requestIdHeader?: string;
  config: Pick<
    IntrospectionConfig,
    | 'auth_method'
    | 'client_id'
    | 'client_secret'
    | 'private_key_file'
    | 'private_key_alg'
    | 'key_id'
    | 'token_type_hint'
    | 'timeout_ms'
    | 'max_concurrent'
  >;
}

const fault = (code: string, detail: string): GatewayError =>
  authorizationServerUnavailable(code, detail);

export function createIntrospectionClient(
  options: IntrospectionClientOptions,
): IntrospectionClient {
  const { endpoint, config } = options;
  const pool = new Pool(endpoint.origin, {
    connections: config.max_concurrent,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: config.timeout_ms,
    bodyTimeout: config.timeout_ms,
    connect: { timeout: config.timeout_ms },
  });
  const authenticate = createClientAuthentication(endpoint, config);
  const requestPath = endpoint.pathname + endpoint.search;
  const requestIdHeader = (options.requestIdHeader ?? 'X-Request-Id').toLowerCase();

  return {
    endpoint,
    async introspect(token, context) {
      const form = new URLSearchParams({ token, token_type_hint: config.token_type_hint });
      const headers: Record<string, string> = {
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
      };
      if (context?.requestId !== undefined) headers[requestIdHeader] = context.requestId;
      if (context?.traceparent !== undefined) headers.traceparent = context.traceparent;
      await authenticate(form, headers);
      let response;
      try {
        response = await pool.request({
          method: 'POST',
          path: requestPath,
          headers,
          body: form.toString(),
          signal: AbortSignal.timeout(config.timeout_ms),
        });
      } catch (error) {
        const code = (error as { code?: string; name?: string }).code ?? (error as Error).name;
        const timedOut =
          code === 'UND_ERR_HEADERS_TIMEOUT' ||
          code === 'UND_ERR_CONNECT_TIMEOUT' ||
          code === 'TimeoutError';
        throw fault(
          timedOut ? 'TOKENGUARD_INTROSPECTION_TIMEOUT' : 'TOKENGUARD_INTROSPECTION_UNREACHABLE',
          `introspection call failed: ${code}`,
        );
      }
      return readIntrospectionResponse(response);
    },
    close: () => pool.close(),
  };
}

type ResponseData = Awaited<ReturnType<Pool['request']>>;

/**
 * 4xx statuses that describe the gateway's own request whatever the token — its method,
 * media types, timing, rate — and so are the same for every token.
 */
const ABOUT_THE_REQUEST = new Set([405, 406, 407, 408, 411, 415, 421, 426, 429]);
/** 5xx statuses of the infrastructure between the gateway and the server: an outage. */
const INFRASTRUCTURE = new Set([502, 503, 504]);
/** RFC 6749 §5.2 errors about the client's authentication: the gateway's credentials. */
const CLIENT_AUTHENTICATION_ERRORS = new Set(['invalid_client', 'unauthorized_client']);

/** What the server said besides its status, when it was not RFC 7662. */
export interface UnexpectedAnswer {
  status: number;
  /** The `error` member of a JSON error body, if any. */
  oauthError: string | undefined;
  /** The WWW-Authenticate challenge, if any. */
  challenge: string | undefined;
}

/**
 * Whether a non-200 answer is about the token itself (and so counts as the client's failed
 * presentation) or about the gateway or the server (an outage, counted for nobody). An
 * answer about one token outside RFC 7662 — an HTTP 400 for an unknown token, a 401 with
 * `invalid_token`, a 500 for a token the server chokes on while it answers others — still
 * fails closed (503) but must count: otherwise a non-compliant authorization server turns
 * every guess into an uncounted 503 while a real token gets 200.
 * - 401/403 are about the gateway's credentials (RFC 7662 §2.1) only when they say so: an
 *   `invalid_client`/`unauthorized_client` error, or a Basic challenge;
 * - 500 and other server errors count only while the server answers other tokens (a good
 *   answer within the fishing window): otherwise the server is down, and blocking every
 *   client for it would punish them for the outage;
 * - 502/503/504 (gateways and overload) and the request-shaped 4xx never count.
 */
export function isAnswerAboutTheToken(
  answer: UnexpectedAnswer,
  serverAnswersOthers: boolean,
): boolean {
  const { status } = answer;
  if (status === 401 || status === 403) {
    const aboutCredentials =
      (answer.oauthError !== undefined && CLIENT_AUTHENTICATION_ERRORS.has(answer.oauthError)) ||
      /^\s*basic\b/i.test(answer.challenge ?? '');
    return !aboutCredentials;
  }
  if (status >= 400 && status < 500) return !ABOUT_THE_REQUEST.has(status);
  if (status >= 500) return !INFRASTRUCTURE.has(status) && serverAnswersOthers;
  return false;
}

/** The server answered with another status than 200 (see isAnswerAboutTheToken). */
export class UnexpectedAnswerError extends Error {
  constructor(readonly answer: UnexpectedAnswer) {
    super(`introspection answered HTTP ${answer.status}`);
    this.name = 'UnexpectedAnswerError';
  }
}

/** An error answer worth reading is small; past this it is not read at all. */
const MAX_ERROR_BODY_BYTES = 8 * 1024;

async function readUnexpectedAnswer(response: ResponseData): Promise<UnexpectedAnswer> {
  const { statusCode, headers, body } = response;
  const challenge = headers['www-authenticate'];
  let oauthError: string | undefined;
  const mediaType = String(headers['content-type'] ?? '')
    .split(';', 1)[0]
    ?.trim()
    .toLowerCase();
  if (
    mediaType === 'application/json' &&
    Number(headers['content-length'] ?? 0) <= MAX_ERROR_BODY_BYTES
  ) {
    try {
      let text = '';
      for await (const chunk of body) {
        text += (chunk as Buffer).toString('utf8');
        if (text.length > MAX_ERROR_BODY_BYTES) throw new Error('too large');
      }
      const parsed = JSON.parse(text) as { error?: unknown };
      if (typeof parsed?.error === 'string') oauthError = parsed.error;
    } catch {
      body.destroy();
    }
  } else {
    body.resume();
  }
  return {
    status: statusCode,
    oauthError,
    challenge: Array.isArray(challenge) ? challenge.join(', ') : challenge,
  };
}

async function readIntrospectionResponse(response: ResponseData): Promise<IntrospectionAnswer> {
  const { statusCode, headers, body } = response;
  if (statusCode !== 200) throw new UnexpectedAnswerError(await readUnexpectedAnswer(response));
  const contentType = String(headers['content-type'] ?? '');
  const mediaType = contentType.split(';', 1)[0]?.trim().toLowerCase();
  if (mediaType !== 'application/json') {
    body.resume();
    throw fault(
      'TOKENGUARD_INTROSPECTION_CONTENT_TYPE',
      `introspection content-type is "${contentType}"`,
    );
  }
  const declaredLength = Number(headers['content-length']);
  if (declaredLength > MAX_INTROSPECTION_RESPONSE_BYTES) {
    body.destroy();
    throw fault('TOKENGUARD_INTROSPECTION_TOO_LARGE', 'introspection answer over the size cap');
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      size += (chunk as Buffer).length;
      if (size > MAX_INTROSPECTION_RESPONSE_BYTES) {
        body.destroy();
        throw fault('TOKENGUARD_INTROSPECTION_TOO_LARGE', 'introspection answer over the size cap');
      }
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    if ((error as GatewayError).code === 'TOKENGUARD_INTROSPECTION_TOO_LARGE') throw error;
    throw fault(
      'TOKENGUARD_INTROSPECTION_TIMEOUT',
      `introspection body failed: ${(error as Error).name}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw fault('TOKENGUARD_INTROSPECTION_NOT_JSON', 'introspection answer is not JSON');
  }
  return parseIntrospectionAnswer(parsed);
}

/**
 * RFC 7662 §2.2: `active` is REQUIRED and a boolean. The claims the gateway relies on must
 * have their registered types, or the whole answer is garbage (fail closed, 503).
 */
export function parseIntrospectionAnswer(parsed: unknown): IntrospectionAnswer {
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw fault('TOKENGUARD_INTROSPECTION_MALFORMED', '"response" body must be a JSON object');
  }
  const claims = parsed as Record<string, unknown>;
  if (claims.active === false) return { active: false };
  if (claims.active === undefined && typeof claims.error === 'string') {
    throw tokenRejectedByAuthorizationServer(
      'introspection answered an OAuth error object instead of "active"',
    );
  }
  if (claims.active !== true) {
    throw fault(
      'TOKENGUARD_INTROSPECTION_MALFORMED',
      '"response" body "active" property must be a boolean',
    );
  }
  for (const name of ['exp', 'nbf', 'iat'] as const) {
    if (
      claims[name] !== undefined &&
      (typeof claims[name] !== 'number' || !Number.isFinite(claims[name]))
    ) {
      throw fault(
        'TOKENGUARD_INTROSPECTION_MALFORMED',
        `"response" body "${name}" property must be a number`,
      );
    }
  }
  for (const name of ['scope', 'iss', 'sub', 'client_id'] as const) {
    if (claims[name] !== undefined && typeof claims[name] !== 'string') {
      throw fault(
        'TOKENGUARD_INTROSPECTION_MALFORMED',
        `"response" body "${name}" property must be a string`,
      );
    }
  }
  const aud = claims.aud;
  if (
    aud !== undefined &&
    typeof aud !== 'string' &&
    !(Array.isArray(aud) && aud.every((value) => typeof value === 'string'))
  ) {
    throw fault(
      'TOKENGUARD_INTROSPECTION_MALFORMED',
      '"response" body "aud" property must be a string or an array of strings',
    );
  }
  return { active: true, claims };
}

/** RFC 6749 §2.3.1: client id and secret are form-urlencoded before Base64 in Basic auth. */
export function basicCredentials(clientId: string, clientSecret: string): string {
  const formEncode = (value: string) => new URLSearchParams({ v: value }).toString().slice(2);
  return `Basic ${Buffer.from(`${formEncode(clientId)}:${formEncode(clientSecret)}`).toString('base64')}`;
}

type Authenticate = (
  form: URLSearchParams,
  headers: Record<string, string>,
) => void | Promise<void>;

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

function createClientAuthentication(
  endpoint: URL,
  config: IntrospectionClientOptions['config'],
): Authenticate {
  switch (config.auth_method) {
    case 'client_secret_basic': {
      const authorization = basicCredentials(config.client_id ?? '', config.client_secret ?? '');
      return (_form, headers) => {
        headers.authorization = authorization;
      };
    }
    case 'client_secret_post':
      return (form) => {
        form.set('client_id', config.client_id ?? '');
        form.set('client_secret', config.client_secret ?? '');
      };
    case 'client_secret_jwt': {
      // RFC 7523 §2.2 with an HMAC over the shared secret (OIDC Core §9): the secret itself
      // never crosses the network.
      const key = new TextEncoder().encode(config.client_secret ?? '');
      return async (form) => {
        form.set('client_id', config.client_id ?? '');
        form.set('client_assertion_type', JWT_BEARER);
        form.set('client_assertion', await signClientAssertion(key, 'HS256', endpoint, config));
      };
    }
    case 'private_key_jwt': {
      const key = createPrivateKey(readFileSync(config.private_key_file ?? ''));
      return async (form) => {
        form.set('client_id', config.client_id ?? '');
        form.set('client_assertion_type', JWT_BEARER);
        form.set(
          'client_assertion',
          await signClientAssertion(key, config.private_key_alg, endpoint, config),
        );
      };
    }
    case 'none':
      return () => undefined;
  }
}

/**
 * RFC 7523 §3 client assertion: a JWT for this call only (a fresh `jti`, one minute), signed
 * by jose with the client's private key (RS256, PS256, ES256) or its secret (HS256).
 */
export async function signClientAssertion(
  key: KeyObject | Uint8Array,
  alg: 'RS256' | 'PS256' | 'ES256' | 'HS256',
  endpoint: URL,
  config: Pick<IntrospectionConfig, 'client_id' | 'key_id'>,
  nowSeconds = Math.floor(Date.now() / 1000),
): Promise<string> {
  const clientId = config.client_id ?? '';
  return new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg, typ: 'JWT', ...(config.key_id ? { kid: config.key_id } : {}) })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(endpoint.href)
    .setIssuedAt(nowSeconds)
    .setExpirationTime(nowSeconds + 60)
    .sign(key);
}
