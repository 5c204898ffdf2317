/**
 * Method override in a form body: Rails' Rack::MethodOverride reads `_method` from the POST
 * body only, Laravel, Symfony and Spring's HiddenHttpMethodFilter read it there too — a
 * POST authorised as a POST is then executed as the PUT or DELETE it names. The gateway
 * never buffers bodies, so the form is scanned as it streams to the upstream: field names
 * (`application/x-www-form-urlencoded`) and part names (`multipart/*`) are held back until
 * complete and read as leniently as the most lenient framework reads them (see
 * method-override.ts, and readsAsBodyOverride below); the bytes completing a `_method` name
 * are never sent, the upstream request is aborted before its body ends (no framework
 * dispatches a form it has not finished reading), and the client gets 400. Values stream
 * through untouched. A field name or part-header block too long to be honest is refused the
 * same way: a name can only be read once it ends.
 *
 * Whether a body is a form, and how it is framed, is decided as the most lenient backend
 * decides it — not as RFC 9110 would — and whatever the scanner cannot read exactly as every
 * backend reads it is refused before a byte is sent (a red-team finding: each of these reached
 * the upstream intact):
 * - the media type is the text before the first `;`, `,` or blank, in any case (Rack splits
 *   on `;` and `,`, PHP also cuts at a space); a POST with a body and no media type is a form
 *   to Rack (`Request#form_data?`), so it is scanned as one; a media type with a non-ASCII
 *   byte (`multıpart`) is refused;
 * - every `multipart/*` is a form (Rack parses multipart/mixed and multipart/related too), and
 *   its boundary must read the same to every parser: Rack takes the last `boundary=` anywhere
 *   and ends it at `"`, `;` or `,`; PHP the first `boundary`, ending at `,` or `;`; Tomcat the
 *   last parameter, decoding RFC 2047 words in it. So the content type must be plain
 *   parameters (RFC 9110 §5.6.6) with one `boundary` of RFC 2046 characters, which must also
 *   be PHP's first `boundary` and Rack's last `boundary=`, and nothing may follow an unquoted
 *   value but `;`: anything else is refused, never guessed at;
 * - a Content-Encoding other than identity (Express's body-parser inflates gzip and deflate),
 *   a Transfer-Encoding other than chunked, or a charset that is not ASCII-compatible (Tomcat
 *   decodes a UTF-16 form, names included, and so does ASP.NET Core) hide the names from the
 *   scanner: refused. Every `charset=` in the content type counts, wherever it is (Tomcat once
 *   took the first `charset=` substring).
 * Not handled, on purpose: `text/plain` bodies (no override reader parses them as a form), and
 * a `_charset_` field (Jetty applies it to multipart values only, never to names; Tomcat, Rack,
 * PHP and body-parser ignore it).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import { readsAsMethodOverride } from './method-override.js';

/**
 * A field name is held back until it ends, up to this many bytes. A longer one is refused
 * (`_method` behind thousands of blanks or brackets is still `_method` to PHP and Rack) —
 * unless its beginning already decides it: see longNameIsHarmless.
 */
export const MAX_FIELD_NAME_BYTES = 1024;
/** A multipart part's header block beyond this is refused. */
export const MAX_PART_HEADER_BYTES = 8 * 1024;

const EMPTY = Buffer.alloc(0);

export class MethodOverrideInBody extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'MethodOverrideInBody';
  }
}

/**
 * The scanner for a POST body, or null when no framework reads it as a form. A returned
 * scanner may refuse the body before any of it arrives: its 'error' listener must be in place
 * before the next tick.
 */
export function createBodyOverrideScanner(
  method: string | undefined,
  headers: IncomingHttpHeaders,
): Transform | null {
  if (method !== 'POST') return null;
  const contentType = headers['content-type'] ?? '';
  const kind = formKind(contentType);
  if (kind === NOT_A_FORM || !hasBody(headers)) return null;
  if (kind === UNREADABLE) return new RefuseAll('non-ASCII media type');
  const unreadable = unreadableForm(contentType, headers);
  if (unreadable !== null) return new RefuseAll(unreadable);
  if (kind === URLENCODED) return new UrlEncodedScanner();
  const boundary = agreedBoundary(contentType);
  return boundary === null
    ? new RefuseAll('multipart boundary missing or read differently by different parsers')
    : new MultipartScanner(boundary);
}

