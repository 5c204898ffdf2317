/**
 * `tokenguard check --print-defaults`: the config as the gateway will run it — every default
 * filled in, `${ENV}` replaced, values in their final form (an `audience` string as a list,
 * methods upper-cased) — so an operator sees what a missing key means. Secrets are redacted:
 * the output is meant for terminals, tickets and diffs.
 */
import { stringify } from 'yaml';
import type { Config } from './schema.js';
import { schemaDefaults } from './schema-shape.js';

export const REDACTED = '<redacted>';

const SECRET_KEYS: ReadonlyArray<readonly string[]> = [
  ['introspection', 'client_secret'],
  ['admin', 'revoke_token'],
  ['shared', 'redis', 'password'],
];
const URL_KEYS: ReadonlyArray<readonly string[]> = [
  ['upstream', 'url'],
  ['introspection', 'endpoint'],
  ['introspection', 'issuer'],
  ['shared', 'redis', 'url'],
];

function update(
  object: Record<string, unknown>,
  path: readonly string[],
  change: (value: unknown) => unknown,
): void {
  const [key, ...rest] = path;
  if (key === undefined || !Object.hasOwn(object, key)) return;
  const value = object[key];
  if (rest.length === 0) {
    object[key] = change(value);
  } else if (value !== null && typeof value === 'object') {
    update(value as Record<string, unknown>, rest, change);
  }
}

/** A password in a URL's user information is a secret too. */
function redactUrl(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  try {
    const url = new URL(value);
    if (url.password === '') return value;
    url.password = 'redacted';
    return url.href;
  } catch {
    return value;
  }
}

export function redactSecrets(config: Config): Record<string, unknown> {
  const copy = structuredClone(config) as Record<string, unknown>;
  for (const path of SECRET_KEYS) {
    update(copy, path, (value) => (value === undefined ? value : REDACTED));
  }
  for (const path of URL_KEYS) update(copy, path, redactUrl);
  return copy;
}

/** The effective config of a loaded file, as YAML. */
export function printEffectiveConfig(file: string, config: Config): string {
  return `# ${file} as tokenguard runs it: defaults filled in, \${ENV} replaced, secrets redacted.\n${stringify(redactSecrets(config))}`;
}

/** What every key defaults to when no config file is given. */
export function printSchemaDefaults(): string {
  return `# tokenguard's defaults: every key that has one. introspection.endpoint (or issuer),\n# client_id and client_secret have none and must be set; routes must be listed.\n${stringify(schemaDefaults())}`;
}
