/**
 * Request ids and trace context (issue 10, "Logs and traces for an incident"): one id per
 * request, the same in the access line, at the upstream, at the authorization server and in
 * the answer to the client; a client cannot choose it, a trusted proxy can (when well formed);
 * a valid W3C `traceparent` reaches the upstream and the authorization server and its trace id
 * is logged, an invalid one is never taken for a trace.
 */
import test from 'ava';
import { request, withHarness, type Harness } from './_harness.js';

const UUID = /^[\da-f]{8}-[\da-f]{4}-4[\da-f]{3}-[89ab][\da-f]{3}-[\da-f]{12}$/;
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

/** The access lines the gateway wrote, parsed. */
function accessLines(harness: Harness): Array<Record<string, unknown>> {
  return harness
    .logs()
    .split('\n')
    .filter((line) => line.includes('"event":"access"'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

function recordedBy(harness: Harness, testId: string) {
  return harness.upstream.requests.find((seen) => seen.headers['x-test-id'] === testId);
}

async function eventuallyLogged(harness: Harness, requestId: string) {
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const line = accessLines(harness).find((entry) => entry.request_id === requestId);
    if (line) return line;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return undefined;
}

test('a forwarded request: one generated id at the upstream, the authorization server, the client and in the log', async (t) => {
  await withHarness(undefined, async (harness) => {
    const token = harness.as.issue({ sub: 'alice', scope: 'orders:read' });
    const response = await request(harness.url, {
      path: '/api/orders/1',
      headers: {
        authorization: `Bearer ${token}`,
        'X-Request-Id': 'chosen-by-the-client',
        x_request_id: 'another-spelling',
        traceparent: TRACEPARENT,
        'X-Test-Id': 'forwarded',
      },
    });
    t.is(response.status, 200, response.body);
    const id = response.headers['x-request-id'] as string;
    t.regex(id, UUID);
    const seen = recordedBy(harness, 'forwarded');
    t.truthy(seen);
    t.is(seen?.headers['x-request-id'], id);
    t.false(Object.keys(seen?.headers ?? {}).includes('x_request_id'));
    t.is(seen?.headers.traceparent, TRACEPARENT);
    // The cache miss asked the authorization server with the same id and trace.
    t.is(harness.as.lastIntrospection?.headers['x-request-id'], id);
    t.is(harness.as.lastIntrospection?.headers.traceparent, TRACEPARENT);
    const line = await eventuallyLogged(harness, id);
    t.truthy(line, harness.logs());
    t.is(line?.trace_id, '4bf92f3577b34da6a3ce929d0e0e4736');
    t.is(line?.status, 200);

    // The cached pass (a hit) does the same.
    const again = await request(harness.url, {
      path: '/api/orders/2',
      headers: { authorization: `Bearer ${token}`, 'X-Test-Id': 'cached' },
    });
    t.is(again.status, 200);
    const second = again.headers['x-request-id'] as string;
    t.regex(second, UUID);
    t.not(second, id);
    t.is(recordedBy(harness, 'cached')?.headers['x-request-id'], second);
    const cachedLine = await eventuallyLogged(harness, second);
    t.is(cachedLine?.cache, 'hit');
    t.is(cachedLine?.trace_id, undefined);
  });
});

test('a refused request: the client gets the id it is logged under', async (t) => {
  await withHarness(undefined, async (harness) => {
    for (const [path, headers, status] of [
      ['/api/orders/1', {}, 401],
      ['/api/orders/%252e%252e/x', {}, 400],
      ['/nowhere', {}, 404],
    ] as const) {
      const response = await request(harness.url, { path, headers });
      t.is(response.status, status, path);
      const id = response.headers['x-request-id'] as string;
      t.regex(id, UUID, path);
      const line = await eventuallyLogged(harness, id);
      t.is(line?.status, status, path);
    }
  });
});

test('an id from a trusted proxy is kept when well formed, replaced when not', async (t) => {
  await withHarness(
    () => ({ server: { trusted_proxies: ['127.0.0.1/32'] } }),
    async (harness) => {
      const kept = await request(harness.url, {
        path: '/public/x',
        headers: { 'X-Request-Id': 'ingress-7f3a9c', 'X-Test-Id': 'kept' },
      });
      t.is(kept.headers['x-request-id'], 'ingress-7f3a9c');
      t.is(recordedBy(harness, 'kept')?.headers['x-request-id'], 'ingress-7f3a9c');
      t.truthy(await eventuallyLogged(harness, 'ingress-7f3a9c'));
      for (const bad of ['has space', 'quote"d', 'x'.repeat(129), '{"json":1}']) {
        const replaced = await request(harness.url, {
          path: '/public/x',
          headers: { 'X-Request-Id': bad },
        });
        t.regex(replaced.headers['x-request-id'] as string, UUID, bad);
      }
    },
  );
});

test('an invalid traceparent is not taken for a trace', async (t) => {
  await withHarness(undefined, async (harness) => {
    for (const traceparent of [
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
      '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra',
      'garbage',
    ]) {
      const token = harness.as.issue({ sub: 'bob', scope: 'orders:read' });
      const response = await request(harness.url, {
        path: '/api/orders/1',
        headers: { authorization: `Bearer ${token}`, traceparent },
      });
      t.is(response.status, 200, traceparent);
      t.is(harness.as.lastIntrospection?.headers.traceparent, undefined, traceparent);
      const line = await eventuallyLogged(harness, response.headers['x-request-id'] as string);
      t.is(line?.trace_id, undefined, traceparent);
    }
  });
});