// ── what the headers say ──

const NOT_A_FORM = 0;
const URLENCODED = 1;
const MULTIPART = 2;
const UNREADABLE = 3;
type FormKind = typeof NOT_A_FORM | typeof URLENCODED | typeof MULTIPART | typeof UNREADABLE;

const FORM_URLENCODED = 'application/x-www-form-urlencoded';
const MULTIPART_PREFIX = 'multipart/';
const SPACE = 0x20;
const COMMA = 0x2c;
const SEMICOLON = 0x3b;

/**
 * The media type read the most lenient way: from the first non-blank to the first `;`, `,`
 * or blank, ASCII case ignored. No allocation: this runs on every POST.
 */
function formKind(contentType: string): FormKind {
  const length = contentType.length;
  let start = 0;
  while (start < length && contentType.charCodeAt(start) <= SPACE) start += 1;
  let end = start;
  let ascii = true;
  for (; end < length; end += 1) {
    const code = contentType.charCodeAt(end);
    if (code <= SPACE || code === SEMICOLON || code === COMMA) break;
    if (code >= 0x7f) ascii = false;
  }
  if (end === start) return URLENCODED;
  if (end - start === FORM_URLENCODED.length && sameAscii(contentType, start, FORM_URLENCODED)) {
    return URLENCODED;
  }
  if (end - start >= MULTIPART_PREFIX.length && sameAscii(contentType, start, MULTIPART_PREFIX)) {
    return ascii ? MULTIPART : UNREADABLE;
  }
  // Java's equalsIgnoreCase reads `ı` (U+0131) as `i`: a media type that is not plain ASCII
  // could be a form to a backend that decodes header bytes as UTF-8.
  return ascii ? NOT_A_FORM : UNREADABLE;
}

/** `text` at `start` spells `lower` (lower-case ASCII), ignoring ASCII case. */
function sameAscii(text: string, start: number, lower: string): boolean {
  for (let index = 0; index < lower.length; index += 1) {
    let code = text.charCodeAt(start + index);
    if (code >= 0x41 && code <= 0x5a) code += 0x20;
    if (code !== lower.charCodeAt(index)) return false;
  }
  return true;
}

function hasBody(headers: IncomingHttpHeaders): boolean {
  if (headers['transfer-encoding'] !== undefined) return true;
  const length = headers['content-length'];
  return length !== undefined && Number(length) !== 0;
}

const IDENTITY = /^[ \t]*(?:identity[ \t]*)?$/i;
const CHUNKED = /^[ \t]*chunked[ \t]*$/i;
/** Every `charset=` (`charset*=` too), anywhere: as a parameter or as a substring. */
const CHARSET = /charset[ \t*]*=/gi;
const CHARSET_VALUE = /[ \t]*(?:"([^"]*)"|([^";,\s]*))(?=$|[;,\s])/y;
/** Charsets in which the bytes of `_method`, `=`, `&`, `;` and CRLF mean what ASCII says. */
const ASCII_COMPATIBLE = new Set([
  'utf-8',
  'utf8',
  'us-ascii',
  'ascii',
  'iso-8859-1',
  'iso8859-1',
  'iso_8859-1',
  'latin1',
  'windows-1252',
  'cp1252',
]);

