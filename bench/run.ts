/**
 * `npm run bench`: tokenguard against a bare http-proxy 1.18.1 passthrough, on loopback, in
 * one run. A real upstream, a real RFC 7662 authorization server (with a configurable
 * answer latency), the gateway and the passthrough each run in their own process; wrk drives
 * them (autocannon when wrk is absent), rounds interleaved so drift on a shared machine hits
 * both. For each scenario: req/s and the ratio to the passthrough, p50/p99, CPU µs per
 * request and bytes promoted to the old generation per request (both measured on the proxy
 * process), authorization-server calls and peak RSS — printed as a table, written as JSON.
 *
 *   npm run bench                       the full run (a few minutes)
 *   npm run bench -- --smoke            seconds: every scenario, tiny (CI runs it)
 *   npm run bench -- --only cached      one scenario (cached, distinct, cold, fishing, flood, fleet, memory)
 *   npm run bench -- --json FILE        where the JSON goes (default bench-results.json)
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { parse } from 'yaml';
import { load, loadGenerator, populate, type LoadResult, type Traffic } from './load.js';
import { asCalls, startRedisServer, startRole, type Role } from './processes.js';

const { values } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    only: { type: 'string' },
    json: { type: 'string', default: 'bench-results.json' },
  },
});
const SMOKE = values.smoke as boolean;

/** Durations and sizes: full, or smoke (seconds in all). */
const P = SMOKE
  ? {
      rounds: 2,
      seconds: 2,
      connections: [50],
      distinct: 2000,
      cold: 200,
      fishingSeconds: 2,
      floodSeconds: 4,
      floodTokens: 20_000,
      floodAddresses: 5000,
      memoryTokens: 10_000,
      fleetTokens: 300,
    }
  : {
      rounds: 3,
      seconds: 4,
      connections: [50, 200],
      distinct: 10_000,
      cold: 1000,
      fishingSeconds: 6,
      floodSeconds: 25,
      floodTokens: 1_000_000,
      floodAddresses: 100_000,
      memoryTokens: 100_000,
      fleetTokens: 1000,
    };

const MAX_FAILURES = 5;
const FLOOD_BUDGET_PER_SECOND = 2000;

/** The container memory limit the shipped manifests set (the flood must stay under it). */
function manifestMemoryLimitMiB(): number {
  const text = readFileSync(new URL('../../k8s/base/deployment.yaml', import.meta.url), 'utf8');
  const deployment = parse(text) as {
    spec: {
      template: {
        spec: { containers: Array<{ name: string; resources?: { limits?: { memory?: string } } }> };
      };
    };
  };
  const container = deployment.spec.template.spec.containers.find((c) => c.name === 'tokenguard');
  const memory = container?.resources?.limits?.memory ?? '';
  const match = /^(\d+)Mi$/.exec(memory);
  if (!match)
    throw new Error(`k8s/base/deployment.yaml: tokenguard memory limit "${memory}" is not NMi`);
  return Number(match[1]);
}

const configDir = mkdtempSync(path.join(tmpdir(), 'tokenguard-bench-config-'));
let configs = 0;
interface GatewayOptions {
  /** Trust 127.0.0.1 as a proxy: wrk's X-Forwarded-For then names the clients. */
  trusted?: boolean;
  /** introspection.max_calls_per_second (default 200). */
  budget?: number;
  /** Extra top-level YAML. */
  extra?: string;
  /** The `log:` mapping (default: info with access log, as in production). */
  log?: string;
}

