/**
 * The request id: one per request, in the access line, sent to the upstream and back to the
 * client under `forward.request_id_header` (X-Request-Id), so one request can be followed
 * through the ingress, the gateway and the API in an incident. A trusted proxy's id (an
 * ingress that already assigned one) is kept when it is well formed; anyone else's copy is
 * replaced — a client could otherwise pick the id of someone else's request, or put JSON or
 * line breaks in logs that trust the field. Taken from the W3C `traceparent` when a valid one
 * arrives, the trace id goes into the access line too (the field itself passes unchanged).
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

const kRequestId = Symbol('tokenguard.requestId');
type Carrier = IncomingMessage & { [kRequestId]?: string };

/** What an id from a proxy may look like: short, and safe in a header, a log and a URL. */
const WELL_FORMED = /^[\w.:+=@/-]{1,128}$/;

export interface RequestIds {
  /** The header's lower-case name. */
  readonly header: string;
  /** The request's id (decided once, then remembered on the request). */
  of(req: IncomingMessage): string;
}

export function createRequestIds(options: {
  header: string;
  /** Whether the request's peer is a trusted proxy. */
  fromTrustedProxy: (req: IncomingMessage) => boolean;
}): RequestIds {
  const header = options.header.toLowerCase();
  return {
    header,
    of(req) {
      const known = (req as Carrier)[kRequestId];
      if (known !== undefined) return known;
      const sent = req.headers[header];
      const id =
        typeof sent === 'string' && WELL_FORMED.test(sent) && options.fromTrustedProxy(req)
          ? sent
          : randomUUID();
      (req as Carrier)[kRequestId] = id;
      return id;
    },
  };
}

/** `version-traceid-parentid-flags` (W3C Trace Context §3.2), version 00 or a later one. */
const TRACEPARENT = /^([\da-f]{2})-([\da-f]{32})-([\da-f]{16})-([\da-f]{2})(?:-.*)?$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_PARENT = '0'.repeat(16);

/** The trace id of a valid `traceparent` field, else undefined. */
export function traceIdOf(traceparent: string | string[] | undefined): string | undefined {
  if (typeof traceparent !== 'string' || traceparent.length < 55) return undefined;
  const parts = TRACEPARENT.exec(traceparent);
  if (parts === null) return undefined;
  const [, version, traceId, parentId] = parts as unknown as [string, string, string, string];
  // Version ff is invalid; version 00 has exactly four fields.
  if (version === 'ff' || (version === '00' && traceparent.length !== 55)) return undefined;
  if (traceId === ZERO_TRACE || parentId === ZERO_PARENT) return undefined;
  return traceId;
}

/** The request's `traceparent` when it is valid (to send along to the authorization server). */
export function traceparentOf(req: IncomingMessage): string | undefined {
  const value = req.headers.traceparent;
  return traceIdOf(value) === undefined ? undefined : (value as string);
}
