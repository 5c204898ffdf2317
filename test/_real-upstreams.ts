/**
 * Real upstream servers from other ecosystems, for differential tests (issue "P3
 * Unbypassable"): Apache Tomcat 10 (Debian's tomcat10 on the JDK its package would pick),
 * Go's net/http (Debian's golang-go, standard library only) as a bare Handler and as a
 * ServeMux, nginx, and Caddy 2.6 (Debian's caddy). A test asserts what such a server
 * *executed* — the path it dispatched on, the method, the identity headers it saw — not only
 * what the gateway answered.
 *
 * Each server runs as a child process on 127.0.0.1 in a fresh temp dir, answers every request
 * it executes with 200 and a JSON record of it, and appends the same record as one JSON line to
 * a log file (Caddy: its JSON access log, turned into the same record); `executed()` reads
 * that file, so requests whose answer never came back to a client (a smuggled one) are seen
 * too. The fixture sources live in test/fixtures/upstreams/.
 * A missing binary is an error that says which Debian package to install: these tests fail,
 * never skip. Every wait is bounded; `close()` stops the process by its PID (SIGTERM, then
 * SIGKILL) and removes the temp dir, and an exit hook kills whatever a crashed run left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './_harness.js';

export type UpstreamName = 'tomcat' | 'go' | 'go-mux' | 'nginx' | 'caddy';

/** One request a real server executed: its handler ran (not refused by the server's parser). */
export interface Executed {
  server: UpstreamName;
  /** Which handler ran: Tomcat's servlet name (`echo` at `/`, `admin` at `/admin/*`), the
   *  ServeMux pattern's (`echo`, `admin`), nginx's location (`echo`, `admin`), Caddy's handle
   *  (`admin` for `path /admin /admin/*`, else `echo`), `plain` for Go's bare Handler. */
  handler: string;
  method: string;
  /** The path the server dispatched on, decoded as it decodes it (Tomcat: servletPath +
   *  pathInfo; Go: r.URL.Path; nginx: $uri; Caddy: its access log's `uri` path %-decoded, the
   *  r.URL.Path its `path` matcher lower-cases and trims trailing dots and spaces from). */
  path: string;
  /** The request-target as received (Tomcat: getRequestURI() + `?` + query). */
  rawTarget: string;
  /** Lower-case names; repeated fields joined with `, `. nginx logs only a fixed list (see its
   *  conf) and cannot tell an empty field from a missing one: empty ones are left out. Caddy
   *  logs r.Header, which net/http has taken Transfer-Encoding out of. */
  headers: Record<string, string>;
  /** The TCP port of the peer (the gateway's upstream connection). */
  remotePort: number;
  /** Body bytes the handler read (Go and Tomcat; Tomcat reads none for GET and HEAD; Caddy's
   *  `respond` reads none). */
  bodyBytes?: number;
  bodyError?: string;
  /** The whole record as the server wrote it (Caddy: `access` is its access log line). */
  record: Record<string, unknown>;
}

export interface RealUpstream {
  readonly name: UpstreamName;
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /**
   * What the server executed since it was ready, or since the last `clear()`. Waits first
   * until the log has not grown for `quietMs` (default 100; at most 3 s in all), since nginx
   * writes its line just after its answer.
   */
  executed(options?: { quietMs?: number }): Promise<Executed[]>;
  /** Forgets everything executed so far (for `executed()`; the log file keeps it). */
  clear(): Promise<void>;
  /** The server's own stderr and error log, for a failure message. */
  diagnostics(): Promise<string>;
  close(): Promise<void>;
}

const FIXTURES = fileURLToPath(new URL('./fixtures/upstreams/', import.meta.url));
const CACHE = fileURLToPath(
  new URL('../node_modules/.cache/tokenguard-real-upstreams/', import.meta.url),
);
const STARTUP_BOUND_MS = 30_000;
const BUILD_BOUND_MS = 120_000;
const STOP_BOUND_MS = 5000;
const CATALINA_HOME = '/usr/share/tomcat10';

