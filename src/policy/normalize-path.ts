/**
 * Request-target normalisation, done once, before route matching. What the route table
 * matches and what the upstream receives are the same string, so a path can never be
 * authorised as one resource and served as another (the classic `/public/..;/admin`,
 * `%2e%2e`, `//admin` and `\admin` confusions between proxies and backends).
 *
 * Order (PRODUCT.md "Routing"): percent-encoded unreserved characters are decoded
 * (RFC 3986 §6.2.2.2), `//` is merged, dot-segments are removed (RFC 3986 §5.2.4).
 * Anything another server could read differently is refused rather than guessed at:
 * - `;` anywhere in the path, raw or encoded: servlet containers (Tomcat, Jetty) cut
 *   `;parameters` before mapping, so `/admin;x=1/users` is `/admin/users` to them;
 * - `%25` followed by two hex digits: an upstream that decodes once more reads `%252e%252e`
 *   as `..` and `%252f` as `/`;
 * - a segment ending in `.` or a space (other than the dot-segments themselves): Caddy's
 *   path matcher, IIS and Windows file systems trim them, so `/admin.` and `/admin%20` are
 *   `/admin` to them;
 * - a non-ASCII character that case mapping or Unicode compatibility normalisation (NFKC)
 *   turns into ASCII: Java's `equalsIgnoreCase` reads `ı` (U+0131) as `i`, .NET's
 *   `OrdinalIgnoreCase` `K` (U+212A) as `k`, and an NFKC-normalising framework reads the
 *   fullwidth `．．／` as `../`.
 */
import { badRequest, type GatewayError } from '../errors.js';

export interface NormalisedTarget {
  /** Normalised, still percent-encoded path: what the upstream receives. */
  path: string;
  /** The same path fully percent-decoded: what routes are matched against. */
  matchPath: string;
  /** `?query` as the client sent it, or ''. */
  search: string;
  /**
   * The authority of an absolute-form target (RFC 9112 §3.2.2): the upstream's `Host`.
   * Undefined for origin-form targets.
   */
  authority?: string | undefined;
}

const refuse = (detail: string): GatewayError =>
  badRequest('TOKENGUARD_AMBIGUOUS_PATH', 'the request path is not acceptable', detail);

