/**
 * Bodies stream both ways, never buffered, and `upstream.timeout_ms` bounds silences, not
 * transfers (PRODUCT.md "What the upstream receives"). Bodies are generated and hashed as
 * they flow — no test holds a 50 MB buffer. The heavy tests are serial, so the timing-free
 * but event-loop-sensitive ones below never share the process with a 50 MB transfer.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import test from 'ava';
import { stringify } from 'yaml';
import { startDevAuthorizationServer } from '../src/dev/auth-server.js';
import { childConfig, residentBytes, spawnCli, writeTempConfig } from './_child.js';
import {
  fetchStream,
  startHttpServer,
  eventually,
  INTROSPECTION_CLIENT,
  mintToken,
  request,
  withHarness,
  TOKEN_CLIENTS,
} from './_harness.js';

const MiB = 1024 * 1024;
const BIG_BODY_BYTES = 50 * MiB;
/**
 * Resident growth allowed over a 50 MiB upload. A gateway that kept a copy would grow by the
 * body size; one that streams still grows by garbage: 64 KiB read buffers that V8 collects
 * only when external memory pressure says so, and that malloc keeps once freed — up to
 * 25 MiB was seen. The bytes held during backpressure are counted exactly instead (below).
 */
const MAX_RSS_GROWTH_BYTES = 40 * MiB;
/**
 * Bytes the gateway process may hold of a body while the upstream reads nothing: Node's
 * stream buffers on both sides (tens of KiB each). Counted, not estimated: what the client
 * wrote, less what the kernel's socket queues of both hops hold, less what the upstream read.
 */
const MAX_HELD_IN_GATEWAY_BYTES = 4 * MiB;
/**
 * What may be on its way while the receiving end reads nothing: the kernel's socket buffers
 * of two loopback hops (up to 20 MiB observed, as TCP autotuning grows them) plus Node's small
 * stream buffers.
 */
const MAX_IN_FLIGHT_BYTES = 25 * MiB;
const CHUNK_BYTES = 64 * 1024;

const writer = TOKEN_CLIENTS[1] as (typeof TOKEN_CLIENTS)[number];

const mb = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The value of a growing counter once it has stopped moving for `stillMs` (a stream held back
 * by backpressure), or its value after `boundMs` if it never does.
 */
async function settledValue(read: () => number, stillMs = 500, boundMs = 20_000) {
  const deadline = Date.now() + boundMs;
  let last = read();
  let stillSince = Date.now();
  while (Date.now() - stillSince < stillMs && Date.now() < deadline) {
    await sleep(50);
    const current = read();
    if (current !== last) {
      last = current;
      stillSince = Date.now();
    }
  }
  return last;
}

/**
 * `totalBytes` of varied content produced chunk by chunk on demand (never held whole),
 * hashed as it is produced; `digest()` is valid once everything was produced.
 */
function generatedBody(totalBytes: number) {
  const base = randomBytes(CHUNK_BYTES);
  const hash = createHash('sha256');
  let produced = 0;
  let index = 0;
  const stream = new Readable({
    highWaterMark: CHUNK_BYTES,
    read() {
      if (produced >= totalBytes) {
        this.push(null);
        return;
      }
      const size = Math.min(CHUNK_BYTES, totalBytes - produced);
      const chunk = Buffer.from(base.subarray(0, size));
      chunk.writeUInt32BE(index, 0);
      index += 1;
      produced += size;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  return { stream, digest: () => hash.digest('hex'), produced: () => produced };
}

/** An upstream that answers every request with `totalBytes` of generated body (sha via `served`). */
async function startBodyUpstream(totalBytes: number) {
  let served: ReturnType<typeof generatedBody> | undefined;
  const server = await startHttpServer((req, res) => {
    req.resume();
    const body = generatedBody(totalBytes);
    served = body;
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': String(totalBytes),
    });
    pipeline(body.stream, res).catch(() => undefined);
  });
  return { ...server, served: () => served };
}

/**
 * POSTs `body` (a stream, `BIG_BODY_BYTES` long) with a bearer token; resolves the status.
 * `sent()` is how many bytes its socket has written so far.
 */
function upload(
  port: number,
  path: string,
  token: string,
  body: Readable,
): Promise<number> & { sent: () => number } {
  let socket: net.Socket | undefined;
  const status = new Promise<number>((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path,
      agent: false,
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/octet-stream',
        'content-length': String(BIG_BODY_BYTES),
      },
    });
    const timer = setTimeout(() => req.destroy(new Error('upload took over 100 s')), 100_000);
    req.once('response', (res) => {
      res.resume();
      res.once('end', () => {
        clearTimeout(timer);
        resolve(res.statusCode ?? 0);
      });
      res.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
    req.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    req.once('socket', (assigned) => {
      socket = assigned;
    });
    pipeline(body, req).catch(reject);
  });
  return Object.assign(status, { sent: () => socket?.bytesWritten ?? 0 });
}