function gatewayConfig(upstream: Role, as: Role, options: GatewayOptions): string {
  configs += 1;
  const file = path.join(configDir, `gateway-${configs}.yaml`);
  writeFileSync(
    file,
    `server: {host: 127.0.0.1, port: 0${options.trusted ? ', trusted_proxies: [127.0.0.1/32]' : ''}}
admin: {host: 127.0.0.1, port: 0}
upstream: {url: "http://127.0.0.1:${upstream.port}"}
introspection:
  endpoint: "http://127.0.0.1:${as.port}/introspect"
  client_id: bench
  client_secret: bench-secret
  max_concurrent: 64
  max_calls_per_second: ${options.budget ?? 200}
cache: {max_entries: 100000, max_negative_entries: 100000}
routes:
  - {name: health, path: /healthz, methods: [GET], auth: none}
  - {name: orders-read, path: /api/orders/:id, methods: [GET], scopes: [orders:read]}
  - {name: orders-write, prefix: /api/orders, methods: [POST, PUT, DELETE], scopes: [orders:write]}
forward:
  identity_headers: {X-Auth-Subject: sub, X-Auth-Client-Id: client_id, X-Auth-Scope: scope}
log: ${options.log ?? '{level: info, access_log: true}'}
${options.extra ?? ''}`,
  );
  return file;
}

interface Row {
  scenario: string;
  side: 'passthrough' | 'gateway' | 'legitimate' | 'attacker' | 'fleet on' | 'fleet off';
  connections: number;
  rps: number;
  ratio?: number;
  p50Ms: number;
  p99Ms: number;
  cpuUsPerRequest?: number;
  promotedBytesPerRequest?: number;
  /** Bytes allocated on the V8 heap per request (young generation). */
  allocatedBytesPerRequest?: number;
  asCalls?: number;
  peakRssMiB?: number;
  non2xx: number;
  socketErrors: number;
}

interface Check {
  scenario: string;
  target: string;
  value: string;
  met: boolean;
}

const rows: Row[] = [];
const checks: Check[] = [];
const check = (scenario: string, target: string, value: string, met: boolean) =>
  checks.push({ scenario, target, value, met });

const median = (numbers: number[]) =>
  [...numbers].sort((a, b) => a - b)[Math.floor(numbers.length / 2)] as number;
const mib = (bytes: number) => bytes / 1048576;

/** Load on `proxy`, with its CPU and promoted bytes over the run. */
async function measured(proxy: Role, traffic: Traffic, connections: number, seconds: number) {
  const cpu = proxy.cpuSeconds();
  const promoted = proxy.promotedBytes();
  const allocated = proxy.allocatedBytes();
  const result = await load(proxy.port, traffic, { connections, seconds });
  await new Promise((resolve) => setTimeout(resolve, 150)); // the last GC lines land
  return {
    result,
    cpuUs: (proxy.cpuSeconds() - cpu) * 1e6,
    promoted: proxy.promotedBytes() - promoted,
    allocated: proxy.allocatedBytes() - allocated,
  };
}

/** What compare() sums over the rounds of one side. */
function emptyTotals() {
  return {
    requests: 0,
    seconds: 0,
    cpuUs: 0,
    promoted: 0,
    allocated: 0,
    p50: [] as number[],
    p99: [] as number[],
    non2xx: 0,
    socketErrors: 0,
  };
}

