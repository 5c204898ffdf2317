/**
 * `npm start`: the whole product in one process, on loopback — the development authorization
 * server (:9000), the echo API (:8080) and tokenguard in front of it (:8000, admin :9100),
 * configured by config/demo.yaml through the real loader. Demo tokens are minted through the
 * real token endpoint over HTTP, then ready-to-paste curl lines show every answer the gateway
 * gives. DEMO_AS_PORT / DEMO_API_PORT / DEMO_PORT / DEMO_ADMIN_PORT move it off busy ports.
 * Demo only: nothing outside src/dev imports this.
 */
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { createGateway } from '../app.js';
import { ConfigError, loadConfigFile } from '../config/load.js';
import { createLogger } from '../log/logger.js';
import { startDevAuthorizationServer, type DevClient } from './auth-server.js';
import { startEchoApi } from './echo-api.js';

const HOST = '127.0.0.1';
/** The gateway's client at the demo authorization server (config/demo.yaml names it). */
const INTROSPECTION_CLIENT = { id: 'tokenguard', secret: 'demo-secret' };
const READER: DevClient = { id: 'reader', secret: 'reader-secret', scope: 'orders:read' };
const WRITER: DevClient = {
  id: 'writer',
  secret: 'writer-secret',
  scope: 'orders:read orders:write',
};

/** src/dev/demo.ts and dist/dev/demo.js are both two levels below the package root. */
const CONFIG_FILE = fileURLToPath(new URL('../../config/demo.yaml', import.meta.url));

class DemoError extends Error {}

function portFromEnv(name: string, fallback: number): number {
  const value = process.env[name];
  if (value === undefined || value === '') return fallback;
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) {
    throw new DemoError(`${name}=${value} is not a port number (0-65535)`);
  }
  return Number(value);
}

/** Turns "address in use" into a hint that names the variable to set. */
async function onPort<T>(name: string, port: number, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new DemoError(`port ${port} is busy: run with ${name}=<another port>`);
    }
    throw error;
  }
}

