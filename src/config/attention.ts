/**
 * Insecure or surprising settings are allowed (a development setup needs them) but are
 * announced once, loudly, at start-up — as node-oidc-provider's attention helper does.
 */
import type { Logger } from 'pino';
import { analyseRoutes } from '../policy/route-analysis.js';
import { createRouteTable } from '../policy/route-table.js';
import type { Config } from './schema.js';

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

export function insecureSettings(config: Config): string[] {
  const warnings: string[] = [];
  const endpoint = config.introspection.endpoint ?? config.introspection.issuer;
  if (endpoint) {
    const url = new URL(endpoint);
    if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname)) {
      warnings.push(
        `introspection over plain http to ${url.host}: tokens and the client secret cross the network unencrypted`,
      );
    }
  }
  if (config.introspection.auth_method === 'none') {
    warnings.push(
      'introspection.auth_method is none: RFC 7662 §2.1 requires an authenticated endpoint',
    );
  }
  for (const cidr of config.server.trusted_proxies) {
    if (cidr.endsWith('/0')) {
      warnings.push(
        `server.trusted_proxies contains ${cidr}: any client can choose its own address`,
      );
    }
  }
  if (config.default_action === 'authenticate') {
    warnings.push(
      'default_action is authenticate: unmatched paths are forwarded to any active token',
    );
  }
  return warnings;
}

export function warnAboutInsecureSettings(config: Config, logger: Logger): void {
  for (const warning of insecureSettings(config))
    logger.warn({ event: 'insecure_setting' }, warning);
  const routes = createRouteTable(config).routes;
  for (const finding of analyseRoutes(routes)) {
    logger.warn(
      {
        event: 'route_warning',
        kind: finding.kind,
        route: finding.route,
        earlier: finding.earlier,
      },
      `routes[${finding.route}] ${finding.message}`,
    );
  }
}
