/**
 * Why: `tokenguard check` is what an operator runs on a config they are unsure of, so no input
 * may make it throw — `upstream.url: 127.0.0.1:8080` once printed a stack trace and hid every
 * other problem. Whatever YAML or value lands at whatever key, the loader either accepts the
 * config or throws a ConfigError whose every line is `file:line:col: key.path: message`,
 * written in words (never zod's own "Invalid input: expected …"), and never through the
 * loader's last-resort "could not be validated" net.
 */
import test from 'ava';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { ConfigError, parseConfigSource } from '../../src/config/load.js';

const FILE = 'fuzz.yaml';
const LINE = /^fuzz\.yaml:\d+:\d+: \S.*?: \S.*$/;
const RAW_ZOD =
  /Invalid input|Invalid option|Too small|Too big|expected \w+, received|must be a int/;

/** A valid config: the fuzzer damages it key by key. */
const BASE = {
  server: { host: '127.0.0.1', port: 8000, trusted_proxies: ['10.0.0.0/16'] },
  admin: { host: '127.0.0.1', port: 9100 },
  upstream: { url: 'http://127.0.0.1:8080', timeout_ms: 30000 },
  introspection: {
    endpoint: 'https://as.example.com/oauth2/introspect',
    client_id: 'tokenguard',
    client_secret: 'a-real-secret',
    audience: ['orders-api'],
  },
  cache: { max_ttl_seconds: 300 },
  fishing: { max_failures: 20 },
  routes: [
    { name: 'health', path: '/healthz', methods: ['GET'], auth: 'none' },
    { name: 'read', path: '/api/orders/:id', methods: ['GET'], scopes: ['orders:read'] },
    { prefix: '/api/orders', methods: ['POST'], scopes: ['orders:write'] },
  ],
  default_action: 'deny',
  forward: { identity_headers: { 'X-Auth-Subject': 'sub' } },
  log: { level: 'info' },
  insecure: [],
  shared: { redis: { url: 'redis://127.0.0.1:6379', password: 'p4ss-word-long' } },
};

/** Every key path of BASE (arrays by index), plus a few keys BASE leaves out. */
function keyPaths(value: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (value === null || typeof value !== 'object') return [prefix];
  const entries = Array.isArray(value)
    ? value.map((item, index) => [index, item] as const)
    : Object.entries(value);
  return [prefix, ...entries.flatMap(([key, item]) => keyPaths(item, [...prefix, key]))];
}
const PATHS = [
  ...keyPaths(BASE),
  ['routes_case_sensitive'],
  ['introspection', 'issuer'],
  ['introspection', 'auth_method'],
  ['introspection', 'private_key_file'],
  ['forward', 'keep_from_trusted_proxies'],
  ['admin', 'revoke_token'],
  ['scopes'],
  ['routes', 0, 'scope'],
];

/** Values an operator (or a template gone wrong) could write. */
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    '127.0.0.1:8080',
    'localhost',
    'http://',
    'http://[::1',
    'https://as.example.com/x#frag',
    'redis://',
    '0.0.0.0/0',
    '::/0',
    '10.0.0.0/99',
    '/a/(b',
    '/:',
    '/*',
    '(',
    '{}',
    'change-me',
    '<secret>',
    '${UNSET_VARIABLE}',
    '${',
    '$${x}',
    '',
    ' ',
    'GET',
    'get',
    'none',
    'authenticate',
    'plain_http_introspection',
    'trust_any',
    '__proto__',
    'constructor',
  ),
  fc.string(),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.oneof(fc.string(), fc.integer(), fc.constant(null)), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string(), fc.integer()), {
    maxKeys: 3,
  }),
);

function setAt(root: unknown, path: readonly (string | number)[], value: unknown): unknown {
  if (path.length === 0) return value;
  const [key, ...rest] = path as [string | number, ...(string | number)[]];
  const container: Record<string | number, unknown> =
    root !== null && typeof root === 'object'
      ? ((Array.isArray(root) ? [...root] : { ...root }) as Record<string | number, unknown>)
      : {};
  container[key] = setAt(container[key], rest, value);
  return container;
}

function expectWellFormed(text: string): void {
  let failure: unknown;
  try {
    parseConfigSource(text, FILE, { SET_VARIABLE: 'x' });
    return;
  } catch (error) {
    failure = error;
  }
  if (!(failure instanceof ConfigError)) {
    throw new Error(`threw ${String(failure)} for:\n${text}`, { cause: failure });
  }
  for (const line of failure.message.split('\n')) {
    if (!LINE.test(line) || RAW_ZOD.test(line) || line.includes('could not be validated')) {
      throw new Error(`badly formed problem line:\n${line}\nfor:\n${text}`);
    }
  }
}

/** Runs the property; a failure names the input and what went wrong. */
function holds<T extends unknown[]>(
  property: fc.IPropertyWithHooks<T>,
  numRuns: number,
): string | undefined {
  const details = fc.check(property, { numRuns });
  if (!details.failed) return undefined;
  return `${String(details.errorInstance)}\ncounterexample: ${JSON.stringify(details.counterexample)}\nseed: ${details.seed}`;
}

test('damaged configs: any value at any key gives file:line:col errors, never a throw', (t) => {
  const failure = holds(
    fc.property(
      fc.array(fc.tuple(fc.constantFrom(...PATHS), hostileValue), { minLength: 1, maxLength: 4 }),
      fc.boolean(),
      (edits, flow) => {
        let config: unknown = BASE;
        for (const [path, value] of edits) config = setAt(config, path, value);
        const text = stringify(config, flow ? { collectionStyle: 'flow' } : undefined);
        expectWellFormed(text);
      },
    ),
    400,
  );
  t.is(failure, undefined);
});

test('raw text: YAML-ish noise gives file:line:col errors, never a throw', (t) => {
  const yamlish = fc.string({
    unit: fc.constantFrom(
      ...'abc:-[]{}&*!|>#%@`\'",?\n \t'.split(''),
      'routes',
      'server',
      'port',
      '  ',
      '\n  - ',
      '<<',
      '!!binary',
      '${X}',
    ),
    maxLength: 60,
  });
  const failure = holds(
    fc.property(yamlish, (text) => {
      expectWellFormed(text);
    }),
    400,
  );
  t.is(failure, undefined);
});

// Inputs that crashed or misled the loader before, kept as fixed cases.
const FORMER_CRASHES: Array<[string, string]> = [
  ['an upstream URL without a scheme', 'upstream:\n  url: 127.0.0.1:8080\n'],
  ['a list as a key', '? [a]\n: 1\n'],
  ['nesting deeper than the stack', `${'['.repeat(5000)}${']'.repeat(5000)}\n`],
  [
    'an alias bomb',
    'a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n',
  ],
  ['a document that is a list', '- a\n- b\n'],
  ['a binary value', 'introspection:\n  client_secret: !!binary aGVsbG8=\n'],
];

for (const [title, text] of FORMER_CRASHES) {
  test(`former crash: ${title}`, (t) => {
    t.notThrows(() => expectWellFormed(text));
    t.throws(() => parseConfigSource(text, FILE, {}), { instanceOf: ConfigError });
  });
}
