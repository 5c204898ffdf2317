/**
 * `tokenguard check` that cannot lie (issue 10), one row per rule: route lists that do not do
 * what they say, semantic clashes, insecure settings and their acknowledgement under
 * `insecure:`, risky choices that stay warnings. The rows run through the loader that both
 * `check` and start-up use (exact `file:line:col` lines); the CLI tests below spawn the real
 * `dist/cli.js` for what only the process shows: exit codes, stdout and stderr, start-up
 * refusing what check refuses, and `--print-defaults`.
 */
import test, { type ExecutionContext } from 'ava';
import { parse } from 'yaml';
import { ConfigError, formatProblem, parseConfigSource } from '../src/config/load.js';
import { spawnCli, writeTempConfig } from './_child.js';

/** Lines 1-4. */
const INTRO = `introspection:
  endpoint: https://as.example.com/introspect
  client_id: gw
  client_secret: a-real-secret
`;
/** Two lines. */
const ROUTE = `routes:
  - path: /a
`;

type Outcome = { ok: string[] } | { errors: string[] };

/** The loader's verdict: the error lines, or the warning lines of an accepted config. */
function verdict(text: string): Outcome {
  try {
    const source = parseConfigSource(text, 'gw.yaml', {});
    return { ok: source.warnings.map((warning) => formatProblem('gw.yaml', warning)) };
  } catch (error) {
    if (error instanceof ConfigError) return { errors: error.message.split('\n') };
    throw error;
  }
}

const ack = (setting: string) => `(acknowledged by insecure: ${setting})`;
const fix = (setting: string) => `if this is deliberate, add \`insecure: [${setting}]\``;

