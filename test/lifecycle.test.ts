/**
 * The gateway as a process: the real CLI (`node dist/cli.js`, built by `npm run build`) in a
 * child, with a development authorization server and the echo API in this process. What only
 * a process can show is asserted here: the admin probes, SIGTERM draining and the exit code
 * (PRODUCT.md "Admin port"), RFC 8414 discovery gating /readyz, config errors on stderr, and
 * that no token ever reaches stdout or stderr.
 */
import net from 'node:net';
import test, { type ExecutionContext } from 'ava';
import { stringify } from 'yaml';
import {
  startDevAuthorizationServer,
  type DevAuthorizationServer,
} from '../src/dev/auth-server.js';
import { startEchoApi, type EchoApi } from '../src/dev/echo-api.js';
import {
  assertBuilt,
  childConfig,
  freePort,
  spawnCli,
  writeTempConfig,
  type CliProcess,
} from './_child.js';
import { INTROSPECTION_CLIENT, mintToken, request, TOKEN_CLIENTS } from './_harness.js';

const reader = TOKEN_CLIENTS[0] as (typeof TOKEN_CLIENTS)[number];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test.before(() => {
  assertBuilt();
});

/** Polls `probe` until it returns true, at most `timeoutMs` (steps of `stepMs`). */
async function pollUntil(
  probe: () => Promise<boolean>,
  timeoutMs: number,
  stepMs = 25,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
}

/** The status of GET `url`, or 0 when the connection failed. */
async function statusOf(url: string): Promise<number> {
  try {
    return (await request(url, { timeoutMs: 2000 })).status;
  } catch {
    return 0;
  }
}

/** Resolves with the error code of a TCP connection attempt, or 'connected'. */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('timeout');
    }, 2000);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(error.code ?? error.message);
    });
  });
}

interface Fixture {
  as: DevAuthorizationServer;
  upstream: EchoApi;
}

function introspectionFor(as: DevAuthorizationServer) {
  return {
    endpoint: as.introspectionEndpoint,
    client_id: INTROSPECTION_CLIENT.id,
    client_secret: INTROSPECTION_CLIENT.secret,
  };
}

/** Starts the config's child gateway and returns it with its ports; stopped in teardown. */
async function startGateway(t: ExecutionContext, config: Record<string, unknown>) {
  const cfg = await writeTempConfig(stringify(config));
  const gateway = spawnCli(['--config', cfg.file]);
  t.teardown(async () => {
    await gateway.stop();
    await cfg.cleanup();
  });
  const { proxy, admin } = await gateway.waitForListening(20_000);
  return {
    gateway,
    proxyUrl: `http://127.0.0.1:${proxy.port}`,
    proxyPort: proxy.port,
    adminUrl: `http://127.0.0.1:${admin.port}`,
  };
}

async function startFixture(t: ExecutionContext, asPort?: number): Promise<Fixture> {
  const upstream = await startEchoApi();
  t.teardown(() => upstream.close());
  const as = await startDevAuthorizationServer({
    introspectionClients: [INTROSPECTION_CLIENT],
    clients: [...TOKEN_CLIENTS],
    ...(asPort === undefined ? {} : { port: asPort }),
  });
  t.teardown(() => as.close());
  return { as, upstream };
}

/** None of `secrets` appears anywhere in what the process wrote. */
function assertNothingLeaked(t: ExecutionContext, gateway: CliProcess, secrets: string[]) {
  const output = `${gateway.stdout()}\n${gateway.stderr()}`;
  t.true(output.length > 0, 'the gateway logged something');
  for (const secret of secrets) {
    t.false(output.includes(secret), `a token (${secret.slice(0, 6)}…) appears in the output`);
  }
}

test('/healthz and /readyz answer 200 once the gateway is up', async (t) => {
  const { as, upstream } = await startFixture(t);
  const { gateway, proxyUrl, adminUrl } = await startGateway(
    t,
    childConfig({ upstreamUrl: upstream.url, introspection: introspectionFor(as) }),
  );
  t.is(await statusOf(`${adminUrl}/healthz`), 200);
  const ready = await request(`${adminUrl}/readyz`);
  t.is(ready.status, 200, ready.body);
  const metrics = await request(`${adminUrl}/metrics`);
  t.is(metrics.status, 200);
  t.regex(metrics.body, /process_resident_memory_bytes/);

  const token = await mintToken(as, reader);
  const forwarded = await request(`${proxyUrl}/api/orders/3`, {
    headers: { authorization: `Bearer ${token}` },
  });
  t.is(forwarded.status, 200);
  t.is(upstream.requests[0]?.headers['x-auth-subject'], reader.id);

  const exit = await gateway.stop();
  t.deepEqual(exit, { code: 0, signal: null }, 'SIGTERM when idle exits 0');
  assertNothingLeaked(t, gateway, [token]);
});

