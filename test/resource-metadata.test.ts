/**
 * RFC 9728 protected-resource metadata against the real gateway: the document at
 * `/.well-known/oauth-protected-resource` and at the §3.1 path-suffixed form, answered by the
 * gateway itself (the upstream never sees it, no token is needed, the authorization server is
 * not asked), `resource_metadata="<url>"` in every WWW-Authenticate challenge (§5.1) — the
 * same bytes from the cached pass and the Koa pipeline — and, unconfigured, the path is an
 * ordinary path.
 */
import test from 'ava';
import { explainRequest } from '../src/commands/explain.js';
import { parseConfig } from '../src/config/load.js';
import { metadataUrlOf } from '../src/metadata/protected-resource.js';
import { bearer, rawRequest, request, startHarness, type Harness } from './_harness.js';

const RESOURCE = 'https://orders.example.com/api';
const METADATA_URL = 'https://orders.example.com/.well-known/oauth-protected-resource/api';

/** Requests for the well-known path (as written, case-sensitively) the upstream executed. */
const forwardedMetadata = (harness: Harness): number =>
  harness.upstream.requests.filter((recorded) =>
    recorded.url.startsWith('/.well-known/oauth-protected-resource'),
  ).length;

const configured = () => ({
  routes: [
    { name: 'public', prefix: '/public', auth: 'none' },
    { name: 'orders-read', path: '/api/orders/:id', methods: ['GET'], scopes: ['orders:read'] },
    { name: 'files', prefix: '/api/files', any_scopes: ['files.read', 'files'] },
    // A catch-all that would forward the well-known path upstream if the gateway let it.
    { name: 'everything', prefix: '/', auth: 'none' },
  ],
  resource_metadata: {
    resource: RESOURCE,
    authorization_servers: ['https://as.example.com'],
    resource_name: 'Orders API',
    resource_documentation: 'https://docs.example.com/orders',
    max_age_seconds: 600,
  },
});

let on: Harness;
let off: Harness;

test.before(async () => {
  [on, off] = await Promise.all([
    startHarness({ config: configured }),
    startHarness({ config: configured, gateway: { cachedPass: false } }),
  ]);
});

test.after.always(async () => {
  await Promise.all([on?.close(), off?.close()]);
});

const EXPECTED_DOCUMENT = {
  resource: RESOURCE,
  authorization_servers: ['https://as.example.com'],
  scopes_supported: ['orders:read', 'files.read', 'files'],
  bearer_methods_supported: ['header'],
  resource_name: 'Orders API',
  resource_documentation: 'https://docs.example.com/orders',
  dpop_bound_access_tokens_required: false,
};

test('RFC 9728 §3.1: the metadata URL inserts the well-known path between host and path', (t) => {
  t.is(
    metadataUrlOf('https://api.example.com').href,
    'https://api.example.com/.well-known/oauth-protected-resource',
  );
  t.is(
    metadataUrlOf('https://api.example.com/').href,
    'https://api.example.com/.well-known/oauth-protected-resource',
  );
  t.is(metadataUrlOf(RESOURCE).href, METADATA_URL);
  t.is(
    metadataUrlOf('https://api.example.com:8443/a/b/').href,
    'https://api.example.com:8443/.well-known/oauth-protected-resource/a/b',
  );
});

for (const path of [
  '/.well-known/oauth-protected-resource',
  '/.well-known/oauth-protected-resource/api',
  '/.well-known/oauth-protected-resource/api?x=1',
  '/.well-known//oauth-protected-resource/./api',
]) {
  test(`GET ${path}: the document, from the gateway, no token needed`, async (t) => {
    for (const harness of [on, off]) {
      const before = forwardedMetadata(harness);
      const asked = harness.as.introspectionCalls;
      const response = await request(`${harness.url}${path}`, { path });
      t.is(response.status, 200);
      t.is(response.headers['content-type'], 'application/json');
      t.is(response.headers['cache-control'], 'public, max-age=600');
      t.is(response.headers['access-control-allow-origin'], '*');
      t.deepEqual(response.json(), EXPECTED_DOCUMENT);
      t.is(forwardedMetadata(harness), before, 'never forwarded');
      t.is(harness.as.introspectionCalls, asked, 'the AS is not asked');
    }
  });
}

