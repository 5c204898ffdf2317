/**
 * Settings that weaken what the gateway guarantees. Heimdall's `validate config` refuses
 * insecure settings; tokenguard does too, but a development setup or a deliberate deployment
 * (a mesh that encrypts plain http) may need one, so each is a config error unless the config
 * names it under `insecure:` — an explicit, reviewable line instead of a silent default. An
 * acknowledged insecure setting, and every risky but legitimate choice, is still announced
 * loudly by `tokenguard check` and at start-up, as node-oidc-provider's attention helper does.
 */
import { isIP } from 'node:net';
import type { ConfigFinding, PartialConfig } from './review.js';
import { parseUrl, type InsecureSetting } from './schema.js';

type Path = (string | number)[];

interface InsecureUse {
  setting: InsecureSetting;
  path: Path;
  message: string;
}

/** Loopback needs no TLS: the bytes never leave the host (the demo's and the tests' AS). */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || /^::ffff:127\./.test(host) || /^::ffff:7f[0-9a-f]{2}:/.test(host);
}

/**
 * A client secret that was never set: a template's filler (`change-me`, `<secret>`, `xxx`,
 * `TODO`) or a word nobody would choose (`secret`, `password`). Compared whole, ignoring case
 * and `-` `_` `.` blanks, so that a real development secret such as `demo-secret` (the demo's,
 * against its loopback development server) is not one.
 */
const PLACEHOLDER_WORDS = new Set([
  'changeme',
  'changeit',
  'changethis',
  'replaceme',
  'secret',
  'password',
  'passwd',
  'placeholder',
  'clientsecret',
  'yoursecret',
  'yourclientsecret',
  'mysecret',
  'redacted',
  'todo',
  'tbd',
  'fixme',
]);

export function isPlaceholderSecret(value: string): boolean {
  const folded = value.toLowerCase().replace(/[\s._-]+/g, '');
  if (PLACEHOLDER_WORDS.has(folded)) return true;
  if (/^x{3,}$/.test(folded) || /^\*+$/.test(folded) || /^\.{3,}$/.test(value.trim())) return true;
  if (/^<.*>$/s.test(value.trim())) return true;
  return /^(?:todo|fixme|tbd)\b/i.test(value.trim());
}

interface TrustedRange {
  family: 4 | 6;
  /** The prefix length over the IPv4 space for IPv4 and IPv4-mapped ranges. */
  bits: number;
}

function trustedRange(cidr: string): TrustedRange | undefined {
  const [address = '', bitsText] = cidr.split('/');
  const version = isIP(address);
  if (version === 0) return undefined;
  const family = version === 4 ? 4 : 6;
  const bits = bitsText === undefined ? (family === 4 ? 32 : 128) : Number(bitsText);
  if (family === 6 && /^::ffff:/i.test(address) && bits >= 96)
    return { family: 4, bits: bits - 96 };
  return { family, bits };
}

function insecureUses(config: PartialConfig): InsecureUse[] {
  const uses: InsecureUse[] = [];
  const introspection = config.introspection;
  if (introspection) {
    for (const key of ['endpoint', 'issuer'] as const) {
      const value = introspection[key];
      const url = value === undefined ? null : parseUrl(value);
      if (url?.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
        uses.push({
          setting: 'plain_http_introspection',
          path: ['introspection', key],
          message: `is plain http to ${url.host}: tokens and the client secret${key === 'issuer' ? ' (and the discovered endpoint)' : ''} cross the network unencrypted; use https`,
        });
      }
    }
    if (introspection.auth_method === 'none') {
      uses.push({
        setting: 'unauthenticated_introspection',
        path: ['introspection', 'auth_method'],
        message:
          'is none: RFC 7662 §2.1 requires the introspection endpoint to authenticate its callers, and an open one answers anybody about any token',
      });
    }
    if (
      introspection.client_secret !== undefined &&
      isPlaceholderSecret(introspection.client_secret)
    ) {
      uses.push({
        setting: 'placeholder_secret',
        path: ['introspection', 'client_secret'],
        message:
          'is a placeholder, not a secret: set the real one (from ${ENV}, e.g. a Kubernetes Secret)',
      });
    }
  }
  if (config.admin?.revoke_token !== undefined && isPlaceholderSecret(config.admin.revoke_token)) {
    uses.push({
      setting: 'placeholder_secret',
      path: ['admin', 'revoke_token'],
      message: 'is a placeholder, not a secret: anyone who guesses it can evict the cache',
    });
  }
  const password = config.shared?.redis.password;
  if (password !== undefined && isPlaceholderSecret(password)) {
    uses.push({
      setting: 'placeholder_secret',
      path: ['shared', 'redis', 'password'],
      message: 'is a placeholder, not a secret',
    });
  }
  for (const [index, cidr] of (config.server?.trusted_proxies ?? []).entries()) {
    if (trustedRange(cidr)?.bits === 0) {
      uses.push({
        setting: 'trust_any_proxy',
        path: ['server', 'trusted_proxies', index],
        message: `is ${cidr}: every peer is a trusted proxy, so any client chooses its own address in X-Forwarded-For and walks around the fishing defence`,
      });
    }
  }
  return uses;
}

/** Insecure settings (errors unless acknowledged) and risky choices (warnings). */
export function attentionFindings(config: PartialConfig, complete: boolean): ConfigFinding[] {
  const findings: ConfigFinding[] = [];
  const acknowledged = config.insecure;
  const uses = insecureUses(config);
  for (const use of uses) {
    const isAcknowledged = acknowledged?.includes(use.setting) ?? false;
    findings.push({
      severity: isAcknowledged ? 'warning' : 'error',
      kind: 'insecure_setting',
      path: use.path,
      message: isAcknowledged
        ? `${use.message} (acknowledged by insecure: ${use.setting})`
        : `${use.message}; if this is deliberate, add \`insecure: [${use.setting}]\``,
    });
  }
  // An acknowledgement nothing needs would silently let the next such setting through.
  // Only once every section is valid: a setting in an invalid one was not looked at.
  if (acknowledged && complete) {
    for (const [index, setting] of acknowledged.entries()) {
      if (!uses.some((use) => use.setting === setting)) {
        findings.push({
          severity: 'warning',
          kind: 'insecure_setting',
          path: ['insecure', index],
          message: `acknowledges ${setting}, but no setting is: remove it, so that one added later is an error again`,
        });
      }
    }
  }

  if (config.default_action === 'authenticate') {
    findings.push({
      severity: 'warning',
      kind: 'insecure_setting',
      path: ['default_action'],
      message:
        'is authenticate: a path no route lists is forwarded to any active token, whatever its scopes',
    });
  }
  for (const [index, cidr] of (config.server?.trusted_proxies ?? []).entries()) {
    const range = trustedRange(cidr);
    if (!range || range.bits === 0) continue;
    if ((range.family === 4 && range.bits < 16) || (range.family === 6 && range.bits < 48)) {
      findings.push({
        severity: 'warning',
        kind: 'insecure_setting',
        path: ['server', 'trusted_proxies', index],
        message: `is ${cidr}, a very wide range: every peer in it may choose the client address the fishing defence counts; list only your ingress or load balancer addresses`,
      });
    }
  }
  return findings;
}
