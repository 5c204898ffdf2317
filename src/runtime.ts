/**
 * V8 settings for a gateway process, applied once at start by whoever runs one (main.ts, the
 * benchmark's gateway role).
 *
 * Allocation-site pretenuring off: V8 watches how many objects from each allocation site
 * survive young-generation collections and, past a threshold, allocates that site's objects
 * straight into the old generation from then on. A gateway's request objects (the parser's,
 * Node's IncomingMessage and ServerResponse, the proxy's) survive only while a request is in
 * flight — long during a burst of slow cache misses (the authorization server or Redis
 * answering in milliseconds), microseconds on the cache-hit path. One such burst was enough
 * for V8 to tenure those sites for good, and the cache-hit path then filled the old generation
 * with garbage: measured in the fleet benchmark, 6.9 KB per request promoted instead of 25 B,
 * 40 % more CPU per request and 100 MiB more resident memory, until the process restarted.
 * The gateway's truly long-lived objects (cache entries) are few and small; copying them once
 * more costs nothing next to that.
 *
 * A GC heuristic read at every collection, so setting it at run time takes effect (V8's
 * flags are otherwise best given on the command line; NODE_OPTIONS does not accept this one).
 */
import v8 from 'node:v8';

export function tuneRuntime(): void {
  v8.setFlagsFromString('--no-allocation-site-pretenuring');
}
