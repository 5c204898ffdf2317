/**
 * `tokenguard revoke --config FILE (--sub S | --client-id C | --token-hash H)`: asks the
 * gateway's admin port (from the same config) to revoke, with `admin.revoke_token`. In
 * fleet mode one replica tells them all.
 */
import { request } from 'undici';
import type { Config } from '../config/schema.js';

export interface RevokeArguments {
  sub?: string[] | undefined;
  clientId?: string[] | undefined;
  tokenHash?: string[] | undefined;
}

export async function revokeThroughAdmin(
  config: Config,
  args: RevokeArguments,
): Promise<{ ok: boolean; text: string }> {
  const token = config.admin.revoke_token;
  if (token === undefined)
    return { ok: false, text: 'admin.revoke_token is not set in the config' };
  const body: Record<string, string[]> = {};
  if (args.sub?.length) body.sub = args.sub;
  if (args.clientId?.length) body.client_id = args.clientId;
  if (args.tokenHash?.length) body.token_hashes = args.tokenHash;
  if (Object.keys(body).length === 0) {
    return { ok: false, text: 'name what to revoke: --sub, --client-id or --token-hash' };
  }
  // The admin port binds 0.0.0.0 or :: in a pod: the CLI runs beside it and asks loopback.
  const host = ['0.0.0.0', '::', ''].includes(config.admin.host) ? '127.0.0.1' : config.admin.host;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${config.admin.port}/admin/revoke`;
  try {
    const response = await request(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await response.body.text();
    return { ok: response.statusCode === 200, text: `${response.statusCode} ${text}` };
  } catch (error) {
    return { ok: false, text: `${url}: ${(error as Error).message}` };
  }
}
