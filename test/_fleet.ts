/**
 * Fleet-mode harness: a real redis-server (Debian's, started here on a free loopback port, no
 * persistence) and N real gateway processes (`node dist/cli.js`) sharing it, in front of one
 * development authorization server and one echo API — so "one introspection per token
 * across the fleet" is counted at the real server. Redis can be killed, restarted on the same
 * port, paused (SIGSTOP: connected but silent) and resumed. No redis-server: a loud failure.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { stringify } from 'yaml';
import {
  startDevAuthorizationServer,
  type DevAuthorizationServer,
} from '../src/dev/auth-server.js';
import { startEchoApi, type EchoApi } from '../src/dev/echo-api.js';
import { childConfig, spawnCli, writeTempConfig, type CliProcess } from './_child.js';
import {
  freePort,
  INTROSPECTION_CLIENT,
  metricValue,
  request,
  type RawResponse,
} from './_harness.js';

const REDIS_SERVER = '/usr/bin/redis-server';
export const REVOKE_TOKEN = 'fleet-revoke-token-0123456789';

export interface Redis {
  readonly port: number;
  readonly url: string;
  /** SIGKILL: gone at once, connections reset. */
  kill(): Promise<void>;
  /** Starts again on the same port (empty: no persistence). */
  restart(): Promise<void>;
  /** SIGSTOP / SIGCONT: connected but silent. */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

async function waitForPort(port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

export async function startRedis(): Promise<Redis> {
  if (!existsSync(REDIS_SERVER)) {
    throw new Error(
      `${REDIS_SERVER} is missing: install Debian's redis-server (scripts/test-servers.sh does)`,
    );
  }
  const port = await freePort();
  let child: ChildProcess | undefined;
  const launch = async () => {
    child = spawn(
      REDIS_SERVER,
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    );
    if (!(await waitForPort(port, 10_000)))
      throw new Error(`redis-server did not listen on ${port}`);
  };
  const exit = async (signal: NodeJS.Signals) => {
    const current = child;
    if (!current || current.exitCode !== null || current.signalCode !== null) return;
    const exited = new Promise((resolve) => current.once('exit', resolve));
    current.kill('SIGCONT');
    current.kill(signal);
    await exited;
  };
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill: () => exit('SIGKILL'),
    restart: launch,
    pause: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
    stop: () => exit('SIGTERM'),
  };
}

export interface Replica {
  readonly cli: CliProcess;
  readonly url: string;
  readonly adminUrl: string;
}

export interface Fleet {
  as: DevAuthorizationServer;
  upstream: EchoApi;
  redis: Redis;
  replicas: Replica[];
  /** The config file every replica runs (for `tokenguard revoke --config`). */
  configFile: string;
  /** GET /api/orders/1 on replica `index`, from `from`, with `token`. */
  get(index: number, token: string, from?: string): Promise<RawResponse>;
  /** A sample of replica `index`'s /metrics. */
  metric(index: number, name: string, labels?: Record<string, string>): Promise<number>;
  close(): Promise<void>;
}

export async function startFleet(
  options: { replicas?: number; override?: Record<string, Record<string, unknown>> } = {},
): Promise<Fleet> {
  const redis = await startRedis();
  const as = await startDevAuthorizationServer({ introspectionClients: [INTROSPECTION_CLIENT] });
  const upstream = await startEchoApi();
  const config = childConfig(
    {
      upstreamUrl: upstream.url,
      introspection: {
        endpoint: as.introspectionEndpoint,
        client_id: INTROSPECTION_CLIENT.id,
        client_secret: INTROSPECTION_CLIENT.secret,
        timeout_ms: 2000,
      },
    },
    {
      admin: { host: '127.0.0.1', port: 0, revoke_token: REVOKE_TOKEN },
      fishing: { window_seconds: 60, max_failures: 5, block_seconds: 60 },
      shared: { redis: { url: redis.url, key_prefix: `fleet-${redis.port}:`, timeout_ms: 100 } },
      log: { level: 'info', access_log: false },
      ...options.override,
    },
  );
  const { file, cleanup } = await writeTempConfig(stringify(config));
  const replicas: Replica[] = [];
  try {
    for (let index = 0; index < (options.replicas ?? 3); index += 1) {
      const cli = spawnCli(['--config', file]);
      const { proxy, admin } = await cli.waitForListening();
      replicas.push({
        cli,
        url: `http://127.0.0.1:${proxy.port}`,
        adminUrl: `http://127.0.0.1:${admin.port}`,
      });
    }
    // Every replica connected to Redis (its event channel included) before a test begins.
    for (const replica of replicas) {
      await replica.cli.waitForLog((line) => line.event === 'shared_store_up', 10_000);
    }
  } catch (error) {
    await Promise.all(replicas.map((replica) => replica.cli.stop()));
    await Promise.all([as.close(), upstream.close(), redis.stop(), cleanup()]);
    throw error;
  }
  const metric = async (index: number, name: string, labels: Record<string, string> = {}) => {
    const text = (await request(`${(replicas[index] as Replica).adminUrl}/metrics`)).body;
    return metricValue(text, name, labels);
  };
  return {
    as,
    upstream,
    redis,
    replicas,
    configFile: file,
    get: (index, token, from) =>
      request(`${(replicas[index] as Replica).url}/api/orders/1`, {
        headers: { authorization: `Bearer ${token}` },
        ...(from ? { from } : {}),
      }),
    metric,
    async close() {
      await Promise.all(replicas.map((replica) => replica.cli.stop(5000)));
      await Promise.all([as.close(), upstream.close(), redis.stop(), cleanup()]);
    },
  };
}

export const revoke = (fleet: Fleet, index: number, body: unknown, token = REVOKE_TOKEN) =>
  request(`${(fleet.replicas[index] as Replica).adminUrl}/admin/revoke`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
