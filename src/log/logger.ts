/**
 * JSON logs through pino with an asynchronous destination: the request path never waits on
 * a write. Tokens and Authorization headers are kept out by construction: no code passes a
 * request, its headers or a token to the logger (a short SHA-256 fingerprint at most), which
 * the test suite checks by grepping every log line for the tokens it used. pino's `redact`
 * would cost every line a path walk for data that is never there.
 */
import pino, { type DestinationStream, type Logger } from 'pino';

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'tokenguard' },
      // Epoch milliseconds (pino's default): cheaper than ISO strings on every line.
      timestamp: pino.stdTimeFunctions.epochTime,
    },
    // Asynchronous but unbuffered: a line is handed to the kernel as soon as the loop is free,
    // so `kubectl logs` is current at low traffic and a SIGKILL loses almost nothing.
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