/** Interleaved rounds, passthrough then gateway, on one traffic shape. */
async function compare(
  scenario: string,
  bare: Role,
  gateway: Role,
  as: Role,
  traffic: Traffic,
  connections: number,
) {
  const sides = { passthrough: bare, gateway } as const;
  const totals = { passthrough: emptyTotals(), gateway: emptyTotals() };
  // Warm-up: JIT, keep-alive pools and the gateway's cache.
  for (const proxy of Object.values(sides))
    await load(proxy.port, traffic, { connections, seconds: 1 });
  const calls = await asCalls(as);
  for (let round = 0; round < P.rounds; round += 1) {
    for (const side of ['passthrough', 'gateway'] as const) {
      const { result, cpuUs, promoted, allocated } = await measured(
        sides[side],
        traffic,
        connections,
        P.seconds,
      );
      const total = totals[side];
      total.requests += result.requests;
      total.seconds += result.seconds;
      total.cpuUs += cpuUs;
      total.promoted += promoted;
      total.allocated += allocated;
      total.p50.push(result.p50Ms);
      total.p99.push(result.p99Ms);
      total.non2xx += result.non2xx;
      total.socketErrors += result.socketErrors;
    }
  }
  const measuredCalls = (await asCalls(as)) - calls;
  const out: Record<string, Row> = {};
  for (const side of ['passthrough', 'gateway'] as const) {
    const total = totals[side];
    out[side] = {
      scenario,
      side,
      connections,
      rps: total.requests / total.seconds,
      p50Ms: median(total.p50),
      p99Ms: median(total.p99),
      cpuUsPerRequest: total.cpuUs / total.requests,
      promotedBytesPerRequest: total.promoted / total.requests,
      allocatedBytesPerRequest: total.allocated / total.requests,
      peakRssMiB: mib(sides[side].rss().peak),
      non2xx: total.non2xx,
      socketErrors: total.socketErrors,
      ...(side === 'gateway' ? { asCalls: measuredCalls } : {}),
    };
  }
  const gatewayRow = out.gateway as Row;
  const bareRow = out.passthrough as Row;
  gatewayRow.ratio = gatewayRow.rps / bareRow.rps;
  rows.push(bareRow, gatewayRow);
  return { gateway: gatewayRow, bare: bareRow };
}

/** The proxies' flags: GC tracing for promoted bytes, plus what BENCH_NODE_FLAGS adds. */
const GATEWAY_NODE_ARGS = [
  '--trace-gc-nvp',
  ...(process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean),
];

async function withServers<T>(
  options: { asLatencyMs?: number; gateway?: GatewayOptions; nodeArgs?: string[]; bare?: boolean },
  run: (servers: { upstream: Role; as: Role; gateway: Role; bare: Role | null }) => Promise<T>,
): Promise<T> {
  const upstream = await startRole('upstream', ['upstream']);
  const as = await startRole('as', ['as'], {
    env: { BENCH_AS_LATENCY_MS: String(options.asLatencyMs ?? 0) },
  });
  const config = gatewayConfig(upstream, as, options.gateway ?? {});
  const gateway = await startRole('gateway', ['gateway', config], {
    nodeArgs: [...GATEWAY_NODE_ARGS, ...(options.nodeArgs ?? [])],
  });
  const bare = options.bare
    ? await startRole('bare', ['bare', String(upstream.port)], { nodeArgs: GATEWAY_NODE_ARGS })
    : null;
  try {
    return await run({ upstream, as, gateway, bare });
  } finally {
    await Promise.all([gateway.stop(), bare?.stop(), as.stop(), upstream.stop()]);
  }
}

// ── the scenarios ──

