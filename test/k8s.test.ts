/**
 * The Kubernetes and container deliverables, checked without a cluster or a Docker engine:
 * every kustomization rendered by `kubectl kustomize` (kubectl is required: without it this
 * file fails, it never skips), Kubernetes schemas (kubernetes-models) plus unknown fields on
 * what kubectl renders, the sidecar contract (scripts/k8s/sidecar-policy.ts), `tokenguard
 * check` on every gateway ConfigMap, the Dockerfile lint, and the image replayed outside
 * Docker (build stages on the files they copy, then the runtime stage's layout, ENV and
 * command). Fixtures under test/fixtures/k8s-broken and docker-broken must be rejected.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { parseDocument } from 'yaml';
import { lintDockerfile } from '../scripts/k8s/dockerfile.js';
import { layOutImage, startImage } from '../scripts/k8s/image-runtime.js';
import {
  kustomize,
  podSpecs,
  readManifests,
  type JsonObject,
  type Manifest,
} from '../scripts/k8s/manifests.js';
import { checkSidecarPolicy, gatewayPods } from '../scripts/k8s/sidecar-policy.js';
import { checkUnknownFields } from '../scripts/k8s/strict-fields.js';
import { validateManifests } from '../scripts/k8s/validate.js';

const execFileAsync = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const at = (...parts: string[]) => path.join(ROOT, ...parts);
const NODE_MAJOR = Number(process.versions.node.split('.')[0]);

const TARGETS = {
  base: 'k8s/base',
  overlay: 'k8s/overlays/example',
  sidecar: 'test/fixtures/k8s-sidecar/regular',
  nativeSidecar: 'test/fixtures/k8s-sidecar/native',
  monitoring: 'k8s/monitoring',
  monitoringOverlay: 'k8s/overlays/monitoring',
} as const;
const render = (target: string) => kustomize(at(target));
const rendered = Object.fromEntries(
  Object.entries(TARGETS).map(([name, dir]) => [name, render(dir)]),
) as Record<keyof typeof TARGETS, Manifest[]>;

const find = (manifests: Manifest[], kind: string, name?: string) =>
  manifests.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
const gatewayContainer = (manifests: Manifest[]): JsonObject => {
  const [pod] = gatewayPods(manifests).pods;
  if (!pod) throw new Error('no tokenguard container');
  return pod.gateway;
};

/** Every kustomization.yaml under k8s/ and test/fixtures/, by kind (Kustomization, Component). */
function kustomizationDirs(): { dir: string; kind: string }[] {
  const found: { dir: string; kind: string }[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(at(dir), { withFileTypes: true })) {
      const relative = path.posix.join(dir, entry.name);
      if (entry.isDirectory()) walk(relative);
      else if (entry.name === 'kustomization.yaml') {
        const kind = /^kind:\s*(\w+)/m.exec(readFileSync(at(relative), 'utf8'))?.[1] ?? '';
        found.push({ dir, kind });
      }
    }
  };
  walk('k8s');
  walk('test/fixtures');
  return found.sort((a, b) => a.dir.localeCompare(b.dir));
}

