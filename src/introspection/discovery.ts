/**
 * RFC 8414 discovery: with `issuer:` alone, the introspection endpoint comes from the
 * issuer's authorization-server metadata. The metadata's `issuer` must equal the configured
 * one exactly (§3.3), or an attacker-controlled document could redirect the gateway.
 */
import { request } from 'undici';

export function metadataUrl(issuer: string): URL {
  const url = new URL(issuer);
  // §3.1: the well-known segment goes between the host and the issuer's path.
  const path = url.pathname === '/' ? '' : url.pathname.replace(/\/$/, '');
  return new URL(`/.well-known/oauth-authorization-server${path}`, url.origin);
}

export async function discoverIntrospectionEndpoint(
  issuer: string,
  timeoutMs: number,
): Promise<URL> {
  const url = metadataUrl(issuer);
  const response = await request(url, {
    method: 'GET',
    headers: { accept: 'application/json' },
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (response.statusCode !== 200) {
    await response.body.dump();
    throw new Error(`discovery: ${url.href} answered HTTP ${response.statusCode}`);
  }
  const metadata = (await response.body.json()) as Record<string, unknown>;
  if (metadata === null || typeof metadata !== 'object')
    throw new Error('discovery: metadata is not a JSON object');
  if (metadata.issuer !== issuer) {
    throw new Error(
      `discovery: metadata issuer ${JSON.stringify(metadata.issuer)} is not ${issuer}`,
    );
  }
  const endpoint = metadata.introspection_endpoint;
  if (typeof endpoint !== 'string')
    throw new Error('discovery: metadata has no introspection_endpoint');
  const parsed = new URL(endpoint);
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new Error('discovery: introspection_endpoint is not an http(s) URL');
  }
  return parsed;
}
