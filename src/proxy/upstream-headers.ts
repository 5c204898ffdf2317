/**
 * What the upstream receives (PRODUCT.md). The request's own header object is rewritten
 * before http-proxy sees it — never in http-proxy's `proxyReq` event, which it skips for
 * requests carrying `Expect:`.
 *
 * Order matters: every field the client may not send (hop-by-hop, the fields its
 * `Connection:` names, method overrides, identity headers in any casing or `_` spelling,
 * X-Forwarded-*) is removed first, then the gateway's own are set — so a client's
 * `Connection: X-Auth-Subject` can only remove its own copy, never the injected one.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { IdentityHeaders } from './identity-headers.js';

/**
 * RFC 9110 §7.6.1 hop-by-hop fields plus the legacy ones proxies still see. Transfer-Encoding
 * stays: Node re-frames the body itself, and it must know the request is chunked.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'upgrade',
  'proxy-authorization',
  'proxy-connection',
  'proxy-authenticate',
]);

/** Method overrides let a GET be served as a DELETE after the GET rule authorised it. */
const METHOD_OVERRIDES = ['x-http-method-override', 'x-http-method', 'x-method-override'];

/**
 * Fields upstreams and their frameworks trust as facts about the client or the request, that
 * only a proxy may write — and the gateway writes none of them: client address and scheme
 * (`Forwarded`, `X-Real-IP`, `True-Client-IP`, … — Spring's ForwardedHeaderFilter, chi's
 * RealIP and nginx's realip believe them), path rewrites (`X-Original-URL`, `X-Rewrite-URL`:
 * Symfony, Zend and IIS serve the path they name), and identities or certificates that
 * authenticating proxies (oauth2-proxy, Envoy) set. A client's copy never passes; from a
 * trusted proxy, only the ones `forward.keep_from_trusted_proxies` names do.
 */
export const PROXY_ASSERTED: readonly string[] = [
  'forwarded',
  'x-forwarded',
  'forwarded-for',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-forwarded-ssl',
  'x-forwarded-scheme',
  'x-forwarded-protocol',
  'x-forwarded-server',
  'x-forwarded-uri',
  'x-forwarded-path',
  'x-url-scheme',
  'front-end-https',
  'x-real-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'fastly-client-ip',
  'x-client-ip',
  'x-cluster-client-ip',
  'x-original-forwarded-for',
  'x-original-url',
  'x-rewrite-url',
  'x-original-uri',
  'x-original-host',
  'x-original-method',
  'x-host',
  'x-forwarded-user',
  'x-forwarded-email',
  'x-forwarded-preferred-username',
  'x-forwarded-groups',
  'x-forwarded-access-token',
  'x-auth-request-user',
  'x-auth-request-email',
  'x-auth-request-preferred-username',
  'x-auth-request-groups',
  'x-auth-request-access-token',
  'x-remote-user',
  'remote-user',
  'x-client-cert',
  'x-ssl-client-cert',
  'ssl-client-cert',
  'x-forwarded-client-cert',
  'x-client-certificate',
  'x-ssl-client-dn',
  'x-ssl-client-s-dn',
  'x-ssl-client-verify',
];

/**
 * The gateway's own; a client's copy is dropped. `expect` was answered by the gateway; a
 * `DPoP` proof is for the gateway to verify and never reaches the upstream (PRODUCT.md).
 */
const GATEWAY_OWNED = [
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'expect',
  'dpop',
];

export interface UpstreamHeaderPolicy {
  /** Lower-case names, `-` spelling, of fields no client copy of may pass. */
  removed: ReadonlySet<string>;
  /** The same, for a request whose peer is a trusted proxy (its kept fields are allowed). */
  removedFromTrustedProxy: ReadonlySet<string>;
  stripAuthorization: boolean;
  /** Lower-case name of the request id header (set on every forwarded request). */
  requestIdHeader: string;
}

const canonicalName = (name: string) => name.toLowerCase().replaceAll('_', '-');

export function createUpstreamHeaderPolicy(options: {
  identityHeaders: readonly string[];
  stripAuthorization: boolean;
  /** PROXY_ASSERTED fields a trusted proxy's copy of may pass (e.g. X-Forwarded-Client-Cert). */
  keepFromTrustedProxies?: readonly string[];
  /** forward.request_id_header; default X-Request-Id. */
  requestIdHeader?: string;
}): UpstreamHeaderPolicy {
  const requestIdHeader = (options.requestIdHeader ?? 'X-Request-Id').toLowerCase();
  const removed = new Set([
    canonicalName(requestIdHeader),
    ...HOP_BY_HOP,
    ...METHOD_OVERRIDES,
    ...GATEWAY_OWNED,
    ...PROXY_ASSERTED,
    ...options.identityHeaders.map(canonicalName),
  ]);
  const kept = new Set((options.keepFromTrustedProxies ?? []).map(canonicalName));
  return {
    removed,
    removedFromTrustedProxy: new Set([...removed].filter((name) => !kept.has(name))),
    stripAuthorization: options.stripAuthorization,
    requestIdHeader,
  };
}