test('SIGTERM drains: /readyz 503, new connections refused, the in-flight request completes, exit 0', async (t) => {
  const graceSeconds = 8;
  const { as, upstream } = await startFixture(t);
  const { gateway, proxyUrl, proxyPort, adminUrl } = await startGateway(
    t,
    childConfig(
      { upstreamUrl: upstream.url, introspection: introspectionFor(as) },
      { server: { shutdown_grace_seconds: graceSeconds } },
    ),
  );
  t.is(await statusOf(`${adminUrl}/readyz`), 200);

  const token = await mintToken(as, reader);
  const warm = await request(`${proxyUrl}/api/orders/1`, {
    headers: { authorization: `Bearer ${token}` },
  });
  t.is(warm.status, 200);

  // A slow request on an auth: none route, in flight once the upstream has recorded it.
  const inFlight = request(`${proxyUrl}/public/__slow?ms=3000`, { timeoutMs: 30_000 });
  inFlight.catch(() => undefined);
  t.true(
    await pollUntil(
      async () => upstream.requests.some((seen) => seen.url.includes('/__slow')),
      10_000,
    ),
    'the slow request reached the upstream',
  );

  t.true(gateway.child.kill('SIGTERM'));
  const drainingSeen = await pollUntil(
    async () => (await statusOf(`${adminUrl}/readyz`)) === 503,
    2500,
    20,
  );
  t.true(drainingSeen, '/readyz turned 503 while the request was in flight');
  if (drainingSeen) {
    const readyz = await request(`${adminUrl}/readyz`, { timeoutMs: 2000 }).catch(() => null);
    if (readyz?.status === 503) t.is(readyz.json().reason, 'draining');
    t.is(await statusOf(`${adminUrl}/healthz`), 200, 'the admin port stays up while draining');
    t.is(await tryConnect(proxyPort), 'ECONNREFUSED', 'a new connection to the proxy port');
  }

  const slow = await inFlight;
  t.is(slow.status, 200, 'the in-flight request completed');
  t.is(slow.json().url, '/public/__slow?ms=3000');

  const exit = await gateway.waitForExit((graceSeconds + 5) * 1000);
  t.deepEqual(exit, { code: 0, signal: null }, `exit within ${graceSeconds} s (+5 s slack)`);
  t.true(
    gateway.logLines().some((line) => line.event === 'stopped'),
    'the gateway logged that it stopped',
  );
  assertNothingLeaked(t, gateway, [token]);
});

test('with issuer discovery, /readyz is 503 until the authorization server answers, then 200', async (t) => {
  const asPort = await freePort();
  const issuer = `http://127.0.0.1:${asPort}`;
  const upstream = await startEchoApi();
  t.teardown(() => upstream.close());
  const { gateway, proxyUrl, adminUrl } = await startGateway(
    t,
    childConfig(
      {
        upstreamUrl: upstream.url,
        introspection: {
          issuer,
          client_id: INTROSPECTION_CLIENT.id,
          client_secret: INTROSPECTION_CLIENT.secret,
          timeout_ms: 1000,
        },
      },
      { log: { level: 'debug', access_log: true } },
    ),
  );

  // The authorization server is not there yet: not ready, and tokens cannot be checked.
  for (let probe = 0; probe < 3; probe += 1) {
    const readyz = await request(`${adminUrl}/readyz`);
    t.is(readyz.status, 503, readyz.body);
    await sleep(200);
  }
  t.is(await statusOf(`${adminUrl}/healthz`), 200);
  const early = await request(`${proxyUrl}/api/orders/1`, {
    headers: { authorization: 'Bearer some-token-before-discovery' },
  });
  t.is(early.status, 503, 'fail closed while the endpoint is unknown');
  t.is(upstream.requests.length, 0);
  const open = await request(`${proxyUrl}/public/x`);
  t.is(open.status, 200, 'auth: none routes do not need the authorization server');

  const as = await startDevAuthorizationServer({
    introspectionClients: [INTROSPECTION_CLIENT],
    clients: [...TOKEN_CLIENTS],
    port: asPort,
  });
  t.teardown(() => as.close());
  t.is(as.issuer, issuer);

  t.true(
    await pollUntil(async () => (await statusOf(`${adminUrl}/readyz`)) === 200, 30_000, 100),
    `/readyz never turned 200 after the authorization server came up: ${gateway.stdout()}`,
  );

  const token = await mintToken(as, reader);
  const accepted = await request(`${proxyUrl}/api/orders/5`, {
    headers: { authorization: `Bearer ${token}` },
  });
  t.is(accepted.status, 200, accepted.body);
  t.is(upstream.requests.at(-1)?.headers['x-auth-subject'], reader.id);
  t.true(as.introspectionCalls >= 1, 'the discovered endpoint was used');

  const wrongScope = as.issue({ scope: 'profile' });
  const forbidden = await request(`${proxyUrl}/api/orders/5`, {
    headers: { authorization: `Bearer ${wrongScope}` },
  });
  t.is(forbidden.status, 403);
  const bogus = 'bogus-token-that-must-not-be-logged';
  const refused = await request(`${proxyUrl}/api/orders/5`, {
    headers: { authorization: `Bearer ${bogus}` },
  });
  t.is(refused.status, 401);

  const exit = await gateway.stop();
  t.deepEqual(exit, { code: 0, signal: null });
  assertNothingLeaked(t, gateway, [
    token,
    wrongScope,
    bogus,
    'some-token-before-discovery',
    INTROSPECTION_CLIENT.secret,
  ]);
});

