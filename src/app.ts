/**
 * Composes the gateway: the data-path pipeline, read top to bottom like a checklist, and the
 * admin app beside it. Everything is built from the config by factories — no module state —
 * so tests run several gateways in one process.
 */
import http, { ServerResponse, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import Koa from 'koa';
import compose from 'koa-compose';
import type { Logger } from 'pino';
import { createAdminApp } from './admin/admin-app.js';
import { createRevoker } from './admin/revoke.js';
import { createFleet } from './shared/fleet.js';
import { SHARED_OPS } from './shared/store.js';
import type { Config } from './config/schema.js';
import { createClientIdentifier } from './fishing/client-key.js';
import { createFishingGuard, type FishingGuard } from './fishing/fishing-guard.js';
import { identifyClient } from './fishing/identify-client.js';
import { refuseBlockedClients } from './fishing/middleware.js';
import { introspectToken, validateToken } from './introspection/middleware.js';
import { createIntrospectionService, type IntrospectionService } from './introspection/service.js';
import { createMetrics, type GatewayMetrics } from './metrics/metrics.js';
import { createCachedPass } from './cached-pass.js';
import { createConnections, limitConnections } from './connections.js';
import { createAccessLog } from './log/access-log.js';
import {
  createRefusalWriter,
  createRequestRecorder,
  createTarpit,
  observeRequest,
} from './observe-request.js';
import { createProtectedResourceMetadata } from './metadata/protected-resource.js';
import { serveResourceMetadata } from './metadata/middleware.js';
import { enforceScopes, matchRoute, refuseUnsafeRequests } from './policy/middleware.js';
import { createRouteTable, type RouteTable } from './policy/route-table.js';
import { closeAfterwards, createForwarder } from './proxy/forwarder.js';
import { forwardToUpstream } from './proxy/middleware.js';
import { createUpstreamHeaderPolicy } from './proxy/upstream-headers.js';
import { createRequestIds } from './request-id.js';
import type { GatewayMiddleware, GatewayState, UpgradeRequest } from './state.js';
import { extractBearerToken } from './token/middleware.js';
import { warnAboutConfig } from './config/review.js';

const kUpgrade = Symbol('tokenguard.upgrade');
interface UpgradeCarrier {
  [kUpgrade]?: UpgradeRequest;
}

/** Errors that mean the client went away mid-exchange. */
const CLIENT_GONE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);

export interface Gateway {
  readonly metrics: GatewayMetrics;
  readonly routes: RouteTable;
  readonly introspection: IntrospectionService;
  readonly fishing: FishingGuard;
  /** Listens on the configured ports (0 = ephemeral); resolves with the bound addresses. */
  listen(): Promise<{ proxy: AddressInfo; admin: AddressInfo }>;
  /**
   * SIGTERM behaviour: refuse new connections at once, turn /readyz 503, let in-flight
   * requests finish for at most `graceMs`, then close everything.
   */
  drain(graceMs?: number): Promise<void>;
  readonly draining: boolean;
}

export interface GatewayOptions {
  /**
   * Decide cache hits in the synchronous pass (default true). Off, every request goes
   * through the Koa pipeline: the tests compare the two paths' decisions.
   */
  cachedPass?: boolean;
}