test('HEAD answers the headers; a token, even a bad one, changes nothing', async (t) => {
  const head = await request(`${on.url}/.well-known/oauth-protected-resource`, { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(head.body, '');
  t.is(Number(head.headers['content-length']), JSON.stringify(EXPECTED_DOCUMENT).length);
  const withToken = await request(`${on.url}/.well-known/oauth-protected-resource`, {
    headers: bearer('not-a-token'),
  });
  t.is(withToken.status, 200);
});

test('other methods: 405 with Allow; other paths below it: 404; neither reaches the upstream', async (t) => {
  for (const harness of [on, off]) {
    const before = forwardedMetadata(harness);
    const post = await request(`${harness.url}/.well-known/oauth-protected-resource`, {
      method: 'POST',
      body: '{}',
      headers: { 'content-type': 'application/json' },
    });
    t.is(post.status, 405);
    t.is(post.headers.allow, 'GET, HEAD');
    for (const path of [
      '/.well-known/oauth-protected-resource/',
      '/.well-known/oauth-protected-resource/other',
      '/.well-known/oauth-protected-resource/api/orders',
    ]) {
      const response = await request(`${harness.url}${path}`);
      t.is(response.status, 404, path);
      t.is(response.json().error, 'not_found');
    }
    t.is(forwardedMetadata(harness), before, 'never forwarded');
  }
});

test('a WebSocket upgrade to the metadata path is refused, not forwarded', async (t) => {
  const before = forwardedMetadata(on);
  const reply = await rawRequest(
    on.port,
    'GET /.well-known/oauth-protected-resource HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    500,
  );
  t.regex(reply, /^HTTP\/1\.1 404 /);
  t.is(forwardedMetadata(on), before);
});

test('a different case is an ordinary path for the routes (well-known URIs are case-sensitive)', async (t) => {
  const response = await request(`${on.url}/.WELL-KNOWN/oauth-protected-resource`);
  t.is(response.status, 200);
  t.true(
    on.upstream.requests.some(
      (recorded) => recorded.url === '/.WELL-KNOWN/oauth-protected-resource',
    ),
    'the catch-all route forwarded it',
  );
});

test('metrics and access lines: route __resource_metadata__, outcome served', async (t) => {
  await request(`${on.url}/.well-known/oauth-protected-resource`);
  const text = await on.gateway.metrics.registry.getSingleMetricAsString(
    'tokenguard_requests_total',
  );
  t.regex(
    text,
    /tokenguard_requests_total\{route="__resource_metadata__",outcome="served"\} [1-9]/,
  );
  t.regex(on.logs(), /"route":"__resource_metadata__".*"outcome":"served"/);
});

const challengeTail = `, resource_metadata="${METADATA_URL}"`;

test('every challenge names resource_metadata, identically from the cached pass and the pipeline', async (t) => {
  const reader = on.as.issue({ scope: 'orders:read' });
  const readerOff = off.as.issue({ scope: 'orders:read' });
  const cases: [string, (token: string) => Record<string, string>, number, string][] = [
    ['/api/orders/1', () => ({}), 401, `Bearer realm="tokenguard"${challengeTail}`],
    [
      '/api/orders/1',
      () => ({ authorization: 'Bearer a b' }),
      400,
      `Bearer realm="tokenguard", error="invalid_request", error_description="malformed bearer credentials"${challengeTail}`,
    ],
    [
      '/api/orders/1',
      () => bearer('unknown-token-value'),
      401,
      `Bearer realm="tokenguard", error="invalid_token", error_description="the access token is invalid"${challengeTail}`,
    ],
    [
      '/api/files/1',
      (token) => bearer(token),
      403,
      `Bearer realm="tokenguard", error="insufficient_scope", error_description="the access token does not carry the required scope", scope="files.read"${challengeTail}`,
    ],
  ];
  for (const [path, headers, status, challenge] of cases) {
    for (const [harness, token] of [
      [on, reader],
      [off, readerOff],
    ] as const) {
      // Twice: the second time a known token is a cache hit (the cached pass when on).
      for (let round = 0; round < 2; round += 1) {
        const response = await request(`${harness.url}${path}`, { headers: headers(token) });
        t.is(response.status, status, `${path} ${status}`);
        t.is(response.headers['www-authenticate'], challenge, `${path} ${status}`);
      }
    }
  }
  // And a token that passes still passes.
  const ok = await request(`${on.url}/api/orders/1`, { headers: bearer(reader) });
  t.is(ok.status, 200);
});

test('unconfigured: the well-known path is an ordinary path, challenges carry no resource_metadata', async (t) => {
  const plain = await startHarness({
    config: () => ({
      routes: [{ name: 'orders-read', path: '/api/orders/:id', scopes: ['orders:read'] }],
    }),
  });
  try {
    const response = await request(`${plain.url}/.well-known/oauth-protected-resource`);
    t.is(response.status, 404, 'default_action deny');
    t.is(response.json().error, 'not_found');
    const challenge = await request(`${plain.url}/api/orders/1`);
    t.is(challenge.headers['www-authenticate'], 'Bearer realm="tokenguard"');
  } finally {
    await plain.close();
  }
  const routed = await startHarness({
    config: () => ({ routes: [{ name: 'all', prefix: '/', auth: 'none' }] }),
  });
  try {
    const response = await request(`${routed.url}/.well-known/oauth-protected-resource`);
    t.is(response.status, 200);
    t.is(routed.upstream.requests.at(-1)?.url, '/.well-known/oauth-protected-resource');
  } finally {
    await routed.close();
  }
});

test('authorization_servers defaults to introspection.issuer; scopes_supported leaves out auth none', async (t) => {
  const harness = await startHarness({
    config: ({ as }) => ({
      introspection: { issuer: as.issuer },
      routes: [
        { name: 'open', prefix: '/open', auth: 'none' },
        { name: 'any', prefix: '/any' },
      ],
      resource_metadata: { resource: 'https://api.example.com' },
    }),
  });
  try {
    const response = await request(`${harness.url}/.well-known/oauth-protected-resource`);
    t.deepEqual(response.json(), {
      resource: 'https://api.example.com',
      authorization_servers: [harness.as.issuer],
      bearer_methods_supported: ['header'],
      dpop_bound_access_tokens_required: false,
    });
    t.is(response.headers['cache-control'], 'public, max-age=3600');
    const suffixed = await request(`${harness.url}/.well-known/oauth-protected-resource/`);
    t.is(suffixed.status, 404);
  } finally {
    await harness.close();
  }
});

/** A config needs a route (`check`): one, after the section under test. */
const ROUTES = 'routes:\n  - {prefix: /a, scopes: [x]}\n';

test('config: resource must be an https URL without query or fragment; unknown keys refused', (t) => {
  const base = `introspection:\n  endpoint: https://as.example.com/i\n  client_id: c\n  client_secret: s\n`;
  const problems = (section: string): string[] => {
    try {
      parseConfig(`${base}resource_metadata:\n${section}${ROUTES}`, 'gw.yaml', {});
      return [];
    } catch (error) {
      return (error as Error).message.split('\n');
    }
  };
  const message =
    'must be an https:// URL without query or fragment (http:// only for localhost), e.g. https://api.example.com';
  t.deepEqual(problems('  resource: http://api.example.com\n'), [
    `gw.yaml:6:13: resource_metadata.resource: ${message}`,
  ]);
  t.deepEqual(problems('  resource: https://api.example.com/?a=1\n'), [
    `gw.yaml:6:13: resource_metadata.resource: ${message}`,
  ]);
  t.deepEqual(problems('  resource: "https://api.example.com/#x"\n'), [
    `gw.yaml:6:13: resource_metadata.resource: ${message}`,
  ]);
  t.deepEqual(problems('  resource: http://127.0.0.1:8000\n'), []);
  t.deepEqual(problems('  resource: https://a.example\n  resources: []\n'), [
    'gw.yaml:7:3: resource_metadata.resources: unknown key',
  ]);
  t.deepEqual(problems('  authorization_servers: [https://as.example.com]\n'), [
    'gw.yaml:6:3: resource_metadata.resource: is required',
  ]);
});

test('explain says the gateway answers the metadata paths itself', (t) => {
  t.regex(
    explainRequest(on.config, 'GET', '/.well-known/oauth-protected-resource/api'),
    /answered by the gateway itself \(resource_metadata, RFC 9728\)/,
  );
  t.regex(explainRequest(on.config, 'GET', '/api/orders/1'), /route: #2 "orders-read"/);
});