/** Why the scanner cannot read this form as the upstream will, or null when it can. */
function unreadableForm(contentType: string, headers: IncomingHttpHeaders): string | null {
  const coding = headers['content-encoding'];
  if (coding !== undefined && !IDENTITY.test(coding)) return 'form body with a Content-Encoding';
  const transfer = headers['transfer-encoding'];
  if (transfer !== undefined && !CHUNKED.test(transfer)) {
    return 'form body with a transfer coding other than chunked';
  }
  for (const match of contentType.matchAll(CHARSET)) {
    CHARSET_VALUE.lastIndex = match.index + match[0].length;
    const value = CHARSET_VALUE.exec(contentType);
    const charset = (value?.[1] ?? value?.[2])?.toLowerCase();
    if (charset === undefined || !ASCII_COMPATIBLE.has(charset)) {
      return 'form charset not ASCII-compatible';
    }
  }
  return null;
}

const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const MEDIA_TYPE = /^\s*[^;,\s]*/;
/** `; name=token` or `; name="quoted"` (no escapes: parsers disagree on them). */
const PARAMETER = new RegExp(`[ \\t]*;[ \\t]*(${TOKEN})=(?:(${TOKEN})|"([^"\\\\]*)")`, 'y');
const PARAMETERS_END = /[ \t]*;?[ \t]*$/y;
/** RFC 2046 §5.1.1 characters, without the space (Rack keeps trailing blanks, Tomcat trims). */
const BOUNDARY = /^[0-9A-Za-z'()+_\-./:=?]{1,70}$/;
const BOUNDARY_WORD = /boundary/i;
const BOUNDARY_ASSIGNED = /boundary=/i;

/**
 * The boundary when every parser reads the same one, else null. Tomcat takes the last
 * `boundary` parameter; PHP the first `boundary` substring (case-sensitive, else in any case)
 * and the text after the next `=`; Rack the last `boundary=` substring in any case. Browsers'
 * boundaries hold the word themselves (`----WebKitFormBoundary…`, `----geckoformboundary…`),
 * so it is where the word occurs that matters, not how often.
 */
function agreedBoundary(contentType: string): string | null {
  // `,` ends a boundary for Rack and PHP but not inside Tomcat's quotes; escapes differ too.
  if (contentType.includes(',') || contentType.includes('\\')) return null;
  let at = (MEDIA_TYPE.exec(contentType) as RegExpExecArray)[0].length;
  let boundary: string | undefined;
  let nameAt = -1;
  for (;;) {
    PARAMETER.lastIndex = at;
    const parameter = PARAMETER.exec(contentType);
    if (parameter === null) break;
    const name = parameter[1] as string;
    at = PARAMETER.lastIndex;
    if (name.toLowerCase() !== 'boundary') continue;
    if (boundary !== undefined) return null;
    boundary = parameter[2] ?? parameter[3];
    nameAt = parameter.index + parameter[0].indexOf(name);
    // Rack and PHP end an unquoted boundary at `;` only, keeping blanks before it.
    if (parameter[2] !== undefined && at < contentType.length && contentType[at] !== ';') {
      return null;
    }
  }
  PARAMETERS_END.lastIndex = at;
  if (!PARAMETERS_END.test(contentType)) return null;
  // `=?…?=` is an RFC 2047 word to Tomcat, decoded before use.
  if (boundary === undefined || !BOUNDARY.test(boundary) || boundary.includes('=?')) return null;
  const sensitive = contentType.indexOf('boundary');
  const phpAt = sensitive === -1 ? contentType.search(BOUNDARY_WORD) : sensitive;
  if (phpAt !== nameAt) return null;
  if (BOUNDARY_ASSIGNED.test(contentType.slice(nameAt + 'boundary='.length))) return null;
  return boundary;
}

// ── the scanners ──

/** A body that cannot be read as its upstream will read it: refused before any of it is sent. */
class RefuseAll extends Transform {
  constructor(private readonly reason: string) {
    super();
    // At once rather than at the first chunk: the upstream request is destroyed before its
    // head is written, and a client waiting for `100 Continue` gets the 400 instead.
    process.nextTick(() => this.destroy(new MethodOverrideInBody(reason)));
  }

  override _transform(_chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
    callback(new MethodOverrideInBody(this.reason));
  }
}

/** `name=value&name=value`: names are held until `=`, `&` or `;` ends them. */
class UrlEncodedScanner extends Transform {
  private inName = true;
  /** The current name's bytes, not forwarded yet. */
  private held: Buffer = EMPTY;
  /** The current name is long and already known not to be `_method`: it streams through. */
  private nameDecided = false;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
    let start = 0; // the first byte of `chunk` neither forwarded nor held
    for (let index = 0; index < chunk.length; index += 1) {
      const byte = chunk[index] as number;
      const separator = byte === AMPERSAND || byte === SEMICOLON;
      if (this.inName) {
        if (byte !== EQUALS && !separator) continue;
        if (!this.nameDecided) {
          const name = Buffer.concat([this.held, chunk.subarray(start, index)]);
          if (readsAsBodyOverride(name.toString('latin1'))) {
            callback(new MethodOverrideInBody('_method field in a form body'));
            return;
          }
          if (this.held.length > 0) this.push(this.held);
          this.held = EMPTY;
        }
        this.push(chunk.subarray(start, index + 1));
        start = index + 1;
        this.inName = byte !== EQUALS;
        this.nameDecided = false;
      } else if (separator) {
        this.push(chunk.subarray(start, index + 1));
        start = index + 1;
        this.inName = true;
      }
    }
    if (this.inName && !this.nameDecided) {
      this.held = Buffer.concat([this.held, chunk.subarray(start)]);
      if (this.held.length > MAX_FIELD_NAME_BYTES) {
        if (!longNameIsHarmless(this.held)) {
          callback(new MethodOverrideInBody('form field name too long to read'));
          return;
        }
        this.push(this.held);
        this.held = EMPTY;
        this.nameDecided = true;
      }
    } else if (start < chunk.length) {
      this.push(chunk.subarray(start));
    }
    callback();
  }

  override _flush(callback: TransformCallback) {
    if (this.held.length > 0) {
      if (readsAsBodyOverride(this.held.toString('latin1'))) {
        callback(new MethodOverrideInBody('_method field in a form body'));
        return;
      }
      this.push(this.held);
    }
    callback();
  }
}

