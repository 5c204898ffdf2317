/**
 * Who is a client (PRODUCT.md "Token fishing"): the TCP peer, or the right-most untrusted
 * X-Forwarded-For entry when the peer is a trusted proxy; IPv6 addresses are counted per
 * /64 (or the configured prefix). Unit tests of createClientIdentifier with fake requests.
 * The identifier caches per socket object, so every case builds a fresh socket.
 */
import type { IncomingMessage } from 'node:http';
import test from 'ava';
import { createClientIdentifier, type ClientIdentity } from '../src/fishing/client-key.js';

interface Options {
  trustedProxies?: string[];
  ipv6PrefixLength?: number;
}

/** A fake request on a fresh socket (the identifier remembers sockets, not requests). */
const fakeRequest = (
  remoteAddress: string | undefined,
  forwardedFor?: string | string[],
): IncomingMessage =>
  ({
    socket: { remoteAddress },
    headers: forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor },
  }) as unknown as IncomingMessage;

const identify = (
  remoteAddress: string | undefined,
  forwardedFor?: string | string[],
  options: Options = {},
): ClientIdentity =>
  createClientIdentifier({
    trustedProxies: options.trustedProxies ?? [],
    ipv6PrefixLength: options.ipv6PrefixLength ?? 64,
  }).identify(fakeRequest(remoteAddress, forwardedFor));

const keyOf = (
  remoteAddress: string | undefined,
  forwardedFor?: string | string[],
  options: Options = {},
) => identify(remoteAddress, forwardedFor, options).key;

// ---------------------------------------------------------------------------------------------
// The socket peer
// ---------------------------------------------------------------------------------------------

test('an IPv4 peer is its own key', (t) => {
  t.deepEqual(identify('10.1.2.3'), {
    address: '10.1.2.3',
    peerAddress: '10.1.2.3',
    key: '10.1.2.3',
    viaTrustedProxy: false,
  });
});

test('an IPv4-mapped IPv6 peer is counted as the IPv4 address', (t) => {
  const identity = identify('::ffff:10.1.2.3');
  t.is(identity.key, '10.1.2.3');
  t.is(identity.address, '10.1.2.3');
  t.is(keyOf('::ffff:10.1.2.3'), keyOf('10.1.2.3'), 'one client whichever way it connected');
});

test('IPv6 peers are counted per /64 by default', (t) => {
  const a = keyOf('2001:db8:1:2:aaaa::1');
  const b = keyOf('2001:db8:1:2:bbbb::2');
  const c = keyOf('2001:db8:1:3::1');
  t.is(a, b, 'two addresses of one /64 share a key');
  t.not(a, c, 'the next /64 is another client');
  t.is(a, '2001:db8:1:2::/64', 'the key is the prefix in CIDR notation');
  t.is(identify('2001:db8:1:2:aaaa::1').address, '2001:db8:1:2:aaaa::1', 'the address is kept');
});

test('IPv6 spellings of one address give one key', (t) => {
  const compact = keyOf('2001:db8:1:2::1');
  t.is(keyOf('2001:0db8:0001:0002:0000:0000:0000:0001'), compact);
  t.is(keyOf('2001:DB8:1:2::1'), compact);
});

test('ipv6_prefix_length 48 groups clients per /48', (t) => {
  const options = { ipv6PrefixLength: 48 };
  const a = keyOf('2001:db8:1:2::1', undefined, options);
  const b = keyOf('2001:db8:1:ffff::2', undefined, options);
  const c = keyOf('2001:db8:2::1', undefined, options);
  t.is(a, b, 'one /48');
  t.not(a, c, 'another /48');
  t.is(a, '2001:db8:1::/48');
});

test('ipv6_prefix_length that is not a multiple of 8 masks the right bits', (t) => {
  const options = { ipv6PrefixLength: 60 };
  t.is(
    keyOf('2001:db8:1:2f::1', undefined, options),
    keyOf('2001:db8:1:20::1', undefined, options),
  );
  t.not(
    keyOf('2001:db8:1:2f::1', undefined, options),
    keyOf('2001:db8:1:30::1', undefined, options),
  );
  t.is(keyOf('2001:db8:1:2f::1', undefined, options), '2001:db8:1:20::/60');
});

test('ipv6_prefix_length 128 counts each IPv6 address on its own', (t) => {
  const options = { ipv6PrefixLength: 128 };
  t.not(keyOf('2001:db8::1', undefined, options), keyOf('2001:db8::2', undefined, options));
});

test('IPv6 prefixes do not apply to IPv4 clients', (t) => {
  t.not(keyOf('10.1.2.3'), keyOf('10.1.2.4'));
  t.not(keyOf('10.1.2.3', undefined, { ipv6PrefixLength: 32 }), keyOf('10.1.9.9'));
});

test('a socket without an address is one "unknown" client, not an exception', (t) => {
  t.is(keyOf(undefined), 'unknown');
});

