/**
 * JSON logs through pino with an asynchronous destination: the request path never waits on
 * a write. Authorization headers and tokens are redacted by construction (they are never
 * passed to the logger) and, as a second line, by pino's redaction of the usual places.
 */
import pino, { type DestinationStream, type Logger } from 'pino';

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'tokenguard' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [
          'req.headers.authorization',
          'headers.authorization',
          'token_value',
          '*.client_secret',
        ],
        censor: '[redacted]',
      },
    },
    destination ?? pino.destination({ dest: 1, sync: false, minLength: 4096 }),
  );
}