const AMPERSAND = 0x26;
const EQUALS = 0x3d;
const PERCENT = 0x25;
/** What every reading drops from the front of a name (readsAsBodyOverride's and PHP's). */
const NAME_JUNK = /^[\s\0[\]+]+/;
const DECIDING_CHARACTERS = 16;

/**
 * A name longer than MAX_FIELD_NAME_BYTES whose beginning already rules out `_method` for
 * every continuation — so a body that is no form at all (JSON or text POSTed without a
 * Content-Type, which Rack reads as a form) is not refused for one long "name". Without
 * escapes every byte reads as one character, so each reading of the name is fixed by its
 * beginning once that holds 16 characters past what the readings drop from the front: the
 * name either ends (at `[`, `]` or NUL) within them, as it does in every continuation, or is
 * far longer than `_method`. An escape can combine with bytes not seen yet (`%25` + `5F`),
 * and a name that is all blanks or brackets so far could still end in `_method`: refused.
 */
function longNameIsHarmless(held: Buffer): boolean {
  if (held.includes(PERCENT)) return false;
  const text = held.toString('latin1');
  return !readsAsBodyOverride(text) && text.replace(NAME_JUNK, '').length >= DECIDING_CHARACTERS;
}

/**
 * `--boundary\r\nheaders\r\n\r\nbody\r\n--boundary…`: each part's header block is held until it
 * is complete and its names read; bodies pass, keeping back only enough bytes to recognise a
 * delimiter split across chunks. The delimiter is looked for anywhere, not only after a line
 * break, and a header block runs to the first blank CRLF line: whatever another parser takes
 * for a header block (PHP accepts bare LF lines) lies inside one of these.
 */
class MultipartScanner extends Transform {
  private readonly delimiter: Buffer;
  /** Bytes not yet forwarded. */
  private pending: Buffer = EMPTY;
  /** Inside a part's header block (or before the first delimiter's line ends). */
  private inHeaders = false;

