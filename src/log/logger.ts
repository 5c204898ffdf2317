/**
 * JSON logs through pino with an asynchronous destination: the request path never waits on
 * a write. Tokens and Authorization headers are kept out by construction: no code passes a
 * request, its headers or a token to the logger (a short SHA-256 fingerprint at most), which
 * the test suite checks by grepping every log line for the tokens it used. pino's `redact`
 * would cost every line a path walk for data that is never there.
 *
 * Errors are the exception to "by construction": they come from libraries and Node itself
 * and carry what they like — Node's HTTP parser errors hold the raw bytes of the request
 * (`rawPacket`: an Authorization header, cookies), client libraries attach requests and
 * configs. So an error is logged as its type, code, message and stack only (its cause
 * likewise), never its other properties — whoever logs it.
 */
import pino, { type DestinationStream, type Logger } from 'pino';

interface SafeError {
  type: string;
  message: string;
  code?: string;
  stack?: string;
  cause?: SafeError | string;
}

/** An error as the logs may hold it: no property but those named here. */
export function safeError(value: unknown, depth = 0): unknown {
  if (!(value instanceof Error)) return value;
  const safe: SafeError = { type: value.name, message: value.message };
  const code = (value as NodeJS.ErrnoException).code;
  if (typeof code === 'string') safe.code = code;
  if (value.stack !== undefined) safe.stack = value.stack;
  if (value.cause !== undefined && depth < 3) {
    safe.cause =
      value.cause instanceof Error ? (safeError(value.cause, depth + 1) as SafeError) : 'non-error';
  }
  return safe;
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'tokenguard' },
      // Epoch milliseconds (pino's default): cheaper than ISO strings on every line.
      timestamp: pino.stdTimeFunctions.epochTime,
      serializers: { err: safeError, error: safeError },
    },
    // Asynchronous but unbuffered: a line is handed to the kernel as soon as the loop is free,
    // so `kubectl logs` is current at low traffic and a SIGKILL loses almost nothing.
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
