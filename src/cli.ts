#!/usr/bin/env node
/**
 * tokenguard [--config FILE]                       run the gateway
 * tokenguard check --config FILE                   validate a config (exit 0 or 1)
 * tokenguard check --print-defaults [--config FILE] the effective config (YAML, secrets redacted)
 * tokenguard explain --config FILE METHOD PATH     which route matches and why
 * tokenguard revoke --config FILE (--sub S | --client-id C | --token-hash H)   revoke (fleet-wide)
 * The config file may also be named by TOKENGUARD_CONFIG.
 */
import { parseArgs } from 'node:util';
import { explainRequest } from './commands/explain.js';
import { revokeThroughAdmin } from './commands/revoke.js';
import { ConfigError, formatProblem, loadConfigSource, type ConfigSource } from './config/load.js';
import { printEffectiveConfig, printSchemaDefaults } from './config/print.js';
import { runGateway } from './main.js';

const USAGE = `usage:
  tokenguard [--config FILE]                     run the gateway
  tokenguard check --config FILE                 validate a config
  tokenguard check --print-defaults [--config FILE]
                                                 print the effective config (defaults filled
                                                 in, secrets redacted); no file: the defaults
  tokenguard explain --config FILE METHOD PATH   which route matches, and why
  tokenguard revoke --config FILE (--sub S | --client-id C | --token-hash H)...
                                                 evict them from every replica's cache
The config file may also be named by TOKENGUARD_CONFIG.`;

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

async function main(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
        'print-defaults': { type: 'boolean' },
        sub: { type: 'string', multiple: true },
        'client-id': { type: 'string', multiple: true },
        'token-hash': { type: 'string', multiple: true },
      },
    });
  } catch (error) {
    fail(`tokenguard: ${(error as Error).message}\n${USAGE}`);
  }
  if (parsed.values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const [command, ...rest] = parsed.positionals;
  const file = parsed.values.config ?? process.env.TOKENGUARD_CONFIG;
  const printDefaults = parsed.values['print-defaults'] === true;
  if (printDefaults && command !== 'check') {
    fail(`tokenguard: --print-defaults belongs to check\n${USAGE}`);
  }
  if (printDefaults && !file) {
    process.stdout.write(printSchemaDefaults());
    return;
  }
  if (!file) fail(`tokenguard: no config file (--config FILE or TOKENGUARD_CONFIG)\n${USAGE}`);
  if (
    command !== undefined &&
    command !== 'check' &&
    command !== 'explain' &&
    command !== 'run' &&
    command !== 'revoke'
  ) {
    fail(`tokenguard: unknown command "${command}"\n${USAGE}`);
  }
  if (command === 'explain' && rest.length !== 2)
    fail(`tokenguard: explain needs METHOD and PATH\n${USAGE}`);
  if (command !== 'explain' && rest.length > 0)
    fail(`tokenguard: unexpected argument "${rest[0]}"\n${USAGE}`);

  let source: ConfigSource;
  try {
    source = loadConfigSource(file);
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }
  const { config } = source;
  if (command === 'revoke') {
    const outcome = await revokeThroughAdmin(config, {
      sub: parsed.values.sub,
      clientId: parsed.values['client-id'],
      tokenHash: parsed.values['token-hash'],
    });
    if (!outcome.ok) fail(`tokenguard revoke: ${outcome.text}`);
    process.stdout.write(`${outcome.text}\n`);
    return;
  }
  if (command === 'check') {
    for (const warning of source.warnings) {
      process.stderr.write(`${formatProblem(file, warning)}\n`);
    }
    if (printDefaults) {
      process.stdout.write(printEffectiveConfig(file, config));
      return;
    }
    const count = source.warnings.length;
    const note = count > 0 ? `, ${count} warning(s)` : '';
    process.stdout.write(`${file}: ok (${config.routes.length} routes${note})\n`);
    return;
  }
  if (command === 'explain') {
    process.stdout.write(`${explainRequest(config, rest[0] as string, rest[1] as string)}\n`);
    return;
  }
  await runGateway(config);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(`tokenguard: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
