/**
 * Child-process roles for the benchmark, so the load generator, the proxies under test, the
 * upstream and the authorization server never share an event loop:
 *   node dist-bench/bench/servers.js upstream
 *   node dist-bench/bench/servers.js as                 (BENCH_AS_LATENCY_MS: answer delay)
 *   node dist-bench/bench/servers.js bare UPSTREAM_PORT
 *   node dist-bench/bench/servers.js gateway CONFIG_FILE
 * Each role prints one JSON line `{"port": N}` once it listens on 127.0.0.1. The gateway also
 * prints `{"memory": …}` lines on SIGUSR2 (after a full GC when run with --expose-gc).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import httpProxy from 'http-proxy';
import { createGateway } from '../src/app.js';
import { loadConfigFile } from '../src/config/load.js';
import { createLogger } from '../src/log/logger.js';
import { tuneRuntime } from '../src/runtime.js';

const [role, ...args] = process.argv.slice(2);
// A clean exit on SIGTERM/SIGINT, so `--cpu-prof` can write its profile.
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
const announce = (server: http.Server) =>
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);

const BODY = JSON.stringify({ id: 42, status: 'shipped', items: [1, 2, 3] });

if (role === 'upstream') {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(BODY);
    });
  });
  server.keepAliveTimeout = 65_000;
  server.listen(0, '127.0.0.1', () => announce(server));
} else if (role === 'as') {
  // An RFC 7662 endpoint: tokens starting `good-` are active (orders:read), any other is
  // not. It counts its calls (GET /__stats) and answers after BENCH_AS_LATENCY_MS.
  const latencyMs = Number(process.env.BENCH_AS_LATENCY_MS ?? 0);
  let calls = 0;
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const server = http.createServer((req, res) => {
    if (req.url === '/__stats') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ calls }));
      return;
    }
    calls += 1;
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      body += chunk;
    });
    req.on('end', () => {
      const token = new URLSearchParams(body).get('token') ?? '';
      const answer = token.startsWith('good-')
        ? JSON.stringify({
            active: true,
            scope: 'orders:read',
            sub: `user-${token.slice(5, 13)}`,
            client_id: 'bench-app',
            iss: 'https://as.bench.test',
            exp,
          })
        : '{"active":false}';
      const send = () => {
        res.setHeader('content-type', 'application/json');
        res.end(answer);
      };
      if (latencyMs > 0) setTimeout(send, latencyMs);
      else send();
    });
  });
  server.keepAliveTimeout = 65_000;
  server.listen(0, '127.0.0.1', () => announce(server));
} else if (role === 'bare') {
  // The baseline: http-proxy with a keep-alive agent and nothing else.
  const target = `http://127.0.0.1:${args[0]}`;
  const proxy = httpProxy.createProxyServer({ target, agent: new http.Agent({ keepAlive: true }) });
  proxy.on('error', (_error, _req, res) => {
    if ('writeHead' in res && !res.headersSent) res.writeHead(502);
    res.end();
  });
  const server = http.createServer((req, res) => proxy.web(req, res));
  server.keepAliveTimeout = 65_000;
  server.listen(0, '127.0.0.1', () => announce(server));
} else if (role === 'gateway') {
  tuneRuntime(); // as main.ts does
  const config = loadConfigFile(args[0] as string);
  // Access logs on, as in production: pino's asynchronous destination, unbuffered, writing to /dev/null.
  const { default: pino } = await import('pino');
  const logger = createLogger(
    config.log.level,
    pino.destination({ dest: '/dev/null', sync: false }),
  );
  const gateway = createGateway(config, logger);
  process.on('SIGUSR2', () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const memory = process.memoryUsage();
    process.stdout.write(
      `${JSON.stringify({ memory: { ...memory, cacheEntries: gateway.introspection.cache.size } })}\n`,
    );
  });
  const { proxy } = await gateway.listen();
  process.stdout.write(`${JSON.stringify({ port: proxy.port })}\n`);
} else {
  process.stderr.write(`unknown role ${String(role)}\n`);
  process.exit(2);
}
