/**
 * The soak, short (issue 10): 20 seconds of valid, unknown and fishing traffic against the
 * real gateway while the authorization server goes down, answers 500 and hangs in turn
 * (test/_soak.ts; `npm run soak` runs it for minutes). No class of client gets an answer it
 * must never get, no connection fails, no socket is left open per request, memory stays put.
 */
import test from 'ava';
import { soak } from './_soak.js';

test('20 s of mixed traffic through authorization-server outages: no unexpected answer, no leak', async (t) => {
  t.timeout(90_000);
  // Paced (20 ms between a client's requests): the files beside this one keep their CPU.
  const report = await soak(20, (line) => t.log(line), 20);
  t.true(report.requests > 2000, `only ${report.requests} requests were made`);
  t.deepEqual(report.unexpected, {}, 'answers outside each class of client’s allowed statuses');
  t.deepEqual(report.problems, []);
  // Valid tokens cached before the outages kept passing.
  t.true((report.statuses['valid 200'] ?? 0) > 0);
  // The fisher was blocked.
  t.true((report.statuses['fisher 429'] ?? 0) > 0);
  // Sockets: pooled upstream and authorization-server connections may stay; one per request may not.
  t.true(
    report.fdsAfter <= report.fdsBefore + 40,
    `open descriptors ${report.fdsBefore} → ${report.fdsAfter} after ${report.requests} requests`,
  );
  t.true(
    report.rssAfterMiB - report.rssBeforeMiB < 64,
    `RSS ${report.rssBeforeMiB} → ${report.rssAfterMiB} MiB`,
  );
});