const ROWS: Array<[string, string, Outcome]> = [
  // ── route lists that do not do what they say ──
  [
    'routes: [] is an error',
    `${INTRO}routes: []\n`,
    {
      errors: [
        'gw.yaml:5:9: routes: lists no route: with default_action deny every request gets 404 and nothing is ever forwarded',
      ],
    },
  ],
  [
    'routes: [] with default_action authenticate is an error too',
    `${INTRO}default_action: authenticate\nroutes: []\n`,
    {
      errors: [
        'gw.yaml:6:9: routes: lists no route: with default_action authenticate any active token reaches every path, whatever its scopes',
      ],
    },
  ],
  [
    'a route an earlier prefix takes entirely can never match',
    `${INTRO}routes:\n  - prefix: /api\n    auth: none\n  - path: /api/orders/:id\n    scopes: [orders:read]\n`,
    {
      errors: [
        'gw.yaml:8:5: routes[1]: can never match: routes[0] (prefix /api, any method) comes first and takes every request routes[1] (path /api/orders/:id, any method) would (first match wins) (routes[0] is at gw.yaml:6:5)',
      ],
    },
  ],
  [
    'an earlier broader route with weaker requirements shadows a later one',
    `${INTRO}routes:\n  - prefix: /api\n    methods: [GET]\n    auth: none\n  - prefix: /api/orders\n    scopes: [orders:write]\n`,
    {
      errors: [
        'gw.yaml:9:5: routes[1]: routes[0] (prefix /api, GET) comes first and takes some requests routes[1] (prefix /api/orders, any method) would match, requiring auth none instead of scopes orders:write; put the more specific route first (routes[0] is at gw.yaml:6:5)',
      ],
    },
  ],
  [
    'overlapping methods: a method the later route lists is always taken first',
    `${INTRO}routes:\n  - path: /a\n    methods: [GET, POST]\n  - path: /a\n    methods: [POST, DELETE]\n    scopes: [w]\n`,
    {
      errors: [
        'gw.yaml:8:5: routes[1]: can never match POST: routes[0] (path /a, GET POST) comes first and takes POST on every path routes[1] (path /a, POST DELETE) matches, requiring any active token instead of scopes w; drop it from one of the two routes (routes[0] is at gw.yaml:6:5)',
      ],
    },
  ],
  [
    'duplicate route names',
    `${INTRO}routes:\n  - name: orders\n    path: /a\n  - name: orders\n    path: /b\n`,
    {
      errors: [
        'gw.yaml:8:11: routes[1].name: is "orders", the name of routes[0] too: the route metric label must tell them apart (routes[0].name is at gw.yaml:6:11)',
      ],
    },
  ],
  [
    'a method listed twice in one route',
    `${INTRO}routes:\n  - path: /a\n    methods: [GET, get]\n`,
    { errors: ['gw.yaml:7:20: routes[0].methods[1]: lists GET twice'] },
  ],
  [
    'the specific route first, the broad one after: fine',
    `${INTRO}routes:\n  - path: /api/orders/:id\n    methods: [GET]\n    scopes: [orders:read]\n  - prefix: /api\n    auth: none\n`,
    { ok: [] },
  ],

  // ── semantic clashes ──
  [
    'admin.port == server.port on the same host',
    `${INTRO}${ROUTE}server:\n  host: 127.0.0.1\n  port: 8000\nadmin:\n  host: 127.0.0.1\n  port: 8000\n`,
    {
      errors: [
        'gw.yaml:12:9: admin.port: is 8000, the port server.port listens on (127.0.0.1 and 127.0.0.1 overlap): the admin port must be its own, never reachable through the Service (server.port is at gw.yaml:9:9)',
      ],
    },
  ],
  [
    'admin.port == server.port with the admin port on any address',
    `${INTRO}${ROUTE}server:\n  host: 127.0.0.1\n  port: 9100\n`,
    {
      errors: [
        'gw.yaml:1:1: admin.port: is 9100, the port server.port listens on (127.0.0.1 and 0.0.0.0 overlap): the admin port must be its own, never reachable through the Service (server.port is at gw.yaml:9:9)',
      ],
    },
  ],
  [
    'the same port on two loopback addresses, or both ephemeral: fine',
    `${INTRO}${ROUTE}server:\n  host: 127.0.0.1\n  port: 8000\nadmin:\n  host: 127.0.0.2\n  port: 8000\n`,
    { ok: [] },
  ],
  [
    'both ports 0 (ephemeral): fine',
    `${INTRO}${ROUTE}server: {port: 0}\nadmin: {port: 0}\n`,
    { ok: [] },
  ],
  [
    'an upstream that is the gateway itself',
    `${INTRO}${ROUTE}upstream:\n  url: http://localhost:8000\n`,
    {
      errors: [
        "gw.yaml:8:8: upstream.url: is the gateway's own server.port (localhost:8000): the upstream would be tokenguard itself (server.port is not written: its default)",
      ],
    },
  ],
  [
    'an introspection endpoint on the admin port',
    `introspection:\n  endpoint: http://127.0.0.1:9100/introspect\n  client_id: gw\n  client_secret: a-real-secret\n${ROUTE}`,
    {
      errors: [
        "gw.yaml:2:13: introspection.endpoint: is the gateway's own admin.port (127.0.0.1:9100): the introspection endpoint would be tokenguard itself (admin.port is not written: its default)",
      ],
    },
  ],

  // ── insecure settings: errors unless acknowledged, then warnings ──
  [
    'plain http introspection to a remote host',
    `introspection:\n  endpoint: http://as.example.com/introspect\n  client_id: gw\n  client_secret: a-real-secret\n${ROUTE}`,
    {
      errors: [
        `gw.yaml:2:13: introspection.endpoint: is plain http to as.example.com: tokens and the client secret cross the network unencrypted; use https; ${fix('plain_http_introspection')}`,
      ],
    },
  ],
  [
    'plain http introspection, acknowledged',
    `introspection:\n  endpoint: http://as.example.com/introspect\n  client_id: gw\n  client_secret: a-real-secret\n${ROUTE}insecure: [plain_http_introspection]\n`,
    {
      ok: [
        `gw.yaml:2:13: introspection.endpoint: warning: is plain http to as.example.com: tokens and the client secret cross the network unencrypted; use https ${ack('plain_http_introspection')}`,
      ],
    },
  ],
  [
    'plain http discovery through a remote issuer',
    `introspection:\n  issuer: http://as.example.com\n  client_id: gw\n  client_secret: a-real-secret\n${ROUTE}`,
    {
      errors: [
        `gw.yaml:2:11: introspection.issuer: is plain http to as.example.com: tokens and the client secret (and the discovered endpoint) cross the network unencrypted; use https; ${fix('plain_http_introspection')}`,
      ],
    },
  ],
  ...['127.0.0.5:9000', 'localhost:9000', '[::1]:9000'].map((host): [string, string, Outcome] => [
    `plain http to loopback (${host}) is fine`,
    `introspection:\n  endpoint: http://${host}/introspect\n  client_id: gw\n  client_secret: a-real-secret\n${ROUTE}`,
    { ok: [] },
  ]),
  [
    'auth_method none',
    `introspection:\n  endpoint: https://as.example.com/introspect\n  auth_method: none\n${ROUTE}`,
    {
      errors: [
        `gw.yaml:3:16: introspection.auth_method: is none: RFC 7662 §2.1 requires the introspection endpoint to authenticate its callers, and an open one answers anybody about any token; ${fix('unauthenticated_introspection')}`,
      ],
    },
  ],
  [
    'auth_method none, acknowledged (and a secret it never sends)',
    `introspection:\n  endpoint: https://as.example.com/introspect\n  auth_method: none\n  client_secret: a-real-secret\n${ROUTE}insecure: [unauthenticated_introspection]\n`,
    {
      ok: [
        `gw.yaml:3:16: introspection.auth_method: warning: is none: RFC 7662 §2.1 requires the introspection endpoint to authenticate its callers, and an open one answers anybody about any token ${ack('unauthenticated_introspection')}`,
        'gw.yaml:4:18: introspection.client_secret: warning: is never sent with auth_method none',
      ],
    },
  ],
  ...['0.0.0.0/0', '::/0', '::ffff:0.0.0.0/96'].map((cidr): [string, string, Outcome] => [
    `trusting ${cidr}`,
    `${INTRO}${ROUTE}server:\n  trusted_proxies: ["${cidr}"]\n`,
    {
      errors: [
        `gw.yaml:8:21: server.trusted_proxies[0]: is ${cidr}: every peer is a trusted proxy, so any client chooses its own address in X-Forwarded-For and walks around the fishing defence; ${fix('trust_any_proxy')}`,
      ],
    },
  ]),
  [
    'trusting 0.0.0.0/0, acknowledged',
    `${INTRO}${ROUTE}server:\n  trusted_proxies: [0.0.0.0/0]\ninsecure: [trust_any_proxy]\n`,
    {
      ok: [
        `gw.yaml:8:21: server.trusted_proxies[0]: warning: is 0.0.0.0/0: every peer is a trusted proxy, so any client chooses its own address in X-Forwarded-For and walks around the fishing defence ${ack('trust_any_proxy')}`,
      ],
    },
  ],
  ...[
    'change-me',
    'changeme',
    'CHANGE_ME',
    'secret',
    'Password',
    'xxx',
    'XXXXXXXX',
    '<client-secret>',
    'TODO',
    'TODO: ask the platform team',
  ].map((secret): [string, string, Outcome] => [
    `placeholder client secret "${secret}"`,
    `introspection:\n  endpoint: https://as.example.com/introspect\n  client_id: gw\n  client_secret: "${secret}"\n${ROUTE}`,
    {
      errors: [
        `gw.yaml:4:18: introspection.client_secret: is a placeholder, not a secret: set the real one (from \${ENV}, e.g. a Kubernetes Secret); ${fix('placeholder_secret')}`,
      ],
    },
  ]),
  ...['demo-secret', 's3cret:with%chars', 'bench-secret', 'test-secret', 'secret-4f9a'].map(
    (secret): [string, string, Outcome] => [
      `a real (development) secret "${secret}" is not a placeholder`,
      `introspection:\n  endpoint: https://as.example.com/introspect\n  client_id: gw\n  client_secret: "${secret}"\n${ROUTE}`,
      { ok: [] },
    ],
  ),
  [
    'a placeholder client secret, acknowledged',
    `introspection:\n  endpoint: https://as.example.com/introspect\n  client_id: gw\n  client_secret: change-me\n${ROUTE}insecure: [placeholder_secret]\n`,
    {
      ok: [
        `gw.yaml:4:18: introspection.client_secret: warning: is a placeholder, not a secret: set the real one (from \${ENV}, e.g. a Kubernetes Secret) ${ack('placeholder_secret')}`,
      ],
    },
  ],
  [
    'a placeholder revoke token',
    `${INTRO}${ROUTE}admin:\n  revoke_token: <revoke-token-goes-here>\n`,
    {
      errors: [
        `gw.yaml:8:17: admin.revoke_token: is a placeholder, not a secret: anyone who guesses it can evict the cache; ${fix('placeholder_secret')}`,
      ],
    },
  ],
  [
    'an unknown acknowledgement is an error with did-you-mean',
    `${INTRO}${ROUTE}insecure: [plain_http_introspecton, trust_any]\n`,
    {
      errors: [
        'gw.yaml:7:12: insecure[0]: must be one of "plain_http_introspection", "unauthenticated_introspection", "trust_any_proxy", "placeholder_secret"; did you mean `plain_http_introspection`?',
        'gw.yaml:7:37: insecure[1]: must be one of "plain_http_introspection", "unauthenticated_introspection", "trust_any_proxy", "placeholder_secret"; did you mean `trust_any_proxy`?',
      ],
    },
  ],
  [
    'an acknowledgement nothing needs is a warning',
    `${INTRO}${ROUTE}insecure: [trust_any_proxy]\n`,
    {
      ok: [
        'gw.yaml:7:12: insecure[0]: warning: acknowledges trust_any_proxy, but no setting is: remove it, so that one added later is an error again',
      ],
    },
  ],

  // ── risky but legitimate: warnings ──
  [
    'default_action authenticate',
    `${INTRO}${ROUTE}default_action: authenticate\n`,
    {
      ok: [
        'gw.yaml:7:17: default_action: warning: is authenticate: a path no route lists is forwarded to any active token, whatever its scopes',
      ],
    },
  ],
  [
    'a very wide trusted range (/8, IPv6 /8); a /16 is not',
    `${INTRO}${ROUTE}server:\n  trusted_proxies: [10.0.0.0/8, 10.1.0.0/16, "fd00::/8"]\n`,
    {
      ok: [
        'gw.yaml:8:21: server.trusted_proxies[0]: warning: is 10.0.0.0/8, a very wide range: every peer in it may choose the client address the fishing defence counts; list only your ingress or load balancer addresses',
        'gw.yaml:8:46: server.trusted_proxies[2]: warning: is fd00::/8, a very wide range: every peer in it may choose the client address the fishing defence counts; list only your ingress or load balancer addresses',
      ],
    },
  ],
  [
    'keys with no effect: keep_from_trusted_proxies without trusted proxies',
    `${INTRO}${ROUTE}forward:\n  keep_from_trusted_proxies: [x-forwarded-client-cert]\n`,
    {
      ok: [
        'gw.yaml:8:30: forward.keep_from_trusted_proxies: warning: has no effect: server.trusted_proxies is empty, so no peer is a trusted proxy (server.trusted_proxies is not written: its default)',
      ],
    },
  ],

  // ── all problems together, and in words ──
  [
    'a former crash (upstream.url without a scheme) no longer hides the other errors',
    `${INTRO}${ROUTE}upstream:\n  url: 127.0.0.1:8080\n  timeout_ms: 1.5\nserver:\n  trusted_proxies: [0.0.0.0/0]\n`,
    {
      errors: [
        'gw.yaml:8:8: upstream.url: must be an absolute http:// or https:// URL without a fragment',
        'gw.yaml:9:15: upstream.timeout_ms: must be a whole number, got 1.5',
        `gw.yaml:11:21: server.trusted_proxies[0]: is 0.0.0.0/0: every peer is a trusted proxy, so any client chooses its own address in X-Forwarded-For and walks around the fishing defence; ${fix('trust_any_proxy')}`,
      ],
    },
  ],
  [
    'a key in the wrong section says where it belongs',
    `${INTRO}${ROUTE}audience: [orders-api]\n`,
    { errors: ['gw.yaml:7:1: audience: unknown key; `audience` belongs under `introspection`'] },
  ],
];