/**
 * Bytes queued in the kernel on established TCP connections to or from these local ports,
 * both directions (`tx_queue` + `rx_queue` of /proc/net/tcp, both ends of a loopback
 * connection being local).
 */
async function queuedInKernel(ports: number[]): Promise<number> {
  const table = await readFile('/proc/net/tcp', 'utf8');
  const wanted = new Set(ports);
  let queued = 0;
  for (const line of table.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 5 || fields[3] !== '01') continue; // 01: ESTABLISHED
    const localPort = Number.parseInt((fields[1] as string).split(':')[1] as string, 16);
    const remotePort = Number.parseInt((fields[2] as string).split(':')[1] as string, 16);
    if (!wanted.has(localPort) && !wanted.has(remotePort)) continue;
    const [tx, rx] = (fields[4] as string).split(':');
    queued += Number.parseInt(tx as string, 16) + Number.parseInt(rx as string, 16);
  }
  return queued;
}

/**
 * An upstream that hashes request bodies, but stops reading once `holdAfter` bytes arrived
 * until `release()`.
 */
function heldUpstream(holdAfter: number) {
  let hash = createHash('sha256');
  let bytes = 0;
  let holding = false;
  let resume: (() => void) | undefined;
  let uploadSocket: net.Socket | undefined;
  const handler: http.RequestListener = (req, res) => {
    if (req.url?.includes('upload')) uploadSocket = req.socket;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
      if (bytes >= holdAfter && resume === undefined && req.url?.includes('upload')) {
        holding = true;
        req.pause();
        resume = () => req.resume();
      }
    });
    req.once('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
      res.end('ok');
    });
  };
  return {
    handler,
    holding: () => holding,
    bytes: () => bytes,
    /** What the upload's connection has taken from the kernel, held in Node's buffers or not. */
    socketRead: () => uploadSocket?.bytesRead ?? 0,
    sha256: () => hash.digest('hex'),
    /** Forgets the warm-up requests. */
    reset() {
      hash = createHash('sha256');
      bytes = 0;
    },
    release() {
      holding = false;
      resume?.();
    },
  };
}

/**
 * Samples the RSS of process `pid` every 100 ms (from /proc) until stopped. `peak` is the
 * highest sample; `sustainedPeak` the highest level held over two consecutive samples, which
 * ignores the single-sample spikes of a V8 compacting GC (up to ~30 MB for under 100 ms,
 * observed with nothing flowing) while a buffered body, which stays, still shows in full.
 */
function sampleResident(pid: number) {
  let before = 0;
  let peak = 0;
  let sustainedPeak = 0;
  let previous = 0;
  let sampling = false;
  const record = (rss: number) => {
    peak = Math.max(peak, rss);
    sustainedPeak = Math.max(sustainedPeak, Math.min(previous, rss));
    previous = rss;
  };
  const sample = async () => {
    if (sampling) return;
    sampling = true;
    const rss = await residentBytes(pid);
    sampling = false;
    if (rss !== null) record(rss);
  };
  const ready = residentBytes(pid).then((rss) => {
    before = rss ?? 0;
    peak = before;
    sustainedPeak = before;
    previous = before;
  });
  const timer = setInterval(() => void sample(), 100);
  timer.unref();
  const snapshot = () => ({ before, peak, sustainedPeak, growth: sustainedPeak - before });
  return {
    ready,
    snapshot,
    stop() {
      clearInterval(timer);
      return snapshot();
    },
  };
}

