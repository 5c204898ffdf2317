/**
 * The admin port: /metrics, /healthz, /readyz — never exposed through the Service. /readyz
 * does not depend on the authorization server answering: a shared dependency would take
 * every replica out of the Service at once (PRODUCT.md "Admin port").
 */
import Koa from 'koa';
import Router from '@koa/router';
import type { Registry } from 'prom-client';

export interface Readiness {
  /** null when ready, else why not. */
  notReadyBecause(): string | null;
}

export function createAdminApp(registry: Registry, readiness: Readiness): Koa {
  const app = new Koa();
  const router = new Router();
  router.get('/healthz', (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { status: 'ok' };
  });
  router.get('/readyz', (ctx) => {
    const reason = readiness.notReadyBecause();
    ctx.set('Cache-Control', 'no-store');
    ctx.status = reason ? 503 : 200;
    ctx.body = reason ? { status: 'not_ready', reason } : { status: 'ready' };
  });
  router.get('/metrics', async (ctx) => {
    ctx.set('Content-Type', registry.contentType);
    ctx.body = await registry.metrics();
  });
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}