test('TOKENGUARD_CONFIG may name the config file instead of --config', async (t) => {
  const { as, upstream } = await startFixture(t);
  const cfg = await writeTempConfig(
    stringify(childConfig({ upstreamUrl: upstream.url, introspection: introspectionFor(as) })),
  );
  t.teardown(() => cfg.cleanup());
  const gateway = spawnCli([], { TOKENGUARD_CONFIG: cfg.file });
  t.teardown(() => gateway.stop().then(() => undefined));
  const { admin } = await gateway.waitForListening(20_000);
  t.is(await statusOf(`http://127.0.0.1:${admin.port}/readyz`), 200);
  t.deepEqual(await gateway.stop(), { code: 0, signal: null });
});

const badConfigs: Array<{
  title: string;
  yaml: string;
  expected: Array<{ line: number; col: number; keyPath: string; message: RegExp }>;
}> = [
  {
    title: 'schema errors',
    yaml: [
      'server:',
      '  port: 70000',
      'upstream:',
      '  url: http://127.0.0.1:1',
      '  timeout: 5',
      'introspection:',
      '  endpoint: http://127.0.0.1:1/introspect',
      '  client_id: x',
      '  client_secret: y',
      'routes:',
      '  - path: /a',
      '    methods: [GET, FETCH]',
      '',
    ].join('\n'),
    expected: [
      { line: 2, col: 9, keyPath: 'server.port', message: /65535/ },
      { line: 5, col: 3, keyPath: 'upstream.timeout', message: /unknown/ },
      { line: 12, col: 20, keyPath: 'routes[0].methods[1]', message: /GET/ },
    ],
  },
  {
    title: 'an unset environment variable',
    yaml: [
      'introspection:',
      '  endpoint: http://127.0.0.1:1/introspect',
      '  client_id: x',
      '  client_secret: ${TOKENGUARD_TEST_UNSET_SECRET}',
      '',
    ].join('\n'),
    expected: [
      {
        line: 4,
        col: 18,
        keyPath: 'introspection.client_secret',
        message: /TOKENGUARD_TEST_UNSET_SECRET/,
      },
    ],
  },
];

for (const { title, yaml, expected } of badConfigs) {
  test(`a bad config (${title}) exits 1 with file:line:col: key.path: message on stderr`, async (t) => {
    const cfg = await writeTempConfig(yaml, 'bad.yaml');
    t.teardown(() => cfg.cleanup());
    const gateway = spawnCli(['--config', cfg.file]);
    t.teardown(() => gateway.stop(2000).then(() => undefined));
    const exit = await gateway.waitForExit(20_000);
    t.deepEqual(exit, { code: 1, signal: null }, gateway.stderr());
    const lines = gateway
      .stderr()
      .split('\n')
      .filter((line) => line !== '');
    for (const { line, col, keyPath, message } of expected) {
      const prefix = `${cfg.file}:${line}:${col}: ${keyPath}: `;
      const found = lines.find((entry) => entry.startsWith(prefix));
      t.truthy(found, `no "${prefix}…" line in:\n${gateway.stderr()}`);
      if (found) t.regex(found.slice(prefix.length), message);
    }
    t.is(lines.length, expected.length, gateway.stderr());
    t.false(gateway.stdout().includes('"event":"listening"'));
  });
}