/** Every child still running, killed by PID if the test process exits without closing it. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) {
    if (child.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
});

class MissingToolError extends Error {
  constructor(server: string, what: string, looked: readonly string[], install: string) {
    super(
      `${server}: ${what} not found (looked at ${looked.join(', ')}). ` +
        `The differential tests need it: ${install}`,
    );
    this.name = 'MissingToolError';
  }
}

function onPath(command: string): string[] {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter((dir) => dir !== '');
  return [...new Set(dirs)].map((dir) => path.join(dir, command));
}

function findExecutable(candidates: readonly string[]): string | undefined {
  return candidates.find((candidate) => existsSync(candidate));
}

/**
 * The JDK Debian's tomcat10 would run on (/usr/libexec/tomcat10/tomcat-locate-java.sh):
 * JAVA_HOME, else default-java, else the newest packaged OpenJDK; `java` on PATH last.
 */
function locateJdk(): { java: string; javac: string } {
  const homes: string[] = [];
  if (process.env.JAVA_HOME) homes.push(process.env.JAVA_HOME);
  homes.push('/usr/lib/jvm/default-java');
  for (const version of [25, 24, 23, 22, 21, 17, 11]) {
    for (const arch of ['amd64', 'arm64'])
      homes.push(`/usr/lib/jvm/java-${version}-openjdk-${arch}`);
  }
  const install =
    'apt-get install -y tomcat10 default-jdk-headless (javac compiles the echo servlet).';
  const home = homes.find((dir) => existsSync(path.join(dir, 'bin', 'java')));
  const java = home ? path.join(home, 'bin', 'java') : findExecutable(onPath('java'));
  if (!java) throw new MissingToolError('tomcat', 'java', [...homes, ...onPath('java')], install);
  const javacCandidates = [path.join(path.dirname(java), 'javac'), ...onPath('javac')];
  const javac = findExecutable(javacCandidates);
  if (!javac) throw new MissingToolError('tomcat', 'javac', javacCandidates, install);
  return { java, javac };
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Runs a build command to its end (bounded), rejecting with its output on failure. */
function run(command: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let output = '';
    const collect = (chunk: Buffer) => {
      if (output.length < 20_000) output += chunk.toString('utf8');
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }, BUILD_BOUND_MS);
    child.once('error', (error) => {
      clearTimeout(timer);
      running.delete(child);
      reject(error);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(' ')} failed (${code ?? signal}):\n${output}`));
    });
  });
}

const sha256 = (...parts: (string | Buffer)[]) => {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest('hex').slice(0, 16);
};

/**
 * A build output cached under node_modules/.cache by the hash of its inputs: built in a
 * scratch dir and renamed into place, so an interrupted build never leaves half an output.
 */
async function cached(key: string, build: (outDir: string) => Promise<void>): Promise<string> {
  const target = path.join(CACHE, key);
  if (existsSync(path.join(target, '.complete'))) return target;
  await mkdir(CACHE, { recursive: true });
  const scratch = await mkdtemp(path.join(CACHE, `${key}.building-`));
  try {
    await build(scratch);
    await writeFile(path.join(scratch, '.complete'), '');
    await rm(target, { recursive: true, force: true });
    await rename(scratch, target);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return target;
}

interface LogReader {
  mark(): Promise<void>;
  read(quietMs: number): Promise<Record<string, unknown>[]>;
}

/** Reads the JSON lines appended to `file` after the last mark. */
function logReader(file: string): LogReader {
  let offset = 0;
  const size = async () => {
    try {
      return (await stat(file)).size;
    } catch {
      return 0;
    }
  };
  const waitQuiet = async (quietMs: number) => {
    const deadline = Date.now() + 3000;
    let last = await size();
    let stableSince = Date.now();
    while (Date.now() - stableSince < quietMs && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      const now = await size();
      if (now !== last) {
        last = now;
        stableSince = Date.now();
      }
    }
    return last;
  };
  return {
    async mark() {
      offset = await waitQuiet(50);
    },
    async read(quietMs) {
      const end = await waitQuiet(quietMs);
      if (end <= offset) return [];
      const handle = await open(file, 'r');
      try {
        const buffer = Buffer.alloc(end - offset);
        await handle.read(buffer, 0, buffer.length, offset);
        const text = buffer.toString('utf8');
        return text
          .slice(0, text.lastIndexOf('\n') + 1)
          .split('\n')
          .filter((line) => line.trim() !== '')
          .map((line) => JSON.parse(line) as Record<string, unknown>);
      } finally {
        await handle.close();
      }
    },
  };
}

interface Child {
  process: ChildProcess;
  pid: number;
  output: () => string;
  exited: Promise<Exit>;
  stop(): Promise<void>;
}

function startChild(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; onStdout?: (text: string) => void },
): Child {
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid === undefined) throw new Error(`${command} did not start`);
  running.add(child);
  let output = '';
  const collect = (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    if (output.length < 50_000) output += text;
    return text;
  };
  child.stdout?.on('data', (chunk: Buffer) => options.onStdout?.(collect(chunk)));
  child.stderr?.on('data', collect);
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
    child.once('error', (error) => {
      output += `\n${String(error)}`;
      running.delete(child);
      resolve({ code: -1, signal: null });
    });
  });
  const pid = child.pid;
  const bounded = (ms: number) =>
    Promise.race([
      exited.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms)),
    ]);
  return {
    process: child,
    pid,
    output: () => output,
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      process.kill(pid, 'SIGTERM');
      if (await bounded(STOP_BOUND_MS)) return;
      process.kill(pid, 'SIGKILL');
      if (!(await bounded(STOP_BOUND_MS))) throw new Error(`pid ${pid} survived SIGKILL`);
    },
  };
}

/** One GET on a fresh connection; resolves with the status, or 0 on any failure (bounded). */
function probe(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
      res.once('error', () => resolve(0));
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(0));
  });
}

/** Polls `GET /__ready` until 200, the child exits, or STARTUP_BOUND_MS pass. */
async function waitReady(
  name: string,
  child: Child,
  url: string,
  diagnostics: () => Promise<string>,
) {
  const deadline = Date.now() + STARTUP_BOUND_MS;
  let exit: Exit | undefined;
  void child.exited.then((value) => {
    exit = value;
  });
  while (Date.now() < deadline) {
    if (exit) {
      throw new Error(
        `${name} exited during start-up (${exit.code ?? exit.signal}):\n${await diagnostics()}`,
      );
    }
    if ((await probe(`${url}/__ready`)) === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(
    `${name} not ready within ${STARTUP_BOUND_MS} ms at ${url}:\n${await diagnostics()}`,
  );
}

const str = (value: unknown): string => (typeof value === 'string' ? value : '');

function toExecuted(server: UpstreamName, record: Record<string, unknown>): Executed {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries((record.headers ?? {}) as Record<string, unknown>)) {
    if (typeof value === 'string' && (value !== '' || server !== 'nginx')) headers[name] = value;
  }
  const executed: Executed = {
    server,
    handler: str(record.handler),
    method: str(record.method),
    path: str(record.path),
    rawTarget: str(record.rawTarget),
    headers,
    remotePort: Number(record.remotePort),
    record,
  };
  if (typeof record.bodyBytes === 'number') executed.bodyBytes = record.bodyBytes;
  if (typeof record.bodyError === 'string') executed.bodyError = record.bodyError;
  return executed;
}

async function tail(file: string): Promise<string> {
  try {
    const text = await readFile(file, 'utf8');
    return text.slice(-4000);
  } catch {
    return '';
  }
}

interface UpstreamParts {
  name: UpstreamName;
  port: number;
  child: Child;
  log: LogReader;
  /** Which of the log's records are this upstream's executed requests. */
  accept: (record: Record<string, unknown>) => boolean;
  /** Turns a log line into the record shape `toExecuted` reads (Caddy's access log). */
  toRecord?: (line: Record<string, unknown>) => Record<string, unknown>;
  diagnostics: () => Promise<string>;
  close: () => Promise<void>;
}

function realUpstream(parts: UpstreamParts): RealUpstream {
  return {
    name: parts.name,
    url: `http://127.0.0.1:${parts.port}`,
    port: parts.port,
    pid: parts.child.pid,
    async executed({ quietMs = 100 } = {}) {
      const lines = await parts.log.read(quietMs);
      const records = parts.toRecord ? lines.map(parts.toRecord) : lines;
      return records.filter(parts.accept).map((record) => toExecuted(parts.name, record));
    },
    clear: () => parts.log.mark(),
    diagnostics: parts.diagnostics,
    close: parts.close,
  };
}