test('the base, the overlay, the sidecar components and monitoring render as documented', (t) => {
  const kinds = (manifests: Manifest[]) => manifests.map((m) => m.kind).sort();
  // An app carries no PrometheusRule and no dashboard: monitoring is applied once per cluster.
  t.deepEqual(kinds(rendered.base), [
    'ConfigMap',
    'Deployment',
    'NetworkPolicy',
    'PodDisruptionBudget',
    'Service',
    'Service',
    'ServiceMonitor',
  ]);
  t.deepEqual(kinds(rendered.overlay), [...kinds(rendered.base), 'Namespace'].sort());
  for (const manifest of rendered.overlay.filter((m) => m.kind !== 'Namespace')) {
    t.is(manifest.metadata.namespace, 'orders', `${manifest.kind} ${manifest.metadata.name}`);
  }
  const [deployment] = find(rendered.overlay, 'Deployment');
  t.is((deployment?.spec as JsonObject).replicas, 3);
  t.is(gatewayContainer(rendered.overlay).image, 'registry.example.com/platform/tokenguard:0.1.0');

  // The gateway config carries a content hash, and the Deployment mounts that exact name.
  const gatewayConfigMap = find(rendered.base, 'ConfigMap').find((m) =>
    m.metadata.name.startsWith('orders-api-tokenguard-'),
  );
  t.regex(gatewayConfigMap?.metadata.name ?? '', /^orders-api-tokenguard-[a-z0-9]{10}$/);
  t.true(
    JSON.stringify(find(rendered.base, 'Deployment')).includes(gatewayConfigMap!.metadata.name),
  );

  t.deepEqual(kinds(rendered.monitoring), ['ConfigMap', 'PrometheusRule']);
  for (const manifest of rendered.monitoring) t.is(manifest.metadata.namespace, 'monitoring');
  const [dashboard] = find(rendered.monitoring, 'ConfigMap', 'tokenguard-grafana-dashboard');
  t.is((dashboard?.metadata.labels as JsonObject).grafana_dashboard, '1');
  t.notThrows(() => JSON.parse(String((dashboard?.data as JsonObject)['tokenguard.json'])));

  t.is(gatewayPods(rendered.sidecar).pods.length, 2, 'two Deployments in the regular fixture');
  t.is(gatewayPods(rendered.nativeSidecar).pods.length, 1);
  const nativePod = podSpecs(find(rendered.nativeSidecar, 'Deployment')[0]!)[0]!;
  t.deepEqual(
    (nativePod.initContainers as JsonObject[]).map((c) => [c.name, c.restartPolicy]),
    [['tokenguard', 'Always']],
  );
});

test('the sidecar Component takes the ConfigMap and the Secret each Deployment names', (t) => {
  const configMaps = find(rendered.sidecar, 'ConfigMap').map((m) => m.metadata.name);
  for (const app of ['inventory', 'reports']) {
    const [workload] = find(rendered.sidecar, 'Deployment', app);
    const podSpec = podSpecs(workload!)[0]!;
    const gateway = (podSpec.containers as JsonObject[]).find((c) => c.name === 'tokenguard')!;
    const secret = (gateway.env as JsonObject[]).find((e) => e.name === 'TOKENGUARD_CLIENT_SECRET');
    t.deepEqual((secret?.valueFrom as JsonObject).secretKeyRef, {
      name: `${app}-tokenguard`,
      key: 'client-secret',
    });
    const volume = (podSpec.volumes as JsonObject[]).find((v) => v.name === 'tokenguard-config');
    const configMap = String((volume?.configMap as JsonObject).name);
    t.regex(configMap, new RegExp(`^${app}-tokenguard-[a-z0-9]{10}$`));
    t.true(configMaps.includes(configMap), `${app} mounts a generated ConfigMap`);
    // The Component completes the stub: the image and the rest of the contract are there.
    t.is(gateway.image, 'tokenguard:0.1.0');
  }
  // The Components name no ConfigMap and no Secret of their own.
  for (const file of [
    'k8s/sidecar/sidecar.patch.yaml',
    'k8s/sidecar/native/native-sidecar.patch.yaml',
  ]) {
    const [patch] = readManifests(at(file));
    t.notRegex(JSON.stringify(patch), /secretKeyRef|"configMap"/, file);
  }
});

test('the example overlay trusts only its ingress controller, and only it reaches the gateway', (t) => {
  const [pod] = gatewayPods(rendered.overlay).pods;
  t.deepEqual(pod?.config.trustedProxies, ['10.244.10.0/24', '10.244.11.0/24']);
  const [policy] = find(rendered.overlay, 'NetworkPolicy');
  const rules = (policy?.spec as JsonObject).ingress as JsonObject[];
  t.deepEqual(rules[0], {
    from: [
      {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress-nginx' } },
        podSelector: {
          matchLabels: {
            'app.kubernetes.io/component': 'controller',
            'app.kubernetes.io/name': 'ingress-nginx',
          },
        },
      },
    ],
    ports: [{ port: 'tg-http', protocol: 'TCP' }],
  });
  t.deepEqual(checkSidecarPolicy(rendered.overlay), []);

  // The policy check catches an overlay that trusts proxies behind the base's open door …
  const opened = structuredClone(rendered.overlay);
  const openPolicy = find(opened, 'NetworkPolicy')[0]!;
  ((openPolicy.spec as JsonObject).ingress as JsonObject[])[0]!.from = [{ namespaceSelector: {} }];
  t.regex(
    checkSidecarPolicy(opened).join('\n'),
    /trusts X-Forwarded-For from 10\.244\.10\.0\/24, 10\.244\.11\.0\/24, but NetworkPolicy orders\/orders-api admits port 8000 from more than selected pods/,
  );
  // … and one with no NetworkPolicy at all.
  const unguarded = rendered.overlay.filter((m) => m.kind !== 'NetworkPolicy');
  t.regex(
    checkSidecarPolicy(unguarded).join('\n'),
    /but no NetworkPolicy limits who reaches port 8000/,
  );
});

