/**
 * Request-target normalisation, done once, before route matching. What the route table
 * matches and what the upstream receives are the same string, so a path can never be
 * authorised as one resource and served as another (the classic `/public/..;/admin`,
 * `%2e%2e`, `//admin` and `\admin` confusions between proxies and backends).
 *
 * Order (PRODUCT.md "Routing"): percent-encoded unreserved characters are decoded
 * (RFC 3986 §6.2.2.2), `//` is merged, dot-segments are removed (RFC 3986 §5.2.4).
 * Anything another server could read differently is refused rather than guessed at.
 */
import { badRequest, type GatewayError } from '../errors.js';

export interface NormalisedTarget {
  /** Normalised, still percent-encoded path: what the upstream receives. */
  path: string;
  /** The same path fully percent-decoded: what routes are matched against. */
  matchPath: string;
  /** `?query` as the client sent it, or ''. */
  search: string;
}

const refuse = (detail: string): GatewayError =>
  badRequest('TOKENGUARD_AMBIGUOUS_PATH', 'the request path is not acceptable', detail);

/** Nothing in it needs work: no `%`, `\`, `;`, `//`, dot-segment, or byte outside visible ASCII. */
const NEEDS_WORK = /[%\\;#]|\/\/|\/\.\.?(?:\/|$)|[^\x21-\x7e]/;
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_OR_SPACE = /[\x00-\x20\x7f]/;
const UNRESERVED = /[A-Za-z0-9\-._~]/;
const HEX = /^[0-9A-Fa-f]{2}$/;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * @param target the raw request-target (`req.url`)
 * @throws GatewayError 400 for every ambiguous form
 */
export function normaliseRequestTarget(target: string): NormalisedTarget {
  let rest = target;
  if (!rest.startsWith('/')) {
    // absolute-form (RFC 9112 §3.2.2): route on its path; anything else is not ours to serve.
    const match = /^https?:\/\/[^/?#]*/i.exec(rest);
    if (!match) throw refuse('request target is neither origin-form nor absolute-form');
    rest = rest.slice(match[0].length) || '/';
    if (!rest.startsWith('/') && !rest.startsWith('?')) throw refuse('malformed absolute-form');
    if (rest.startsWith('?')) rest = `/${rest}`;
  }
  const queryAt = rest.indexOf('?');
  const rawPath = queryAt === -1 ? rest : rest.slice(0, queryAt);
  const search = queryAt === -1 ? '' : rest.slice(queryAt);
  if (search.includes('#')) throw refuse('fragment in request target');
  if (CONTROL_OR_SPACE.test(search)) throw refuse('control character in query');

  if (!NEEDS_WORK.test(rawPath)) return { path: rawPath, matchPath: rawPath, search };

  if (rawPath.includes('#')) throw refuse('fragment in request target');
  if (rawPath.includes('\\')) throw refuse('backslash in path');
  if (/[^\x21-\x7e]/.test(rawPath)) throw refuse('control, space or non-ASCII byte in path');

  const segments = rawPath.slice(1).split('/').map(decodeSegment);
  const output: string[] = [];
  for (const [index, segment] of segments.entries()) {
    const isLast = index === segments.length - 1;
    if (segment.encoded === '' && !isLast) continue; // `//` merged
    // Servlet containers cut `;parameters` (even encoded ones) before resolving dot-segments.
    const withParameters = segment.decoded.replaceAll('%3B', ';');
    const bare = withParameters.split(';', 1)[0];
    if (withParameters.includes(';') && (bare === '.' || bare === '..')) {
      throw refuse('dot-segment with a ;parameter');
    }
    if (segment.decoded === '.') {
      if (isLast) output.push('');
      continue;
    }
    if (segment.decoded === '..') {
      if (output.length === 0) throw refuse('.. above the root');
      output.pop();
      if (isLast) output.push('');
      continue;
    }
    output.push(segment.encoded);
  }
  const path = `/${output.join('/')}`;
  return { path, matchPath: decodeForMatching(path), search };
}

interface Segment {
  /** Unreserved characters decoded, other escapes kept with upper-case hex. */
  encoded: string;
  /** Fully decoded (only used to recognise `.`/`..`). */
  decoded: string;
}

function decodeSegment(raw: string): Segment {
  if (!raw.includes('%')) return { encoded: raw, decoded: raw };
  let encoded = '';
  let decoded = '';
  for (let index = 0; index < raw.length; index += 1) {
    const char = raw[index] as string;
    if (char !== '%') {
      encoded += char;
      decoded += char;
      continue;
    }
    const hex = raw.slice(index + 1, index + 3);
    if (!HEX.test(hex)) throw refuse('malformed percent-encoding');
    const byte = Number.parseInt(hex, 16);
    index += 2;
    if (byte === 0x2f || byte === 0x5c) throw refuse('encoded / or \\ in path');
    if (byte < 0x20 || byte === 0x7f) throw refuse('encoded control character in path');
    const decodedChar = String.fromCharCode(byte);
    if (byte < 0x80 && UNRESERVED.test(decodedChar)) {
      encoded += decodedChar;
      decoded += decodedChar;
    } else {
      encoded += `%${hex.toUpperCase()}`;
      decoded += `%${hex.toUpperCase()}`;
    }
  }
  return { encoded, decoded };
}

/** Decodes the remaining escapes; invalid or overlong UTF-8 is refused (fatal decoder). */
function decodeForMatching(path: string): string {
  if (!path.includes('%')) return path;
  const bytes: number[] = [];
  for (let index = 0; index < path.length; index += 1) {
    if (path[index] === '%') {
      bytes.push(Number.parseInt(path.slice(index + 1, index + 3), 16));
      index += 2;
    } else {
      bytes.push(path.charCodeAt(index));
    }
  }
  try {
    return utf8.decode(Uint8Array.from(bytes));
  } catch {
    throw refuse('invalid or overlong UTF-8 in path');
  }
}
