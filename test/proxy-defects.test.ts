/**
 * The known defects of http-proxy 1.18.1 (issue 2) that the gateway must neutralise, each
 * asserted by what the upstream actually received — never by what the gateway says it did:
 * chunked DELETE/OPTIONS smuggling, the skipped `proxyReq` event for `Expect:`, `Trailer`
 * crashes, `\` and `//` rewritten after routing, forwarded hop-by-hop fields, crashes on a
 * refused upstream connection, plus the request framings used for smuggling.
 * Every test starts its own authorization server, upstream and gateway on 127.0.0.1:0.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import test from 'ava';
import {
  fetchStream,
  eventually,
  freePort,
  mintToken,
  rawRequest,
  request,
  withHarness,
  TOKEN_CLIENTS,
} from './_harness.js';

const sha256 = (text: string | Buffer) => createHash('sha256').update(text).digest('hex');

const writer = TOKEN_CLIENTS[1] as (typeof TOKEN_CLIENTS)[number];

/** Gives a smuggled request time to reach the upstream, if the gateway let one through. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

/** The status code of every HTTP response found in a raw byte stream, in order. */
const statusLines = (raw: string) =>
  [...raw.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((match) => Number(match[1]));

/**
 * A raw TCP conversation for exchanges `rawRequest` cannot express (send headers, wait for
 * `100 Continue`, then the body). Every wait is bounded.
 */
async function openConversation(port: number) {
  const socket = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let received = '';
  let closed = false;
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1');
  });
  socket.on('error', () => undefined);
  socket.once('close', () => {
    closed = true;
  });
  return {
    write: (text: string) => socket.write(text, 'latin1'),
    received: () => received,
    /** True once `pattern` appears in what was received within `timeoutMs`. */
    waitFor: (pattern: RegExp, timeoutMs = 5000) =>
      eventually(() => pattern.test(received), timeoutMs),
    /** True once the peer closed within `timeoutMs`. */
    waitForClose: (timeoutMs = 5000) => eventually(() => closed, timeoutMs),
    close: () => socket.destroy(),
  };
}

const chunked = (body: string) =>
  `${Buffer.byteLength(body, 'latin1').toString(16)}\r\n${body}\r\n0\r\n\r\n`;

// --- (a) chunked DELETE / OPTIONS ------------------------------------------------------------