  constructor(boundary: string) {
    super();
    this.delimiter = Buffer.from(`--${boundary}`, 'latin1');
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const error = this.scan(false);
    callback(error ?? undefined);
  }

  override _flush(callback: TransformCallback) {
    const error = this.scan(true);
    if (!error && this.pending.length > 0) this.push(this.pending);
    this.pending = EMPTY;
    callback(error ?? undefined);
  }

  /** Forwards what is safe; returns an error when a part name reads as `_method`. */
  private scan(final: boolean): MethodOverrideInBody | null {
    for (;;) {
      if (this.inHeaders) {
        const end = this.pending.indexOf('\r\n\r\n', 0, 'latin1');
        if (end === -1) {
          if (this.pending.length > MAX_PART_HEADER_BYTES) {
            return new MethodOverrideInBody('multipart part headers too long to read');
          }
          if (final && partHeadersOverride(this.pending.toString('latin1'))) {
            return new MethodOverrideInBody('_method part in a multipart body');
          }
          return null;
        }
        if (partHeadersOverride(this.pending.subarray(0, end).toString('latin1'))) {
          return new MethodOverrideInBody('_method part in a multipart body');
        }
        this.push(this.pending.subarray(0, end + 4));
        this.pending = this.pending.subarray(end + 4);
        this.inHeaders = false;
        continue;
      }
      const at = this.pending.indexOf(this.delimiter);
      if (at === -1) {
        // Keep back what could be the start of a delimiter split across chunks.
        const keep = final ? 0 : Math.min(this.pending.length, this.delimiter.length + 1);
        const send = this.pending.length - keep;
        if (send > 0) this.push(this.pending.subarray(0, send));
        this.pending = this.pending.subarray(send);
        return null;
      }
      // Everything up to and including the delimiter goes; the part's headers follow it.
      const after = at + this.delimiter.length;
      this.push(this.pending.subarray(0, after));
      this.pending = this.pending.subarray(after);
      this.inHeaders = true;
    }
  }
}

// ── reading names ──

/**
 * `_method` as some body parser reads the name: method-override.ts's lenient reading, plus
 * Rack 2's and qs's (Express `urlencoded({ extended: true })`), which drop leading `[` and `]`
 * from the decoded name and end it at `]`: `[_method]=` and `_method]=` set `_method`.
 */
function readsAsBodyOverride(rawName: string): boolean {
  if (readsAsMethodOverride(rawName)) return true;
  if (!MIGHT_OVERRIDE.test(rawName)) return false;
  let name = rawName.replaceAll('+', ' ');
  for (let round = 0; round < 3 && name.includes('%'); round += 1) {
    name = name.replace(ESCAPE, (_escape, hex: string) =>
      String.fromCharCode(Number.parseInt(hex, 16)),
    );
  }
  const inner = name.replace(LEADING_BRACKETS, '');
  const cut = inner.search(BRACKET);
  return readsAsMethodOverride(cut === -1 ? inner : inner.slice(0, cut));
}

const MIGHT_OVERRIDE = /method|%/i;
const ESCAPE = /%([0-9A-Fa-f]{2})/g;
const LEADING_BRACKETS = /^[\s\0[\]]+/;
const BRACKET = /[[\]]/;

