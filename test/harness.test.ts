/**
 * Smoke tests of the integration harness itself: a real authorization server, upstream and
 * gateway, wired end to end. Each test starts its own and closes it in teardown.
 */
import test from 'ava';
import {
  INTROSPECTION_CLIENT,
  mintToken,
  rawRequest,
  request,
  startHarness,
  TOKEN_CLIENTS,
  type Harness,
} from './_harness.js';

const withHarness = async (run: (harness: Harness) => Promise<void>) => {
  const harness = await startHarness();
  try {
    await run(harness);
  } finally {
    await harness.close();
  }
};

test('a GET with an orders:read token is forwarded, and the second one is a cache hit', async (t) => {
  await withHarness(async ({ as, upstream, url, logs }) => {
    const token = as.issue({ sub: 'alice', client_id: 'app-1', scope: 'orders:read' });
    const authorization = `Bearer ${token}`;

    const first = await request(`${url}/api/orders/42?expand=items`, {
      headers: { authorization },
    });
    t.is(first.status, 200);
    t.is(first.json().url, '/api/orders/42?expand=items');
    t.is(upstream.requests.length, 1);
    const seen = upstream.requests[0]?.headers;
    t.is(seen?.['x-auth-subject'], 'alice');
    t.is(seen?.['x-auth-client-id'], 'app-1');
    t.is(seen?.['x-auth-scope'], 'orders:read');
    t.is(as.introspectionCalls, 1);

    const second = await request(`${url}/api/orders/43`, { headers: { authorization } });
    t.is(second.status, 200);
    t.is(upstream.requests.length, 2);
    t.is(as.introspectionCalls, 1, 'the second request is answered from the cache');

    t.true(logs().includes('"event":"access"'));
    t.false(logs().includes(token), 'the token never reaches the logs');
  });
});

test('a request without a token gets 401 and the bare Bearer challenge', async (t) => {
  await withHarness(async ({ as, upstream, url }) => {
    const response = await request(`${url}/api/orders/42`);
    t.is(response.status, 401);
    t.is(response.headers['www-authenticate'], 'Bearer realm="tokenguard"');
    t.is(response.json().error, 'unauthorized');
    t.is(upstream.requests.length, 0);
    t.is(as.introspectionCalls, 0);
  });
});

test('the gateway authenticates to the authorization server with form-encoded HTTP Basic', async (t) => {
  await withHarness(async ({ as, url }) => {
    const token = as.issue({ scope: 'orders:read' });
    const response = await request(`${url}/api/orders/1`, {
      headers: { authorization: `Bearer ${token}` },
    });
    t.is(response.status, 200);

    const call = as.lastIntrospection;
    t.truthy(call);
    t.is(call?.body.token, token);
    const header = String(call?.headers.authorization);
    t.regex(header, /^Basic [A-Za-z0-9+/]+=*$/);
    const decoded = Buffer.from(header.slice('Basic '.length), 'base64').toString('utf8');
    // RFC 6749 §2.3.1: both parts are form-urlencoded before Base64.
    t.is(decoded, 'tokenguard:s3cret%3Awith%25chars');
    const [id, secret] = decoded.split(':').map((part) => decodeURIComponent(part));
    t.is(id, INTROSPECTION_CLIENT.id);
    t.is(secret, INTROSPECTION_CLIENT.secret);
  });
});

test('tokens minted at the real token endpoint carry the client scope', async (t) => {
  await withHarness(async ({ as, url }) => {
    const reader = TOKEN_CLIENTS[0];
    const writer = TOKEN_CLIENTS[1];
    if (!reader || !writer) throw new Error('TOKEN_CLIENTS changed');
    const readerToken = await mintToken(as, reader);
    const writerToken = await mintToken(as, writer);

    const write = (token: string) =>
      request(`${url}/api/orders`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: '{"item":"book"}',
      });
    const refused = await write(readerToken);
    t.is(refused.status, 403);
    t.regex(String(refused.headers['www-authenticate']), /error="insufficient_scope"/);
    const accepted = await write(writerToken);
    t.is(accepted.status, 200);
    t.is(accepted.json().bodyBytes, 15);
  });
});

test('the raw clients send paths and methods unmodified', async (t) => {
  await withHarness(async ({ upstream, url, port }) => {
    const response = await request(url, { path: '/public/a/../b?x=1' });
    t.is(response.status, 200);
    t.is(upstream.requests.at(-1)?.url, '/public/b?x=1', 'the gateway normalised the path');

    const trace = await rawRequest(
      port,
      'TRACE /public/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    t.regex(trace, /^HTTP\/1\.1 405 /);
  });
});
