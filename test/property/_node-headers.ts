/**
 * Header objects exactly as Node builds them from the raw header lines: names lower-cased,
 * repeats joined with `, ` (or the first kept, for `Host`, `Authorization` and the other
 * single-valued fields), `Set-Cookie` as an array. The property tests feed the gateway what
 * a real `IncomingMessage` would carry, not an object Node could never produce.
 */
import { IncomingMessage, type IncomingHttpHeaders } from 'node:http';

interface HeaderFolding {
  _addHeaderLines(rawHeaders: string[], count: number): void;
}

export function nodeHeaders(rawHeaders: readonly string[]): IncomingHttpHeaders {
  const message = new IncomingMessage(undefined as never);
  const folding = message as unknown as Partial<HeaderFolding>;
  if (typeof folding._addHeaderLines !== 'function') {
    throw new Error('this Node no longer has IncomingMessage#_addHeaderLines; fold headers here');
  }
  folding._addHeaderLines([...rawHeaders], rawHeaders.length);
  return message.headers;
}

/** A request as far as the token and policy stages read it. */
export function fakeRequest(rawHeaders: readonly string[]): IncomingMessage {
  return { headers: nodeHeaders(rawHeaders), rawHeaders: [...rawHeaders] } as IncomingMessage;
}

/** `[name, value]` pairs flattened the way `req.rawHeaders` lists them. */
export function flattenRaw(fields: ReadonlyArray<readonly [string, string]>): string[] {
  return fields.flatMap(([name, value]) => [name, value]);
}