for (const [title, text, expected] of ROWS) {
  test(`check rule: ${title}`, (t) => {
    t.deepEqual(verdict(text), expected);
  });
}

// ── the real CLI ──

async function cli(args: string[], env: Record<string, string> = {}) {
  const child = spawnCli(args, env);
  const exit = await child.waitForExit(30_000);
  return { code: exit?.code, stdout: child.stdout(), stderr: child.stderr() };
}

async function tempConfig(t: ExecutionContext, text: string): Promise<string> {
  const config = await writeTempConfig(text, 'gw.yaml');
  t.teardown(() => config.cleanup());
  return config.file;
}

test('cli check: an insecure setting is exit 1 with file:line:col, nothing on stdout', async (t) => {
  const file = await tempConfig(
    t,
    `introspection:\n  endpoint: http://as.example.com/introspect\n  client_id: gw\n  client_secret: change-me\n${ROUTE}`,
  );
  const result = await cli(['check', '--config', file]);
  t.is(result.code, 1);
  t.is(result.stdout, '');
  t.deepEqual(result.stderr.trim().split('\n'), [
    `${file}:2:13: introspection.endpoint: is plain http to as.example.com: tokens and the client secret cross the network unencrypted; use https; ${fix('plain_http_introspection')}`,
    `${file}:4:18: introspection.client_secret: is a placeholder, not a secret: set the real one (from \${ENV}, e.g. a Kubernetes Secret); ${fix('placeholder_secret')}`,
  ]);
});

