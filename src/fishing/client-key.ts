/**
 * Who is a client, for fishing counts and logs. The TCP peer, unless the peer is a trusted
 * proxy: then the right-most X-Forwarded-For entry that is not itself trusted (anything to
 * its left was written by the client and proves nothing). IPv6 clients are counted per
 * prefix (/64 by default) — one host owns a whole /64 and could otherwise rotate addresses.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import ipaddr from 'ipaddr.js';

type Address = ipaddr.IPv4 | ipaddr.IPv6;
type Cidr = [Address, number];

export interface ClientIdentity {
  /** The client's address as seen by the gateway (for logs). */
  address: string;
  /** The TCP peer: the hop X-Forwarded-For gets appended. */
  peerAddress: string;
  /** The fishing key: the IPv4 address, or the IPv6 prefix in CIDR notation. */
  key: string;
  /** The socket peer is a trusted proxy (its X-Forwarded-For is kept). */
  viaTrustedProxy: boolean;
}

export interface ClientIdentifier {
  identify(req: IncomingMessage): ClientIdentity;
}

/** Only these characters can make an address: anything else is refused without ipaddr.js. */
const ADDRESS_CHARACTERS = /^[0-9A-Fa-f:.]+$/;

function parseAddress(text: string): Address | null {
  const trimmed = text.trim().replace(/^\[(.*)\]$/, '$1');
  // ipaddr.js validates by throwing and catching: an empty or garbage string would cost an
  // exception on every request that carries one.
  if (!ADDRESS_CHARACTERS.test(trimmed) || !ipaddr.isValid(trimmed)) return null;
  return ipaddr.process(trimmed); // IPv4-mapped IPv6 becomes IPv4
}

export function createClientIdentifier(options: {
  trustedProxies: readonly string[];
  ipv6PrefixLength: number;
}): ClientIdentifier {
  const trusted: Cidr[] = options.trustedProxies.map((text) => {
    const [address, bits] = text.includes('/')
      ? ipaddr.parseCIDR(text)
      : ([ipaddr.parse(text), text.includes(':') ? 128 : 32] as Cidr);
    // Peers are compared as IPv4 when IPv4-mapped, so ranges written as ::ffff:a.b.c.d/n are too.
    if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
      return [(address as ipaddr.IPv6).toIPv4Address(), bits - 96];
    }
    return [address, bits];
  });
  const isTrusted = (address: Address): boolean =>
    trusted.some(([range, bits]) => address.kind() === range.kind() && address.match(range, bits));

  const keyOf = (address: Address): string => {
    if (address.kind() === 'ipv4') return address.toString();
    const bytes = (address as ipaddr.IPv6).toByteArray();
    const prefix = options.ipv6PrefixLength;
    for (let bit = prefix; bit < 128; bit += 1) {
      bytes[bit >> 3] = (bytes[bit >> 3] as number) & ~(0x80 >> (bit & 7));
    }
    return `${ipaddr.fromByteArray(bytes).toString()}/${prefix}`;
  };

  interface Peer {
    address: Address | null;
    trusted: boolean;
    /** The identity when the peer's X-Forwarded-For is not believed. */
    direct: ClientIdentity;
  }
  // A keep-alive connection has one peer: parse it once per socket, not once per request
  // (kept on the socket itself, each gateway under its own symbol).
  const kPeer = Symbol('tokenguard.peer');
  const peerOf = (socket: Socket): Peer => {
    let peer = (socket as Socket & Record<symbol, Peer | undefined>)[kPeer];
    if (peer) return peer;
    const text = socket.remoteAddress ?? '';
    const address = parseAddress(text);
    peer = {
      address,
      trusted: address !== null && trusted.length > 0 && isTrusted(address),
      direct: address
        ? {
            address: address.toString(),
            peerAddress: address.toString(),
            key: keyOf(address),
            viaTrustedProxy: false,
          }
        : {
            address: text || 'unknown',
            peerAddress: text || 'unknown',
            key: text || 'unknown',
            viaTrustedProxy: false,
          },
    };
    (socket as Socket & Record<symbol, Peer | undefined>)[kPeer] = peer;
    return peer;
  };

  return {
    identify(req) {
      const peer = peerOf(req.socket);
      if (!peer.trusted || !peer.address) return peer.direct;
      let client = peer.address;
      const forwarded = req.headers['x-forwarded-for'];
      const hops = (Array.isArray(forwarded) ? forwarded.join(',') : (forwarded ?? '')).split(',');
      for (let index = hops.length - 1; index >= 0; index -= 1) {
        const hop = parseAddress(hops[index] as string);
        if (!hop) break; // garbage: stop believing the chain, keep the last good hop
        client = hop;
        if (!isTrusted(hop)) break;
      }
      return {
        address: client.toString(),
        peerAddress: peer.direct.peerAddress,
        key: keyOf(client),
        viaTrustedProxy: true,
      };
    },
  };
}
