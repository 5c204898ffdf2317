import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { ConfigError, parseConfig } from '../src/config/load.js';

const run = promisify(execFile);
const MINIMAL = `introspection:
  endpoint: http://127.0.0.1:9000/introspect
  client_id: tokenguard
  client_secret: s
`;
/** A route list for configs whose test is not about routes (no route at all is an error). */
const ROUTE = 'routes:\n  - path: /a\n';

const problems = (text: string, env: Record<string, string> = {}): string[] => {
  try {
    parseConfig(text, 'gw.yaml', env);
  } catch (error) {
    if (error instanceof ConfigError) return error.message.split('\n');
    throw error;
  }
  return [];
};

test('a minimal config gets every documented default', (t) => {
  const config = parseConfig(`${MINIMAL}${ROUTE}`, 'gw.yaml', {});
  t.is(config.server.port, 8000);
  t.is(config.admin.port, 9100);
  t.is(config.upstream.url, 'http://127.0.0.1:8080');
  t.is(config.upstream.timeout_ms, 30000);
  t.is(config.introspection.auth_method, 'client_secret_basic');
  t.is(config.introspection.token_type_hint, 'access_token');
  t.is(config.introspection.clock_skew_seconds, 30);
  t.is(config.cache.max_ttl_seconds, 300);
  t.is(config.cache.negative_ttl_seconds, 10);
  t.is(config.fishing.max_failures, 20);
  t.is(config.default_action, 'deny');
  t.false(config.routes_case_sensitive);
  t.is(config.server.shutdown_grace_seconds, 10);
  t.is(config.server.idle_timeout_seconds, 300);
});

