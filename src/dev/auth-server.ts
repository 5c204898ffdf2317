/**
 * A development authorization server for the demo and the test suite — never for the data
 * path. It implements just enough of OAuth 2.0 to be the real thing the gateway talks to:
 * - RFC 7662 token introspection behind client authentication (§2.1: the endpoint MUST be
 *   protected), with HTTP Basic (RFC 6749 §2.3.1) or client_secret_post;
 * - the client_credentials grant (RFC 6749 §4.4) to mint opaque demo tokens;
 * - RFC 8414 metadata, so `introspection.issuer:` discovery can be exercised.
 * Tests steer its failures with `setFault` and decide "cache hit" by counting
 * `introspectionCalls`, as ory/oathkeeper's tests do. Tokens are never logged.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import Router from '@koa/router';
import Koa from 'koa';
import bodyParser from 'koa-bodyparser';

/** A client that may mint tokens at the token endpoint (client_credentials). */
export interface DevClient {
  id: string;
  secret: string;
  /** Space-separated scopes the client may ask for; the default of its tokens. */
  scope: string;
}

/** How the introspection endpoint misbehaves, for the gateway's fail-closed tests. */
export type IntrospectionFault =
  | null
  | 'down'
  | 'hang'
  | 'status-500'
  | 'not-json'
  | 'wrong-content-type'
  | 'active-string'
  | 'active-missing'
  | 'huge'
  /** Non-compliant servers seen in the wild: unknown tokens get HTTP 400 invalid_token… */
  | 'unknown-token-400'
  /** …or HTTP 200 with an OAuth error object instead of `active`; known tokens are answered… */
  | 'unknown-token-error-200'
  /** …or HTTP 401 invalid_token (no Basic challenge: not about the gateway's credentials)… */
  | 'unknown-token-401'
  /** …or HTTP 500, the server choking on tokens it does not know. */
  | 'unknown-token-500'
  | { delayMs: number };

export interface DevAuthorizationServer {
  /** `http://127.0.0.1:PORT`, the origin; also the issuer. */
  readonly url: string;
  readonly issuer: string;
  readonly introspectionEndpoint: string;
  readonly tokenEndpoint: string;
  /** Introspection requests received, whatever their outcome (refused ones included). */
  readonly introspectionCalls: number;
  /** The most introspection requests this server was ever handling at once. */
  readonly maxConcurrentIntrospections: number;
  /** The `token` of each introspection request, in order of arrival (the tests' view of turns). */
  readonly introspectedTokens: readonly string[];
  /** What the last introspection request carried (headers as Node parsed them). */
  readonly lastIntrospection?: {
    headers: Record<string, string | string[] | undefined>;
    body: Record<string, string>;
  };
  /**
   * Mints an opaque token (32 random bytes, base64url). Its introspection answer is
   * `{active: true, ...defaults, ...claims}`; defaults are iss, exp (now + ttl), iat,
   * client_id, sub and scope ''. A claim passed as `undefined` is left out of the answer;
   * `active: false` makes the token answer inactive. The server forgets the token after
   * `ttlSeconds` (default 3600) whatever `exp` says, so an explicit past `exp` still gets
   * an active answer — the gateway's own `exp` check is then what refuses it.
   */
  issue(claims?: Record<string, unknown>, options?: { ttlSeconds?: number }): string;
  revoke(token: string): void;
  setFault(fault: IntrospectionFault): void;
  close(): Promise<void>;
}

export interface DevAuthorizationServerOptions {
  /** Resource servers (the gateway) allowed to introspect. */
  introspectionClients: Array<{ id: string; secret: string }>;
  /** Clients allowed to mint tokens at the token endpoint. */
  clients?: DevClient[];
  host?: string;
  port?: number;
}

/** The `client_id` and `sub` of tokens minted by `issue()` without claims. */
export const DEV_TOKEN_DEFAULTS = { client_id: 'dev-client', sub: 'dev-user' } as const;

const DEFAULT_TTL_SECONDS = 3600;
const HUGE_ANSWER_BYTES = 1024 * 1024;
const REALM = 'Basic realm="dev-as"';

