/**
 * Runs the gateway as a process: listens, and on SIGTERM/SIGINT drains (PRODUCT.md "Admin
 * port") and exits 0. The only place besides cli.ts that touches process state.
 */
import { createGateway } from './app.js';
import type { Config } from './config/schema.js';
import { createLogger } from './log/logger.js';
import { tuneRuntime } from './runtime.js';

export async function runGateway(config: Config): Promise<void> {
  tuneRuntime();
  const logger = createLogger(config.log.level);
  const gateway = createGateway(config, logger);
  process.on('uncaughtException', (error) => {
    logger.fatal({ err: error }, 'uncaught exception');
    logger.flush();
    process.exit(1);
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ event: 'signal', signal }, 'shutting down');
    gateway.drain().then(
      () => {
        logger.flush();
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'drain failed');
        logger.flush();
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  await gateway.listen();
}