test('cli check: acknowledged, it is exit 0 with the warnings on stderr', async (t) => {
  const file = await tempConfig(
    t,
    `introspection:\n  endpoint: http://as.example.com/introspect\n  client_id: gw\n  client_secret: a-real-secret\n${ROUTE}insecure: [plain_http_introspection]\ndefault_action: authenticate\n`,
  );
  const result = await cli(['check', '--config', file]);
  t.is(result.code, 0, result.stderr);
  t.is(result.stdout, `${file}: ok (1 routes, 2 warning(s))\n`);
  t.deepEqual(result.stderr.trim().split('\n'), [
    `${file}:2:13: introspection.endpoint: warning: is plain http to as.example.com: tokens and the client secret cross the network unencrypted; use https ${ack('plain_http_introspection')}`,
    `${file}:8:17: default_action: warning: is authenticate: a path no route lists is forwarded to any active token, whatever its scopes`,
  ]);
});

test('cli check: the former crash is exit 1 with every error and no stack trace', async (t) => {
  const file = await tempConfig(
    t,
    `${INTRO}${ROUTE}upstream:\n  url: 127.0.0.1:8080\nserver:\n  prot: 8000\n`,
  );
  const result = await cli(['check', '--config', file]);
  t.is(result.code, 1);
  t.deepEqual(result.stderr.trim().split('\n'), [
    `${file}:8:8: upstream.url: must be an absolute http:// or https:// URL without a fragment`,
    `${file}:10:3: server.prot: unknown key; did you mean \`port\`?`,
  ]);
});