interface StoredToken {
  answer: Record<string, unknown>;
  /** Epoch milliseconds after which the server no longer knows the token. */
  forgetAt: number;
}

interface Credentials {
  id: string;
  secret: string;
}

interface DevState {
  form: Record<string, string>;
  /** The authenticated client's id. */
  client?: string;
}
type DevContext = Koa.ParameterizedContext<DevState>;
type DevMiddleware = (ctx: DevContext, next: () => Promise<void>) => Promise<void>;

class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly oauthError: string,
    readonly description: string,
  ) {
    super(description);
  }
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

export async function startDevAuthorizationServer(
  options: DevAuthorizationServerOptions,
): Promise<DevAuthorizationServer> {
  const host = options.host ?? '127.0.0.1';
  const tokens = new Map<string, StoredToken>();
  let fault: IntrospectionFault = null;
  let introspectionCalls = 0;
  let concurrentIntrospections = 0;
  let maxConcurrentIntrospections = 0;
  const introspectedTokens: string[] = [];
  let lastIntrospection: DevAuthorizationServer['lastIntrospection'];
  // Filled in once listening: the issuer is the origin, port included.
  const origin = { url: '' };

  function issue(claims: Record<string, unknown> = {}, issueOptions: { ttlSeconds?: number } = {}) {
    const ttl = issueOptions.ttlSeconds ?? DEFAULT_TTL_SECONDS;
    const token = randomBytes(32).toString('base64url');
    const iat = nowSeconds();
    const answer: Record<string, unknown> = {
      active: true,
      iss: origin.url,
      exp: iat + ttl,
      iat,
      ...DEV_TOKEN_DEFAULTS,
      scope: '',
      ...claims,
    };
    for (const [name, value] of Object.entries(answer)) {
      if (value === undefined) delete answer[name];
    }
    tokens.set(token, { answer, forgetAt: Date.now() + ttl * 1000 });
    return token;
  }

  function lookUp(token: string): Record<string, unknown> {
    const stored = tokens.get(token);
    if (!stored) return { active: false };
    if (Date.now() >= stored.forgetAt) {
      tokens.delete(token);
      return { active: false };
    }
    if (stored.answer.active !== true) return { active: false };
    return stored.answer;
  }

  const renderErrors: DevMiddleware = async function renderErrors(ctx, next) {
    try {
      await next();
    } catch (error) {
      const failure =
        error instanceof OAuthError
          ? error
          : new OAuthError(
              (error as { status?: number }).status ?? 500,
              'invalid_request',
              'the request could not be read',
            );
      ctx.status = failure.status;
      ctx.set('Cache-Control', 'no-store');
      if (failure.oauthError === 'invalid_client') ctx.set('WWW-Authenticate', REALM);
      ctx.body = { error: failure.oauthError, error_description: failure.description };
    }
  };

  const noStore: DevMiddleware = async function noStore(ctx, next) {
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Pragma', 'no-cache');
    await next();
  };

  const countIntrospection: DevMiddleware = async function countIntrospection(_ctx, next) {
    introspectionCalls += 1;
    concurrentIntrospections += 1;
    maxConcurrentIntrospections = Math.max(maxConcurrentIntrospections, concurrentIntrospections);
    try {
      await next();
    } finally {
      concurrentIntrospections -= 1;
    }
  };

  // koa-bodyparser reads (and bounds) the body; the form itself is decoded from the raw text
  // with URLSearchParams, because qs would turn `a[b]=` into objects and hide duplicates.
  const readBody = bodyParser({ enableTypes: ['form'], formLimit: '64kb' });
  const parseForm: DevMiddleware = async function parseForm(ctx, next) {
    const introspection = ctx.path === '/oauth2/introspect';
    if (!ctx.is('application/x-www-form-urlencoded')) {
      if (introspection) lastIntrospection = { headers: { ...ctx.req.headers }, body: {} };
      throw new OAuthError(
        400,
        'invalid_request',
        'the body must be application/x-www-form-urlencoded',
      );
    }
    await readBody(ctx, async () => undefined);
    const form: Record<string, string> = {};
    const duplicates: string[] = [];
    for (const [name, value] of new URLSearchParams(ctx.request.rawBody ?? '')) {
      if (Object.hasOwn(form, name)) duplicates.push(name);
      form[name] = value;
    }
    ctx.state.form = form;
    if (introspection) {
      lastIntrospection = { headers: { ...ctx.req.headers }, body: { ...form } };
      if (form.token !== undefined) introspectedTokens.push(form.token);
    }
    // RFC 6749 §3.1: parameters MUST NOT be included more than once.
    if (duplicates.length > 0) {
      throw new OAuthError(400, 'invalid_request', `repeated parameter ${duplicates[0]}`);
    }
    await next();
  };

  const applyFault: DevMiddleware = async function applyFault(ctx, next) {
    const current = fault;
    if (current === 'down') {
      ctx.respond = false;
      ctx.req.socket.destroy();
      return;
    }
    if (current === 'hang') {
      ctx.respond = false;
      await new Promise<void>((resolve) => ctx.req.socket.once('close', resolve));
      return;
    }
    if (current === 'status-500') {
      throw new OAuthError(500, 'server_error', 'fault injected: status-500');
    }
    if (current !== null && typeof current === 'object') {
      await new Promise((resolve) => setTimeout(resolve, current.delayMs));
    }
    await next();
  };

  const authenticateIntrospector = authenticateClient(options.introspectionClients);
  const authenticateTokenClient = authenticateClient(options.clients ?? []);

  const answerIntrospection: DevMiddleware = async function answerIntrospection(ctx) {
    const token = ctx.state.form.token;
    if (!token) throw new OAuthError(400, 'invalid_request', 'missing token parameter');
    const answer = lookUp(token);
    if (answer.active !== true && fault === 'unknown-token-400') {
      throw new OAuthError(400, 'invalid_token', 'unknown token');
    }
    if (answer.active !== true && fault === 'unknown-token-401') {
      ctx.status = 401;
      ctx.body = { error: 'invalid_token', error_description: 'unknown token' };
      return;
    }
    if (answer.active !== true && fault === 'unknown-token-500') {
      throw new OAuthError(500, 'server_error', 'cannot parse the token');
    }
    if (answer.active !== true && fault === 'unknown-token-error-200') {
      ctx.body = { error: 'invalid_token', error_description: 'unknown token' };
      return;
    }
    switch (fault) {
      case 'not-json':
        ctx.type = 'application/json';
        ctx.body = '<html>not json</html>';
        return;
      case 'wrong-content-type':
        ctx.type = 'text/html';
        ctx.body = JSON.stringify(answer);
        return;
      case 'active-string':
        ctx.body = { ...answer, active: String(answer.active) };
        return;
      case 'active-missing': {
        const withoutActive = { ...answer };
        delete withoutActive.active;
        ctx.body = withoutActive;
        return;
      }
      case 'huge': {
        const skeleton = JSON.stringify({ ...answer, padding: '' });
        const padding = 'x'.repeat(Math.max(0, HUGE_ANSWER_BYTES - skeleton.length));
        ctx.type = 'application/json';
        ctx.body = JSON.stringify({ ...answer, padding });
        return;
      }
      default:
        ctx.body = answer;
    }
  };

  const issueClientCredentialsToken: DevMiddleware = async function issueClientCredentialsToken(
    ctx,
  ) {
    const { grant_type: grantType, scope: requested } = ctx.state.form;
    if (!grantType) throw new OAuthError(400, 'invalid_request', 'missing grant_type parameter');
    if (grantType !== 'client_credentials') {
      throw new OAuthError(400, 'unsupported_grant_type', 'only client_credentials is supported');
    }
    const client = (options.clients ?? []).find((candidate) => candidate.id === ctx.state.client);
    const allowed = new Set(splitScope(client?.scope ?? ''));
    const scopes = requested === undefined ? [...allowed] : splitScope(requested);
    const refused = scopes.find((scope) => !allowed.has(scope));
    if (refused !== undefined) {
      throw new OAuthError(400, 'invalid_scope', `scope ${refused} is not granted to this client`);
    }
    const scope = scopes.join(' ');
    const clientId = ctx.state.client as string;
    const accessToken = issue({ client_id: clientId, sub: clientId, scope });
    ctx.body = {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: DEFAULT_TTL_SECONDS,
      scope,
    };
  };

  const router = new Router<DevState>();
  router.post(
    '/oauth2/introspect',
    countIntrospection,
    noStore,
    parseForm,
    applyFault,
    authenticateIntrospector,
    answerIntrospection,
  );
  router.post(
    '/oauth2/token',
    noStore,
    parseForm,
    authenticateTokenClient,
    issueClientCredentialsToken,
  );
  router.get('/.well-known/oauth-authorization-server', async (ctx) => {
    ctx.body = {
      issuer: origin.url,
      token_endpoint: `${origin.url}/oauth2/token`,
      introspection_endpoint: `${origin.url}/oauth2/introspect`,
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
      introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    };
  });

  const app = new Koa<DevState>();
  app.silent = true;
  app.use(renderErrors);
  app.use(router.routes());
  app.use(router.allowedMethods());

  const server = http.createServer(app.callback());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  origin.url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  return {
    url: origin.url,
    issuer: origin.url,
    introspectionEndpoint: `${origin.url}/oauth2/introspect`,
    tokenEndpoint: `${origin.url}/oauth2/token`,
    get maxConcurrentIntrospections() {
      return maxConcurrentIntrospections;
    },
    introspectedTokens,
    get introspectionCalls() {
      return introspectionCalls;
    },
    get lastIntrospection() {
      return lastIntrospection;
    },
    issue,
    revoke(token) {
      tokens.delete(token);
    },
    setFault(next) {
      fault = next;
    },
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

function splitScope(scope: string): string[] {
  return scope.split(' ').filter((word) => word !== '');
}

/**
 * RFC 6749 §2.3.1: exactly one authentication method per request — HTTP Basic with the id
 * and secret form-urlencoded before Base64, or client_id/client_secret in the body.
 * Failures are 401 invalid_client with a Basic challenge (§5.2).
 */
function authenticateClient(clients: ReadonlyArray<Credentials>): DevMiddleware {
  return async function authenticateClient(ctx, next) {
    const basic = readBasicCredentials(ctx.req.headers);
    const { client_id: postId, client_secret: postSecret } = ctx.state.form;
    if (basic && postSecret !== undefined) {
      throw new OAuthError(400, 'invalid_request', 'more than one client authentication method');
    }
    if (basic && postId !== undefined && postId !== basic.id) {
      throw new OAuthError(401, 'invalid_client', 'client_id does not match the Basic credentials');
    }
    const presented =
      basic ??
      (postId !== undefined && postSecret !== undefined
        ? { id: postId, secret: postSecret }
        : null);
    if (!presented) throw new OAuthError(401, 'invalid_client', 'client authentication required');
    const client = clients.find((candidate) => candidate.id === presented.id);
    if (!client || !sameSecret(client.secret, presented.secret)) {
      throw new OAuthError(401, 'invalid_client', 'client authentication failed');
    }
    ctx.state.client = client.id;
    await next();
  };
}

function readBasicCredentials(headers: IncomingHttpHeaders): Credentials | null {
  const header = headers.authorization;
  if (!header) return null;
  const match = /^Basic +([A-Za-z0-9+/]+=*) *$/i.exec(header);
  if (!match) throw new OAuthError(401, 'invalid_client', 'malformed Basic credentials');
  const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8');
  const separator = decoded.indexOf(':');
  if (separator === -1) throw new OAuthError(401, 'invalid_client', 'malformed Basic credentials');
  const formDecode = (value: string) => {
    try {
      return decodeURIComponent(value.replaceAll('+', ' '));
    } catch {
      throw new OAuthError(401, 'invalid_client', 'malformed Basic credentials');
    }
  };
  return {
    id: formDecode(decoded.slice(0, separator)),
    secret: formDecode(decoded.slice(separator + 1)),
  };
}

function sameSecret(expected: string, presented: string): boolean {
  const a = Buffer.from(expected);
  const b = Buffer.from(presented);
  return a.length === b.length && timingSafeEqual(a, b);
}