const SCENARIOS: Record<string, () => Promise<void>> = {
  /** One cached token: the hot path every request of a steady API pays for. */
  async cached() {
    await withServers({ bare: true }, async ({ as, gateway, bare }) => {
      for (const connections of P.connections) {
        const { gateway: g, bare: b } = await compare(
          `cached token, ${connections} connections`,
          bare as Role,
          gateway,
          as,
          { token: { prefix: 'good-', count: 1 } },
          connections,
        );
        const scenario = `cached-${connections}`;
        check(
          scenario,
          'req/s ≥ 0.80 × passthrough',
          (g.ratio as number).toFixed(2),
          (g.ratio as number) >= 0.8,
        );
        check(
          scenario,
          'p99 ≤ 1.5 × passthrough',
          `${g.p99Ms.toFixed(1)} vs ${b.p99Ms.toFixed(1)} ms`,
          g.p99Ms <= 1.5 * b.p99Ms,
        );
        check(
          scenario,
          'no errors',
          `${g.non2xx + g.socketErrors}`,
          g.non2xx + g.socketErrors === 0,
        );
      }
    });
  },

  /** 10,000 distinct tokens, all cached: the cache under a realistic population. */
  async distinct() {
    await withServers(
      { bare: true, gateway: { budget: 100_000 } },
      async ({ as, gateway, bare }) => {
        const traffic: Traffic = { token: { prefix: 'good-', count: P.distinct } };
        // Populate: every token introspected once before the measured rounds.
        await populate(gateway.port, 'good-', P.distinct);
        const { gateway: g } = await compare(
          `${P.distinct} distinct cached tokens`,
          bare as Role,
          gateway,
          as,
          traffic,
          50,
        );
        check('distinct', 'no AS call once cached', `${g.asCalls}`, g.asCalls === 0);
      },
    );
  },

  /** A cold start: a deploy or a restart meets this many new tokens at once. */
  async cold() {
    await withServers({ asLatencyMs: 20 }, async ({ as, gateway }) => {
      // 50 connections cycling through the new tokens: each is introspected on first use.
      const result = await load(
        gateway.port,
        { token: { prefix: 'good-', count: P.cold } },
        { connections: 50, seconds: SMOKE ? 2 : 5 },
      );
      const calls = await asCalls(as);
      rows.push({
        scenario: `cold start, ${P.cold} new tokens, 20 ms AS`,
        side: 'gateway',
        connections: 50,
        rps: result.rps,
        p50Ms: result.p50Ms,
        p99Ms: result.p99Ms,
        asCalls: calls,
        peakRssMiB: mib(gateway.rss().peak),
        non2xx: result.non2xx,
        socketErrors: result.socketErrors,
      });
      check(
        'cold',
        'zero non-2xx',
        `${result.non2xx + result.socketErrors}`,
        result.non2xx + result.socketErrors === 0,
      );
      check('cold', `AS calls = ${P.cold}`, `${calls}`, calls === P.cold);
    });
  },

  /** A token fisher at 50 and 200 connections beside a legitimate client. */
  async fishing() {
    for (const connections of P.connections) {
      await withServers(
        {
          gateway: {
            trusted: true,
            extra: `fishing: {max_failures: ${MAX_FAILURES}, block_seconds: 300}\n`,
          },
        },
        async ({ as, gateway }) => {
          const legit: Traffic = {
            token: { prefix: 'good-', count: 20 },
            forwardedFor: '10.200.0.7',
          };
          await load(gateway.port, legit, { connections: 10, seconds: 1 });
          const alone = await load(gateway.port, legit, {
            connections: 10,
            seconds: P.fishingSeconds,
          });
          const before = await asCalls(as);
          const [withAttack, attacker] = await Promise.all([
            load(gateway.port, legit, { connections: 10, seconds: P.fishingSeconds }),
            load(
              gateway.port,
              { token: { prefix: 'bad-', count: 0, distinct: true }, forwardedFor: '10.66.66.66' },
              { connections, seconds: P.fishingSeconds },
            ),
          ]);
          const calls = (await asCalls(as)) - before;
          const scenario = `fishing client, ${connections} connections`;
          rows.push(
            row(scenario, 'legitimate', 10, withAttack, { peakRssMiB: mib(gateway.rss().peak) }),
          );
          rows.push(row(scenario, 'attacker', connections, attacker, { asCalls: calls }));
          check(
            `fishing-${connections}`,
            `AS calls ≤ max_failures (${MAX_FAILURES})`,
            `${calls}`,
            calls <= MAX_FAILURES,
          );
          check(
            `fishing-${connections}`,
            'legitimate p99 ≤ 2 × without the attack',
            `${withAttack.p99Ms.toFixed(1)} vs ${alone.p99Ms.toFixed(1)} ms`,
            withAttack.p99Ms <= 2 * alone.p99Ms,
          );
          check(
            `fishing-${connections}`,
            'legitimate: no errors',
            `${withAttack.non2xx + withAttack.socketErrors}`,
            withAttack.non2xx + withAttack.socketErrors === 0,
          );
        },
      );
    }
  },

  /** A distributed flood of distinct bad tokens from many addresses beside a legitimate client. */
  async flood() {
    const limitMiB = manifestMemoryLimitMiB();
    await withServers(
      {
        gateway: {
          trusted: true,
          budget: FLOOD_BUDGET_PER_SECOND,
          extra: `fishing: {max_failures: ${MAX_FAILURES}}\n`,
        },
        // As the manifests run it: the heap follows the container's memory limit.
        nodeArgs: [`--max-old-space-size=${Math.floor(limitMiB * 0.7)}`],
      },
      async ({ as, gateway }) => {
        const legit: Traffic = {
          token: { prefix: 'good-', count: 1000 },
          forwardedFor: '10.200.0.7',
        };
        // Every legitimate token cached before the flood.
        await populate(gateway.port, 'good-', 1000);
        const cachedCalls = await asCalls(as);
        const started = Date.now();
        const [floodResult, legitResult] = await Promise.all([
          floodUntil(gateway, P.floodTokens, P.floodSeconds),
          load(gateway.port, legit, { connections: 10, seconds: P.floodSeconds }),
        ]);
        const seconds = (Date.now() - started) / 1000;
        const floodCalls = (await asCalls(as)) - cachedCalls;
        // After the flood — once its last waiting lookups are answered or timed out (2 s) —
        // every token cached before it is still served from the cache.
        await new Promise((resolve) => setTimeout(resolve, 3000));
        const beforeAfter = await asCalls(as);
        const after = await load(gateway.port, legit, { connections: 20, seconds: 2 });
        const afterCalls = (await asCalls(as)) - beforeAfter;
        const peak = mib(gateway.rss().peak);
        const scenario = `flood: ${floodResult.requests} distinct bad tokens, ${P.floodAddresses} addresses`;
        rows.push(
          row(scenario, 'attacker', floodResult.connections, floodResult.last, {
            asCalls: floodCalls,
            peakRssMiB: peak,
            requests: floodResult.requests,
            seconds,
          }),
        );
        rows.push(row(scenario, 'legitimate', 10, legitResult, {}));
        check(
          'flood',
          `AS calls ≤ ${FLOOD_BUDGET_PER_SECOND}/s × duration`,
          `${floodCalls} in ${seconds.toFixed(0)} s`,
          floodCalls <= FLOOD_BUDGET_PER_SECOND * (seconds + 1),
        );
        check(
          'flood',
          'cached tokens still served from cache after it',
          `${afterCalls} AS calls, ${after.non2xx} errors`,
          afterCalls === 0 && after.non2xx === 0,
        );
        check(
          'flood',
          `peak RSS < ${limitMiB} MiB (manifest limit)`,
          `${peak.toFixed(0)} MiB`,
          peak < limitMiB,
        );
        check(
          'flood',
          'legitimate: no errors',
          `${legitResult.non2xx + legitResult.socketErrors}`,
          legitResult.non2xx + legitResult.socketErrors === 0,
        );
      },
    );
  },

  /**
   * Fleet mode: three replicas on one Redis. Every distinct token costs the authorization
   * server one call for the whole fleet; and the cache-hit path with fleet mode on costs what
   * it costs with it off (hits never touch Redis).
   */
  async fleet() {
    const redis = await startRedisServer();
    try {
      const shared = `shared: {redis: {url: "redis://127.0.0.1:${redis.port}", key_prefix: "bench:"}}\n`;
      const upstream = await startRole('upstream', ['upstream']);
      const as = await startRole('as', ['as'], { env: { BENCH_AS_LATENCY_MS: '5' } });
      const replicas: Role[] = [];
      let alone: Role | undefined;
      try {
        for (let index = 0; index < 3; index += 1) {
          const config = gatewayConfig(upstream, as, { budget: 100_000, extra: shared });
          replicas.push(
            await startRole('gateway', ['gateway', config], { nodeArgs: GATEWAY_NODE_ARGS }),
          );
        }
        alone = await startRole('gateway', ['gateway', gatewayConfig(upstream, as, {})], {
          nodeArgs: GATEWAY_NODE_ARGS,
        });
        await new Promise((resolve) => setTimeout(resolve, 500)); // the replicas reach Redis
        // Every token through all three replicas, in turns.
        const tokens = P.fleetTokens;
        const before = await asCalls(as);
        for (const replica of replicas) await populate(replica.port, 'good-fleet-', tokens, 32);
        const calls = (await asCalls(as)) - before;
        check(
          'fleet',
          `AS calls = distinct tokens (${tokens}) across 3 replicas`,
          `${calls}`,
          calls === tokens,
        );
        // Cache hits: one replica of the fleet against a gateway without fleet mode with the same
        // history (the same tokens first), the token cached in both first (its miss is the
        // only thing here that may reach Redis).
        await populate(alone.port, 'good-fleet-', tokens, 32);
        await populate((replicas[0] as Role).port, 'good-', 1, 1);
        await populate(alone.port, 'good-', 1, 1);
        const commandsBefore = await redis.commands();
        const { gateway: on, bare: off } = await compare(
          'fleet: cached token, on vs off',
          alone,
          replicas[0] as Role,
          as,
          { token: { prefix: 'good-', count: 1 } },
          50,
        );
        // The INFO command that reads the count is counted too; nothing else may be.
        const commands = (await redis.commands()) - commandsBefore - 1;
        check('fleet', 'cache hits: no Redis command', `${commands}`, commands === 0);
        // compare() labels its sides passthrough/gateway: here they are "off" and "on".
        off.side = 'fleet off';
        on.side = 'fleet on';
        const cpu = (on.cpuUsPerRequest as number) / (off.cpuUsPerRequest as number);
        check(
          'fleet',
          'cache-hit path with fleet mode on within 5 % of off',
          `${(on.ratio as number).toFixed(3)} × the req/s, ${cpu.toFixed(3)} × the CPU per request`,
          (on.ratio as number) >= 0.95,
        );
      } finally {
        await Promise.all([...replicas, alone].map((role) => role?.stop()));
        await Promise.all([as.stop(), upstream.stop()]);
      }
    } finally {
      await redis.stop();
    }
  },

  /** Memory: 100,000 cached tokens. */
  async memory() {
    // Filling the cache fast: no budget in the way (the memory is what is measured here).
    const gateway = { budget: 1_000_000, log: '{level: warn, access_log: false}' };
    await withServers({ nodeArgs: ['--expose-gc'], gateway }, async ({ gateway }) => {
      const baseline = await gateway.memory();
      const tokens = P.memoryTokens;
      const filled = await populate(gateway.port, 'good-', tokens, 128);
      const filledUp = await gateway.memory();
      // RSS once the process settled (V8's memory reducer returns the pages the fill used).
      // A full GC, then a moment for V8 to hand the freed pages back to the kernel.
      await new Promise((resolve) => setTimeout(resolve, SMOKE ? 2000 : 8000));
      await gateway.memory();
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const after = await gateway.memory();
      check(
        'memory',
        'every token cached',
        `${after.cacheEntries} entries, ${filled.non2xx} errors`,
        after.cacheEntries >= tokens && filled.non2xx === 0,
      );
      const perEntry = (after.heapUsed - baseline.heapUsed) / Math.max(1, after.cacheEntries);
      rows.push({
        scenario: `${after.cacheEntries} cached tokens`,
        side: 'gateway',
        connections: 50,
        rps: 0,
        p50Ms: 0,
        p99Ms: 0,
        peakRssMiB: mib(filledUp.rss),
        non2xx: 0,
        socketErrors: 0,
      });
      const rssMiB = mib(after.rss);
      check(
        'memory',
        tokens >= 100_000
          ? `${tokens} cached tokens ≤ 150 MiB RSS (settled)`
          : `${tokens} cached tokens: RSS (the 150 MiB target is for 100,000; informational)`,
        `${rssMiB.toFixed(0)} MiB settled, ${mib(filledUp.rss).toFixed(0)} MiB just filled; ${perEntry.toFixed(0)} B heap per entry`,
        rssMiB <= 150 || tokens < 100_000,
      );
    });
  },
};

