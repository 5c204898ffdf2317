/**
 * Who is a client, for fishing counts and logs. The TCP peer, unless the peer is a trusted
 * proxy: then the right-most X-Forwarded-For entry that is not itself trusted (anything to
 * its left was written by the client and proves nothing). Entries may carry a port
 * (`203.0.113.5:4711`, `[2001:db8::1]:443` — Azure Application Gateway writes them so); an
 * entry that is no address at all identifies the client by its text, never by the proxy's
 * address, which would lump every client behind the proxy into one (and let one fisher
 * block them all).
 *
 * IPv6 clients are counted per prefix (/64 by default) — one host owns a whole /64 and could
 * otherwise rotate addresses — except addresses that embed an IPv4 client (NAT64 64:ff9b::/96
 * and 64:ff9b:1::/48, SIIT ::ffff:0:0/96, IPv4-compatible ::/96, 6to4 2002::/16, Teredo
 * 2001::/32): they are counted as that IPv4 address, or every IPv4 client behind a
 * translator would share one /64.
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
  /** The socket address (as Node reports it) is in server.trusted_proxies. */
  isTrustedPeer(address: string): boolean;
}

/** Only these characters can make an address: anything else is refused without ipaddr.js. */
const ADDRESS_CHARACTERS = /^[0-9A-Fa-f:.]+$/;

function parseAddress(text: string): Address | null {
  let trimmed = text.trim();
  if (trimmed.startsWith('"') && trimmed.endsWith('"')) trimmed = trimmed.slice(1, -1);
  const bracketed = /^\[([^\]]*)\](?::\d{1,5})?$/.exec(trimmed);
  if (bracketed) trimmed = bracketed[1] as string;
  else if (/^\d{1,3}(?:\.\d{1,3}){3}:\d{1,5}$/.test(trimmed))
    trimmed = trimmed.split(':')[0] as string;
  // ipaddr.js validates by throwing and catching: an empty or garbage string would cost an
  // exception on every request that carries one.
  if (!ADDRESS_CHARACTERS.test(trimmed) || !ipaddr.isValid(trimmed)) return null;
  return ipaddr.process(trimmed); // IPv4-mapped IPv6 becomes IPv4
}

/** The IPv4 client an IPv6 address embeds (translators and tunnels), or null. */
export function embeddedIPv4(bytes: readonly number[]): string | null {
  const word = (index: number) => ((bytes[index] as number) << 8) | (bytes[index + 1] as number);
  const last32 = () => bytes.slice(12, 16).join('.');
  const zero = (from: number, to: number) => bytes.slice(from, to).every((byte) => byte === 0);
  if (word(0) === 0x0064 && word(2) === 0xff9b && zero(4, 12)) return last32(); // NAT64 /96
  if (word(0) === 0x0064 && word(2) === 0xff9b && word(4) === 0x0001) return last32(); // RFC 8215
  if (zero(0, 8) && word(8) === 0xffff && word(10) === 0) return last32(); // SIIT
  if (zero(0, 12) && !zero(12, 14)) return last32(); // IPv4-compatible (not :: or ::1)
  if (word(0) === 0x2002) return bytes.slice(2, 6).join('.'); // 6to4
  if (word(0) === 0x2001 && word(2) === 0) {
    return bytes
      .slice(12, 16)
      .map((byte) => byte ^ 0xff)
      .join('.'); // Teredo client
  }
  return null;
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
    const ipv4 = embeddedIPv4(bytes);
    if (ipv4 !== null) return ipv4;
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
    /** A trusted peer's own request (no X-Forwarded-For): the proxy is the client. */
    viaProxy: ClientIdentity;
  }
  // A keep-alive connection has one peer: parse it once per socket, not once per request
  // (kept on the socket itself, each gateway under its own symbol).
  const kPeer = Symbol('tokenguard.peer');
  const peerOf = (socket: Socket): Peer => {
    let peer = (socket as Socket & Record<symbol, Peer | undefined>)[kPeer];
    if (peer) return peer;
    const text = socket.remoteAddress ?? '';
    const address = parseAddress(text);
    const direct: ClientIdentity = address
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
        };
    peer = {
      address,
      trusted: address !== null && trusted.length > 0 && isTrusted(address),
      direct,
      viaProxy: { ...direct, viaTrustedProxy: true },
    };
    (socket as Socket & Record<symbol, Peer | undefined>)[kPeer] = peer;
    return peer;
  };

  return {
    isTrustedPeer(text) {
      const address = trusted.length > 0 ? parseAddress(text) : null;
      return address !== null && isTrusted(address);
    },
    identify(req) {
      const peer = peerOf(req.socket);
      if (!peer.trusted || !peer.address) return peer.direct;
      const forwarded = req.headers['x-forwarded-for'];
      if (forwarded === undefined) return peer.viaProxy; // the proxy's own request
      let client = peer.address;
      const hops = (Array.isArray(forwarded) ? forwarded.join(',') : forwarded).split(',');
      for (let index = hops.length - 1; index >= 0; index -= 1) {
        const text = hops[index] as string;
        if (text.trim() === '') continue; // `a, , b` or an empty field: nothing written there
        const hop = parseAddress(text);
        if (!hop) {
          // Written by a trusted hop but no address: the text is all that tells clients apart.
          const raw = `unparsed:${text.trim().slice(0, 64)}`;
          return {
            address: raw,
            peerAddress: peer.direct.peerAddress,
            key: raw,
            viaTrustedProxy: true,
          };
        }
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
