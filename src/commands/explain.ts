/** `tokenguard explain METHOD PATH`: which route matches, what it requires, and why. */
import type { Config } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import { createProtectedResourceMetadata } from '../metadata/protected-resource.js';
import { normaliseRequestTarget } from '../policy/normalize-path.js';
import { hasMethodOverrideParameter } from '../policy/method-override.js';
import { createRouteTable, isMethodMismatch, type Route } from '../policy/route-table.js';
import type { ScopeMatch } from '../policy/scopes.js';

const describeRoute = (route: Route): string => {
  const methods = route.methods ? [...route.methods].join(' ') : 'any method';
  return `#${route.index + 1} ${route.label === route.pattern ? '' : `"${route.label}" `}${route.kind} ${route.pattern} (${methods})`;
};

const STRATEGY: Record<ScopeMatch, string> = {
  exact: 'scope_match exact: the very words, case-sensitive',
  hierarchic:
    'scope_match hierarchic: a granted scope also grants the scopes below it (orders grants orders.read)',
  wildcard:
    'scope_match wildcard: granted scopes are patterns, * one segment, a last * one or more (orders.* grants orders.read)',
};

const requirement = (route: Route): string => {
  if (route.auth === 'none')
    return 'nothing: auth none, forwarded without a token (identity headers still stripped)';
  const { all, any, match } = route.requirement;
  if (all.length === 0 && any.length === 0) return 'an active token (no scope)';
  const parts: string[] = [];
  if (all.length > 0)
    parts.push(`scope${all.length > 1 ? 's' : ''} ${all.join(' ')} (all of them)`);
  if (any.length > 0) parts.push(`one of ${any.join(' ')} (any_scopes)`);
  return `an active token with ${parts.join(' and ')}; ${STRATEGY[match]}`;
};

export function explainRequest(config: Config, method: string, target: string): string {
  const verb = method.toUpperCase();
  const lines = [`${verb} ${target}`];
  if (verb === 'TRACE' || verb === 'CONNECT') {
    lines.push(`refused: 405, ${verb} is never forwarded`);
    return lines.join('\n');
  }
  let matchPath: string;
  let normalisedPath: string;
  try {
    const normalised = normaliseRequestTarget(target);
    if (hasMethodOverrideParameter(normalised.search)) {
      lines.push('refused: 400 invalid_request, a _method query parameter (method override)');
      return lines.join('\n');
    }
    matchPath = normalised.matchPath;
    normalisedPath = normalised.path;
    lines.push(
      `normalised path: ${normalised.path}${normalised.path === target.split('?')[0] ? '' : ' (the upstream receives this)'}`,
    );
  } catch (error) {
    if (!(error instanceof GatewayError)) throw error;
    lines.push(
      `refused: ${error.status} ${error.oauthError}, ${error.detail ?? error.description}`,
    );
    return lines.join('\n');
  }
  const table = createRouteTable(config);
  const metadata = createProtectedResourceMetadata(config, table);
  if (metadata?.owns(normalisedPath)) {
    lines.push(
      `answered by the gateway itself (resource_metadata, RFC 9728): GET/HEAD of ${metadata.url}; no token, never forwarded, routes not consulted`,
    );
    return lines.join('\n');
  }
  const matched = table.match(verb, matchPath);
  for (const route of table.routes) {
    if (route === matched) break;
    const reason =
      route.methods && !route.methods.has(verb)
        ? `method ${verb} not listed`
        : route.match(matchPath)
          ? 'matches'
          : 'path does not match';
    lines.push(`  skipped ${describeRoute(route)}: ${reason}`);
  }
  if (isMethodMismatch(matched)) {
    lines.push(
      `refused: 405 method_not_allowed, routes match the path but not ${verb} (Allow: ${matched.allow}); default_action never applies then`,
    );
    return lines.join('\n');
  }
  if (!matched) {
    lines.push(`no route matches; default_action deny: 404, the upstream is not reached`);
    return lines.join('\n');
  }
  if (matched.index === -1) {
    lines.push('no route matches; default_action authenticate: any active token, no scope');
    return lines.join('\n');
  }
  lines.push(`route: ${describeRoute(matched)}`);
  lines.push(`requires: ${requirement(matched)}`);
  lines.push(
    `why: first route in order whose method and path match (case-${config.routes_case_sensitive ? 'sensitive' : 'insensitive'})`,
  );
  return lines.join('\n');
}