test('start-up obeys the same rule: an unacknowledged insecure setting is exit 1 before listening', async (t) => {
  const insecureFile = await tempConfig(
    t,
    `server: {host: 127.0.0.1, port: 0, trusted_proxies: ["::/0"]}\nadmin: {host: 127.0.0.1, port: 0}\n${INTRO}${ROUTE}`,
  );
  const refused = spawnCli(['--config', insecureFile]);
  t.teardown(() => refused.stop(2000).then(() => undefined));
  const exit = await refused.waitForExit(30_000);
  t.deepEqual(exit, { code: 1, signal: null });
  t.is(
    refused.stderr().trim(),
    `${insecureFile}:1:54: server.trusted_proxies[0]: is ::/0: every peer is a trusted proxy, so any client chooses its own address in X-Forwarded-For and walks around the fishing defence; ${fix('trust_any_proxy')}`,
  );
  t.false(refused.stdout().includes('"event":"listening"'));
});

test('start-up with an acknowledged insecure setting listens and logs it as a warning', async (t) => {
  const file = await tempConfig(
    t,
    `server: {host: 127.0.0.1, port: 0}\nadmin: {host: 127.0.0.1, port: 0}\nupstream: {url: "http://127.0.0.1:1"}\nintrospection:\n  endpoint: http://as.invalid/introspect\n  client_id: gw\n  client_secret: a-real-secret\n${ROUTE}insecure: [plain_http_introspection]\n`,
  );
  const gateway = spawnCli(['--config', file]);
  t.teardown(() => gateway.stop(5000).then(() => undefined));
  await gateway.waitForListening(30_000);
  const warning = gateway
    .stdout()
    .split('\n')
    .filter((line) => line.includes('"event":"insecure_setting"'))
    .map((line) => JSON.parse(line) as { level: number; key: string; msg: string });
  t.is(warning.length, 1, gateway.stdout());
  t.is(warning[0]?.key, 'introspection.endpoint');
  t.regex(warning[0]?.msg ?? '', /plain http to as\.invalid/);
  t.is(warning[0]?.level, 40, 'pino warn');
});