/** Starts a node:http server on 127.0.0.1:0; `close` ends it and its connections. */

test.serial('a 50 MB request body streams to the upstream intact', async (t) => {
  t.timeout(120_000);
  await withHarness(undefined, async ({ as, upstream, port }) => {
    const token = await mintToken(as, writer);
    const body = generatedBody(BIG_BODY_BYTES);
    const status = await upload(port, '/api/orders/upload', token, body.stream);
    t.is(status, 200);
    t.is(body.produced(), BIG_BODY_BYTES);
    t.is(upstream.requests.length, 1);
    const seen = upstream.requests[0];
    t.is(seen?.method, 'POST');
    t.is(seen?.url, '/api/orders/upload');
    t.is(seen?.bodyBytes, BIG_BODY_BYTES);
    t.is(seen?.bodySha256, body.digest());
  });
});

/**
 * Memory is measured on the gateway alone: the real CLI in a child process, its RSS read from
 * /proc every 100 ms (growth held over two samples: see sampleResident). In this process the
 * client and the upstream churn through 64 KiB buffers and V8 grows its young generation,
 * which moved RSS by 30–70 MB with no gateway in the path at all — noise larger than the
 * signal. The child runs with a 1 MiB young-generation semi-space so garbage read buffers are
 * collected promptly instead of showing up as growth (V8 tuning only, not the gateway's code).
 * The upstream stops reading after 1 MiB, so a gateway that streams holds the client back
 * (TCP backpressure) with little in memory, while one that buffers would have soaked up the
 * whole 50 MB by then; one that keeps a copy of what passed would grow by the body size.
 */
