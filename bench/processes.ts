/**
 * The benchmark's child processes and what is measured on them from the outside: CPU time
 * (utime + stime from /proc), resident memory and its peak (VmRSS, VmHWM), and the bytes V8
 * promoted to the old generation (summed from `--trace-gc-nvp` scavenge lines). Every child
 * is stopped by PID when the run ends, however it ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';

export interface Role {
  readonly name: string;
  readonly port: number;
  readonly pid: number;
  /** CPU seconds (user + system) used so far. */
  cpuSeconds(): number;
  /** Resident set now, and its peak since start, in bytes. */
  rss(): { now: number; peak: number };
  /** Bytes promoted to the old generation so far (needs `--trace-gc-nvp`). */
  promotedBytes(): number;
  /** Bytes allocated, as of the last GC (needs `--trace-gc-nvp`). */
  allocatedBytes(): number;
  /** The next `{"memory": …}` line after SIGUSR2 (gateway role). */
  memory(): Promise<{ rss: number; heapUsed: number; cacheEntries: number }>;
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
const kill = () => {
  for (const child of children) child.kill('SIGKILL');
};
process.once('exit', kill);
process.once('SIGINT', () => {
  kill();
  process.exit(130);
});

/** Clock ticks per second of /proc/PID/stat (USER_HZ: 100 on every Linux Node runs on). */
const USER_HZ = 100;

export async function startRole(
  name: string,
  args: string[],
  options: { nodeArgs?: string[]; env?: Record<string, string> } = {},
): Promise<Role> {
  const script = new URL('./servers.js', import.meta.url).pathname;
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), script, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...options.env },
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let promoted = 0;
  let allocated = 0;
  const memoryWaiters: Array<
    (value: { rss: number; heapUsed: number; cacheEntries: number }) => void
  > = [];
  let announced: (port: number) => void = () => undefined;
  const port = new Promise<number>((resolve) => {
    announced = resolve;
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  lines.on('line', (line) => {
    if (line.includes(' gc=')) {
      const match = /\bpromoted=(\d+)/.exec(line);
      if (match && line.includes('gc=s')) promoted += Number(match[1]);
      const allocatedMatch = /\ballocated=(\d+)/.exec(line);
      if (allocatedMatch) allocated += Number(allocatedMatch[1]);
      return;
    }
    if (!line.startsWith('{')) return;
    const parsed = JSON.parse(line) as { port?: number; memory?: never };
    if (parsed.port !== undefined) announced(parsed.port);
    if (parsed.memory !== undefined) memoryWaiters.shift()?.(parsed.memory);
  });
  const exited = once(child, 'exit').then(() => {
    throw new Error(`${name} exited before listening`);
  });
  const listening = await Promise.race([port, exited]);
  const pid = child.pid as number;
  const proc = (file: string) => readFileSync(`/proc/${pid}/${file}`, 'utf8');
  const statusField = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(proc('status'))?.[1] ?? 0) * 1024;
  return {
    name,
    port: listening,
    pid,
    cpuSeconds() {
      // Fields 14 and 15 (utime, stime), counted after the parenthesised command name.
      const fields = proc('stat')
        .slice(proc('stat').lastIndexOf(')') + 2)
        .split(' ');
      return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
    },
    rss: () => ({ now: statusField('VmRSS'), peak: statusField('VmHWM') }),
    promotedBytes: () => promoted,
    allocatedBytes: () => allocated,
    memory() {
      return new Promise((resolve) => {
        memoryWaiters.push(resolve);
        child.kill('SIGUSR2');
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await once(child, 'exit');
      clearTimeout(timer);
    },
  };
}

/** The authorization server's call count. */
export async function asCalls(as: Role): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${as.port}/__stats`);
  return ((await response.json()) as { calls: number }).calls;
}

/** A redis-server on a free loopback port, no persistence (fleet mode's shared store). */
export async function startRedisServer(): Promise<{
  port: number;
  /** Commands the server has processed so far (INFO stats), the INFO command itself included. */
  commands(): Promise<number>;
  stop(): Promise<void>;
}> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  children.add(child);
  child.once('exit', () => children.delete(child));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) break;
    if (Date.now() > deadline) throw new Error('redis-server did not start (is it installed?)');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    port,
    async commands() {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.setEncoding('utf8');
      socket.write('INFO stats\r\n');
      let text = '';
      for await (const chunk of socket) {
        text += chunk as string;
        const match = /total_commands_processed:(\d+)/.exec(text);
        if (match) {
          socket.destroy();
          return Number(match[1]);
        }
      }
      throw new Error('redis-server: no total_commands_processed in INFO stats');
    },
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}