test('every alert links its runbook section with an absolute URL whose base a cluster sets', (t) => {
  const runbookUrls = (manifests: Manifest[]) => {
    const [rule] = find(manifests, 'PrometheusRule', 'tokenguard');
    const groups = (rule?.spec as JsonObject).groups as JsonObject[];
    return groups
      .flatMap((group) => group.rules as JsonObject[])
      .filter((r) => r.alert !== undefined)
      .map((r) => String((r.annotations as JsonObject).runbook_url));
  };
  const defaults = runbookUrls(rendered.monitoring);
  const cluster = runbookUrls(rendered.monitoringOverlay);
  t.true(defaults.length >= 8);
  t.is(cluster.length, defaults.length);
  const [base] = readManifests(at('k8s/overlays/monitoring/runbook.yaml'));
  const clusterBase = String((base?.data as JsonObject).base_url);
  t.regex(clusterBase, /^https:\/\//);
  for (const [index, url] of defaults.entries()) {
    t.regex(url, /^https:\/\/[^#]+\/docs\/runbook\.md#tokenguard[a-z0-9]+$/, url);
    t.is(cluster[index], `${clusterBase}#${url.split('#')[1]}`);
  }
  // The settings ConfigMap is local config: read by kustomize, never applied.
  t.deepEqual(find(rendered.monitoringOverlay, 'ConfigMap', 'tokenguard-runbook'), []);
  for (const manifest of rendered.monitoringOverlay) {
    t.is(manifest.metadata.namespace, 'observability');
  }
});

test('no Secret is rendered, and the Secret template matches what the Deployment reads', (t) => {
  for (const [name, manifests] of Object.entries(rendered)) {
    t.deepEqual(find(manifests, 'Secret'), [], name);
  }
  const [template] = readManifests(at('k8s/base/secret.template.yaml'));
  const stringData = template?.stringData as JsonObject;
  t.regex(String(stringData['client-secret']), /^REPLACE_ME/);
  const env = (gatewayContainer(rendered.base).env as JsonObject[]).find(
    (e) => e.name === 'TOKENGUARD_CLIENT_SECRET',
  );
  t.deepEqual((env?.valueFrom as JsonObject).secretKeyRef, {
    name: template?.metadata.name,
    key: 'client-secret',
  });
});

test('kubectl kustomize renders every kustomization; every Component through a fixture', (t) => {
  const all = kustomizationDirs();
  const kustomizations = all.filter((k) => k.kind === 'Kustomization').map((k) => k.dir);
  const components = all.filter((k) => k.kind === 'Component').map((k) => k.dir);
  t.deepEqual(
    all.filter((k) => k.kind !== 'Kustomization' && k.kind !== 'Component'),
    [],
    'every kustomization.yaml says its kind',
  );
  t.true(kustomizations.length >= 8, kustomizations.join(', '));
  t.deepEqual(components, ['k8s/monitoring/runbook-url', 'k8s/sidecar', 'k8s/sidecar/native']);
  for (const dir of kustomizations) {
    t.true(render(dir).length > 0, `${dir} renders resources`);
  }
  // Each Component is used by a kustomization that renders (above).
  const used = kustomizations.flatMap((dir) => {
    const text = readFileSync(at(dir, 'kustomization.yaml'), 'utf8');
    return [...text.matchAll(/^\s*-\s*(\S+)\s*$/gm)].map((m) =>
      path.posix.normalize(path.posix.join(dir, m[1] as string)),
    );
  });
  for (const component of components) t.true(used.includes(component), `${component} is used`);
  // A broken kustomization is an error naming kubectl's reason, not an empty rendering.
  const error = t.throws(() => render('test/fixtures/k8s-sidecar/regular/../missing'));
  t.regex(error?.message ?? '', /kubectl kustomize .*missing/);
});

test('every manifest validates against the Kubernetes and prometheus-operator schemas', (t) => {
  const everything = [
    ...Object.values(rendered).flat(),
    ...readManifests(at('k8s/base/secret.template.yaml')),
  ];
  t.deepEqual(validateManifests(everything), []);
  t.deepEqual(checkUnknownFields(everything), []);
});

test('the sidecar contract holds: hardening, probes, ports, secrets, drain timing, exposure', (t) => {
  for (const [name, manifests] of Object.entries(rendered)) {
    t.deepEqual(checkSidecarPolicy(manifests), [], name);
  }
  // The base and the overlay ship the whole set around the pod.
  for (const manifests of [rendered.base, rendered.overlay]) {
    const services = find(manifests, 'Service');
    const routable = services.filter((s) => (s.spec as JsonObject).clusterIP !== 'None');
    t.deepEqual(
      routable.map((s) => (s.spec as JsonObject).ports),
      [[{ name: 'http', port: 8000, targetPort: 'tg-http', protocol: 'TCP' }]],
    );
    t.is(find(manifests, 'NetworkPolicy').length, 1);
    t.is(find(manifests, 'PodDisruptionBudget').length, 1);
    t.is(find(manifests, 'ServiceMonitor').length, 1);
  }
  // The Component adds the same gateway as the base (no drift between the two).
  const base = gatewayContainer(rendered.base);
  const keys = ['ports', 'livenessProbe', 'readinessProbe', 'resources', 'securityContext'];
  for (const name of ['sidecar', 'nativeSidecar'] as const) {
    const component = gatewayContainer(rendered[name]);
    for (const key of keys) t.deepEqual(component[key], base[key], `${name}: ${key}`);
  }
  t.deepEqual(gatewayContainer(rendered.sidecar).lifecycle, base.lifecycle);
});

test('the gateway config of every ConfigMap passes `tokenguard check`', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tokenguard-k8s-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const configs = Object.entries(rendered).flatMap(([name, manifests]) =>
    gatewayPods(manifests).pods.map((pod) => ({ name, text: pod.config.text })),
  );
  t.is(configs.length, 5);
  for (const [index, { name, text }] of configs.entries()) {
    const file = path.join(dir, `${name}-${index}.yaml`);
    writeFileSync(file, text);
    const { stdout } = await execFileAsync(
      process.execPath,
      [at('dist/cli.js'), 'check', '--config', file],
      { env: { ...process.env, TOKENGUARD_CLIENT_SECRET: 'test-secret' } },
    );
    t.regex(stdout, /: ok \(\d+ routes\)/, name);
  }
});

test('the Dockerfile passes the linter and the image contract', (t) => {
  t.deepEqual(lintDockerfile(at('Dockerfile'), ROOT, NODE_MAJOR), []);
});

test('a broken Dockerfile is rejected', (t) => {
  const dir = at('test/fixtures/docker-broken');
  const problems = lintDockerfile(path.join(dir, 'Dockerfile'), dir, NODE_MAJOR).join('\n');
  for (const expected of [
    /must be multi-stage/,
    /node:latest must have a fixed tag/,
    /USER must be a numeric non-root UID/,
    /ENTRYPOINT must use the exec \(JSON\) form/,
    /must EXPOSE 9100/,
    /ENV TOKENGUARD_CONFIG=\/etc\/tokenguard\/config.yaml/,
    /\.dockerignore: must exclude node_modules/,
  ]) {
    t.regex(problems, expected);
  }
});

test('the broken manifest fixture is rejected by every check', (t) => {
  const manifests = render('test/fixtures/k8s-broken');
  const schema = validateManifests(manifests).join('\n');
  t.regex(schema, /Deployment broken: \/spec\/replicas: must be integer/);
  t.regex(
    schema,
    /\/spec\/template\/spec\/containers\/1\/ports\/0\/containerPort: must be integer/,
  );
  t.regex(
    checkUnknownFields(manifests).join('\n'),
    /\/spec\/template\/spec\/containers\/1\/readinessprobe: unknown field "readinessprobe"/,
  );
  const policy = checkSidecarPolicy(manifests).join('\n');
  for (const expected of [
    /container api: readOnlyRootFilesystem must be true/,
    /tokenguard: readinessProbe must GET \/readyz on the admin port 9100/,
    /tokenguard: env TOKENGUARD_CLIENT_SECRET must come from a Secret/,
    /tokenguard: env HEAP_MIB \(limits.memory \/ 1.000Mi\) gives the heap 100 % of the limit; at most 75 %/,
    /upstream.url http:\/\/orders.default.svc:8080 is not loopback/,
    /terminationGracePeriodSeconds 10 must exceed preStop \+ shutdown_grace_seconds \(15\)/,
    /Service broken: port admin exposes the admin port/,
  ]) {
    t.regex(policy, expected);
  }
});

// ---- the image's command, outside Docker --------------------------------------------------

async function freePort(): Promise<number> {
  const server = http.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

async function waitFor(url: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the gateway exited ${child.exitCode}:\n${log()}`);
    try {
      if ((await get(url)).status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${url} never answered 200:\n${log()}`);
}

test('the image command starts the gateway from the in-image layout and drains on SIGTERM', async (t) => {
  t.timeout(120_000);
  const layout = await layOutImage(ROOT, at('Dockerfile'));
  t.teardown(() => rmSync(path.dirname(layout.root), { recursive: true, force: true }));
  t.is(layout.model.env.TOKENGUARD_CONFIG, '/etc/tokenguard/config.yaml');

  // The API the gateway fronts: answers everything with 200.
  const upstream = http.createServer((_req, res) => res.end('upstream says hi'));
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  t.teardown(() => upstream.close());
  const upstreamPort = (upstream.address() as AddressInfo).port;

  // The base ConfigMap's config, with loopback ports and endpoints: the in-image config path
  // is overridden through TOKENGUARD_CONFIG, exactly as a pod could.
  const [pod] = gatewayPods(rendered.base).pods;
  const doc = parseDocument(pod!.config.text);
  const [serverPort, adminPort] = [await freePort(), await freePort()];
  doc.setIn(['server', 'host'], '127.0.0.1');
  doc.setIn(['server', 'port'], serverPort);
  doc.setIn(['server', 'shutdown_grace_seconds'], 3);
  doc.setIn(['admin', 'host'], '127.0.0.1');
  doc.setIn(['admin', 'port'], adminPort);
  doc.setIn(['upstream', 'url'], `http://127.0.0.1:${upstreamPort}`);
  doc.setIn(['introspection', 'endpoint'], `http://127.0.0.1:${upstreamPort}/introspect`);
  const configFile = path.join(path.dirname(layout.root), 'config.yaml');
  writeFileSync(configFile, doc.toString());
  const env = { TOKENGUARD_CONFIG: configFile, TOKENGUARD_CLIENT_SECRET: 'test-secret' };

  const check = startImage(layout, env, ['check']);
  const [checkCode] = (await once(check, 'exit')) as [number];
  t.is(checkCode, 0, '`docker run IMAGE check` validates the mounted config');

  const gateway = startImage(layout, env);
  let output = '';
  let stderr = '';
  gateway.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  gateway.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    stderr += chunk.toString();
  });
  const exited = once(gateway, 'exit') as Promise<[number | null, string | null]>;
  t.teardown(() => {
    if (gateway.exitCode === null) gateway.kill('SIGKILL');
  });

  await waitFor(`http://127.0.0.1:${adminPort}/healthz`, gateway, () => output);
  t.is((await get(`http://127.0.0.1:${adminPort}/readyz`)).status, 200);
  t.regex((await get(`http://127.0.0.1:${adminPort}/metrics`)).body, /tokenguard_requests_total/);
  t.deepEqual(await get(`http://127.0.0.1:${serverPort}/healthz`), {
    status: 200,
    body: 'upstream says hi',
  });
  t.is((await get(`http://127.0.0.1:${serverPort}/api/orders/1`)).status, 401);

  gateway.kill('SIGTERM');
  const [code, signal] = await exited;
  t.deepEqual({ code, signal }, { code: 0, signal: null }, output);
  // Logs go to stdout; Node.js has nothing to warn about in the image's configuration.
  t.is(stderr, '');
});
