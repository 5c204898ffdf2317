/**
 * `npm run bench`: the gateway's cache-hit path against a bare http-proxy passthrough, in one
 * run, on loopback. Each proxy runs in its own process in front of the same upstream; the
 * load generator (autocannon) runs here. Rounds alternate bare/gateway so drift on a shared
 * machine hits both; the ratio of medians is printed. Bounded: ROUNDS × 2 × SECONDS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import autocannon from 'autocannon';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const TARGET_RATIO = 0.85;

const children: ChildProcess[] = [];

async function startRole(role: string, ...args: string[]): Promise<number> {
  // Compiled JavaScript, as in production (no loader in the measured process).
  const script = new URL('./servers.js', import.meta.url).pathname;
  const child = spawn(process.execPath, [script, role, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const [line] = (await Promise.race([
    once(lines, 'line'),
    once(child, 'exit').then(() => {
      throw new Error(`${role} exited before listening`);
    }),
  ])) as [string];
  return (JSON.parse(line) as { port: number }).port;
}

async function load(
  port: number,
  seconds: number,
): Promise<{ rps: number; p99: number; errors: number; non2xx: number }> {
  const result = await autocannon({
    url: `http://127.0.0.1:${port}/api/orders/42`,
    connections: CONNECTIONS,
    duration: seconds,
    headers: { authorization: 'Bearer bench-token-cached' },
  });
  return {
    rps: result.requests.average,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
  };
}

const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

try {
  const upstream = await startRole('upstream');
  const bare = await startRole('bare', String(upstream));
  const gateway = await startRole('gateway', String(upstream));
  console.log(
    `bench: ${ROUNDS} rounds × ${SECONDS}s per proxy, ${CONNECTIONS} connections, GET /api/orders/42 (cache hit)`,
  );
  // Warm-up: JIT, keep-alive pools, and the token cache.
  await load(bare, 2);
  await load(gateway, 2);
  const bareRps: number[] = [];
  const gatewayRps: number[] = [];
  for (let round = 1; round <= ROUNDS; round += 1) {
    const b = await load(bare, SECONDS);
    const g = await load(gateway, SECONDS);
    if (b.errors + g.errors + b.non2xx + g.non2xx > 0) {
      throw new Error(
        `errors during the run: bare ${b.errors}/${b.non2xx}, gateway ${g.errors}/${g.non2xx}`,
      );
    }
    bareRps.push(b.rps);
    gatewayRps.push(g.rps);
    console.log(
      `round ${round}: bare ${b.rps.toFixed(0)} req/s (p99 ${b.p99} ms)  gateway ${g.rps.toFixed(0)} req/s (p99 ${g.p99} ms)  ratio ${(g.rps / b.rps).toFixed(3)}`,
    );
  }
  const ratio = median(gatewayRps) / median(bareRps);
  console.log(
    `result: gateway/bare throughput ratio ${ratio.toFixed(3)} (median ${median(gatewayRps).toFixed(0)} vs ${median(bareRps).toFixed(0)} req/s); target ≥ ${TARGET_RATIO}: ${ratio >= TARGET_RATIO ? 'met' : 'NOT met'}`,
  );
} finally {
  for (const child of children) child.kill('SIGKILL');
}
