/**
 * The access log: one JSON line per request, written straight to pino's destination as a
 * preformatted line in pino's own shape (`level`, `time`, the base bindings, the fields,
 * `msg`), so the hot path pays for a string concatenation, not for serialising an object.
 * Values that cannot carry JSON-special characters (methods, IPs, fingerprints, the fixed
 * outcome and cache words) are written as they are; the rest go through JSON.stringify.
 * Never a token, never a query string, never a header value.
 */
import pino, { type Logger } from 'pino';

export interface AccessLine {
  method: string;
  /** The normalised path (without the query). */
  path: string | undefined;
  /** The route label as a JSON string literal (precomputed per route). */
  routeJson: string;
  outcome: string;
  status: number;
  latencyMs: number;
  cache: string | undefined;
  client: string | undefined;
  /** The first 12 characters of the token's SHA-256 (base64url). */
  token: string | undefined;
  code: string | undefined;
  detail: string | undefined;
}

export interface AccessLog {
  readonly enabled: boolean;
  write(line: AccessLine): void;
}

const INFO = 30;
/** Printable ASCII without `"` and `\`: safe inside a JSON string as it is. */
const JSON_SAFE = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

export const jsonString = (value: string): string =>
  JSON_SAFE.test(value) ? `"${value}"` : JSON.stringify(value);

export function createAccessLog(logger: Logger, enabled: boolean): AccessLog {
  const stream = (logger as unknown as Record<symbol, { write(line: string): void }>)[
    pino.symbols.streamSym
  ];
  // The base bindings as pino writes them (`,"service":"tokenguard"`).
  const bindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? '';
  const on = enabled && logger.isLevelEnabled('info') && stream !== undefined;
  return {
    enabled: on,
    write(line) {
      if (!on) return;
      let text = `{"level":${INFO},"time":${Date.now()}${bindings},"event":"access","method":"${line.method}"`;
      if (line.path !== undefined) text += `,"path":${jsonString(line.path)}`;
      text += `,"route":${line.routeJson},"outcome":"${line.outcome}","status":${line.status},"latency_ms":${line.latencyMs}`;
      if (line.cache !== undefined) text += `,"cache":"${line.cache}"`;
      if (line.client !== undefined) text += `,"client":${jsonString(line.client)}`;
      if (line.token !== undefined) text += `,"token":"${line.token}"`;
      if (line.code !== undefined) text += `,"code":"${line.code}"`;
      if (line.detail !== undefined) text += `,"detail":${jsonString(line.detail)}`;
      stream.write(`${text},"msg":"request"}\n`);
    },
  };
}
