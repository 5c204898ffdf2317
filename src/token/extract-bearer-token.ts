/**
 * RFC 6750 §2.1: the bearer token comes from the Authorization header only. Form-body and
 * query-string tokens (§2.2, §2.3) are not accepted: they end up in access logs and caches.
 */
import type { IncomingMessage } from 'node:http';
import { malformedCredentials } from '../errors.js';

/** Tokens above this size are refused without asking the authorization server. */
export const MAX_TOKEN_BYTES = 4096;

/** RFC 6750 §2.1 b64token. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

export type BearerCredentials = { kind: 'absent' } | { kind: 'token'; token: string };

/**
 * @returns `absent` when there are no Bearer credentials at all (401 without an error code,
 *   RFC 6750 §3.1), the token when they are well-formed
 * @throws GatewayError 400 invalid_request for malformed Bearer credentials
 */
export function readBearerCredentials(req: IncomingMessage): BearerCredentials {
  const header = req.headers.authorization;
  if (header === undefined) return { kind: 'absent' };
  // Node keeps the first of repeated Authorization fields; two are two tokens (§2.1: one).
  if (countRawHeader(req.rawHeaders, 'authorization') > 1) {
    throw malformedCredentials('more than one Authorization header');
  }
  const schemeEnd = header.indexOf(' ');
  const scheme = schemeEnd === -1 ? header : header.slice(0, schemeEnd);
  if (scheme.toLowerCase() !== 'bearer') return { kind: 'absent' };
  const token = schemeEnd === -1 ? '' : header.slice(schemeEnd + 1).replace(/^ +/, '');
  if (token === '') throw malformedCredentials('empty bearer token');
  if (token.length > MAX_TOKEN_BYTES) throw malformedCredentials('bearer token over 4 KiB');
  if (token.includes(' ')) throw malformedCredentials('more than one bearer token');
  if (!B64TOKEN.test(token)) throw malformedCredentials('bearer token is not b64token syntax');
  return { kind: 'token', token };
}

export function countRawHeader(rawHeaders: readonly string[], lowerCaseName: string): number {
  let count = 0;
  for (let index = 0; index < rawHeaders.length; index += 2) {
    const name = rawHeaders[index] as string;
    if (name.length === lowerCaseName.length && name.toLowerCase() === lowerCaseName) count += 1;
  }
  return count;
}