/** Nothing in it needs work: no `%`, `\`, `;`, `//`, dot-segment, or byte outside visible ASCII. */
const NEEDS_WORK = /[%\\;#]|\/\/|\/\.\.?(?:\/|$)|\.(?:\/|$)|[^\x21-\x7e]/;
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_OR_SPACE = /[\x00-\x20\x7f]/;
const UNRESERVED = /[A-Za-z0-9\-._~]/;
const HEX = /^[0-9A-Fa-f]{2}$/;
const DOUBLE_ESCAPE = /%25[0-9A-Fa-f]{2}/;
/** What some servers trim from the end of a segment (the segment is already decoded for unreserved). */
const TRIMMED_TAIL = /(?:\.|%20)$/;
const ABSOLUTE_FORM = /^https?:\/\/([^/?#]*)/i;
/**
 * RFC 3986 §3.2.2 host (reg-name or IP-literal) and optional port. No userinfo: RFC 9110
 * §4.2.4 forbids it in http(s) URIs, and `user@host` is read differently by different servers.
 */
export const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,=]+)(?::[0-9]{1,5})?$/;
/** Anything case mapping or NFKC could turn into one of these is refused. */
// eslint-disable-next-line no-control-regex -- ASCII is the point
const ASCII = /[\x00-\x7f]/;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * @param target the raw request-target (`req.url`)
 * @throws GatewayError 400 for every ambiguous form
 */
export function normaliseRequestTarget(target: string): NormalisedTarget {
  let rest = target;
  let authority: string | undefined;
  if (!rest.startsWith('/')) {
    // absolute-form (RFC 9112 §3.2.2): route on its path; anything else is not ours to serve.
    const match = ABSOLUTE_FORM.exec(rest);
    if (!match) throw refuse('request target is neither origin-form nor absolute-form');
    authority = match[1] as string;
    if (!AUTHORITY.test(authority)) throw refuse('absolute-form authority is not host[:port]');
    rest = rest.slice(match[0].length) || '/';
    if (rest.startsWith('?')) rest = `/${rest}`;
  }
  const queryAt = rest.indexOf('?');
  const rawPath = queryAt === -1 ? rest : rest.slice(0, queryAt);
  const search = queryAt === -1 ? '' : rest.slice(queryAt);
  if (search.includes('#')) throw refuse('fragment in request target');
  if (CONTROL_OR_SPACE.test(search)) throw refuse('control character in query');

  if (!NEEDS_WORK.test(rawPath)) return { path: rawPath, matchPath: rawPath, search, authority };

  if (rawPath.includes('#')) throw refuse('fragment in request target');
  if (rawPath.includes('\\')) throw refuse('backslash in path');
  if (rawPath.includes(';')) throw refuse('; in path (servlet path parameter)');
  if (/[^\x21-\x7e]/.test(rawPath)) throw refuse('control, space or non-ASCII byte in path');

  const segments = rawPath.slice(1).split('/');
  const output: string[] = [];
  for (let index = 0; index < segments.length; index += 1) {
    const raw = segments[index] as string;
    const isLast = index === segments.length - 1;
    if (raw === '' && !isLast) continue; // `//` merged
    const segment = raw.includes('%') ? decodeUnreserved(raw) : raw;
    if (segment === '.') {
      if (isLast) output.push('');
      continue;
    }
    if (segment === '..') {
      if (output.length === 0) throw refuse('.. above the root');
      output.pop();
      if (isLast) output.push('');
      continue;
    }
    if (TRIMMED_TAIL.test(segment)) throw refuse('segment ending in . or space');
    output.push(segment);
  }
  const path = `/${output.join('/')}`;
  return { path, matchPath: decodeForMatching(path), search, authority };
}

/**
 * Decodes the escapes of unreserved characters and upper-cases the hex of the others;
 * refuses the escapes no server may read differently: `/`, `\`, `;`, controls, and `%25`
 * followed by what would be an escape after a second decode.
 */
function decodeUnreserved(raw: string): string {
  let encoded = '';
  for (let index = 0; index < raw.length; index += 1) {
    const char = raw[index] as string;
    if (char !== '%') {
      encoded += char;
      continue;
    }
    const hex = raw.slice(index + 1, index + 3);
    if (!HEX.test(hex)) throw refuse('malformed percent-encoding');
    const byte = Number.parseInt(hex, 16);
    index += 2;
    if (byte === 0x2f || byte === 0x5c) throw refuse('encoded / or \\ in path');
    if (byte === 0x3b) throw refuse('encoded ; in path (servlet path parameter)');
    if (byte < 0x20 || byte === 0x7f) throw refuse('encoded control character in path');
    const decodedChar = String.fromCharCode(byte);
    encoded += byte < 0x80 && UNRESERVED.test(decodedChar) ? decodedChar : `%${hex.toUpperCase()}`;
  }
  // Checked on the output: `%25%32%65` only becomes `%252e` once `%32%65` is decoded.
  if (DOUBLE_ESCAPE.test(encoded)) {
    throw refuse('double percent-encoding (%25 followed by hex digits)');
  }
  return encoded;
}

/**
 * Decodes the remaining escapes; invalid or overlong UTF-8 is refused (fatal decoder), and
 * so is every non-ASCII character that another server's case folding or NFKC reads as ASCII.
 */
function decodeForMatching(path: string): string {
  if (!path.includes('%')) return path;
  const bytes: number[] = [];
  let nonAscii = false;
  for (let index = 0; index < path.length; index += 1) {
    if (path[index] === '%') {
      const byte = Number.parseInt(path.slice(index + 1, index + 3), 16);
      if (byte >= 0x80) nonAscii = true;
      bytes.push(byte);
      index += 2;
    } else {
      bytes.push(path.charCodeAt(index));
    }
  }
  let decoded: string;
  try {
    decoded = utf8.decode(Uint8Array.from(bytes));
  } catch {
    throw refuse('invalid or overlong UTF-8 in path');
  }
  if (nonAscii) {
    for (const char of decoded) {
      if (char.charCodeAt(0) >= 0x80 && readsAsAscii(char)) {
        throw refuse(
          `U+${char.codePointAt(0)?.toString(16).toUpperCase()} reads as ASCII elsewhere`,
        );
      }
    }
  }
  return decoded;
}

/** `ı`→`I`, `ſ`→`S`, `K`→`k`, `ß`→`SS`, `ﬁ`→`FI`, fullwidth `Ａ`→`A`, `／`→`/` … */
export function readsAsAscii(char: string): boolean {
  const compatible = char.normalize('NFKC');
  return (
    ASCII.test(char.toUpperCase()) ||
    ASCII.test(char.toLowerCase()) ||
    ASCII.test(compatible) ||
    ASCII.test(compatible.toUpperCase()) ||
    ASCII.test(compatible.toLowerCase())
  );
}