function row(
  scenario: string,
  side: Row['side'],
  connections: number,
  result: LoadResult,
  extra: Partial<Row> & { requests?: number; seconds?: number },
): Row {
  // A run made of several loads (the flood) gives its totals: the rate is over all of them.
  const { requests, seconds, ...rest } = extra;
  return {
    scenario,
    side,
    connections,
    rps: requests !== undefined && seconds !== undefined ? requests / seconds : result.rps,
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    non2xx: result.non2xx,
    socketErrors: result.socketErrors,
    ...rest,
  };
}

/** Distinct bad tokens from many addresses until `tokens` are sent or `seconds` pass. */
async function floodUntil(gateway: Role, tokens: number, seconds: number) {
  const connections = 200;
  let requests = 0;
  let last: LoadResult | undefined;
  const deadline = Date.now() + seconds * 1000;
  while (requests < tokens && Date.now() < deadline) {
    const slice = Math.max(1, Math.min(10, Math.ceil((deadline - Date.now()) / 1000)));
    last = await load(
      gateway.port,
      {
        token: { prefix: `bad-${requests}-`, count: 0, distinct: true },
        forwardedFor: { count: P.floodAddresses },
      },
      { connections, seconds: slice },
    );
    requests += last.requests;
  }
  return { requests, connections, last: last as LoadResult };
}