export function createGateway(
  config: Config,
  logger: Logger,
  options: GatewayOptions = {},
): Gateway {
  // Before anything opens: a config the loader would refuse never starts a gateway.
  warnAboutConfig(config, logger);
  let draining = false;
  let listening = false;
  const isDraining = () => draining;

  const routes = createRouteTable(config);
  const resourceMetadata = createProtectedResourceMetadata(config, routes);
  const writeRefusal = createRefusalWriter({ resourceMetadataUrl: resourceMetadata?.url });
  const fishing = createFishingGuard({
    windowSeconds: config.fishing.window_seconds,
    maxFailures: config.fishing.max_failures,
    blockSeconds: config.fishing.block_seconds,
    maxClients: config.fishing.max_clients,
    logger,
  });
  const metrics = createMetrics(
    {
      cacheEntries: () => introspection.cache.size,
      blockedClients: () => fishing.blockedClients(),
    },
    { shared: config.shared !== undefined, sharedOps: SHARED_OPS },
  );
  // Fleet mode: shared cache level, fishing counts, budget and revocations on Redis.
  const fleet = config.shared ? createFleet(config, metrics, logger) : undefined;
  const introspection = createIntrospectionService(config, metrics, logger, fleet);
  const revoker = createRevoker({
    revokeToken: config.admin.revoke_token,
    cache: introspection.cache,
    fleet,
    metrics,
    logger,
  });
  fleet?.start({
    revoke: (event) => void revoker.evictLocally(event),
    block: (clientKey, until) => fishing.blockUntil(clientKey, until),
    // Pub/sub is at-most-once: revocations may have been missed, so the copies learnt from the
    // shared level go (this replica's own answers keep their TTL).
    eventsLost: () =>
      void introspection.cache.deleteWhere((entry) => entry.active && entry.fromFleet === true),
  });
  const forwarder = createForwarder({
    upstreamUrl: config.upstream.url,
    timeoutMs: config.upstream.timeout_ms,
    metrics,
    logger,
    isDraining,
  });
  const headerPolicy = createUpstreamHeaderPolicy({
    requestIdHeader: config.forward.request_id_header,
    identityHeaders: Object.keys(config.forward.identity_headers),
    stripAuthorization: config.forward.strip_authorization,
    keepFromTrustedProxies: config.forward.keep_from_trusted_proxies,
  });
  const audience = config.introspection.audience;
  const claimRules = {
    issuer: config.introspection.issuer,
    audience: audience ? new Set(audience) : undefined,
    clockSkewSeconds: config.introspection.clock_skew_seconds,
  };
  const identifier = createClientIdentifier({
    trustedProxies: config.server.trusted_proxies,
    ipv6PrefixLength: config.fishing.ipv6_prefix_length,
  });
  const requestIds = createRequestIds({
    header: config.forward.request_id_header,
    fromTrustedProxy: (req) => identifier.identify(req).viaTrustedProxy,
  });
  const accessLog = createAccessLog(logger, config.log.access_log);
  const recorder = createRequestRecorder(metrics, accessLog, requestIds);

  const authenticate = compose<Koa.ParameterizedContext<GatewayState>>([
    refuseBlockedClients(fishing, metrics, fleet?.fishing),
    extractBearerToken(),
    introspectToken(introspection, fishing, {
      admissionWaitMs: config.introspection.timeout_ms,
      fleet: fleet?.fishing,
      requestIds,
      metrics,
    }),
    validateToken(claimRules),
    enforceScopes(),
  ]);
  const authenticateUnlessPublic: GatewayMiddleware = async function authenticateUnlessPublic(
    ctx,
    next,
  ) {
    if (ctx.state.route?.auth === 'none') return next();
    return authenticate(ctx, next);
  };

  const recogniseUpgrade: GatewayMiddleware = async function recogniseUpgrade(ctx, next) {
    const upgrade = (ctx.req as UpgradeCarrier)[kUpgrade];
    if (upgrade) ctx.state.upgrade = upgrade;
    await next();
  };

  const app = new Koa<GatewayState>();
  app.silent = true;
  app.on('error', (error: Error) => {
    // A client's malformed or abandoned request is the client's business, not an alert.
    const code = (error as NodeJS.ErrnoException).code ?? '';
    if (code.startsWith('HPE_') || CLIENT_GONE.has(code))
      logger.debug({ err: error }, 'client connection error');
    else logger.error({ err: error }, 'koa error');
  });
  app.use(recogniseUpgrade);
  const tarpit = createTarpit();
  app.use(observeRequest({ recorder, writeRefusal, logger, isDraining, tarpit }));
  app.use(refuseUnsafeRequests());
  app.use(identifyClient(identifier));
  if (resourceMetadata) app.use(serveResourceMetadata(resourceMetadata));
  app.use(matchRoute(routes));
  app.use(authenticateUnlessPublic);
  app.use(forwardToUpstream(forwarder, headerPolicy, requestIds));
  const handle = app.callback();

  // Requests decidable from memory (the cache-hit path) skip Koa; everything else — every
  // refusal, cache miss, upgrade and `Expect` — goes through the pipeline above.
  const serveFromMemory = createCachedPass({
    routes,
    identifier,
    fishing,
    introspection,
    claimRules,
    headerPolicy,
    forwarder,
    metrics,
    recorder,
    requestIds,
    writeRefusal,
    ownsPath: resourceMetadata ? resourceMetadata.owns : null,
    isDraining,
  });
  // One request at a time per connection (pipelining), each to the cached pass or Koa.
  const connections = createConnections((req, res) => {
    // The client learns the id its request is logged under, whatever the answer.
    res.setHeader(requestIds.header, requestIds.of(req));
    if (options.cachedPass !== false && serveFromMemory(req, res)) return;
    void handle(req, res);
  });

  const proxyServer: Server = http.createServer(
    {
      // Bodies stream for as long as they flow; silences are bounded by upstream.timeout_ms.
      requestTimeout: 0,
      headersTimeout: config.server.headers_timeout_seconds * 1000,
      // How often Node checks headersTimeout: its 30 s default would double the bound.
      connectionsCheckingInterval: 1000,
      // Longer than the usual load-balancer idle timeout, so the peer closes first.
      keepAliveTimeout: 65_000,
    },
    connections.accept,
  );
  limitConnections(proxyServer, {
    max: config.server.max_connections,
    perPeer: config.server.max_connections_per_peer,
    isTrustedPeer: (address) => identifier.isTrustedPeer(address),
  });
  // A client connection where nothing moves either way is closed: uploads and downloads of
  // any length are fine while bytes flow, but a stalled client cannot hold its connection
  // (and the upstream one) forever. Node destroys the socket when no 'timeout' listener exists.
  proxyServer.setTimeout(config.server.idle_timeout_seconds * 1000);
  // Without this, Node answers `100 Continue` before any check has run.
  proxyServer.on('checkContinue', connections.accept);
  const upgradedSockets = new Set<Duplex>();
  // `upgrade` and `connect` bypass Koa; give them a response object and the same pipeline.
  const handleRaw = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    try {
      // Pipelined behind requests still in progress: never served (connections.ts).
      if (!connections.upgradeMayStart(socket as Socket)) return;
      serveRaw(req, socket, head);
    } catch (error) {
      // Whatever a client sends, it never takes the process down: its connection goes.
      logger.warn(
        { event: 'raw_request_failed', code: (error as NodeJS.ErrnoException).code },
        'upgrade or CONNECT request failed; connection closed',
      );
      socket.destroy();
    }
  };
  const serveRaw = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    upgradedSockets.add(socket);
    socket.once('close', () => upgradedSockets.delete(socket));
    socket.on('error', () => socket.destroy());
    (req as UpgradeCarrier)[kUpgrade] = { socket, head };
    const res = new ServerResponse(req);
    res.assignSocket(socket as Socket);
    res.shouldKeepAlive = false;
    // A refusal (or an upstream failure rendered before any answer) closes the connection
    // once written; an upgrade that went through detached the socket from `res` first.
    res.once('finish', () => closeAfterwards(socket));
    void handle(req, res);
  };
  proxyServer.on('upgrade', handleRaw);
  proxyServer.on('connect', handleRaw);

  const adminApp = createAdminApp(
    metrics.registry,
    {
      notReadyBecause() {
        if (draining) return 'draining';
        if (!listening) return 'not listening yet';
        if (!introspection.ready) return 'introspection endpoint not discovered yet';
        return null;
      },
    },
    config.admin.revoke_token === undefined ? undefined : revoker,
  );
  const adminServer = http.createServer(adminApp.callback());

  const listenOn = (server: Server, host: string, port: number) =>
    new Promise<AddressInfo>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve(server.address() as AddressInfo);
      });
    });

  return {
    metrics,
    routes,
    introspection,
    fishing,
    get draining() {
      return draining;
    },
    async listen() {
      const admin = await listenOn(adminServer, config.admin.host, config.admin.port);
      const proxy = await listenOn(proxyServer, config.server.host, config.server.port);
      listening = true;
      logger.info({ event: 'listening', proxy, admin }, 'tokenguard listening');
      return { proxy, admin };
    },
    async drain(graceMs = config.server.shutdown_grace_seconds * 1000) {
      if (draining) return;
      draining = true;
      tarpit.release(); // held refusals are written now, not cut by the close
      logger.info({ event: 'draining', grace_ms: graceMs }, 'draining');
      const closed = new Promise<void>((resolve) => proxyServer.close(() => resolve()));
      proxyServer.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, graceMs);
      });
      // WebSockets have no natural end: they get the grace period, then are closed.
      await Promise.race([closed, graceOver]);
      clearTimeout(timer);
      proxyServer.closeAllConnections();
      for (const socket of upgradedSockets) socket.destroy();
      forwarder.close();
      fishing.close();
      await introspection.close();
      await fleet?.close();
      await new Promise<void>((resolve) => adminServer.close(() => resolve()));
      adminServer.closeAllConnections();
      accessLog.flush();
      logger.info({ event: 'stopped' }, 'tokenguard stopped');
    },
  };
}