test.serial(
  'a 50 MB upload: backpressure holds the client while the upstream waits, gateway memory stays flat',
  async (t) => {
    t.timeout(120_000);
    if (process.platform !== 'linux') {
      t.pass('reads the gateway RSS from /proc: Linux only');
      return;
    }
    const as = await startDevAuthorizationServer({
      introspectionClients: [INTROSPECTION_CLIENT],
      clients: [...TOKEN_CLIENTS],
    });
    const held = heldUpstream(MiB);
    const holdingUpstream = await startHttpServer(held.handler);
    const cfg = await writeTempConfig(
      stringify(
        childConfig({
          upstreamUrl: holdingUpstream.url,
          introspection: {
            endpoint: as.introspectionEndpoint,
            client_id: INTROSPECTION_CLIENT.id,
            client_secret: INTROSPECTION_CLIENT.secret,
          },
        }),
      ),
    );
    const gateway = spawnCli(['--config', cfg.file], {
      NODE_OPTIONS: '--max-semi-space-size=1',
    });
    let memory: ReturnType<typeof sampleResident> | undefined;
    try {
      const { proxy } = await gateway.waitForListening();
      const token = await mintToken(as, writer);
      for (let round = 0; round < 5; round += 1) {
        const warm = await request(`http://127.0.0.1:${proxy.port}/api/orders/warm`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
          body: Buffer.alloc(100_000, round),
        });
        t.is(warm.status, 200);
      }
      held.reset();

      memory = sampleResident(gateway.pid);
      await memory.ready;
      const body = generatedBody(BIG_BODY_BYTES);
      const uploaded = upload(proxy.port, '/api/orders/upload', token, body.stream);
      uploaded.catch(() => undefined);

      const reachedUpstream = await eventually(() => held.holding(), 30_000);
      const producedWhileHeld = await settledValue(body.produced);
      const heldUsage = memory.snapshot();
      const upstreamReadWhileHeld = held.bytes();
      // Everything the client sent is in a kernel queue, read by the upstream, or in the gateway.
      const inKernel = await queuedInKernel([
        proxy.port,
        Number(new URL(holdingUpstream.url).port),
      ]);
      // (Within a segment or two: the kernel may count an unacknowledged one at both ends.)
      const sentWhileHeld = uploaded.sent();
      const inGateway = sentWhileHeld - inKernel - held.socketRead();
      held.release();
      const status = await uploaded;
      const usage = memory.stop();

      t.log(
        `held: client produced ${mb(producedWhileHeld)}, sent ${mb(sentWhileHeld)},` +
          ` kernel queues ${mb(inKernel)}, upstream read ${mb(upstreamReadWhileHeld)},` +
          ` in the gateway ${mb(inGateway)}; gateway RSS ${mb(heldUsage.before)} →` +
          ` peak ${mb(heldUsage.peak)}, sustained ${mb(heldUsage.sustainedPeak)}`,
      );
      t.log(
        `whole upload: gateway RSS ${mb(usage.before)} → peak ${mb(usage.peak)},` +
          ` sustained ${mb(usage.sustainedPeak)} (growth ${mb(usage.growth)})`,
      );
      t.true(reachedUpstream, 'the upstream got the first MiB');
      t.true(
        producedWhileHeld < MAX_IN_FLIGHT_BYTES,
        `the client could send ${mb(producedWhileHeld)} while the upstream read nothing`,
      );
      t.true(
        inGateway < MAX_HELD_IN_GATEWAY_BYTES,
        `the gateway held ${mb(inGateway)} of the body while the upstream read nothing`,
      );
      t.true(
        usage.growth < MAX_RSS_GROWTH_BYTES,
        `gateway RSS grew by ${mb(usage.growth)} (sustained) for a ${mb(BIG_BODY_BYTES)} body`,
      );
      t.is(status, 200);
      t.is(held.bytes(), BIG_BODY_BYTES);
      t.is(held.sha256(), body.digest());
    } finally {
      memory?.stop();
      held.release();
      await gateway.stop();
      await holdingUpstream.close();
      await as.close();
      await cfg.cleanup();
    }
  },
);

test.serial(
  'a 50 MB response streams to the client intact, and a client that stops reading holds the upstream back',
  async (t) => {
    t.timeout(120_000);
    const bigUpstream = await startBodyUpstream(BIG_BODY_BYTES);
    try {
      await withHarness(
        () => ({ upstream: { url: bigUpstream.url, timeout_ms: 30_000 } }),
        async ({ url }) => {
          let paused = false;
          let producedWhilePaused = Number.NaN;
          const outcome = await fetchStream(`${url}/public/big`, 100_000, (res, bytes) => {
            if (paused || bytes < MiB) return;
            paused = true;
            res.pause();
            void settledValue(() => bigUpstream.served()?.produced() ?? 0).then((produced) => {
              producedWhilePaused = produced;
              res.resume();
            });
          });
          t.log(`client paused: upstream produced ${mb(producedWhilePaused)}`);
          t.true(paused);
          t.true(
            producedWhilePaused < MAX_IN_FLIGHT_BYTES,
            `the upstream could send ${mb(producedWhilePaused)} to a client that read 1 MiB`,
          );
          t.false(outcome.timedOut, 'the download did not finish within 100 s');
          t.is(outcome.error, undefined);
          t.is(outcome.status, 200);
          t.true(outcome.complete);
          t.is(bigUpstream.served()?.produced(), BIG_BODY_BYTES);
          t.is(outcome.bytes, BIG_BODY_BYTES);
          t.is(outcome.sha256, bigUpstream.served()?.digest() ?? 'nothing served');
        },
      );
    } finally {
      await bigUpstream.close();
    }
  },
);

