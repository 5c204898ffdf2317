/**
 * Load generation: wrk (Debian's, a separate process in C — it does not steal the measured
 * processes' event loop) with a generated Lua script per traffic shape; autocannon in this
 * process when wrk is absent. Every run is bounded in time.
 */
import { execFileSync, spawn } from 'node:child_process';
import http from 'node:http';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';

export interface Traffic {
  /** `Bearer <prefix><n>`: tokens cycle through `count` (or are all distinct when `distinct`). */
  token?: { prefix: string; count: number; distinct?: boolean };
  /** X-Forwarded-For: one fixed address, or `count` addresses cycled through. */
  forwardedFor?: string | { count: number };
  path?: string;
}

export interface LoadResult {
  requests: number;
  seconds: number;
  rps: number;
  /** Responses with a status ≥ 400. */
  non2xx: number;
  socketErrors: number;
  p50Ms: number;
  p99Ms: number;
}

let wrkPath: string | null | undefined;
export function loadGenerator(): 'wrk' | 'autocannon' {
  if (wrkPath === undefined) {
    try {
      wrkPath = execFileSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' }).trim() || null;
    } catch {
      wrkPath = null;
    }
  }
  return wrkPath ? 'wrk' : 'autocannon';
}

const scriptDir = mkdtempSync(path.join(tmpdir(), 'tokenguard-bench-'));
let scripts = 0;

/** A wrk script for the traffic shape: per-thread counters, a JSON summary on stdout. */
function luaScript(traffic: Traffic, threads: number): string {
  const token = traffic.token;
  const xff = traffic.forwardedFor;
  const lines = [
    // LuaJIT (Lua 5.1): no `//`; `tid` is set in each thread's own state by setup().
    'local counter = 0',
    'function setup(thread) counter = counter + 1; thread:set("tid", counter) end',
    'local n = -1',
    'local offset = 0',
    'function init(args) offset = (tid or 1) * 7919 end',
    'function request()',
    '  n = n + 1',
    '  local headers = {}',
  ];
  if (token) {
    lines.push(
      token.distinct
        ? `  headers["Authorization"] = "Bearer ${token.prefix}" .. (tid or 1) .. "-" .. n`
        : // Threads take disjoint stripes: every token is used within `count` requests in all.
          `  headers["Authorization"] = "Bearer ${token.prefix}" .. ((n * ${threads} + (tid or 1) - 1) % ${token.count})`,
    );
  }
  if (typeof xff === 'string') lines.push(`  headers["X-Forwarded-For"] = "${xff}"`);
  else if (xff) {
    lines.push(
      `  local a = (n * 7 + offset) % ${xff.count}`,
      '  headers["X-Forwarded-For"] = "10." .. math.floor(a / 65536) .. "." .. (math.floor(a / 256) % 256) .. "." .. (a % 256)',
    );
  }
  lines.push(
    `  return wrk.format("GET", "${traffic.path ?? '/api/orders/42'}", headers)`,
    'end',
    'function done(summary, latency, requests)',
    '  local e = summary.errors',
    '  io.write(string.format(\'{"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}\\n\',',
    '    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,',
    '    latency:percentile(50), latency:percentile(99)))',
    'end',
  );
  return lines.join('\n');
}

/**
 * Sends one request per token, `good-0` … `good-(count-1)`, `concurrency` at a time over
 * keep-alive connections: every token of a scenario's population is then cached.
 */
export async function populate(
  port: number,
  prefix: string,
  count: number,
  concurrency = 64,
): Promise<{ non2xx: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  let next = 0;
  let non2xx = 0;
  const worker = async () => {
    while (next < count) {
      const index = next;
      next += 1;
      const status = await new Promise<number>((resolve, reject) => {
        http
          .get(
            {
              host: '127.0.0.1',
              port,
              path: '/api/orders/42',
              agent,
              headers: { authorization: `Bearer ${prefix}${index}` },
            },
            (res) => {
              res.resume();
              res.once('end', () => resolve(res.statusCode ?? 0));
            },
          )
          .once('error', reject);
      });
      if (status >= 400) non2xx += 1;
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    agent.destroy();
  }
  return { non2xx };
}

export async function load(
  port: number,
  traffic: Traffic,
  options: { connections: number; seconds: number },
): Promise<LoadResult> {
  if (loadGenerator() === 'wrk') return loadWithWrk(port, traffic, options);
  return loadWithAutocannon(port, traffic, options);
}

async function loadWithWrk(
  port: number,
  traffic: Traffic,
  options: { connections: number; seconds: number },
): Promise<LoadResult> {
  scripts += 1;
  const script = path.join(scriptDir, `traffic-${scripts}.lua`);
  // One wrk thread: on a small machine every core it takes is one the proxies do not get.
  const threads = 1;
  writeFileSync(script, luaScript(traffic, threads));
  const child = spawn(
    wrkPath as string,
    [
      `-t${threads}`,
      `-c${options.connections}`,
      `-d${options.seconds}s`,
      '--timeout',
      '10s',
      '-s',
      script,
      `http://127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let output = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    output += chunk;
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), (options.seconds + 30) * 1000);
  await once(child, 'exit');
  clearTimeout(killer);
  const line = output.split('\n').find((candidate) => candidate.startsWith('{"requests"'));
  if (!line) throw new Error(`wrk printed no summary:\n${output}`);
  const summary = JSON.parse(line) as Record<string, number>;
  const seconds = (summary.duration_us as number) / 1e6;
  return {
    requests: summary.requests as number,
    seconds,
    rps: (summary.requests as number) / seconds,
    non2xx: summary.non2xx as number,
    socketErrors: summary.socket_errors as number,
    p50Ms: (summary.p50_us as number) / 1000,
    p99Ms: (summary.p99_us as number) / 1000,
  };
}

async function loadWithAutocannon(
  port: number,
  traffic: Traffic,
  options: { connections: number; seconds: number },
): Promise<LoadResult> {
  let n = 0;
  const result = await autocannon({
    url: `http://127.0.0.1:${port}${traffic.path ?? '/api/orders/42'}`,
    connections: options.connections,
    duration: options.seconds,
    requests: [
      {
        setupRequest(request: autocannon.Request) {
          n += 1;
          const headers: Record<string, string> = {};
          const token = traffic.token;
          if (token) {
            headers.authorization = token.distinct
              ? `Bearer ${token.prefix}0-${n}`
              : `Bearer ${token.prefix}${n % token.count}`;
          }
          const xff = traffic.forwardedFor;
          if (typeof xff === 'string') headers['x-forwarded-for'] = xff;
          else if (xff) {
            const a = (n * 7) % xff.count;
            headers['x-forwarded-for'] =
              `10.${Math.floor(a / 65536)}.${Math.floor(a / 256) % 256}.${a % 256}`;
          }
          return { ...request, headers };
        },
      },
    ],
  });
  return {
    requests: result.requests.total,
    seconds: result.duration,
    rps: result.requests.total / result.duration,
    non2xx: result.non2xx,
    socketErrors: result.errors + result.timeouts,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
  };
}
