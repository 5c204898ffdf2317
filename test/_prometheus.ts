/**
 * A real Prometheus (Debian's `prometheus` package; scripts/test-servers.sh installs it) on a
 * free loopback port, scraping the given targets every second and evaluating the given rule
 * file every second, with its TSDB in a temporary directory. Stopped by PID (SIGTERM, then
 * SIGKILL) and its directory removed. No prometheus binary: a loud failure.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { freePort, request } from './_harness.js';

const PROMETHEUS = process.env.PROMETHEUS ?? '/usr/bin/prometheus';

export interface ScrapeTarget {
  /** `127.0.0.1:PORT` of an admin port. */
  address: string;
  /** The labels a ServiceMonitor would attach (namespace, pod); `job` is the job's name. */
  labels: Record<string, string>;
}

export interface QueryResult {
  resultType: string;
  result: { metric: Record<string, string>; value?: [number, string] }[];
}

export interface Prometheus {
  url: string;
  /** An instant query; throws with Prometheus's error text when the query is invalid. */
  query(expr: string): Promise<QueryResult>;
  /** GET /api/v1/<path>, the `data` of a success. */
  api<T>(apiPath: string): Promise<T>;
  logs(): string;
  stop(): Promise<void>;
}

export async function startPrometheus(options: {
  job: string;
  targets: ScrapeTarget[];
  ruleFile: string;
}): Promise<Prometheus> {
  if (!existsSync(PROMETHEUS)) {
    throw new Error(
      `${PROMETHEUS} is missing: install Debian's prometheus package (scripts/test-servers.sh does)`,
    );
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'tokenguard-prometheus-'));
  const configFile = path.join(dir, 'prometheus.yml');
  writeFileSync(
    configFile,
    stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      rule_files: [options.ruleFile],
      scrape_configs: [
        {
          job_name: options.job,
          static_configs: options.targets.map((target) => ({
            targets: [target.address],
            labels: target.labels,
          })),
        },
      ],
    }),
  );
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    PROMETHEUS,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const api = async <T>(apiPath: string): Promise<T> => {
    const response = await request(`${url}/api/v1/${apiPath}`);
    const body = JSON.parse(response.body) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`Prometheus ${apiPath}: ${body.error}`);
    return body.data;
  };

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`prometheus exited ${child.exitCode}:\n${output}`);
    }
    const ready = await request(`${url}/-/ready`).then(
      (response) => response.status === 200,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus never became ready:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }

  return {
    url,
    api,
    query: (expr) => api<QueryResult>(`query?query=${encodeURIComponent(expr)}`),
    logs: () => output,
    stop,
  };
}