for (const { method, path } of [
  { method: 'DELETE', path: '/api/orders/1' },
  { method: 'OPTIONS', path: '/api/any/1' },
]) {
  test(`a chunked ${method} body reaches the upstream whole, never as content-length: 0`, async (t) => {
    await withHarness(undefined, async ({ as, upstream, port }) => {
      const token = await mintToken(as, writer);
      const raw = await rawRequest(
        port,
        `${method} ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
          `Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
        1000,
      );
      t.deepEqual(statusLines(raw), [200], raw);
      await settle();
      t.is(upstream.requests.length, 1, 'exactly one request reached the upstream');
      const seen = upstream.requests[0];
      t.is(seen?.method, method);
      t.is(seen?.url, path);
      t.is(seen?.bodyBytes, 5);
      t.is(seen?.bodySha256, sha256('hello'));
      t.not(seen?.headers['content-length'], '0');
    });
  });

  test(`a chunked ${method} body that looks like a request is not smuggled to the upstream`, async (t) => {
    await withHarness(undefined, async ({ as, upstream, port }) => {
      const token = await mintToken(as, writer);
      const smuggled = 'GET /admin HTTP/1.1\r\nHost: x\r\n\r\n';
      const before = upstream.requests.length;
      const raw = await rawRequest(
        port,
        `${method} ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
          `Transfer-Encoding: chunked\r\n\r\n${chunked(smuggled)}`,
        1000,
      );
      t.deepEqual(statusLines(raw), [200], raw);
      await settle();
      t.is(upstream.requests.length, before + 1, 'exactly one new request at the upstream');
      t.false(
        upstream.requests.some((seen) => seen.url === '/admin'),
        'the body was not read as a request',
      );
      const seen = upstream.requests.at(-1);
      t.is(seen?.method, method);
      t.is(seen?.bodyBytes, Buffer.byteLength(smuggled));
      t.is(seen?.bodySha256, sha256(smuggled));
      t.not(seen?.headers['content-length'], '0');

      // The pooled upstream connection is not desynchronised: the next request is itself.
      const next = await request(`http://127.0.0.1:${port}/public/after`);
      t.is(next.status, 200);
      t.is(next.json().url, '/public/after');
      t.false(upstream.requests.some((entry) => entry.url === '/admin'));
    });
  });
}

// --- (b) Expect: 100-continue ------------------------------------------------------------------

test('Expect: 100-continue on a refused request never gets a 100 Continue', async (t) => {
  await withHarness(undefined, async ({ as, upstream, port }) => {
    const readOnly = as.issue({ scope: 'orders:read' });
    const cases = [
      { title: 'no credentials', authorization: '', path: '/api/orders', status: 401 },
      {
        title: 'bogus token',
        authorization: 'Bearer bogus-token',
        path: '/api/orders',
        status: 401,
      },
      { title: 'malformed', authorization: 'Bearer a b', path: '/api/orders', status: 400 },
      {
        title: 'scope missing',
        authorization: `Bearer ${readOnly}`,
        path: '/api/orders',
        status: 403,
      },
      { title: 'unmatched', authorization: `Bearer ${readOnly}`, path: '/nowhere', status: 404 },
    ];
    for (const { title, authorization, path, status } of cases) {
      const raw = await rawRequest(
        port,
        `POST ${path} HTTP/1.1\r\nHost: x\r\n` +
          (authorization ? `Authorization: ${authorization}\r\n` : '') +
          'Expect: 100-continue\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n',
        1000,
      );
      t.false(raw.includes('100 Continue'), `${title}: ${raw}`);
      t.true(raw.startsWith(`HTTP/1.1 ${status} `), `${title}: ${raw.slice(0, 100)}`);
    }
    t.is(upstream.requests.length, 0);
  });
});

test('Expect: 100-continue, authorised: 100 Continue, then identity headers set and client copies stripped', async (t) => {
  await withHarness(undefined, async ({ as, upstream, port }) => {
    const token = await mintToken(as, writer);
    const conversation = await openConversation(port);
    try {
      conversation.write(
        'POST /api/orders HTTP/1.1\r\nHost: x\r\n' +
          `Authorization: Bearer ${token}\r\n` +
          'Expect: 100-continue\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n' +
          'X-Auth-Subject: mallory\r\nx_auth_scope: admin\r\nX-AUTH-CLIENT-ID: forged\r\n' +
          'X-Forwarded-For: 6.6.6.6\r\nConnection: keep-alive\r\n\r\n',
      );
      t.true(
        await conversation.waitFor(/^HTTP\/1\.1 100 Continue\r\n\r\n/),
        `expected 100 Continue, got ${JSON.stringify(conversation.received())}`,
      );
      t.is(upstream.requests.length, 0, 'nothing forwarded before the body');
      conversation.write('hello');
      t.true(
        await conversation.waitFor(/HTTP\/1\.1 200 [^]*\r\n\r\n[^]*"bodyBytes":5/),
        `expected the final 200, got ${JSON.stringify(conversation.received())}`,
      );
      t.deepEqual(statusLines(conversation.received()), [100, 200]);
    } finally {
      conversation.close();
    }
    t.true(await eventually(() => upstream.requests.length === 1, 3000));
    const seen = upstream.requests[0];
    t.is(seen?.bodyBytes, 5);
    t.is(seen?.bodySha256, sha256('hello'));
    t.is(seen?.headers['x-auth-subject'], writer.id);
    t.is(seen?.headers['x-auth-client-id'], writer.id);
    t.is(seen?.headers['x-auth-scope'], writer.scope);
    t.is(seen?.headers['x-forwarded-for'], '127.0.0.1');
    t.is(seen?.headers.expect, undefined, 'Expect was answered by the gateway');
    const names = (seen?.rawHeaders ?? []).filter((_, index) => index % 2 === 0);
    t.is(
      names.filter((name) => /^x[-_]auth[-_]/i.test(name)).length,
      3,
      `exactly the three injected identity headers: ${names.join(', ')}`,
    );
    t.false(JSON.stringify(seen?.headers).includes('mallory'));
    t.false(JSON.stringify(seen?.headers).includes('forged'));
    t.false(JSON.stringify(seen?.headers).includes('admin'));
  });
});

test('Expect: 100-continue on an auth: none route still strips client identity headers', async (t) => {
  await withHarness(undefined, async ({ upstream, port }) => {
    const conversation = await openConversation(port);
    try {
      conversation.write(
        'POST /public/upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n' +
          'Content-Length: 5\r\nX-Auth-Subject: mallory\r\nX_Auth_Subject: mallory2\r\n\r\n',
      );
      t.true(await conversation.waitFor(/^HTTP\/1\.1 100 Continue\r\n\r\n/));
      conversation.write('hello');
      t.true(await conversation.waitFor(/HTTP\/1\.1 200 /));
    } finally {
      conversation.close();
    }
    t.true(await eventually(() => upstream.requests.length === 1, 3000));
    const seen = upstream.requests[0];
    t.is(seen?.bodySha256, sha256('hello'));
    t.is(seen?.headers['x-auth-subject'], undefined);
    t.is(seen?.headers.x_auth_subject, undefined);
  });
});

// --- (c) Trailer -------------------------------------------------------------------------------

test('a Trailer field and trailers on the request do not crash the gateway', async (t) => {
  await withHarness(undefined, async ({ as, upstream, port, url }) => {
    const token = await mintToken(as, writer);
    const raw = await rawRequest(
      port,
      `POST /api/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        'Trailer: X-Checksum\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' +
        '5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n',
      1000,
    );
    t.deepEqual(statusLines(raw), [200], raw);
    await settle();
    t.is(upstream.requests.length, 1);
    t.is(upstream.requests[0]?.bodySha256, sha256('hello'));
    t.is(upstream.requests[0]?.headers.trailer, undefined, 'Trailer is hop-by-hop');

    const next = await request(`${url}/public/still-alive`);
    t.is(next.status, 200);
  });
});

test('an upstream response with a Trailer does not crash the gateway', async (t) => {
  await withHarness(undefined, async ({ upstream, url }) => {
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const response = await request(`${url}/public/__trailer`);
      t.is(response.status, 200);
      t.is(response.json().url, '/public/__trailer');
    }
    const next = await request(`${url}/public/still-alive`);
    t.is(next.status, 200);
    t.is(upstream.requests.length, 4);
  });
});

// --- (d) `\` and `//` --------------------------------------------------------------------------

test('a raw backslash in the path is refused with 400 and never reaches the upstream', async (t) => {
  await withHarness(undefined, async ({ upstream, url }) => {
    for (const path of ['/public\\x', '/public/\\admin', '/\\public/x']) {
      const response = await request(url, { path });
      t.is(response.status, 400, path);
      t.is(response.json().error, 'invalid_request', path);
    }
    await settle();
    t.is(upstream.requests.length, 0);
  });
});

test('the upstream receives exactly the path that was matched: // merged, query untouched', async (t) => {
  await withHarness(undefined, async ({ upstream, url }) => {
    const cases = [
      { sent: '/public//x', expected: '/public/x' },
      { sent: '//public///x//y', expected: '/public/x/y' },
      { sent: '/public/x?a=\\b', expected: '/public/x?a=\\b' },
      {
        sent: '/public/x?next=//evil.example/a\\b',
        expected: '/public/x?next=//evil.example/a\\b',
      },
    ];
    for (const { sent, expected } of cases) {
      const response = await request(url, { path: sent });
      t.is(response.status, 200, sent);
      t.is(upstream.requests.at(-1)?.url, expected, sent);
    }
    t.is(upstream.requests.length, cases.length);
  });
});

test('// cannot smuggle a path past a rule: /public//..//api/orders/1 is matched as /api/orders/1', async (t) => {
  await withHarness(undefined, async ({ upstream, url }) => {
    const response = await request(url, { path: '/public//..//api/orders/1' });
    t.is(response.status, 401, 'the normalised path needs a token');
    t.is(upstream.requests.length, 0);
  });
});

// --- (e) hop-by-hop fields ---------------------------------------------------------------------

test('hop-by-hop and method-override request fields are not forwarded', async (t) => {
  await withHarness(undefined, async ({ as, upstream, url }) => {
    const token = await mintToken(as, writer);
    const response = await request(`${url}/api/orders/7`, {
      headers: {
        authorization: `Bearer ${token}`,
        te: 'trailers',
        'keep-alive': 'timeout=5, max=100',
        'proxy-authorization': 'Basic cHJveHk6c2VjcmV0',
        'proxy-connection': 'keep-alive',
        connection: 'keep-alive, X-Secret-Hop, x-other-hop',
        'x-secret-hop': 'must not pass',
        'x-other-hop': 'must not pass either',
        'x-http-method-override': 'DELETE',
        'x-http-method': 'DELETE',
        'x-method-override': 'DELETE',
        'x-end-to-end': 'passes',
      },
    });
    t.is(response.status, 200);
    t.is(upstream.requests.length, 1);
    const seen = upstream.requests[0]?.headers ?? {};
    for (const name of [
      'te',
      'keep-alive',
      'proxy-authorization',
      'proxy-connection',
      'x-secret-hop',
      'x-other-hop',
      'x-http-method-override',
      'x-http-method',
      'x-method-override',
    ]) {
      t.is(seen[name], undefined, `${name} reached the upstream`);
    }
    t.false(/x-secret-hop|x-other-hop/i.test(String(seen.connection ?? '')));
    t.is(upstream.requests[0]?.method, 'GET');
    t.is(seen['x-end-to-end'], 'passes');
    t.is(seen.authorization, `Bearer ${token}`, 'Authorization is forwarded by default');
  });
});

test("a client's Connection field cannot remove the injected identity or forwarding headers", async (t) => {
  await withHarness(undefined, async ({ as, upstream, url }) => {
    const token = await mintToken(as, writer);
    const response = await request(`${url}/api/orders/7`, {
      headers: {
        authorization: `Bearer ${token}`,
        connection: 'X-Auth-Subject, X-Auth-Scope, X-Forwarded-For, X-Forwarded-Host, Host',
      },
    });
    t.is(response.status, 200);
    const seen = upstream.requests[0]?.headers ?? {};
    t.is(seen['x-auth-subject'], writer.id);
    t.is(seen['x-auth-scope'], writer.scope);
    t.is(seen['x-forwarded-for'], '127.0.0.1');
    t.truthy(seen['x-forwarded-host']);
    t.truthy(seen.host);
  });
});

// --- (f) upstream failures ---------------------------------------------------------------------

test('a refused upstream connection gives 502 and the gateway keeps serving', async (t) => {
  const deadPort = await freePort();
  await withHarness(
    () => ({ upstream: { url: `http://127.0.0.1:${deadPort}`, timeout_ms: 2000 } }),
    async ({ as, url, adminUrl }) => {
      const token = await mintToken(as, writer);
      for (const [path, headers] of [
        ['/public/x', {}],
        ['/public/x', {}],
        ['/api/orders/1', { authorization: `Bearer ${token}` }],
      ] as const) {
        const response = await request(`${url}${path}`, { headers });
        t.is(response.status, 502, path);
        t.is(response.json().error, 'bad_gateway');
      }
      const health = await request(`${adminUrl}/healthz`);
      t.is(health.status, 200);
      const metrics = await request(`${adminUrl}/metrics`);
      t.regex(metrics.body, /tokenguard_upstream_errors_total\{kind="connect"\} 3/);
    },
  );
});

for (const framing of ['content-length', 'chunked'] as const) {
  test(`an upstream that resets mid-response (${framing}) closes the client connection`, async (t) => {
    const resetter = http.createServer((_req, res) => {
      res.writeHead(
        200,
        framing === 'content-length'
          ? { 'content-type': 'text/plain', 'content-length': '100000' }
          : { 'content-type': 'text/plain' },
      );
      res.write('x'.repeat(1000), () => {
        setTimeout(() => res.socket?.resetAndDestroy(), 50);
      });
    });
    await new Promise<void>((resolve) => resetter.listen(0, '127.0.0.1', resolve));
    const resetterPort = (resetter.address() as AddressInfo).port;
    try {
      await withHarness(
        () => ({ upstream: { url: `http://127.0.0.1:${resetterPort}`, timeout_ms: 5000 } }),
        async ({ url }) => {
          const outcome = await fetchStream(`${url}/public/reset`, 15_000);
          t.false(outcome.timedOut, 'the client was left hanging');
          t.is(outcome.status, 200);
          t.false(outcome.complete, 'a cut response must not look complete to the client');
          t.true(outcome.bytes < 100_000);

          const next = await fetchStream(`${url}/public/reset`, 15_000);
          t.false(next.timedOut, 'the gateway still answers');
        },
      );
    } finally {
      resetter.closeAllConnections();
      await new Promise<void>((resolve) => resetter.close(() => resolve()));
    }
  });
}

// --- (g) smuggling framings --------------------------------------------------------------------

test('Content-Length with Transfer-Encoding: refused, or one request at the upstream', async (t) => {
  await withHarness(undefined, async ({ as, upstream, port }) => {
    const token = await mintToken(as, writer);
    const smuggled = 'GET /admin HTTP/1.1\r\nHost: x\r\n\r\n';
    for (const [first, second] of [
      ['Content-Length: 5', 'Transfer-Encoding: chunked'],
      ['Transfer-Encoding: chunked', 'Content-Length: 5'],
      ['Content-Length: 5', 'Transfer-Encoding: chunked, identity'],
      ['Content-Length: 5', 'Transfer-Encoding : chunked'],
      ['Content-Length: 5', 'Transfer-Encoding: xchunked'],
    ]) {
      const before = upstream.requests.length;
      const raw = await rawRequest(
        port,
        `POST /api/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
          `${first}\r\n${second}\r\n\r\n0\r\n\r\n${smuggled}`,
        1000,
      );
      await settle();
      const added = upstream.requests.length - before;
      const statuses = statusLines(raw);
      t.true(
        statuses[0] === 400 || added === 1,
        `${first} + ${second}: ${JSON.stringify(raw.slice(0, 200))}`,
      );
      t.true(added <= 1, `${added} requests reached the upstream`);
      t.false(upstream.requests.some((seen) => seen.url === '/admin'));
    }
  });
});

test('duplicate Content-Length fields with different values get 400', async (t) => {
  await withHarness(undefined, async ({ as, upstream, port }) => {
    const token = await mintToken(as, writer);
    const raw = await rawRequest(
      port,
      `POST /api/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        'Content-Length: 5\r\nContent-Length: 37\r\n\r\nhelloGET /admin HTTP/1.1\r\nHost: x\r\n\r\n',
      1000,
    );
    t.regex(raw, /^HTTP\/1\.1 400 /);
    await settle();
    t.is(upstream.requests.length, 0);
  });
});

test('two Host fields get 400 and never reach the upstream', async (t) => {
  await withHarness(undefined, async ({ as, upstream, port }) => {
    const token = await mintToken(as, writer);
    for (const target of ['/public/x', '/api/orders/1']) {
      const raw = await rawRequest(
        port,
        `GET ${target} HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n` +
          `Authorization: Bearer ${token}\r\nConnection: close\r\n\r\n`,
        1000,
      );
      t.regex(raw, /^HTTP\/1\.1 400 /, target);
    }
    await settle();
    t.is(upstream.requests.length, 0);
  });
});