/** Closes once, however many RealUpstreams share the process. */
function closer(child: Child, dir: string): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () => {
    closing ??= (async () => {
      try {
        await child.stop();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    })();
    return closing;
  };
}

/**
 * Tomcat 10 from Debian's package: CATALINA_HOME=/usr/share/tomcat10, CATALINA_BASE a temp dir
 * with the fixture's server.xml (one HTTP/1.1 connector on 127.0.0.1, no shutdown port),
 * context.xml, an empty global web.xml and a ROOT webapp whose echo servlet (compiled with
 * javac against servlet-api.jar, cached by source hash) is mapped at `/` and at `/admin/*`.
 * Runs `java … org.apache.catalina.startup.Bootstrap start` directly — what `catalina.sh run`
 * execs — so the PID is the JVM's own.
 */
export async function startTomcat(): Promise<RealUpstream> {
  const install = 'apt-get install -y tomcat10 default-jdk-headless';
  const needed = ['bin/bootstrap.jar', 'bin/tomcat-juli.jar', 'lib/servlet-api.jar'].map((file) =>
    path.join(CATALINA_HOME, file),
  );
  const missing = needed.filter((file) => !existsSync(file));
  if (missing.length > 0) throw new MissingToolError('tomcat', 'Tomcat 10', missing, install);
  const { java, javac } = locateJdk();

  const source = await readFile(path.join(FIXTURES, 'tomcat', 'EchoServlet.java'));
  const classes = await cached(`tomcat-classes-${sha256(source, javac)}`, async (out) => {
    await run(
      javac,
      [
        '-nowarn',
        '-d',
        out,
        '-cp',
        path.join(CATALINA_HOME, 'lib', 'servlet-api.jar'),
        'EchoServlet.java',
      ],
      process.env,
      path.join(FIXTURES, 'tomcat'),
    );
  });

  const base = await mkdtemp(path.join(os.tmpdir(), 'tokenguard-tomcat-'));
  try {
    const webInf = path.join(base, 'webapps', 'ROOT', 'WEB-INF');
    for (const dir of ['conf', 'logs', 'temp', 'work', webInf]) {
      await mkdir(path.isAbsolute(dir) ? dir : path.join(base, dir), { recursive: true });
    }
    await cp(classes, path.join(webInf, 'classes'), {
      recursive: true,
      filter: (file) => path.basename(file) !== '.complete',
    });
    await cp(path.join(FIXTURES, 'tomcat', 'web.xml'), path.join(webInf, 'web.xml'));
    await cp(path.join(FIXTURES, 'tomcat', 'context.xml'), path.join(base, 'conf', 'context.xml'));
    await cp(path.join(FIXTURES, 'tomcat', 'conf-web.xml'), path.join(base, 'conf', 'web.xml'));
    const logging = path.join(base, 'conf', 'logging.properties');
    await cp(path.join(FIXTURES, 'tomcat', 'logging.properties'), logging);
    const serverXml = await readFile(path.join(FIXTURES, 'tomcat', 'server.xml'), 'utf8');
    const logFile = path.join(base, 'executed.jsonl');

    // A port found free can be taken before Tomcat binds it: try a few.
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const port = await freePort();
      await writeFile(
        path.join(base, 'conf', 'server.xml'),
        serverXml.replaceAll('@PORT@', String(port)),
      );
      const child = startChild(
        java,
        [
          `-Djava.util.logging.config.file=${logging}`,
          '-Djava.util.logging.manager=org.apache.juli.ClassLoaderLogManager',
          `-Dcatalina.home=${CATALINA_HOME}`,
          `-Dcatalina.base=${base}`,
          `-Djava.io.tmpdir=${path.join(base, 'temp')}`,
          `-Dtokenguard.echo.log=${logFile}`,
          '-Djava.awt.headless=true',
          '-XX:TieredStopAtLevel=1',
          '-XX:+UseSerialGC',
          '-Xmx256m',
          '-cp',
          [
            path.join(CATALINA_HOME, 'bin', 'bootstrap.jar'),
            path.join(CATALINA_HOME, 'bin', 'tomcat-juli.jar'),
          ].join(path.delimiter),
          'org.apache.catalina.startup.Bootstrap',
          'start',
        ],
        { cwd: base },
      );
      const diagnostics = async () => `java: ${java}\n${child.output().slice(-4000)}`;
      const close = closer(child, base);
      try {
        // Tomcat binds its port before deploying ROOT; 200 on /__ready means the servlet runs.
        await waitReady('tomcat', child, `http://127.0.0.1:${port}`, diagnostics);
      } catch (error) {
        await child.stop();
        lastError = error;
        if (/Address already in use|BindException/.test(child.output())) continue;
        throw error;
      }
      const log = logReader(logFile);
      await log.mark();
      return realUpstream({
        name: 'tomcat',
        port,
        child,
        log,
        accept: () => true,
        diagnostics,
        close,
      });
    }
    throw lastError;
  } catch (error) {
    await rm(base, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Go's net/http from Debian's golang-go: test/fixtures/upstreams/go/echo.go built with
 * GO111MODULE=off, GOPROXY=off, GOTOOLCHAIN=local and CGO_ENABLED=0 (no network, no C
 * compiler), cached by source hash. One process serves a bare Handler (`go`) and a ServeMux
 * (`go-mux`) on two ports it picks and prints.
 */
export async function startGo(): Promise<{ plain: RealUpstream; mux: RealUpstream }> {
  const candidates = ['/usr/bin/go', '/usr/lib/go/bin/go', ...onPath('go')];
  const go = findExecutable(candidates);
  if (!go) throw new MissingToolError('go', 'go', candidates, 'apt-get install -y golang-go');
  const source = await readFile(path.join(FIXTURES, 'go', 'echo.go'));
  const buildEnv: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? os.tmpdir(),
    GOCACHE: path.join(CACHE, 'go-build-cache'),
    GOPATH: path.join(CACHE, 'go-path'),
    GO111MODULE: 'off',
    GOTOOLCHAIN: 'local',
    GOPROXY: 'off',
    GOFLAGS: '',
    CGO_ENABLED: '0',
  };
  const bin = await cached(`go-echo-${sha256(source, go)}`, async (out) => {
    await cp(path.join(FIXTURES, 'go', 'echo.go'), path.join(out, 'echo.go'));
    await run(go, ['build', '-o', path.join(out, 'echo'), 'echo.go'], buildEnv, out);
  });

  const dir = await mkdtemp(path.join(os.tmpdir(), 'tokenguard-go-'));
  try {
    const logFile = path.join(dir, 'executed.jsonl');
    let announced: (ports: { plain: number; mux: number }) => void = () => undefined;
    const ports = new Promise<{ plain: number; mux: number }>((resolve) => {
      announced = resolve;
    });
    let stdout = '';
    const child = startChild(path.join(bin, 'echo'), ['-log', logFile], {
      cwd: dir,
      onStdout(text) {
        stdout += text;
        const line = /^\{.*\}$/m.exec(stdout);
        if (line) announced(JSON.parse(line[0]) as { plain: number; mux: number });
      },
    });
    const diagnostics = async () =>
      `go binary: ${path.join(bin, 'echo')}\n${child.output().slice(-4000)}`;
    const close = closer(child, dir);
    const bound = new Promise<never>((_, reject) =>
      setTimeout(
        () => reject(new Error('go: no ports announced within 30 s')),
        STARTUP_BOUND_MS,
      ).unref(),
    );
    const exited = child.exited.then(async (exit) => {
      throw new Error(
        `go exited during start-up (${exit.code ?? exit.signal}):\n${await diagnostics()}`,
      );
    });
    exited.catch(() => undefined);
    try {
      const { plain, mux } = await Promise.race([ports, bound, exited]);
      await waitReady('go', child, `http://127.0.0.1:${plain}`, diagnostics);
      await waitReady('go-mux', child, `http://127.0.0.1:${mux}`, diagnostics);
      const plainLog = logReader(logFile);
      const muxLog = logReader(logFile);
      await Promise.all([plainLog.mark(), muxLog.mark()]);
      return {
        plain: realUpstream({
          name: 'go',
          port: plain,
          child,
          log: plainLog,
          accept: (record) => record.server === 'go',
          diagnostics,
          close,
        }),
        mux: realUpstream({
          name: 'go-mux',
          port: mux,
          child,
          log: muxLog,
          accept: (record) => record.server === 'go-mux',
          diagnostics,
          close,
        }),
      };
    } catch (error) {
      await close();
      throw error;
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * nginx from Debian's package, one foreground process (`daemon off; master_process off;`)
 * with the fixture's nginx.conf under a temp prefix (`-p DIR -c DIR/nginx.conf`); every
 * path it writes is inside DIR, and it runs as the current user (no worker to switch user).
 * Only requests that reached a location count as executed; refused ones are logged too.
 */
export async function startNginx(): Promise<RealUpstream> {
  const candidates = ['/usr/sbin/nginx', ...onPath('nginx')];
  const nginx = findExecutable(candidates);
  if (!nginx) {
    throw new MissingToolError('nginx', 'nginx', candidates, 'apt-get install -y nginx-light');
  }
  const template = await readFile(path.join(FIXTURES, 'nginx', 'nginx.conf'), 'utf8');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tokenguard-nginx-'));
  try {
    const conf = path.join(dir, 'nginx.conf');
    const logFile = path.join(dir, 'executed.jsonl');
    const errorLog = path.join(dir, 'error.log');
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const port = await freePort();
      await writeFile(conf, template.replaceAll('@DIR@', dir).replaceAll('@PORT@', String(port)));
      const child = startChild(nginx, ['-p', `${dir}/`, '-c', conf], { cwd: dir });
      const diagnostics = async () =>
        `nginx: ${nginx}\n${child.output().slice(-2000)}\nerror.log:\n${await tail(errorLog)}`;
      try {
        await waitReady('nginx', child, `http://127.0.0.1:${port}`, diagnostics);
      } catch (error) {
        await child.stop();
        lastError = error;
        if (/Address already in use/.test(`${child.output()}${await tail(errorLog)}`)) continue;
        throw error;
      }
      const log = logReader(logFile);
      await log.mark();
      return realUpstream({
        name: 'nginx',
        port,
        child,
        log,
        accept: (record) => record.handler === 'echo' || record.handler === 'admin',
        diagnostics,
        close: closer(child, dir),
      });
    }
    throw lastError;
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * %-decodes a path as Go's url.PathUnescape does (`+` stays `+`; the bytes read as UTF-8).
 * Malformed escapes are left as they are: net/http refuses such a request before Caddy runs.
 */
function percentDecode(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  const out: number[] = [];
  for (let index = 0; index < bytes.length; index += 1) {
    const hex = bytes.subarray(index + 1, index + 3).toString('latin1');
    if (bytes[index] === 0x25 && /^[0-9A-Fa-f]{2}$/.test(hex)) {
      out.push(Number.parseInt(hex, 16));
      index += 2;
    } else {
      out.push(bytes[index] as number);
    }
  }
  return Buffer.from(out).toString('utf8');
}

/**
 * One line of Caddy's JSON access log as an executed-request record: `handler` from the
 * `X-Handler` response header its handle set (empty when no handle ran), `path` the `uri`'s
 * path %-decoded, `headers` r.Header with `host` from `request.host` (net/http moves it out).
 */
function caddyRecord(line: Record<string, unknown>): Record<string, unknown> {
  const request = (line.request ?? {}) as Record<string, unknown>;
  const respHeaders = (line.resp_headers ?? {}) as Record<string, unknown>;
  const first = (values: unknown) => (Array.isArray(values) ? str(values[0]) : '');
  const headers: Record<string, string> = {};
  for (const [name, values] of Object.entries((request.headers ?? {}) as Record<string, unknown>)) {
    if (Array.isArray(values)) headers[name.toLowerCase()] = values.map(str).join(', ');
  }
  headers.host = str(request.host);
  const uri = str(request.uri);
  // An absolute-form target is logged as received; its path starts after the authority.
  const origin = uri.replace(/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?]*/, '');
  const queryAt = origin.indexOf('?');
  return {
    server: 'caddy',
    handler: first(respHeaders['X-Handler']),
    status: line.status,
    method: str(request.method),
    path: percentDecode(queryAt === -1 ? origin : origin.slice(0, queryAt)),
    rawTarget: uri,
    protocol: str(request.proto),
    remotePort: Number(str(request.remote_port)),
    headers,
    access: line,
  };
}

/**
 * Caddy from Debian's package (2.6.x): the fixture's Caddyfile (test/fixtures/upstreams/caddy)
 * with `@admin path /admin /admin/*` handled as `admin` and everything else as `echo`, run in
 * the foreground with `caddy run --config FILE --adapter caddyfile`; HOME and the XDG dirs
 * (where it would autosave its config and keep certificates) are inside the temp dir. Only
 * requests a handle ran count as executed (`X-Handler` set); the access log has them all.
 */
export async function startCaddy(): Promise<RealUpstream> {
  const candidates = ['/usr/bin/caddy', ...onPath('caddy')];
  const caddy = findExecutable(candidates);
  if (!caddy) throw new MissingToolError('caddy', 'caddy', candidates, 'apt-get install -y caddy');
  const template = await readFile(path.join(FIXTURES, 'caddy', 'Caddyfile'), 'utf8');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tokenguard-caddy-'));
  try {
    const conf = path.join(dir, 'Caddyfile');
    const logFile = path.join(dir, 'access.log');
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: dir,
      XDG_CONFIG_HOME: path.join(dir, 'config'),
      XDG_DATA_HOME: path.join(dir, 'data'),
      XDG_CACHE_HOME: path.join(dir, 'cache'),
    };
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const port = await freePort();
      await writeFile(conf, template.replaceAll('@DIR@', dir).replaceAll('@PORT@', String(port)));
      const child = startChild(caddy, ['run', '--config', conf, '--adapter', 'caddyfile'], {
        cwd: dir,
        env,
      });
      const diagnostics = async () => `caddy: ${caddy}\n${child.output().slice(-4000)}`;
      try {
        await waitReady('caddy', child, `http://127.0.0.1:${port}`, diagnostics);
      } catch (error) {
        await child.stop();
        lastError = error;
        if (/address already in use/i.test(child.output())) continue;
        throw error;
      }
      const log = logReader(logFile);
      await log.mark();
      return realUpstream({
        name: 'caddy',
        port,
        child,
        log,
        toRecord: caddyRecord,
        accept: (record) => record.handler === 'echo' || record.handler === 'admin',
        diagnostics,
        close: closer(child, dir),
      });
    }
    throw lastError;
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** Every real upstream, started side by side; each entry is the server or why it did not start. */
export async function startRealUpstreams(): Promise<
  Record<UpstreamName, RealUpstream | { error: Error }>
> {
  const asError = (error: unknown) => ({
    error: error instanceof Error ? error : new Error(String(error)),
  });
  const [tomcat, go, nginx, caddy] = await Promise.allSettled([
    startTomcat(),
    startGo(),
    startNginx(),
    startCaddy(),
  ]);
  return {
    tomcat: tomcat.status === 'fulfilled' ? tomcat.value : asError(tomcat.reason),
    go: go.status === 'fulfilled' ? go.value.plain : asError(go.reason),
    'go-mux': go.status === 'fulfilled' ? go.value.mux : asError(go.reason),
    nginx: nginx.status === 'fulfilled' ? nginx.value : asError(nginx.reason),
    caddy: caddy.status === 'fulfilled' ? caddy.value : asError(caddy.reason),
  };
}
