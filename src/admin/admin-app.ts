/**
 * The admin port: /metrics, /healthz, /readyz — never exposed through the Service. /readyz
 * does not depend on the authorization server answering: a shared dependency would take
 * every replica out of the Service at once (PRODUCT.md "Admin port").
 */
import Koa from 'koa';
import Router from '@koa/router';
import type { IncomingMessage } from 'node:http';
import type { Registry } from 'prom-client';
import type { Revoker } from './revoke.js';

export interface Readiness {
  /** null when ready, else why not. */
  notReadyBecause(): string | null;
}

/** A revocation body is a few hashes or names: anything bigger is refused unread. */
const MAX_REVOKE_BODY_BYTES = 1024 * 1024;

export function createAdminApp(registry: Registry, readiness: Readiness, revoker?: Revoker): Koa {
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
  router.post('/admin/revoke', async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    if (!revoker) {
      ctx.status = 404;
      ctx.body = { error: 'not_found', error_description: 'admin.revoke_token is not set' };
      return;
    }
    if (!revoker.authorized(ctx.get('authorization') || undefined)) {
      ctx.status = 401;
      ctx.set('WWW-Authenticate', 'Bearer realm="tokenguard-admin"');
      ctx.body = { error: 'unauthorized', error_description: 'the revoke token is required' };
      return;
    }
    let body: unknown;
    try {
      body = JSON.parse(await readBody(ctx.req, MAX_REVOKE_BODY_BYTES));
    } catch (error) {
      ctx.status = 400;
      ctx.body = { error: 'invalid_request', error_description: (error as Error).message };
      return;
    }
    const outcome = await revoker.revoke(body);
    ctx.status = outcome.status;
    ctx.body =
      outcome.status === 400
        ? { error: 'invalid_request', error_description: outcome.reason }
        : outcome.status === 503
          ? {
              revoked: outcome.revoked,
              error: 'temporarily_unavailable',
              error_description: 'evicted here; the fleet could not be told — retry',
            }
          : { revoked: outcome.revoked };
  });
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error(`the body is over ${limit} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}