// [config text, the exact problem lines expected]
const invalid: Array<[string, string, string[]]> = [
  [
    'unknown top-level key, and so no route',
    `${MINIMAL}rutes: []\n`,
    [
      'gw.yaml:1:1: routes: lists no route: with default_action deny every request gets 404 and nothing is ever forwarded',
      'gw.yaml:5:1: rutes: unknown key; did you mean `routes`?',
    ],
  ],
  [
    'misspelt route key (scope for scopes)',
    `${MINIMAL}routes:\n  - path: /a\n    scope: [x]\n`,
    ['gw.yaml:7:5: routes[0].scope: unknown key; did you mean `scopes`?'],
  ],
  [
    'wrong type with position of the value',
    `server:\n  port: eighty\n${MINIMAL}${ROUTE}`,
    ['gw.yaml:2:9: server.port: must be a number, got a string'],
  ],
  [
    'port out of range',
    `server:\n  port: 70000\n${MINIMAL}${ROUTE}`,
    ['gw.yaml:2:9: server.port: must be at most 65535'],
  ],
  ['missing introspection', `server: {}\n${ROUTE}`, ['gw.yaml:1:1: introspection: is required']],
  [
    'missing secret for basic auth',
    `introspection:\n  endpoint: http://127.0.0.1/i\n  client_id: x\n${ROUTE}`,
    ['gw.yaml:2:3: introspection.client_secret: is required with auth_method client_secret_basic'],
  ],
  [
    'a client_secret_jwt secret shorter than an HS256 key',
    `introspection:\n  endpoint: http://127.0.0.1/i\n  client_id: x\n  client_secret: only-20-bytes-long!!\n  auth_method: client_secret_jwt\n${ROUTE}`,
    [
      'gw.yaml:4:18: introspection.client_secret: must be at least 32 bytes with auth_method client_secret_jwt (RFC 7518 §3.2: an HS256 key is at least 256 bits)',
    ],
  ],
  [
    'neither endpoint nor issuer',
    `introspection:\n  client_id: x\n  client_secret: y\n${ROUTE}`,
    ['gw.yaml:2:3: introspection: needs `endpoint`, or `issuer` for discovery'],
  ],
  [
    'route with both path and prefix',
    `${MINIMAL}routes:\n  - path: /a\n    prefix: /b\n`,
    ['gw.yaml:6:5: routes[0]: needs exactly one of `path` or `prefix`'],
  ],
  [
    'bad koa-router pattern',
    `${MINIMAL}routes:\n  - path: /a/(b\n`,
    [
      'gw.yaml:6:11: routes[0].path: is not a valid koa-router pattern: Unexpected ( at index 3: /a/(b',
    ],
  ],
  [
    'scopes on a public route',
    `${MINIMAL}routes:\n  - path: /a\n    auth: none\n    scopes: [x]\n`,
    ['gw.yaml:8:13: routes[0].scopes: cannot be required on a route with `auth: none`'],
  ],
  [
    'unknown method',
    `${MINIMAL}routes:\n  - path: /a\n    methods: [GET, FETCH]\n`,
    [
      'gw.yaml:7:20: routes[0].methods[1]: must be one of "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"',
    ],
  ],
  [
    'scope with a space',
    `${MINIMAL}routes:\n  - path: /a\n    scopes: ["a b"]\n`,
    ['gw.yaml:7:14: routes[0].scopes[0]: must be a single RFC 6749 scope token'],
  ],
  [
    'identity header the proxy owns',
    `${MINIMAL}${ROUTE}forward:\n  identity_headers:\n    Host: sub\n`,
    [
      'gw.yaml:9:11: forward.identity_headers.Host: is a header the proxy owns and cannot carry identity',
    ],
  ],
  [
    'bad trusted proxy CIDR',
    `server:\n  trusted_proxies: [10.0.0.0/40]\n${MINIMAL}${ROUTE}`,
    [
      'gw.yaml:2:21: server.trusted_proxies[0]: must be an IP address or CIDR block such as 10.0.0.0/8 or fd00::/8',
    ],
  ],
  [
    'upstream with a path',
    `upstream:\n  url: http://127.0.0.1:8080/api\n${MINIMAL}${ROUTE}`,
    [
      'gw.yaml:2:8: upstream.url: must be an origin such as http://127.0.0.1:8080 (no path or query)',
    ],
  ],
  [
    'YAML syntax error',
    'server: [\n',
    [
      'gw.yaml:2:1: yaml: Flow sequence in block collection must be sufficiently indented and end with a ]',
    ],
  ],
  [
    'duplicate key',
    `${MINIMAL}server: {}\nserver: {}\n`,
    ['gw.yaml:6:1: yaml: Map keys must be unique'],
  ],
  [
    'several problems, all reported, in file order',
    `server:\n  port: x\n  hots: y\n${MINIMAL}default_action: allow\n${ROUTE}`,
    [
      'gw.yaml:2:9: server.port: must be a number, got a string',
      'gw.yaml:3:3: server.hots: unknown key; did you mean `host`?',
      'gw.yaml:8:17: default_action: must be one of "deny", "authenticate"',
    ],
  ],
];

for (const [title, text, expected] of invalid) {
  test(`config error: ${title}`, (t) => {
    t.deepEqual(problems(text), expected);
  });
}

test('${VAR} is replaced before typing; quoted stays a string', (t) => {
  const config = parseConfig(
    `server:\n  port: \${PORT}\n  host: "\${HOST}"\nintrospection:\n  endpoint: https://\${AS_HOST}/i\n  client_id: x\n  client_secret: \${SECRET}\n${ROUTE}`,
    'gw.yaml',
    { PORT: '8443', HOST: '127.0.0.1', AS_HOST: 'as.local:9000', SECRET: 'p@ss${not-a-ref' },
  );
  t.is(config.server.port, 8443);
  t.is(config.server.host, '127.0.0.1');
  t.is(config.introspection.endpoint, 'https://as.local:9000/i');
  t.is(config.introspection.client_secret, 'p@ss${not-a-ref', 'values are not interpolated twice');
});

test('${VAR:-default}, empty default and $${ escape', (t) => {
  const config = parseConfig(
    `introspection:\n  endpoint: \${EP:-http://127.0.0.1:1/i}\n  client_id: "$\${literal}"\n  client_secret: s\n  token_type_hint: x\${EMPTY:-}y\n${ROUTE}`,
    'gw.yaml',
    {},
  );
  t.is(config.introspection.endpoint, 'http://127.0.0.1:1/i');
  t.is(config.introspection.client_id, '${literal}');
  t.is(config.introspection.token_type_hint, 'xy');
});

