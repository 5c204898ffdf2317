/** How an upstream failure is named in `tokenguard_upstream_errors_total{kind}` and the logs. */
import type { UpstreamErrorKind } from '../metrics/metrics.js';

/** The error code the gateway gives an upstream it stopped waiting for. */
export const UPSTREAM_TIMEOUT_CODE = 'TOKENGUARD_UPSTREAM_TIMEOUT';

export type RecordUpstreamFailure = (
  kind: UpstreamErrorKind,
  code: string | undefined,
  websocket?: boolean,
) => void;

const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
]);

export function classifyUpstreamError(error: NodeJS.ErrnoException): UpstreamErrorKind {
  if (error.code === UPSTREAM_TIMEOUT_CODE) return 'timeout';
  if (error.code !== undefined && CONNECT_CODES.has(error.code)) return 'connect';
  return 'reset';
}