// ── run and report ──

const selected = values.only ? [values.only] : Object.keys(SCENARIOS);
const startedAt = Date.now();
console.log(
  `bench: ${SMOKE ? 'smoke' : 'full'} run, load by ${loadGenerator()}, node ${process.version}; scenarios: ${selected.join(', ')}`,
);
for (const name of selected) {
  const scenario = SCENARIOS[name];
  if (!scenario) throw new Error(`unknown scenario ${name}`);
  const before = Date.now();
  await scenario();
  console.log(`  ${name}: ${((Date.now() - before) / 1000).toFixed(0)} s`);
}

const fmt = (value: number | undefined, digits = 0) =>
  value === undefined ? '' : value.toFixed(digits);
const header = [
  'scenario',
  'side',
  'conns',
  'req/s',
  'ratio',
  'p50 ms',
  'p99 ms',
  'CPU µs/req',
  'alloc B/req',
  'promoted B/req',
  'AS calls',
  'peak RSS MiB',
  'errors',
];
const table = rows.map((r) => [
  r.scenario,
  r.side,
  String(r.connections),
  fmt(r.rps),
  fmt(r.ratio, 2),
  fmt(r.p50Ms, 2),
  fmt(r.p99Ms, 2),
  fmt(r.cpuUsPerRequest, 1),
  fmt(r.allocatedBytesPerRequest, 0),
  fmt(r.promotedBytesPerRequest, 0),
  fmt(r.asCalls),
  fmt(r.peakRssMiB, 0),
  String(r.non2xx + r.socketErrors),
]);
const widths = header.map((title, column) =>
  Math.max(title.length, ...table.map((cells) => (cells[column] as string).length)),
);
const line = (cells: string[]) =>
  `| ${cells.map((cell, column) => cell.padEnd(widths[column] as number)).join(' | ')} |`;
console.log(`\n${line(header)}\n|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`);
for (const cells of table) console.log(line(cells));
console.log('\ntargets:');
for (const item of checks) {
  console.log(
    `  ${item.met ? 'met    ' : 'NOT MET'}  ${item.scenario}: ${item.target} — ${item.value}`,
  );
}
writeFileSync(
  values.json as string,
  `${JSON.stringify({ smoke: SMOKE, loadGenerator: loadGenerator(), node: process.version, seconds: (Date.now() - startedAt) / 1000, rows, checks }, null, 2)}\n`,
);
console.log(
  `\n${rows.length} rows, ${checks.filter((c) => c.met).length}/${checks.length} targets met, ${((Date.now() - startedAt) / 1000).toFixed(0)} s; JSON in ${values.json}`,
);
