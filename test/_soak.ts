/**
 * The soak (issue 10): the real gateway (the CLI, in a child process) under a mix of valid,
 * invalid and fishing traffic while the authorization server goes down, answers 500, hangs
 * and comes back, over and over. It reports every answer a class of client should never get
 * (a valid token refused with anything but 503, an unknown token let through, a 502, a
 * dropped connection), the gateway's open file descriptors after the traffic (leaked sockets)
 * and its memory growth. `npm run soak` runs it for minutes; test/soak.test.ts for seconds.
 * Bounded in time and in concurrency; everything binds 127.0.0.1 and is stopped by its PID.
 */
import { readdir } from 'node:fs/promises';
import http from 'node:http';
import { stringify } from 'yaml';
import { startDevAuthorizationServer, type IntrospectionFault } from '../src/dev/auth-server.js';
import { startEchoApi } from '../src/dev/echo-api.js';
import { childConfig, residentBytes, spawnCli, writeTempConfig } from './_child.js';
import { INTROSPECTION_CLIENT, TOKEN_CLIENTS, request } from './_harness.js';

export interface SoakReport {
  seconds: number;
  requests: number;
  /** `class status` → count. */
  statuses: Record<string, number>;
  /** Answers a class of client must never get, with a count each. */
  unexpected: Record<string, number>;
  fdsBefore: number;
  fdsAfter: number;
  rssBeforeMiB: number;
  rssAfterMiB: number;
  problems: string[];
}

type Traffic = 'valid' | 'unknown' | 'fisher';

/** What each class may be answered: anything else is a finding. */
const ALLOWED: Record<Traffic, ReadonlySet<number>> = {
  // Cached tokens pass through outages; a token first seen during one gets the outage's 503.
  valid: new Set([200, 503]),
  // Unknown tokens are refused, or the client is blocked, or the server cannot be asked.
  unknown: new Set([401, 429, 503]),
  fisher: new Set([401, 429, 503]),
};

/** The authorization server's misbehaviours, in turn, each for a while. */
const FAULTS: IntrospectionFault[] = [null, 'down', null, 'status-500', null, 'hang', null];

const MiB = 1024 * 1024;
const openFds = async (pid: number) => (await readdir(`/proc/${pid}/fd`)).length;

/**
 * `paceMs`: a pause after each request of each client loop (0: as fast as the gateway
 * answers) — the CI version paces itself so it does not starve the test files beside it.
 */
export async function soak(
  seconds: number,
  log: (line: string) => void = () => undefined,
  paceMs = 0,
) {
  const as = await startDevAuthorizationServer({
    introspectionClients: [INTROSPECTION_CLIENT],
    clients: [...TOKEN_CLIENTS],
  });
  const upstream = await startEchoApi();
  const config = await writeTempConfig(
    stringify(
      childConfig(
        {
          upstreamUrl: upstream.url,
          introspection: {
            endpoint: as.introspectionEndpoint,
            client_id: INTROSPECTION_CLIENT.id,
            client_secret: INTROSPECTION_CLIENT.secret,
            timeout_ms: 500,
          },
        },
        {
          cache: { stale_if_error_seconds: 60 },
          fishing: { max_failures: 5, window_seconds: 10, block_seconds: 3 },
          log: { level: 'info', access_log: false },
        },
      ),
    ),
  );
  const gateway = spawnCli(['--config', config.file]);
  const statuses: Record<string, number> = {};
  const unexpected: Record<string, number> = {};
  const problems: string[] = [];
  let requests = 0;
  try {
    const { proxy } = await gateway.waitForListening();
    const url = `http://127.0.0.1:${proxy.port}/api/orders/1`;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
    const valid = Array.from({ length: 8 }, () => as.issue({ scope: 'orders:read' }));
    // Warm: the valid tokens are known before the first outage.
    for (const token of valid) {
      await request(url, { headers: { authorization: `Bearer ${token}` }, agent });
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    const fdsBefore = await openFds(gateway.pid);
    const rssBefore = (await residentBytes(gateway.pid)) ?? 0;

    const deadline = Date.now() + seconds * 1000;
    let unknownSerial = 0;
    const note = (traffic: Traffic, status: number) => {
      requests += 1;
      const key = `${traffic} ${status}`;
      statuses[key] = (statuses[key] ?? 0) + 1;
      if (!ALLOWED[traffic].has(status)) unexpected[key] = (unexpected[key] ?? 0) + 1;
    };
    const loop = async (traffic: Traffic, index: number) => {
      while (Date.now() < deadline) {
        let token: string;
        let from: string;
        if (traffic === 'valid') {
          token = valid[index % valid.length] as string;
          from = `127.0.1.${index + 2}`;
        } else if (traffic === 'fisher') {
          token = `guess-${index}-${Date.now()}`;
          from = '127.0.3.2';
        } else {
          unknownSerial += 1;
          token = `unknown-${unknownSerial}`;
          // Many addresses, a few guesses each: below any one client's block.
          from = `127.0.2.${(unknownSerial % 200) + 2}`;
        }
        try {
          const reply = await request(url, {
            headers: { authorization: `Bearer ${token}` },
            from,
            agent,
            timeoutMs: 10_000,
          });
          note(traffic, reply.status);
        } catch (error) {
          note(traffic, 0); // the connection failed: never allowed
          problems.push(`${traffic}: ${(error as Error).message}`);
          if (problems.length > 20) return;
        }
        if (paceMs > 0) await new Promise((resolve) => setTimeout(resolve, paceMs));
      }
    };
    const chaos = (async () => {
      for (let turn = 0; Date.now() < deadline; turn += 1) {
        as.setFault(FAULTS[turn % FAULTS.length] ?? null);
        upstream.requests.length = 0; // the echo API's record is not under test
        await new Promise((resolve) => setTimeout(resolve, Math.min(1500, seconds * 100)));
      }
      as.setFault(null);
    })();
    await Promise.all([
      chaos,
      ...Array.from({ length: 6 }, (_, index) => loop('valid', index)),
      ...Array.from({ length: 4 }, (_, index) => loop('unknown', index)),
      ...Array.from({ length: 2 }, (_, index) => loop('fisher', index)),
    ]);
    agent.destroy();
    // Settle: the client sockets close; the gateway's to the upstream stay pooled (bounded).
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const fdsAfter = await openFds(gateway.pid);
    const rssAfter = (await residentBytes(gateway.pid)) ?? 0;
    const report: SoakReport = {
      seconds,
      requests,
      statuses,
      unexpected,
      fdsBefore,
      fdsAfter,
      rssBeforeMiB: Math.round((rssBefore / MiB) * 10) / 10,
      rssAfterMiB: Math.round((rssAfter / MiB) * 10) / 10,
      problems,
    };
    log(JSON.stringify(report, null, 2));
    return report;
  } finally {
    as.setFault(null);
    await gateway.stop();
    await upstream.close();
    await as.close();
    await config.cleanup();
  }
}