export interface ForwardingFacts {
  /** The client address to append to X-Forwarded-For. */
  peerAddress: string;
  /** Keep the client's X-Forwarded-For (the peer is a trusted proxy). */
  keepForwardedFor: boolean;
  proto: 'http' | 'https';
  /** A WebSocket upgrade keeps `Connection: upgrade` and `Upgrade: websocket`. */
  websocket: boolean;
  /**
   * The authority of an absolute-form target: the upstream's `Host` (RFC 9112 §3.2.2 — the
   * server ignores the client's Host field then, and so must everything behind it).
   */
  authority?: string | undefined;
  /** The request id (request-id.ts): the client's copy is removed, this one set. */
  requestId: string;
}

/**
 * The header object the upstream receives, built fresh: copying what may pass is cheaper
 * than deleting from Node's object (deletes turn it into a slow dictionary-mode object that
 * every later header walk pays for).
 */
export function buildUpstreamHeaders(
  headers: IncomingHttpHeaders,
  policy: UpstreamHeaderPolicy,
  identity: IdentityHeaders,
  facts: ForwardingFacts,
): IncomingHttpHeaders {
  const named = headers.connection ? connectionTokens(headers.connection) : NO_TOKENS;
  const removed = facts.keepForwardedFor ? policy.removedFromTrustedProxy : policy.removed;
  const upstream: IncomingHttpHeaders = {};
  for (const name in headers) {
    const canonical = name.includes('_') ? name.replaceAll('_', '-') : name;
    if (removed.has(canonical) || named.has(canonical)) continue;
    upstream[name] = headers[name];
  }
  if (policy.stripAuthorization) delete upstream.authorization;

  const clientForwardedFor = facts.keepForwardedFor ? headers['x-forwarded-for'] : undefined;
  const forwardedFor = Array.isArray(clientForwardedFor)
    ? clientForwardedFor.join(', ')
    : clientForwardedFor;
  upstream['x-forwarded-for'] = forwardedFor
    ? `${forwardedFor}, ${facts.peerAddress}`
    : facts.peerAddress;
  upstream['x-forwarded-proto'] = facts.proto;
  upstream[policy.requestIdHeader] = facts.requestId;
  if (facts.authority !== undefined) upstream.host = facts.authority;
  if (upstream.host !== undefined) upstream['x-forwarded-host'] = upstream.host;
  if (facts.websocket) {
    upstream.connection = 'upgrade';
    upstream.upgrade = 'websocket';
    // A handshake carries no body (a declared one is refused before this point).
    delete upstream['content-length'];
  }
  for (let index = 0; index < identity.length; index += 2) {
    upstream[identity[index] as string] = identity[index + 1];
  }
  return upstream;
}

const NO_TOKENS: ReadonlySet<string> = new Set();
const END_TO_END: ReadonlySet<string> = new Set(['host', 'content-length', 'transfer-encoding']);

function connectionTokens(value: string): ReadonlySet<string> {
  // The common values name no other field.
  if (value === 'keep-alive' || value === 'close' || value === 'Keep-Alive' || value === 'Close') {
    return NO_TOKENS;
  }
  const tokens = new Set<string>();
  for (const token of value.split(',')) {
    // Canonical first, then checked: `content_length` is `content-length` to every rule here.
    const name = token.trim().toLowerCase().replaceAll('_', '-');
    // Never let Connection remove the fields the request itself needs end to end: without
    // its framing field the body would reach the upstream as the next request.
    if (name !== '' && !END_TO_END.has(name)) tokens.add(name);
  }
  return tokens;
}

/** Hop-by-hop fields of an upstream response (a `Trailer` field crashes http-proxy). */
export function rewriteResponseHeaders(headers: IncomingHttpHeaders): void {
  const named = headers.connection ? connectionTokens(headers.connection) : NO_TOKENS;
  for (const name in headers) {
    // Cleared, not deleted: a delete turns the object into a slow dictionary, and
    // http-proxy (and the WebSocket relay) skip undefined values alike.
    if (HOP_BY_HOP.has(name) || named.has(name)) headers[name] = undefined;
  }
}
