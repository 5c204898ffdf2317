/**
 * Child-process roles for the benchmark, so the load generator, the proxy under test and the
 * upstream do not share an event loop: `node dist-bench/bench/servers.js ROLE [args]`.
 * Each role prints one JSON line `{"port": N}` once it listens on 127.0.0.1.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import httpProxy from 'http-proxy';
import { createGateway } from '../src/app.js';
import { parseConfig } from '../src/config/load.js';
import { createLogger } from '../src/log/logger.js';

const [role, ...args] = process.argv.slice(2);
// A clean exit on SIGTERM/SIGINT, so `--cpu-prof` can write its profile.
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
const announce = (server: http.Server) =>
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);

const BODY = JSON.stringify({ id: 42, status: 'shipped', items: [1, 2, 3] });

if (role === 'upstream') {
  // The API and the authorization server in one process: both are cheap here.
  const server = http.createServer((req, res) => {
    if (req.url === '/introspect') {
      req.resume();
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        res.end(
          JSON.stringify({
            active: true,
            scope: 'orders:read',
            sub: 'bench',
            client_id: 'bench',
            exp: Math.floor(Date.now() / 1000) + 3600,
          }),
        );
      });
      return;
    }
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(BODY);
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
  const port = args[0];
  const config = parseConfig(
    `server: {host: 127.0.0.1, port: 0}
admin: {host: 127.0.0.1, port: 0}
upstream: {url: "http://127.0.0.1:${port}"}
introspection: {endpoint: "http://127.0.0.1:${port}/introspect", client_id: bench, client_secret: bench}
routes:
  - {name: health, path: /healthz, methods: [GET], auth: none}
  - {name: orders-read, path: /api/orders/:id, methods: [GET], scopes: [orders:read]}
  - {name: orders-write, prefix: /api/orders, methods: [POST, PUT, DELETE], scopes: [orders:write]}
forward:
  identity_headers: {X-Auth-Subject: sub, X-Auth-Client-Id: client_id, X-Auth-Scope: scope}
log: {level: info, access_log: true}
`,
    'bench.yaml',
    {},
  );
  // Access logs on, as in production; written to /dev/null through pino's async destination.
  const { default: pino } = await import('pino');
  const logger = createLogger(
    'info',
    pino.destination({ dest: '/dev/null', sync: false, minLength: 4096 }),
  );
  const gateway = createGateway(config, logger);
  const { proxy } = await gateway.listen();
  process.stdout.write(`${JSON.stringify({ port: proxy.port })}\n`);
} else {
  process.stderr.write(`unknown role ${String(role)}\n`);
  process.exit(2);
}
