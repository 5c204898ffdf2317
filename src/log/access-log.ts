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
  /** Ms to the upstream's response headers (forwarded requests). */
  upstreamMs: number | undefined;
  /** request-id.ts: well formed (JSON-safe) by construction. */
  requestId: string;
  /** The trace id of a valid `traceparent` (32 hex digits). */
  traceId: string | undefined;
}

export interface AccessLog {
  readonly enabled: boolean;
  write(line: AccessLine): void;
  /** Hands the lines still batched to pino's destination now (shutdown). */
  flush(): void;
}

const INFO = 30;
/** Printable ASCII without `"` and `\`: safe inside a JSON string as it is. */
const JSON_SAFE = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

export const jsonString = (value: string): string =>
  JSON_SAFE.test(value) ? `"${value}"` : JSON.stringify(value);

/** Lines are batched per turn of the event loop; a batch this large goes at once. */
const MAX_BATCH_CHARS = 16 * 1024;

/**
 * Lines are handed to pino's destination (SonicBoom) in one string per turn of the event
 * loop: SonicBoom measures the byte length of the string it is appending to on every write,
 * which flattens it — per line, that is quadratic in the lines waiting for the disk.
 */
export function createAccessLog(logger: Logger, enabled: boolean): AccessLog {
  const stream = (logger as unknown as Record<symbol, { write(line: string): void }>)[
    pino.symbols.streamSym
  ];
  // The base bindings as pino writes them (`,"service":"tokenguard"`).
  const bindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? '';
  const on = enabled && logger.isLevelEnabled('info') && stream !== undefined;
  // Only SonicBoom (pino's own destination: it has flushSync) pays for appends; any other
  // destination gets each line as it is made.
  const batching = typeof (stream as { flushSync?: unknown } | undefined)?.flushSync === 'function';
  let batch: string[] = [];
  let batchChars = 0;
  const flush = () => {
    if (batch.length === 0) return;
    const text = batch.join('');
    batch = [];
    batchChars = 0;
    stream?.write(text);
  };
  return {
    enabled: on,
    flush,
    write(line) {
      if (!on) return;
      let text = `{"level":${INFO},"time":${Date.now()}${bindings},"event":"access","request_id":"${line.requestId}"`;
      if (line.traceId !== undefined) text += `,"trace_id":"${line.traceId}"`;
      text += `,"method":"${line.method}"`;
      if (line.path !== undefined) text += `,"path":${jsonString(line.path)}`;
      text += `,"route":${line.routeJson},"outcome":"${line.outcome}","status":${line.status},"latency_ms":${line.latencyMs}`;
      if (line.upstreamMs !== undefined) text += `,"upstream_ms":${line.upstreamMs}`;
      if (line.cache !== undefined) text += `,"cache":"${line.cache}"`;
      if (line.client !== undefined) text += `,"client":${jsonString(line.client)}`;
      if (line.token !== undefined) text += `,"token":"${line.token}"`;
      if (line.code !== undefined) text += `,"code":"${line.code}"`;
      if (line.detail !== undefined) text += `,"detail":${jsonString(line.detail)}`;
      text += ',"msg":"request"}\n';
      if (!batching) {
        stream?.write(text);
        return;
      }
      if (batch.length === 0) setImmediate(flush);
      batch.push(text);
      batchChars += text.length;
      if (batchChars >= MAX_BATCH_CHARS) flush();
    },
  };
}
