/**
 * The one home of tokenguard's configuration: every key, its type, its default and its
 * documentation (as node-oidc-provider keeps lib/helpers/defaults.js). Unknown keys are
 * errors everywhere: a misspelt `scope:` must never silently mean "no scope required".
 * `config/gateway.example.yaml` documents the same keys for people; `tokenguard check`
 * validates against this schema.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { compilePattern } from '../policy/route-table.js';
import { requiredScopeProblem, SCOPE_MATCHES, type ScopeMatch } from '../policy/scopes.js';
import { PROXY_ASSERTED } from '../proxy/upstream-headers.js';

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/**
 * Settings that weaken what the gateway guarantees. Each is a config error unless listed
 * under `insecure:` (src/config/attention.ts says when each applies).
 */
export const INSECURE_SETTINGS = [
  'plain_http_introspection',
  'unauthenticated_introspection',
  'trust_any_proxy',
  'placeholder_secret',
] as const;
export type InsecureSetting = (typeof INSECURE_SETTINGS)[number];

/** RFC 9110 §5.1 field-name token. */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`. */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

/** Headers an identity mapping must never overwrite: the proxy owns them. */
/** RFC 7518 §3.2: HS256 keys are at least 256 bits. */
const MIN_HS256_SECRET_BYTES = 32;

const RESERVED_HEADERS = new Set([
  'host',
  'authorization',
  'connection',
  'content-length',
  'transfer-encoding',
  'keep-alive',
  'te',
  'trailer',
  'upgrade',
  'proxy-authorization',
  'proxy-connection',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'expect',
  'cookie',
]);

const port = z.number().int().min(0).max(65535);
const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();

const cidr = z.string().refine(
  (value) => {
    const [address, bits, extra] = value.split('/');
    if (extra !== undefined || address === undefined) return false;
    const family = isIP(address);
    if (family === 0) return false;
    if (bits === undefined) return true;
    if (!/^\d{1,3}$/.test(bits)) return false;
    return Number(bits) <= (family === 4 ? 32 : 128);
  },
  { message: 'must be an IP address or CIDR block such as 10.0.0.0/8 or fd00::/8' },
);

/** The URL, or null when `value` is not one (never throws). */
export function parseUrl(value: string): URL | null {
  try {
    return new URL(value);
  } catch {
    return null;
  }
}

const httpUrl = z.string().refine(
  (value) => {
    try {
      const url = new URL(value);
      return (url.protocol === 'http:' || url.protocol === 'https:') && url.hash === '';
    } catch {
      return false;
    }
  },
  { message: 'must be an absolute http:// or https:// URL without a fragment' },
);

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** RFC 9728 §2: an https URL without a fragment (http only for a loopback development host). */
const resourceIdentifier = z.string().refine(
  (value) => {
    try {
      const url = new URL(value);
      const secure =
        url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname));
      return secure && url.hash === '' && url.search === '' && !value.includes('#');
    } catch {
      return false;
    }
  },
  {
    message:
      'must be an https:// URL without query or fragment (http:// only for localhost), e.g. https://api.example.com',
  },
);

const resourceMetadataSchema = z
  .strictObject({
    resource: resourceIdentifier.describe(
      "The protected resource's identifier (RFC 9728 §2 `resource`): the URL clients call, the `aud` tokens are issued for.",
    ),
    authorization_servers: z
      .array(httpUrl)
      .min(1)
      .optional()
      .describe('Issuer URLs of the authorization servers; absent: introspection.issuer, if set.'),
    resource_name: z
      .string()
      .min(1)
      .optional()
      .describe('Human-readable name of the API, shown to end users.'),
    resource_documentation: httpUrl
      .optional()
      .describe('URL of documentation for developers using the API.'),
    max_age_seconds: nonNegativeInt
      .default(3600)
      .describe('Cache-Control max-age of the document (it only changes with the config).'),
  })
  .optional();

const serverSchema = z
  .strictObject({
    host: z.string().min(1).default('0.0.0.0').describe('Address the proxied port binds.'),
    port: port.default(8000).describe('The proxied port (the Service targets it).'),
    trusted_proxies: z
      .array(cidr)
      .default([])
      .describe(
        'CIDRs whose X-Forwarded-For is believed; empty means the client is the socket peer.',
      ),
    idle_timeout_seconds: positiveInt
      .default(300)
      .describe(
        'A client connection with no byte moving either way for this long is closed (a stalled upload or a client that stopped reading).',
      ),
    shutdown_grace_seconds: positiveInt
      .default(10)
      .describe('On SIGTERM: stop accepting, finish in-flight requests for at most this long.'),
    headers_timeout_seconds: positiveInt
      .default(10)
      .describe('A request whose headers take longer than this to arrive is dropped (slowloris).'),
    max_connections: positiveInt
      .default(10000)
      .describe('Connections the proxied port holds at once; more are refused.'),
    max_connections_per_peer: positiveInt
      .default(256)
      .describe(
        'Connections one peer address may hold at once (trusted proxies exempt: every client behind them shares their address).',
      ),
  })
  .prefault({});

const adminSchema = z
  .strictObject({
    host: z.string().min(1).default('0.0.0.0').describe('Address of /metrics /healthz /readyz.'),
    port: port.default(9100).describe('Admin port; never expose it through the Service.'),
    revoke_token: z
      .string()
      .min(16, 'must be at least 16 characters (a secret, from ${ENV})')
      .optional()
      .describe(
        'Bearer secret of POST /admin/revoke (compared in constant time); absent: the endpoint is off.',
      ),
  })
  .prefault({});

const redisUrl = z.string().refine(
  (value) => {
    try {
      const url = new URL(value);
      return (url.protocol === 'redis:' || url.protocol === 'rediss:') && url.hostname !== '';
    } catch {
      return false;
    }
  },
  { message: 'must be a redis:// or rediss:// URL with a host' },
);

const sharedSchema = z
  .strictObject({
    redis: z.strictObject({
      url: redisUrl.describe(
        'redis://host:6379 or rediss:// for TLS (no credentials in it: below).',
      ),
      username: z.string().min(1).optional().describe('ACL user (from ${ENV}).'),
      password: z.string().min(1).optional().describe('ACL or requirepass password (from ${ENV}).'),
      tls_ca_file: z
        .string()
        .min(1)
        .optional()
        .describe('PEM CA bundle that signs the server certificate (rediss://).'),
      key_prefix: z
        .string()
        .min(1)
        .default('tokenguard:')
        .describe(
          'Every key and channel of one fleet starts with it; fleets sharing a Redis differ here.',
        ),
      timeout_ms: positiveInt
        .default(50)
        .describe(
          'A Redis answer slower than this counts as an error: the replica falls back to its own state.',
        ),
    }),
  })
  .optional();

const upstreamSchema = z
  .strictObject({
    url: httpUrl
      .refine(
        (value) => {
          // Only the URLs httpUrl accepted reach a verdict here: a refinement runs even after
          // an earlier one failed, and `new URL('127.0.0.1:8080')` throws.
          const url = parseUrl(value);
          return url === null || (['', '/'].includes(url.pathname) && url.search === '');
        },
        { message: 'must be an origin such as http://127.0.0.1:8080 (no path or query)' },
      )
      .default('http://127.0.0.1:8080')
      .describe('The API behind the gateway; requests keep their path.'),
    timeout_ms: positiveInt
      .default(30000)
      .describe('Bound on the wait for response headers and on each silence in a body.'),
  })
  .prefault({});

const introspectionSchema = z
  .strictObject({
    endpoint: httpUrl.optional().describe('RFC 7662 endpoint; or give `issuer` alone.'),
    issuer: httpUrl
      .optional()
      .describe('Expected `iss`; alone, the endpoint is found by RFC 8414 discovery.'),
    client_id: z.string().min(1).optional().describe("The gateway's client at the server."),
    client_secret: z.string().min(1).optional().describe('Use ${ENV} interpolation.'),
    auth_method: z
      .enum([
        'client_secret_basic',
        'client_secret_post',
        'client_secret_jwt',
        'private_key_jwt',
        'none',
      ])
      .default('client_secret_basic')
      .describe('How the gateway authenticates to the introspection endpoint.'),
    private_key_file: z
      .string()
      .min(1)
      .optional()
      .describe('PEM private key for private_key_jwt (RFC 7523 client assertion).'),
    private_key_alg: z
      .enum(['RS256', 'PS256', 'ES256'])
      .default('RS256')
      .describe('Signing algorithm of the private_key_jwt assertion.'),
    key_id: z.string().min(1).optional().describe('`kid` header of the private_key_jwt assertion.'),
    token_type_hint: z
      .string()
      .min(1)
      .default('access_token')
      .describe('RFC 7662 §2.1 token_type_hint sent with each call.'),
    timeout_ms: positiveInt.default(2000).describe('Whole-call bound; past it the answer is 503.'),
    audience: z
      .union([
        z
          .string()
          .min(1)
          .transform((value) => [value]),
        z.array(z.string().min(1)).min(1),
      ])
      .optional()
      .describe('`aud` (string or array) must contain one of these.'),
    clock_skew_seconds: nonNegativeInt.default(30).describe('Leeway for `exp` and `nbf`.'),
    max_concurrent: positiveInt
      .default(64)
      .describe('At most this many introspection calls in flight; more get 503.'),
    max_calls_per_second: positiveInt
      .default(200)
      .describe('Budget of introspection calls per second for uncached tokens; more get 503.'),
  })
  .superRefine((value, ctx) => {
    if (!value.endpoint && !value.issuer) {
      ctx.addIssue({ code: 'custom', message: 'needs `endpoint`, or `issuer` for discovery' });
    }
    if (value.auth_method !== 'none' && !value.client_id) {
      ctx.addIssue({
        code: 'custom',
        path: ['client_id'],
        message: `is required with auth_method ${value.auth_method}`,
      });
    }
    if (
      (value.auth_method === 'client_secret_basic' ||
        value.auth_method === 'client_secret_post' ||
        value.auth_method === 'client_secret_jwt') &&
      !value.client_secret
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['client_secret'],
        message: `is required with auth_method ${value.auth_method}`,
      });
    }
    // RFC 7518 §3.2: an HMAC key as long as the hash output (HS256: 256 bits) at least.
    if (
      value.auth_method === 'client_secret_jwt' &&
      value.client_secret !== undefined &&
      Buffer.byteLength(value.client_secret) < MIN_HS256_SECRET_BYTES
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['client_secret'],
        message: `must be at least ${MIN_HS256_SECRET_BYTES} bytes with auth_method client_secret_jwt (RFC 7518 §3.2: an HS256 key is at least 256 bits)`,
      });
    }
    if (value.auth_method === 'private_key_jwt' && !value.private_key_file) {
      ctx.addIssue({
        code: 'custom',
        path: ['private_key_file'],
        message: 'is required with auth_method private_key_jwt',
      });
    }
  });

const cacheSchema = z
  .strictObject({
    max_entries: positiveInt
      .default(100000)
      .describe('Bound of the active-answer cache (LRU): what real users are served from.'),
    max_negative_entries: positiveInt
      .default(100000)
      .describe(
        'Bound of the inactive-answer cache (a separate LRU: a flood of bad tokens never evicts a good one).',
      ),
    max_ttl_seconds: nonNegativeInt
      .default(300)
      .describe('An active result lives min(max_ttl, exp - now); 0 disables caching.'),
    negative_ttl_seconds: nonNegativeInt
      .default(10)
      .describe('An inactive result lives this long.'),
    stale_if_error_seconds: nonNegativeInt
      .default(0)
      .describe(
        'While the authorization server fails or the budget refuses, an active answer may be used this long past its TTL (never past exp, never a revoked or inactive one). 0: off.',
      ),
  })
  .prefault({});

const fishingSchema = z
  .strictObject({
    window_seconds: positiveInt.default(60).describe('Sliding window of failure counting.'),
    max_failures: positiveInt
      .default(20)
      .describe('Failed token presentations per client per window before a block.'),
    block_seconds: positiveInt.default(300).describe('A block lasts this long (429).'),
    max_clients: positiveInt
      .default(100000)
      .describe('Bound of the per-client state (LRU): spoofed floods cannot grow memory.'),
    ipv6_prefix_length: z
      .number()
      .int()
      .min(32)
      .max(128)
      .default(64)
      .describe('IPv6 clients are counted per prefix of this length.'),
  })
  .prefault({});

const methodSchema = z
  .string()
  .transform((value) => value.toUpperCase())
  .pipe(z.enum(HTTP_METHODS, { message: `must be one of ${HTTP_METHODS.join(', ')}` }));

const scopeToken = z.string().regex(SCOPE_TOKEN, 'must be a single RFC 6749 scope token');

const scopeMatch = z.enum(SCOPE_MATCHES);

const routeSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'must be 1-64 characters of A-Z a-z 0-9 _ . : -')
      .optional()
      .describe('The `route` metric label; defaults to the pattern.'),
    path: z
      .string()
      .startsWith('/', 'must start with /')
      .optional()
      .describe('koa-router pattern, e.g. /api/orders/:id.'),
    prefix: z
      .string()
      .startsWith('/', 'must start with /')
      .optional()
      .describe('Matches this path and everything below it, bounded by segments.'),
    methods: z
      .array(methodSchema)
      .min(1)
      .optional()
      .describe('Methods this route matches (GET also matches HEAD); absent means all.'),
    auth: z.enum(['required', 'none']).default('required'),
    scopes: z
      .array(scopeToken)
      .default([])
      .describe('All of them are required (case-sensitive words, compared by scope_match).'),
    any_scopes: z
      .array(scopeToken)
      .min(1)
      .optional()
      .describe(
        'At least one of them is required too (any-of); with `scopes`, all of those and one of these.',
      ),
    scope_match: scopeMatch
      .optional()
      .describe('How granted scopes meet required ones here; absent: the top-level scope_match.'),
  })
  .superRefine((route, ctx) => {
    if ((route.path === undefined) === (route.prefix === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'needs exactly one of `path` or `prefix`' });
    }
    const kind = route.path === undefined ? 'prefix' : 'path';
    const pattern = route.path ?? route.prefix;
    if (pattern !== undefined) {
      try {
        compilePattern(pattern, kind, false);
      } catch (error) {
        ctx.addIssue({
          code: 'custom',
          path: [kind],
          message: `is not a valid koa-router pattern: ${(error as Error).message.split(';')[0]}`,
        });
      }
    }
    const listed = new Set<string>();
    for (const [index, method] of (route.methods ?? []).entries()) {
      if (listed.has(method)) {
        ctx.addIssue({
          code: 'custom',
          path: ['methods', index],
          message: `lists ${method} twice`,
        });
      }
      listed.add(method);
    }
    if (route.auth === 'none' && route.scopes.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['scopes'],
        message: 'cannot be required on a route with `auth: none`',
      });
    }
    if (route.auth === 'none' && route.any_scopes !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['any_scopes'],
        message: 'cannot be required on a route with `auth: none`',
      });
    }
  });

const forwardSchema = z
  .strictObject({
    strip_authorization: z
      .boolean()
      .default(false)
      .describe('Remove the Authorization header before forwarding.'),
    keep_from_trusted_proxies: z
      .array(
        z
          .string()
          .transform((name) => name.toLowerCase())
          .refine((name) => PROXY_ASSERTED.includes(name.replaceAll('_', '-')), {
            message: 'must be one of the proxy-asserted fields the gateway strips (README)',
          }),
      )
      .default([])
      .describe(
        'Proxy-asserted fields (Forwarded, X-Real-IP, X-Forwarded-Client-Cert, …) stripped from every request, except the ones named here when the peer is in server.trusted_proxies.',
      ),
    identity_headers: z
      .record(
        z
          .string()
          .regex(HEADER_NAME, 'must be a valid HTTP header name')
          .refine((name) => !RESERVED_HEADERS.has(name.toLowerCase()), {
            message: 'is a header the proxy owns and cannot carry identity',
          }),
        z.string().min(1, 'must name an introspection claim'),
      )
      .default({})
      .describe('Header → introspection claim; client-sent copies are always removed.'),
    request_id_header: z
      .string()
      .regex(HEADER_NAME, 'must be a valid HTTP header name')
      .refine((name) => !RESERVED_HEADERS.has(name.toLowerCase()), {
        message: 'is a header the proxy owns and cannot carry a request id',
      })
      .default('X-Request-Id')
      .describe(
        'The request id: kept from a trusted proxy when well formed, else generated; sent to the upstream and the client, and logged.',
      ),
  })
  .prefault({});

const logSchema = z
  .strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    access_log: z.boolean().default(true).describe('One JSON line per request.'),
  })
  .prefault({});

export const configSchema = z
  .strictObject({
    server: serverSchema,
    admin: adminSchema,
    upstream: upstreamSchema,
    introspection: introspectionSchema,
    cache: cacheSchema,
    fishing: fishingSchema,
    routes: z.array(routeSchema).default([]),
    routes_case_sensitive: z.boolean().default(false),
    scope_match: scopeMatch
      .default('exact')
      .describe(
        'How granted scopes meet required ones (exact | hierarchic | wildcard, as Oathkeeper); a route may override it.',
      ),
    default_action: z
      .enum(['deny', 'authenticate'])
      .default('deny')
      .describe('Unmatched requests: deny (404) or authenticate (active token, no scope).'),
    forward: forwardSchema,
    log: logSchema,
    resource_metadata: resourceMetadataSchema.describe(
      'RFC 9728 protected-resource metadata served at /.well-known/oauth-protected-resource, named in every WWW-Authenticate challenge. Absent: the path is an ordinary path.',
    ),
    insecure: z
      .array(z.enum(INSECURE_SETTINGS))
      .default([])
      .describe(
        'Insecure settings this config means to have (plain_http_introspection, unauthenticated_introspection, trust_any_proxy, placeholder_secret); any other insecure setting is an error. Acknowledged ones are still warned about.',
      ),
    shared: sharedSchema.describe(
      'Fleet mode: replicas sharing a Redis and a key_prefix share cache, fishing counts, budget and revocations. Absent: each on its own.',
    ),
  })
  .superRefine((config, ctx) => {
    config.routes.forEach((route, index) => {
      const match: ScopeMatch = route.scope_match ?? config.scope_match;
      for (const key of ['scopes', 'any_scopes'] as const) {
        (route[key] ?? []).forEach((scope, position) => {
          const problem = requiredScopeProblem(scope, match);
          if (problem) {
            ctx.addIssue({
              code: 'custom',
              path: ['routes', index, key, position],
              message: problem,
            });
          }
        });
      }
    });
    const seen = new Set<string>();
    for (const header of Object.keys(config.forward.identity_headers)) {
      const canonical = header.toLowerCase().replaceAll('_', '-');
      if (seen.has(canonical)) {
        ctx.addIssue({
          code: 'custom',
          path: ['forward', 'identity_headers', header],
          message: 'is the same header as another entry (case and _ / - do not differ)',
        });
      }
      seen.add(canonical);
    }
    const requestId = config.forward.request_id_header.toLowerCase().replaceAll('_', '-');
    if (seen.has(requestId)) {
      ctx.addIssue({
        code: 'custom',
        path: ['forward', 'request_id_header'],
        message: 'is also an identity header',
      });
    }
  });

export type Config = z.output<typeof configSchema>;
export type RouteConfig = z.output<typeof routeSchema>;
export type IntrospectionConfig = z.output<typeof introspectionSchema>;
export type SharedConfig = NonNullable<z.output<typeof sharedSchema>>;