// ---------------------------------------------------------------------------------------------
// X-Forwarded-For
// ---------------------------------------------------------------------------------------------

test("an untrusted peer's X-Forwarded-For is ignored", (t) => {
  for (const trustedProxies of [[], ['10.0.0.0/8']]) {
    const identity = identify('192.0.2.1', '203.0.113.7', { trustedProxies });
    t.is(identity.key, '192.0.2.1', `trusted: ${JSON.stringify(trustedProxies)}`);
    t.false(identity.viaTrustedProxy);
  }
  t.is(keyOf('192.0.2.1', ['203.0.113.7', '198.51.100.1']), '192.0.2.1');
});

test('behind a trusted proxy, the client is the right-most X-Forwarded-For entry', (t) => {
  const identity = identify('10.0.0.1', '203.0.113.7', { trustedProxies: ['10.0.0.0/8'] });
  t.deepEqual(identity, {
    address: '203.0.113.7',
    peerAddress: '10.0.0.1', // the hop X-Forwarded-For appends, not the client
    key: '203.0.113.7',
    viaTrustedProxy: true,
  });
});

test('entries left of the right-most untrusted one are written by the client and ignored', (t) => {
  const options = { trustedProxies: ['10.0.0.0/8'] };
  t.is(keyOf('10.0.0.1', '198.51.100.1, 203.0.113.7', options), '203.0.113.7');
  t.is(keyOf('10.0.0.1', '10.9.9.9, 203.0.113.7', options), '203.0.113.7', 'even a trusted one');
});

test('a chain of several trusted hops is walked to the first untrusted entry', (t) => {
  const options = { trustedProxies: ['10.0.0.0/8', '172.16.0.0/12'] };
  t.is(
    keyOf('10.0.0.1', '198.51.100.1, 203.0.113.7, 172.16.0.5, 10.0.0.6', options),
    '203.0.113.7',
  );
  t.is(
    keyOf('10.0.0.1', ['198.51.100.1, 203.0.113.7', '172.16.0.5', '10.0.0.6'], options),
    '203.0.113.7',
    'repeated X-Forwarded-For fields are one list, in order',
  );
  t.is(keyOf('10.0.0.1', ' 203.0.113.7 ,10.0.0.6 ', options), '203.0.113.7', 'spaces trimmed');
});

test('a garbage X-Forwarded-For entry stops the walk and names the client by its text, never the proxy', (t) => {
  const options = { trustedProxies: ['10.0.0.0/8'] };
  t.is(
    keyOf('10.0.0.1', '203.0.113.7, garbage, 10.0.0.5', options),
    'unparsed:garbage',
    'nothing left of the garbage is believed',
  );
  t.is(keyOf('10.0.0.1', '203.0.113.7, unknown', options), 'unparsed:unknown');
  t.is(keyOf('10.0.0.1', 'not an address', options), 'unparsed:not an address');
  t.is(
    keyOf('10.0.0.1', 'x'.repeat(500), options),
    `unparsed:${'x'.repeat(64)}`,
    'bounded: a long entry cannot grow the key',
  );
  // Two clients behind the proxy with garbage entries are still two clients.
  t.not(keyOf('10.0.0.1', 'client-a', options), keyOf('10.0.0.1', 'client-b', options));
  t.is(keyOf('10.0.0.1', '', options), '10.0.0.1', 'an empty header: the proxy itself');
  t.is(keyOf('10.0.0.1', '203.0.113.7, , ', options), '203.0.113.7', 'empty entries skipped');
  t.is(keyOf('10.0.0.1', undefined, options), '10.0.0.1', 'no header: the proxy itself');
});

test('X-Forwarded-For entries with a port (Azure Application Gateway) name the client', (t) => {
  const options = { trustedProxies: ['10.0.0.0/8'] };
  t.is(keyOf('10.0.0.1', '203.0.113.7:4711', options), '203.0.113.7');
  t.is(keyOf('10.0.0.1', '198.51.100.7:5000, 10.0.0.5:80', options), '198.51.100.7');
  t.is(keyOf('10.0.0.1', '[2001:db8:1:2::99]:443', options), '2001:db8:1:2::/64');
  t.is(keyOf('10.0.0.1', '"[2001:db8:1:2::99]:443"', options), '2001:db8:1:2::/64');
  t.not(
    keyOf('10.0.0.1', '203.0.113.5:4711', options),
    keyOf('10.0.0.1', '198.51.100.7:5000', options),
    'two clients with ports are two clients',
  );
});

