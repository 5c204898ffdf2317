/**
 * Runs the real CLI (`node dist/cli.js`, built by `npm run build`) as a child process, for
 * the tests that need what only a process has: signals, exit codes, stdout/stderr, its own
 * memory. Every wait is bounded; `stop()` in teardown never leaves a child behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TEST_ROUTES } from './_harness.js';

export { freePort } from './_harness.js';

export const CLI_PATH = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ListeningLine {
  proxy: AddressInfo;
  admin: AddressInfo;
}

export interface CliProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  stdout(): string;
  stderr(): string;
  /** stdout parsed as JSON lines (lines that are not JSON are skipped). */
  logLines(): Array<Record<string, unknown>>;
  /** The first log line satisfying `predicate`, waiting at most `timeoutMs`. */
  waitForLog(
    predicate: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  /** The `listening` line: the proxy and admin addresses actually bound. */
  waitForListening(timeoutMs?: number): Promise<ListeningLine>;
  /** Settles when the process has exited. */
  readonly exited: Promise<Exit>;
  /** The exit, or null if it has not exited within `timeoutMs`. */
  waitForExit(timeoutMs: number): Promise<Exit | null>;
  /** SIGTERM, then SIGKILL after `graceMs` if still running; resolves once it exited. */
  stop(graceMs?: number): Promise<Exit>;
}

export function assertBuilt(): void {
  if (!existsSync(CLI_PATH)) {
    throw new Error(`${CLI_PATH} is missing: run \`npm run build\` first (npm test does)`);
  }
}

/** Spawns `node dist/cli.js ...args`; environment variables in `env` are added. */
export function spawnCli(args: string[], env: Record<string, string> = {}): CliProcess {
  assertBuilt();
  const child = spawn(process.execPath, [CLI_PATH, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  let exit: Exit | undefined;
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
    child.once('error', () => {
      exit = { code: null, signal: null };
      resolve(exit);
    });
  });

  const logLines = () =>
    stdout
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as Record<string, unknown>];
        } catch {
          return [];
        }
      });

  const waitForExit = async (timeoutMs: number): Promise<Exit | null> => {
    if (exit) return exit;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), timeoutMs);
    });
    const result = await Promise.race([exited, timeout]);
    clearTimeout(timer);
    return result;
  };

  const waitForLog = async (
    predicate: (line: Record<string, unknown>) => boolean,
    timeoutMs = 15_000,
  ) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = logLines().find(predicate);
      if (found) return found;
      if (exit) {
        throw new Error(
          `tokenguard exited (${JSON.stringify(exit)}) before the expected log line\n` +
            `stdout: ${stdout}\nstderr: ${stderr}`,
        );
      }
      if (Date.now() > deadline) {
        throw new Error(
          `no such log line within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  };

  return {
    child,
    pid: child.pid ?? -1,
    stdout: () => stdout,
    stderr: () => stderr,
    logLines,
    waitForLog,
    async waitForListening(timeoutMs = 15_000) {
      const line = await waitForLog((entry) => entry.event === 'listening', timeoutMs);
      return { proxy: line.proxy as AddressInfo, admin: line.admin as AddressInfo };
    },
    exited,
    waitForExit,
    async stop(graceMs = 15_000) {
      if (exit) return exit;
      child.kill('SIGTERM');
      const result = await waitForExit(graceMs);
      if (result) return result;
      child.kill('SIGKILL');
      return exited;
    },
  };
}

/** Writes `text` to a config file in a fresh temporary directory. */
export async function writeTempConfig(
  text: string,
  name = 'tokenguard.yaml',
): Promise<{ file: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'tokenguard-test-'));
  const file = path.join(dir, name);
  await writeFile(file, text, 'utf8');
  return { file, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Resident set size of process `pid` in bytes, from /proc (Linux); null elsewhere. */
export async function residentBytes(pid: number): Promise<number | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/**
 * A config for a child gateway on ephemeral 127.0.0.1 ports (read them back from the
 * `listening` log line). Sections in `override` replace the defaults' keys one level deep.
 */
export function childConfig(
  base: { upstreamUrl: string; introspection: Record<string, unknown> },
  override: Record<string, Record<string, unknown> | unknown[]> = {},
): Record<string, unknown> {
  const config: Record<string, unknown> = {
    server: { host: '127.0.0.1', port: 0, shutdown_grace_seconds: 10 },
    admin: { host: '127.0.0.1', port: 0 },
    upstream: { url: base.upstreamUrl, timeout_ms: 30_000 },
    introspection: base.introspection,
    routes: TEST_ROUTES,
    forward: { identity_headers: { 'X-Auth-Subject': 'sub', 'X-Auth-Scope': 'scope' } },
  };
  for (const [key, value] of Object.entries(override)) {
    const current = config[key];
    config[key] =
      !Array.isArray(value) && current && typeof current === 'object' && !Array.isArray(current)
        ? { ...current, ...value }
        : value;
  }
  return config;
}