/** RFC 6749 §4.4 client_credentials at the real token endpoint, Basic auth per §2.3.1. */
async function mintToken(tokenEndpoint: string, client: DevClient): Promise<string> {
  const formEncode = (value: string) => new URLSearchParams({ v: value }).toString().slice(2);
  const credentials = Buffer.from(`${formEncode(client.id)}:${formEncode(client.secret)}`);
  const response = await request(tokenEndpoint, {
    method: 'POST',
    headers: {
      authorization: `Basic ${credentials.toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: client.scope }).toString(),
  });
  const answer = (await response.body.json()) as { access_token?: unknown };
  if (response.statusCode !== 200 || typeof answer.access_token !== 'string') {
    throw new DemoError(`the token endpoint refused ${client.id}: HTTP ${response.statusCode}`);
  }
  return answer.access_token;
}

function instructions(urls: {
  gateway: string;
  admin: string;
  tokenEndpoint: string;
  authorizationServer: string;
  upstream: string;
  reader: string;
  writer: string;
  maxFailures: number;
  blockSeconds: number;
}): string {
  const { gateway, admin } = urls;
  const order = `-H 'content-type: application/json' -d '{"item":"book","quantity":1}'`;
  return `
tokenguard demo is up
  gateway               ${gateway}  (config/demo.yaml)
  admin                 ${admin}  (/metrics /healthz /readyz)
  authorization server  ${urls.authorizationServer}  (RFC 7662 introspection, client_credentials tokens)
  echo API (upstream)   ${urls.upstream}  (answers with the request it saw)

Paste these two lines first (demo tokens minted just now at the token endpoint, valid 1 h):
READER=${urls.reader}   # scope orders:read
WRITER=${urls.writer}   # scope orders:read orders:write

# 200: forwarded; the echo shows X-Auth-Subject / X-Auth-Client-Id / X-Auth-Scope set by tokenguard
curl -si -H "Authorization: Bearer $READER" ${gateway}/api/orders/42
# 401 without a token: WWW-Authenticate: Bearer realm="tokenguard"
curl -si ${gateway}/api/orders/42
# 401 invalid_token: the authorization server does not know this token
curl -si -H 'Authorization: Bearer not-a-real-token' ${gateway}/api/orders/42
# 403 insufficient_scope: writing needs orders:write
curl -si -X POST -H "Authorization: Bearer $READER" ${order} ${gateway}/api/orders
curl -si -X DELETE -H "Authorization: Bearer $READER" ${gateway}/api/orders/42
# 200: the writer may
curl -si -X POST -H "Authorization: Bearer $WRITER" ${order} ${gateway}/api/orders
# 200 without a token: /healthz is an \`auth: none\` route
curl -si ${gateway}/healthz
# Prometheus metrics on the admin port
curl -s ${admin}/metrics | grep '^tokenguard_' | grep -v _bucket

# Mint a token yourself (client_credentials; the scope may narrow the client's)
curl -s -u ${READER.id}:${READER.secret} -d grant_type=client_credentials -d scope=orders:read ${urls.tokenEndpoint}
curl -s -u ${WRITER.id}:${WRITER.secret} -d grant_type=client_credentials ${urls.tokenEndpoint}

# Token fishing: after ${urls.maxFailures} bad tokens in a minute (the invalid_token line above counts too)
# every request that needs a token gets 429 with Retry-After for ${urls.blockSeconds} s, valid tokens included.
# Run it last: it blocks this machine's address; /healthz keeps answering.
for i in $(seq 1 ${urls.maxFailures + 2}); do curl -s -o /dev/null -w "%{http_code}\\n" -H "Authorization: Bearer fishing-$i" ${gateway}/api/orders/42; done

Ctrl-C stops the demo.
`;
}

async function main(): Promise<void> {
  const asPort = portFromEnv('DEMO_AS_PORT', 9000);
  const apiPort = portFromEnv('DEMO_API_PORT', 8080);

  const as = await onPort('DEMO_AS_PORT', asPort, () =>
    startDevAuthorizationServer({
      introspectionClients: [INTROSPECTION_CLIENT],
      clients: [READER, WRITER],
      host: HOST,
      port: asPort,
    }),
  );
  const api = await onPort('DEMO_API_PORT', apiPort, () =>
    startEchoApi({ host: HOST, port: apiPort }),
  );
  const closeDevServers = () => Promise.all([as.close(), api.close()]);

  let config;
  try {
    config = loadConfigFile(relative(process.cwd(), CONFIG_FILE) || CONFIG_FILE, {
      ...process.env,
      DEMO_AS_PORT: String(new URL(as.url).port),
      DEMO_API_PORT: String(api.port),
      TOKENGUARD_CLIENT_SECRET: INTROSPECTION_CLIENT.secret,
    });
  } catch (error) {
    await closeDevServers();
    throw error;
  }
  const logger = createLogger(config.log.level);
  const gateway = createGateway(config, logger);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ event: 'signal', signal }, 'demo shutting down');
    gateway
      .drain()
      .then(closeDevServers)
      .then(
        () => logger.flush(() => process.exit(0)),
        (error: unknown) => {
          logger.error({ err: error }, 'demo shutdown failed');
          logger.flush(() => process.exit(1));
        },
      );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));

  let addresses;
  try {
    addresses = await gateway.listen();
  } catch (error) {
    const { code, port } = error as NodeJS.ErrnoException & { port?: number };
    if (code === 'EADDRINUSE' && port !== undefined) {
      const variable = port === config.admin.port ? 'DEMO_ADMIN_PORT' : 'DEMO_PORT';
      throw new DemoError(`port ${port} is busy: run with ${variable}=<another port>`);
    }
    throw error;
  }

  const [reader, writer] = await Promise.all([
    mintToken(as.tokenEndpoint, READER),
    mintToken(as.tokenEndpoint, WRITER),
  ]);
  process.stdout.write(
    instructions({
      gateway: `http://${HOST}:${addresses.proxy.port}`,
      admin: `http://${HOST}:${addresses.admin.port}`,
      tokenEndpoint: as.tokenEndpoint,
      authorizationServer: as.url,
      upstream: api.url,
      reader,
      writer,
      maxFailures: config.fishing.max_failures,
      blockSeconds: config.fishing.block_seconds,
    }),
  );
}

main().catch((error: unknown) => {
  const message =
    error instanceof DemoError || error instanceof ConfigError
      ? error.message
      : ((error as Error).stack ?? String(error));
  process.stderr.write(`tokenguard demo: ${message}\n`);
  process.exit(1);
});
