/**
 * Method override in a form body: Rails' Rack::MethodOverride reads `_method` from the POST
 * body only, Laravel, Symfony and Spring's HiddenHttpMethodFilter read it there too — a
 * POST authorised as a POST is then executed as the PUT or DELETE it names. The gateway
 * never buffers bodies, so the form is scanned as it streams to the upstream: field names
 * (`application/x-www-form-urlencoded`) and part names (`multipart/form-data`) are held back
 * until complete and read as leniently as the query string's (see method-override.ts); the
 * bytes completing a `_method` name are never sent, the upstream request is aborted before
 * its body ends (no framework dispatches a form it has not finished reading), and the client
 * gets 400. Values stream through untouched. A field name or part-header block too long to be
 * honest is refused the same way: a name can only be read once it ends.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { readsAsMethodOverride } from './method-override.js';

/** Longer field names are refused: `_method` with thousands of leading blanks is still `_method` to PHP. */
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

/** The scanner for a POST body of this content type, or null when it cannot carry a form. */
export function createBodyOverrideScanner(
  method: string | undefined,
  contentType: string | undefined,
): Transform | null {
  if (method !== 'POST' || contentType === undefined) return null;
  const mediaType = contentType.split(';', 1)[0]?.trim().toLowerCase();
  if (mediaType === 'application/x-www-form-urlencoded') return new UrlEncodedScanner();
  if (mediaType === 'multipart/form-data') {
    const boundary = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
    const value = boundary?.[1] ?? boundary?.[2];
    // Without a boundary nobody can parse the form: refused rather than guessed at.
    return value ? new MultipartScanner(value) : new RefuseAll('multipart body without boundary');
  }
  return null;
}

class RefuseAll extends Transform {
  constructor(private readonly reason: string) {
    super();
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

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
    let start = 0; // the first byte of `chunk` neither forwarded nor held
    for (let index = 0; index < chunk.length; index += 1) {
      const byte = chunk[index] as number;
      const separator = byte === AMPERSAND || byte === SEMICOLON;
      if (this.inName) {
        if (byte !== EQUALS && !separator) continue;
        const name = Buffer.concat([this.held, chunk.subarray(start, index)]);
        if (readsAsMethodOverride(name.toString('latin1'))) {
          callback(new MethodOverrideInBody('_method field in a form body'));
          return;
        }
        if (this.held.length > 0) this.push(this.held);
        this.push(chunk.subarray(start, index + 1));
        this.held = EMPTY;
        start = index + 1;
        this.inName = byte !== EQUALS;
      } else if (separator) {
        this.push(chunk.subarray(start, index + 1));
        start = index + 1;
        this.inName = true;
      }
    }
    if (this.inName) {
      this.held = Buffer.concat([this.held, chunk.subarray(start)]);
      if (this.held.length > MAX_FIELD_NAME_BYTES) {
        callback(new MethodOverrideInBody('form field name too long to read'));
        return;
      }
    } else if (start < chunk.length) {
      this.push(chunk.subarray(start));
    }
    callback();
  }

  override _flush(callback: TransformCallback) {
    if (this.held.length > 0) {
      if (readsAsMethodOverride(this.held.toString('latin1'))) {
        callback(new MethodOverrideInBody('_method field in a form body'));
        return;
      }
      this.push(this.held);
    }
    callback();
  }
}

const AMPERSAND = 0x26;
const SEMICOLON = 0x3b;
const EQUALS = 0x3d;

/**
 * `--boundary\r\nheaders\r\n\r\nbody\r\n--boundary…`: each part's header block is held until it
 * is complete and its `name` read; bodies pass, keeping back only enough bytes to recognise
 * a delimiter split across chunks.
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
          if (final && partNameOverrides(this.pending.toString('latin1'))) {
            return new MethodOverrideInBody('_method part in a multipart body');
          }
          return null;
        }
        if (partNameOverrides(this.pending.subarray(0, end).toString('latin1'))) {
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

/** Reads every `name=` / `name*=` parameter of the part's Content-Disposition lines. */
function partNameOverrides(headerBlock: string): boolean {
  for (const match of headerBlock.matchAll(
    /\bname\*?\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\r\n]*))/gi,
  )) {
    let name = (match[1] ?? match[2] ?? '').replace(/\\(.)/g, '$1').trim();
    // RFC 5987 extended value: charset'lang'percent-encoded.
    const extended = /^[\w!#$&+.^`{}~-]*'[^']*'(.*)$/.exec(name);
    if (extended) name = extended[1] as string;
    if (readsAsMethodOverride(name)) return true;
  }
  return false;
}
