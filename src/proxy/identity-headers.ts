/**
 * Identity headers: set from the introspection answer, after every client-sent copy is gone.
 * Values are made header-safe reversibly: `%` and everything outside printable ASCII
 * (space allowed) are percent-encoded as UTF-8 with upper-case hex, so a claim can never
 * smuggle CR/LF or a second header, and the upstream can decode what it receives.
 */
import { authorizationServerUnavailable } from '../errors.js';
import type { Claims } from '../introspection/client.js';

export const MAX_IDENTITY_HEADER_BYTES = 8 * 1024;

/** [lower-case header name, claim name]. */
export type IdentityMapping = ReadonlyArray<readonly [string, string]>;
/**
 * Flat `[name, value, name, value, …]` (lower-case names, encoded values): one small array per
 * cached token instead of an array of pairs (the cache holds 100,000 of them).
 */
export type IdentityHeaders = readonly string[];

/** The `[name, value]` pairs of IdentityHeaders. */
export function identityPairs(headers: IdentityHeaders): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let index = 0; index < headers.length; index += 2) {
    pairs.push([headers[index] as string, headers[index + 1] as string]);
  }
  return pairs;
}

export function compileIdentityMapping(config: Readonly<Record<string, string>>): IdentityMapping {
  return Object.entries(config).map(([header, claim]) => [header.toLowerCase(), claim] as const);
}

const NEEDS_ENCODING = /[^\x20-\x24\x26-\x7e]/;

export function encodeHeaderValue(value: string): string {
  if (!NEEDS_ENCODING.test(value)) return value;
  let encoded = '';
  for (const char of value) {
    if (NEEDS_ENCODING.test(char)) {
      for (const byte of Buffer.from(char, 'utf8')) {
        encoded += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
      }
    } else {
      encoded += char;
    }
  }
  return encoded;
}

function claimToText(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    return value.map((item) => (typeof item === 'string' ? item : JSON.stringify(item))).join(' ');
  }
  return JSON.stringify(value);
}

/**
 * @throws GatewayError 503: a value over 8 KiB makes the answer an authorization-server fault
 */
export function buildIdentityHeaders(
  claims: Claims,
  mapping: IdentityMapping,
  /** Shares equal values between cache entries (client ids, scopes), when given. */
  strings?: { get(text: string): string },
): IdentityHeaders {
  const headers: string[] = [];
  for (const [header, claim] of mapping) {
    const text = claimToText(claims[claim]);
    if (text === undefined) continue;
    const encoded = encodeHeaderValue(text);
    const value = strings && claim !== 'sub' ? strings.get(encoded) : encoded;
    if (value.length > MAX_IDENTITY_HEADER_BYTES) {
      throw authorizationServerUnavailable(
        'TOKENGUARD_IDENTITY_HEADER_TOO_LARGE',
        `claim ${claim} encodes to more than 8 KiB for ${header}`,
      );
    }
    headers.push(header, value);
  }
  // An exact-size copy: an array grown by push keeps slack (≈200 B here), and every
  // cached token holds one.
  return headers.slice();
}