test('an unset variable without default is an error naming it, at its position', (t) => {
  t.deepEqual(
    problems(
      `introspection:\n  endpoint: http://a/i\n  client_id: x\n  client_secret: \${TG_SECRET}\n`,
    ),
    ['gw.yaml:4:18: introspection.client_secret: environment variable TG_SECRET is not set'],
  );
});

test('the secret never appears in an error message', (t) => {
  const lines = problems(`server:\n  port: \${SECRET}\n${MINIMAL}${ROUTE}`, {
    SECRET: 'hunter2-very-secret',
  });
  t.is(lines.length, 1);
  t.false(lines.join('\n').includes('hunter2'));
});

const cli = async (args: string[], env: Record<string, string> = {}) => {
  try {
    const { stdout, stderr } = await run(process.execPath, ['dist/cli.js', ...args], {
      env: { PATH: process.env.PATH ?? '', TOKENGUARD_CLIENT_SECRET: 'test-secret', ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failure = error as { code: number; stdout: string; stderr: string };
    return { code: failure.code, stdout: failure.stdout, stderr: failure.stderr };
  }
};

test('tokenguard check: exit 0 on the shipped example and demo configs', async (t) => {
  const example = await cli(['check', '--config', 'config/gateway.example.yaml'], {
    TOKENGUARD_CLIENT_SECRET: 'x',
  });
  t.is(example.code, 0, example.stderr);
  const demo = await cli(['check', '--config', 'config/demo.yaml'], {
    TOKENGUARD_CLIENT_SECRET: 'x',
  });
  t.is(demo.code, 0, demo.stderr);
});

test('tokenguard check: exit 1 with every problem as PATH:line:col: key.path: message', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tokenguard-config-'));
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, `server:\n  port: x\n${MINIMAL}routes:\n  - path: /a\n    scope: [x]\n`);
  const result = await cli(['check', '--config', file]);
  t.is(result.code, 1);
  t.deepEqual(result.stderr.trim().split('\n'), [
    `${file}:2:9: server.port: must be a number, got a string`,
    `${file}:9:5: routes[0].scope: unknown key; did you mean \`scopes\`?`,
  ]);
});

test('tokenguard check: TOKENGUARD_CONFIG names the file; a missing file is exit 1', async (t) => {
  const result = await cli(['check'], { TOKENGUARD_CONFIG: 'config/nope.yaml' });
  t.is(result.code, 1);
  t.regex(result.stderr, /^config\/nope\.yaml:1:1: <file>: cannot read the config file \(ENOENT\)/);
});

test('tokenguard explain: the matching route, what it requires, and why', async (t) => {
  const result = await cli([
    'explain',
    '--config',
    'config/gateway.example.yaml',
    'GET',
    '/API//orders/42',
  ]);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, /normalised path: \/API\/orders\/42/);
  t.regex(result.stdout, /skipped #1 "health" path \/healthz \(GET HEAD\): path does not match/);
  t.regex(result.stdout, /route: #2 "orders-read" path \/api\/orders\/:id/);
  t.regex(result.stdout, /requires: an active token with scope orders:read/);
  const refused = await cli([
    'explain',
    '--config',
    'config/gateway.example.yaml',
    'GET',
    '/healthz/..;/admin',
  ]);
  t.regex(refused.stdout, /refused: 400 invalid_request/);
  const wrongMethod = await cli([
    'explain',
    '--config',
    'config/gateway.example.yaml',
    'DELETE',
    '/healthz',
  ]);
  t.regex(wrongMethod.stdout, /refused: 405 method_not_allowed, .*\(Allow: GET, HEAD\)/);
  const unmatched = await cli([
    'explain',
    '--config',
    'config/gateway.example.yaml',
    'GET',
    '/nowhere',
  ]);
  t.regex(unmatched.stdout, /no route matches; default_action deny: 404/);
  const override = await cli([
    'explain',
    '--config',
    'config/gateway.example.yaml',
    'POST',
    '/healthz?_method=DELETE',
  ]);
  t.regex(override.stdout, /refused: 400 invalid_request, a _method query parameter/);
});