test('cli check --print-defaults: the effective config, defaults filled in, secrets redacted', async (t) => {
  const file = await tempConfig(
    t,
    `introspection:\n  endpoint: https://as.example.com/introspect\n  client_id: gw\n  client_secret: \${SECRET}\n  audience: orders-api\n${ROUTE}admin:\n  revoke_token: a-long-revoke-token-0123\nshared:\n  redis:\n    url: redis://user:redis-pass@127.0.0.1:6379\n`,
  );
  const result = await cli(['check', '--print-defaults', '--config', file], {
    SECRET: 'the-real-client-secret',
  });
  t.is(result.code, 0, result.stderr);
  for (const secret of ['the-real-client-secret', 'a-long-revoke-token-0123', 'redis-pass']) {
    t.false(result.stdout.includes(secret), `${secret} is printed`);
  }
  const printed = parse(result.stdout) as Record<string, Record<string, unknown> | undefined>;
  t.is(printed.server?.port, 8000);
  t.is(printed.admin?.port, 9100);
  t.is(printed.cache?.max_ttl_seconds, 300);
  t.is(printed.fishing?.max_failures, 20);
  t.is(printed.introspection?.auth_method, 'client_secret_basic');
  t.deepEqual(printed.introspection?.audience, ['orders-api'], 'in its final form');
  t.is(printed.introspection?.client_secret, '<redacted>');
  t.is(printed.admin?.revoke_token, '<redacted>');
  t.deepEqual(printed.insecure, []);
  t.is(
    (printed.shared?.redis as { url?: string } | undefined)?.url,
    'redis://user:redacted@127.0.0.1:6379',
  );
  t.is(printed.default_action as unknown, 'deny');

  // What it prints is a config check accepts once the secrets are put back.
  const roundTrip = await tempConfig(
    t,
    result.stdout
      .replace(/client_secret: .*/, 'client_secret: the-real-client-secret')
      .replace(/revoke_token: .*/, 'revoke_token: a-long-revoke-token-0123'),
  );
  const again = await cli(['check', '--config', roundTrip]);
  t.is(again.code, 0, again.stderr);
});

test('cli check --print-defaults without a config prints the defaults alone', async (t) => {
  const result = await cli(['check', '--print-defaults'], { TOKENGUARD_CONFIG: '' });
  t.is(result.code, 0, result.stderr);
  const printed = parse(result.stdout) as Record<string, Record<string, unknown> | undefined>;
  t.is(printed.server?.shutdown_grace_seconds, 10);
  t.is(printed.upstream?.url, 'http://127.0.0.1:8080');
  t.is(printed.introspection?.token_type_hint, 'access_token');
  t.false('endpoint' in (printed.introspection ?? {}), 'no default for the endpoint');
  t.false('shared' in printed, 'fleet mode is off by default');
});

test('cli check --print-defaults of a bad config is exit 1 with its errors', async (t) => {
  const file = await tempConfig(t, `${INTRO}routes: []\n`);
  const result = await cli(['check', '--print-defaults', '--config', file]);
  t.is(result.code, 1);
  t.is(result.stdout, '');
  t.regex(result.stderr, /gw\.yaml:5:9: routes: lists no route/);
});