/** `name` / `name*` parameters; a `name*0` continuation is caught by its digit. */
const NAME_PARAMETER = /\bname(\*\d*\*?)?\s*=\s*/gi;
/** Rack names a part by its Content-ID when the disposition has no name. */
const CONTENT_ID = /content-id:\s*([^\r\n]*)/gi;
/** RFC 2231 / RFC 5987 extended value: charset'language'percent-encoded. */
const EXTENDED_VALUE = /^([\w!#$&+.^`{}~-]*)'[^']*'(.*)$/s;
/** RFC 2047 encoded word, which Tomcat's and commons-fileupload's parameter parser decode. */
const ENCODED_WORD = /=\?([^?\s]*)\?([bq])\?([^?\s]*)\?=/gi;
const BETWEEN_ENCODED_WORDS = /\?=\s+=\?/g;

/**
 * A part whose header block names it `_method` by any parser's reading: every `name=`
 * parameter anywhere in the block (quoted with `"` or, for PHP, `'`; unquoted up to `;`, a
 * blank or any non-token character; RFC 2231 and RFC 2047 encodings decoded) and Rack's
 * Content-ID fallback. A name continued over `name*0=`, `name*1=` is refused unread.
 */
function partHeadersOverride(block: string): boolean {
  for (const match of block.matchAll(NAME_PARAMETER)) {
    const suffix = match[1];
    if (suffix !== undefined && /\d/.test(suffix)) return true;
    for (const value of parameterReadings(block, match.index + match[0].length)) {
      if (partNameOverrides(value, suffix !== undefined)) return true;
    }
  }
  for (const match of block.matchAll(CONTENT_ID)) {
    const value = match[1] as string;
    if (partNameOverrides(value, false) || partNameOverrides(value.trim(), false)) return true;
  }
  return false;
}

/** The values different parsers read for the parameter whose value starts at `at`. */
function parameterReadings(block: string, at: number): string[] {
  const quote = block[at];
  if (quote === '"' || quote === "'") {
    // Up to the closing quote, `\` escaping; PHP reads to the line's end without one.
    let value = '';
    for (let index = at + 1; index < block.length; index += 1) {
      let char = block[index] as string;
      if (char === quote || char === '\r' || char === '\n') break;
      if (char === '\\' && index + 1 < block.length) {
        index += 1;
        char = block[index] as string;
      }
      value += char;
    }
    return [value];
  }
  const lineEnd = block.slice(at).search(/[\r\n]/);
  const line = lineEnd === -1 ? block.slice(at) : block.slice(at, at + lineEnd);
  const upTo = (pattern: RegExp) => {
    const end = line.search(pattern);
    return end === -1 ? line : line.slice(0, end);
  };
  // Tomcat reads to `;`, PHP to a blank, Rack and busboy to the first non-token character.
  return [upTo(/;/).trim(), upTo(/\s/), upTo(/[\s"(),/:;<=>?@[\\\]{}]/)];
}

/** `value` names the part `_method`; `extended`: it is a `name*` (RFC 2231) value. */
function partNameOverrides(value: string, extended: boolean): boolean {
  if (readsAsDecodedOverride(value)) return true;
  const parts = EXTENDED_VALUE.exec(value);
  if (parts === null) return false;
  // charset'language'value: a charset Tomcat decodes but the scanner cannot read is refused.
  const charset = (parts[1] as string).toLowerCase();
  if (extended && charset !== '' && !ASCII_COMPATIBLE.has(charset)) return true;
  return readsAsDecodedOverride(parts[2] as string);
}

function readsAsDecodedOverride(name: string): boolean {
  if (readsAsBodyOverride(name)) return true;
  if (!name.includes('=?')) return false;
  const decoded = decodeEncodedWords(name);
  return decoded === null || readsAsBodyOverride(decoded);
}

/** RFC 2047 words decoded (as bytes); null when one names a charset that is not ASCII-compatible. */
function decodeEncodedWords(text: string): string | null {
  let unreadable = false;
  const decoded = text
    .replace(BETWEEN_ENCODED_WORDS, '?==?')
    .replace(ENCODED_WORD, (_word, charset: string, encoding: string, data: string) => {
      // RFC 2231 §5: `charset*language`.
      if (!ASCII_COMPATIBLE.has((charset.split('*')[0] as string).toLowerCase())) {
        unreadable = true;
        return '';
      }
      if (encoding === 'b' || encoding === 'B') {
        return Buffer.from(data, 'base64').toString('latin1');
      }
      return data
        .replaceAll('_', ' ')
        .replace(/=([0-9A-Fa-f]{2})/g, (_escape, hex: string) =>
          String.fromCharCode(Number.parseInt(hex, 16)),
        );
    });
  return unreadable ? null : decoded;
}