test('Expect: 100-continue with a valid token and a 5 MB body reaches the upstream intact', async (t) => {
  await withHarness(undefined, async ({ as, upstream, port }) => {
    const token = await mintToken(as, writer);
    const payload = randomBytes(5 * MiB);
    let continued = false;
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1',
        port,
        method: 'PUT',
        path: '/api/orders/5',
        agent: false,
        headers: {
          authorization: `Bearer ${token}`,
          expect: '100-continue',
          'content-type': 'application/octet-stream',
          'content-length': String(payload.length),
        },
      });
      const timer = setTimeout(() => req.destroy(new Error('no answer within 30 s')), 30_000);
      req.once('continue', () => {
        continued = true;
        req.end(payload);
      });
      req.once('response', (res) => {
        res.resume();
        res.once('end', () => {
          clearTimeout(timer);
          resolve(res.statusCode ?? 0);
        });
      });
      req.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      req.flushHeaders();
    });
    t.true(continued, 'the gateway answered 100 Continue');
    t.is(status, 200);
    t.is(upstream.requests.length, 1);
    const seen = upstream.requests[0];
    t.is(seen?.method, 'PUT');
    t.is(seen?.bodyBytes, payload.length);
    t.is(seen?.bodySha256, createHash('sha256').update(payload).digest('hex'));
    t.is(seen?.headers.expect, undefined);
  });
});

test('an upstream slower than upstream.timeout_ms gives 504', async (t) => {
  await withHarness(
    () => ({ upstream: { timeout_ms: 300 } }),
    async ({ url, adminUrl }) => {
      const response = await request(`${url}/public/__slow?ms=3000`, { timeoutMs: 15_000 });
      t.is(response.status, 504);
      t.is(response.json().error, 'gateway_timeout');
      const metrics = await request(`${adminUrl}/metrics`);
      t.regex(metrics.body, /tokenguard_upstream_errors_total\{kind="timeout"\} 1/);
      // The gateway keeps serving.
      const next = await request(`${url}/public/after`);
      t.is(next.status, 200);
    },
  );
});

test('an upstream that sends headers and then stalls: the client response is aborted', async (t) => {
  await withHarness(
    () => ({ upstream: { timeout_ms: 300 } }),
    async ({ url }) => {
      const outcome = await fetchStream(`${url}/public/__stall`, 15_000);
      t.false(outcome.timedOut, 'the client was left hanging on a stalled upstream');
      t.is(outcome.status, 200);
      t.false(outcome.complete, 'a cut response must not look complete');
      t.is(outcome.bytes, 'first chunk\n'.length);
      const next = await request(`${url}/public/after`);
      t.is(next.status, 200);
    },
  );
});

test('a response that keeps streaming past upstream.timeout_ms is not cut', async (t) => {
  const chunkCount = 15;
  const chunk = 'tick-tick-tick\n';
  const timers = new Set<NodeJS.Timeout>();
  const steady = await startHttpServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' });
    let sent = 0;
    const tick = () => {
      res.write(chunk);
      sent += 1;
      if (sent === chunkCount) {
        res.end();
        return;
      }
      const timer = setTimeout(() => {
        timers.delete(timer);
        tick();
      }, 100);
      timers.add(timer);
    };
    tick();
  });
  try {
    await withHarness(
      () => ({ upstream: { url: steady.url, timeout_ms: 500 } }),
      async ({ url }) => {
        const outcome = await fetchStream(`${url}/public/steady`, 30_000);
        t.false(outcome.timedOut);
        t.is(outcome.error, undefined);
        t.is(outcome.status, 200);
        t.true(outcome.complete, 'the steady stream was cut');
        t.is(outcome.bytes, chunkCount * chunk.length);
      },
    );
  } finally {
    for (const timer of timers) clearTimeout(timer);
    await steady.close();
  }
});