test('IPv6 addresses embedding an IPv4 client are counted as that IPv4 address', (t) => {
  const options = { trustedProxies: ['10.0.0.0/8'] };
  for (const [address, ipv4, what] of [
    ['64:ff9b::c000:201', '192.0.2.1', 'NAT64 well-known prefix'],
    ['64:ff9b:1::c633:6401', '198.51.100.1', 'NAT64 local-use prefix (RFC 8215)'],
    ['::ffff:0:c000:201', '192.0.2.1', 'SIIT IPv4-translated'],
    ['::c000:201', '192.0.2.1', 'IPv4-compatible'],
    ['2002:c000:201::1', '192.0.2.1', '6to4'],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', '192.0.2.45', 'Teredo (obfuscated client)'],
  ] as const) {
    t.is(keyOf('10.0.0.1', address, options), ipv4, what);
  }
  t.not(
    keyOf('10.0.0.1', '64:ff9b::c000:201', options),
    keyOf('10.0.0.1', '64:ff9b::c633:6401', options),
    'two IPv4 clients behind one NAT64 are two clients',
  );
});

test('when every X-Forwarded-For entry is trusted, the left-most is the client', (t) => {
  t.is(keyOf('10.0.0.1', '10.0.0.7, 10.0.0.5', { trustedProxies: ['10.0.0.0/8'] }), '10.0.0.7');
});

test('X-Forwarded-For entries are normalised: IPv4-mapped, bracketed, per-/64', (t) => {
  const options = { trustedProxies: ['10.0.0.0/8'] };
  t.is(keyOf('10.0.0.1', '::ffff:203.0.113.7', options), '203.0.113.7');
  t.is(keyOf('10.0.0.1', '[2001:db8:1:2::99]', options), '2001:db8:1:2::/64');
  t.is(
    keyOf('10.0.0.1', '2001:db8:1:2:aaaa::1', options),
    keyOf('10.0.0.1', '2001:db8:1:2::5', options),
  );
});

test('a trusted IPv6 CIDR', (t) => {
  const options = { trustedProxies: ['fd00::/8'] };
  const identity = identify('fd00::1', '2001:db8:1:2::99', options);
  t.is(identity.key, '2001:db8:1:2::/64');
  t.is(identity.address, '2001:db8:1:2::99');
  t.true(identity.viaTrustedProxy);
  t.is(keyOf('fe80::1', '2001:db8:1:2::99', options), 'fe80::/64', 'outside the CIDR: not trusted');
  t.is(keyOf('fd00::1', '203.0.113.7, fd12::3', options), '203.0.113.7', 'mixed families');
});

test('a trusted IPv4 CIDR also trusts the IPv4-mapped IPv6 spelling of its peers', (t) => {
  // A server listening on `::` sees IPv4 peers as ::ffff:a.b.c.d.
  const identity = identify('::ffff:10.0.0.1', '203.0.113.7', { trustedProxies: ['10.0.0.0/8'] });
  t.is(identity.key, '203.0.113.7');
  t.true(identity.viaTrustedProxy);
});

test('a trusted proxy given as a single address, without a prefix length', (t) => {
  const options = { trustedProxies: ['10.0.0.1', '2001:db8::1'] };
  t.is(keyOf('10.0.0.1', '203.0.113.7', options), '203.0.113.7');
  t.is(keyOf('10.0.0.2', '203.0.113.7', options), '10.0.0.2');
  t.is(keyOf('2001:db8::1', '203.0.113.7', options), '203.0.113.7');
  t.is(keyOf('2001:db8::2', '203.0.113.7', options), '2001:db8::/64');
});

test('one socket, many requests: the XFF of each request behind a trusted proxy is read anew', (t) => {
  const identifier = createClientIdentifier({
    trustedProxies: ['10.0.0.0/8'],
    ipv6PrefixLength: 64,
  });
  const socket = { remoteAddress: '10.0.0.1' };
  const on = (forwardedFor?: string) =>
    identifier.identify({
      socket,
      headers: forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor },
    } as unknown as IncomingMessage).key;
  t.is(on('203.0.113.7'), '203.0.113.7');
  t.is(on('203.0.113.8'), '203.0.113.8', 'a keep-alive connection of a proxy carries many clients');
  t.is(on(), '10.0.0.1');

  const direct = { remoteAddress: '192.0.2.1' };
  const from = (forwardedFor: string) =>
    identifier.identify({
      socket: direct,
      headers: { 'x-forwarded-for': forwardedFor },
    } as unknown as IncomingMessage).key;
  t.is(from('203.0.113.7'), '192.0.2.1');
  t.is(from('203.0.113.8'), '192.0.2.1');
});

test('a trusted proxy written in IPv4-mapped IPv6 form matches its IPv4 peers', (t) => {
  // The schema accepts these; a dual-stack operator may well write them. A CIDR that the
  // config accepts but that can never match would silently trust nobody.
  for (const trusted of ['::ffff:10.0.0.0/104', '::ffff:10.0.0.1']) {
    const options = { trustedProxies: [trusted] };
    t.is(keyOf('10.0.0.1', '203.0.113.7', options), '203.0.113.7', `${trusted}, IPv4 peer`);
    t.is(
      keyOf('::ffff:10.0.0.1', '203.0.113.7', options),
      '203.0.113.7',
      `${trusted}, mapped peer`,
    );
  }
});