test('a client that stops reading for longer than upstream.timeout_ms is not cut: the silence is its own', async (t) => {
  // The upstream never falls silent: it has the whole body ready and writes whenever the
  // gateway reads. Only the client pauses, so the gateway stops reading by backpressure;
  // that is not an upstream silence between body chunks (PRODUCT.md), and must not be a 504
  // or an aborted response.
  const totalBytes = 16 * MiB;
  const eagerUpstream = await startBodyUpstream(totalBytes);
  try {
    await withHarness(
      () => ({ upstream: { url: eagerUpstream.url, timeout_ms: 500 } }),
      async ({ url, adminUrl }) => {
        let paused = false;
        const outcome = await fetchStream(`${url}/public/download`, 30_000, (res, bytes) => {
          if (paused || bytes < MiB) return;
          paused = true;
          res.pause();
          setTimeout(() => res.resume(), 1500);
        });
        t.true(paused);
        t.false(outcome.timedOut);
        t.is(outcome.error, undefined, 'the response was aborted while the client paused');
        t.true(outcome.complete);
        t.is(outcome.bytes, totalBytes);
        t.is(outcome.sha256, eagerUpstream.served()?.digest() ?? 'nothing served');
        const metrics = await request(`${adminUrl}/metrics`);
        t.notRegex(metrics.body, /tokenguard_upstream_errors_total\{kind="timeout"\} [1-9]/);
      },
    );
  } finally {
    await eagerUpstream.close();
  }
});

test('after a client pause, a real upstream stall is still cut', async (t) => {
  // The client pauses (its own silence, ignored); later the upstream itself goes silent
  // mid-body: that silence is the upstream's and must still end the response.
  const sentBytes = 8 * MiB;
  const stallingUpstream = await startHttpServer((req, res) => {
    req.resume();
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': String(sentBytes * 2),
    });
    const body = generatedBody(sentBytes);
    body.stream.pipe(res, { end: false }); // half the promised body, then silence
  });
  try {
    await withHarness(
      () => ({ upstream: { url: stallingUpstream.url, timeout_ms: 500 } }),
      async ({ url, adminUrl }) => {
        let paused = false;
        const outcome = await fetchStream(`${url}/public/download`, 30_000, (res, bytes) => {
          if (paused || bytes < MiB) return;
          paused = true;
          res.pause();
          setTimeout(() => res.resume(), 1500);
        });
        t.true(paused);
        t.false(outcome.timedOut, 'the gateway ended the stalled response itself');
        t.false(outcome.complete);
        t.is(outcome.bytes, sentBytes, 'everything the upstream sent arrived first');
        const metrics = await request(`${adminUrl}/metrics`);
        t.regex(metrics.body, /tokenguard_upstream_errors_total\{kind="timeout"\} 1\b/);
      },
    );
  } finally {
    await stallingUpstream.close();
  }
});

test('server.idle_timeout_seconds closes a client that stalls mid-upload, not one that is slow but steady', async (t) => {
  await withHarness(
    () => ({ server: { idle_timeout_seconds: 1 } }),
    async ({ port, url, upstream }) => {
      // Stalled: headers and one chunk, then nothing. The gateway must hang up by itself.
      const stalled = net.connect({ host: '127.0.0.1', port });
      await new Promise((resolve) => stalled.once('connect', resolve));
      stalled.write(
        'POST /public/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n',
      );
      stalled.resume();
      const closed = new Promise<boolean>((resolve) => stalled.once('close', () => resolve(true)));
      const bound = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 15_000));
      t.true(await Promise.race([closed, bound]), 'the gateway closed the stalled connection');
      stalled.destroy();

      // Slow but steady: a chunk every 400 ms for about 3 s, longer than the idle bound in all.
      const before = upstream.requests.length;
      const steady = new Readable({
        read() {
          // filled by the timer below
        },
      });
      let sent = 0;
      const timer = setInterval(() => {
        sent += 1;
        steady.push(Buffer.from(`chunk-${sent};`));
        if (sent === 8) {
          clearInterval(timer);
          steady.push(null);
        }
      }, 400);
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request(
          `${url}/public/upload`,
          { method: 'POST', agent: false },
          (res) => {
            res.resume();
            res.once('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.once('error', reject);
        steady.pipe(req);
      });
      t.is(status, 200);
      t.true(upstream.requests.length > before);
      t.is(
        upstream.requests.at(-1)?.bodyBytes,
        Buffer.from(Array.from({ length: 8 }, (_, index) => `chunk-${index + 1};`).join('')).length,
      );
    },
  );
});
