/**
 * The dashboard and the alerts, checked by the real tools: `promtool check rules` and
 * `promtool test rules` (k8s/monitoring/tests/: every alert fires when it should and stays
 * silent when it should not), then a real Prometheus scraping two live gateways (one in fleet
 * mode on a real Redis, one whose upstream, Redis and authorization server fail) and
 * evaluating the recording rules and alerts, where every dashboard query, every recording
 * rule and every alert's expression must return data. A renamed metric, a wrong label value
 * or a query Prometheus cannot parse fails here instead of leaving a panel empty or an alert
 * silent. Also: every alert carries a severity, a summary, a description and an absolute
 * runbook_url whose anchor exists in docs/runbook.md.
 */
import { readFileSync, rmSync } from 'node:fs';
import test from 'ava';
import { parse as parseYaml } from 'yaml';
import { promtool, RULE_TESTS, writeRuleFiles } from '../scripts/monitoring/rules.js';
import { startRedis } from './_fleet.js';
import { eventuallyAsync, freePort, request, startHarness, type Harness } from './_harness.js';
import { startPrometheus, type Prometheus } from './_prometheus.js';

const repoFile = (path: string) => readFileSync(new URL(`../${path}`, import.meta.url), 'utf8');

/**
 * A Grafana Prometheus variable query: `label_values(selector, label)` names its label last,
 * outside PromQL; `query_result(expr)` wraps PromQL; `label_values(label)`,
 * `label_names()` and `metrics(regex)` name no metric.
 */
function grafanaVariablePromql(query: string): string | undefined {
  const trimmed = query.trim();
  const labelValues = /^label_values\(([\s\S]*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)$/.exec(trimmed);
  if (labelValues) return labelValues[1];
  const queryResult = /^query_result\(([\s\S]*)\)$/.exec(trimmed);
  if (queryResult) return queryResult[1];
  if (/^(?:label_values|label_names|metrics)\(/.test(trimmed)) return undefined;
  return trimmed;
}

// ---------------------------------------------------------------------------------------------
// Where the expressions are
// ---------------------------------------------------------------------------------------------

interface Expression {
  where: string;
  expr: string;
}

interface GrafanaPanel {
  id?: number;
  title?: string;
  type?: string;
  datasource?: { type?: string; uid?: string };
  targets?: { expr?: unknown; refId?: string; datasource?: { type?: string; uid?: string } }[];
  panels?: GrafanaPanel[];
}

interface GrafanaVariable {
  name: string;
  type: string;
  query?: string | { query?: string };
  definition?: string;
  datasource?: { type?: string; uid?: string };
}

interface GrafanaDashboard {
  uid: string;
  schemaVersion: number;
  panels: GrafanaPanel[];
  templating: { list: GrafanaVariable[] };
}

interface PromRule {
  record?: string;
  alert?: string;
  expr?: unknown;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

interface PrometheusRule {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec: { groups: { name: string; rules: PromRule[] }[] };
}

const dashboard = JSON.parse(repoFile('k8s/monitoring/grafana-dashboard.json')) as GrafanaDashboard;
const ruleFile = parseYaml(repoFile('k8s/monitoring/prometheus-rule.yaml')) as PrometheusRule;
const runbook = repoFile('docs/runbook.md');

function allPanels(panels: GrafanaPanel[]): GrafanaPanel[] {
  return panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);
}

function dashboardExpressions(): Expression[] {
  const found: Expression[] = [];
  for (const panel of allPanels(dashboard.panels)) {
    for (const target of panel.targets ?? []) {
      found.push({
        where: `dashboard panel ${JSON.stringify(panel.title)} target ${target.refId}`,
        expr: typeof target.expr === 'string' ? target.expr : '',
      });
    }
  }
  for (const variable of dashboard.templating.list) {
    if (variable.type !== 'query') continue;
    const query = typeof variable.query === 'string' ? variable.query : variable.query?.query;
    for (const text of new Set([query ?? '', variable.definition ?? ''])) {
      const promql = grafanaVariablePromql(text);
      if (promql !== undefined)
        found.push({ where: `dashboard variable $${variable.name}`, expr: promql });
    }
  }
  return found;
}

const rules = ruleFile.spec.groups.flatMap((group) => group.rules);
const alerts = rules.filter((rule) => rule.alert !== undefined);
const recordedNames = new Set(rules.flatMap((rule) => (rule.record ? [rule.record] : [])));

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1 for repeats. */
function markdownAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    const heading = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading) {
      const slug = (heading[1] as string)
        .toLowerCase()
        .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
        .replace(/ /g, '-');
      const count = seen.get(slug) ?? 0;
      seen.set(slug, count + 1);
      anchors.add(count === 0 ? slug : `${slug}-${count}`);
    }
    for (const match of line.matchAll(/<a\s+(?:id|name)="([^"]+)"/g))
      anchors.add(match[1] as string);
  }
  return anchors;
}

// ---------------------------------------------------------------------------------------------
// Structure
// ---------------------------------------------------------------------------------------------

test('the dashboard uses the datasource variable everywhere and has unique panel ids', (t) => {
  t.is(dashboard.uid, 'tokenguard');
  t.true(dashboard.schemaVersion >= 36);
  const datasource = dashboard.templating.list.find((v) => v.name === 'datasource');
  t.is(datasource?.type, 'datasource');
  t.deepEqual(
    dashboard.templating.list.map((v) => v.name),
    ['datasource', 'namespace', 'job', 'pod'],
  );
  const panels = allPanels(dashboard.panels);
  const ids = panels.map((panel) => panel.id);
  t.is(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const panel of panels.filter((p) => p.type !== 'row')) {
    t.is(panel.datasource?.uid, '${datasource}', `panel ${panel.title}`);
    for (const target of panel.targets ?? []) {
      t.is(target.datasource?.uid, '${datasource}', `panel ${panel.title} target ${target.refId}`);
    }
  }
});

test('the dashboard works without the recording rules (Grafana import alone)', (t) => {
  for (const { where, expr } of dashboardExpressions()) {
    for (const name of recordedNames) t.false(expr.includes(name), `${where} uses ${name}`);
  }
});

test('the PrometheusRule carries the alerts of the issue, each fully annotated', (t) => {
  t.is(ruleFile.apiVersion, 'monitoring.coreos.com/v1');
  t.is(ruleFile.kind, 'PrometheusRule');
  t.is(ruleFile.metadata.name, 'tokenguard');
  t.is(ruleFile.metadata.labels?.['app.kubernetes.io/name'], 'tokenguard');
  t.deepEqual(alerts.map((rule) => rule.alert).sort(), ALERT_NAMES);
  const anchors = markdownAnchors(runbook);
  for (const rule of alerts) {
    const name = rule.alert as string;
    t.true(
      ['critical', 'warning', 'info'].includes(rule.labels?.severity ?? ''),
      `${name} severity`,
    );
    t.regex(rule.for ?? '', /^\d+[smh]$/, `${name} for`);
    for (const key of ['summary', 'description', 'runbook_url']) {
      t.true((rule.annotations?.[key] ?? '').trim().length > 0, `${name} annotation ${key}`);
    }
    // Absolute, so that Alertmanager and Grafana can link it; its base is set per cluster
    // (k8s/monitoring/runbook-url), its anchor is the alert's section of docs/runbook.md.
    const link = /^https:\/\/[^#\s]+\/docs\/runbook\.md#(.+)$/.exec(
      rule.annotations?.runbook_url ?? '',
    );
    t.truthy(link, `${name} runbook_url is an absolute link to docs/runbook.md`);
    t.is(link?.[1], name.toLowerCase(), `${name}: the anchor is its own section`);
    t.true(anchors.has(link?.[1] ?? ''), `${name}: docs/runbook.md has no anchor #${link?.[1]}`);
  }
  for (const rule of rules) {
    t.true((rule.record === undefined) !== (rule.alert === undefined), 'record or alert, not both');
    if (rule.record)
      t.regex(rule.record, /^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$/, 'level:metric:operations');
  }
  t.is(recordedNames.size, rules.length - alerts.length, 'recording rule names are unique');
});

const ALERT_NAMES = [
  'TokenguardAuthorizationServerErrors',
  'TokenguardCacheHitRatioCollapse',
  'TokenguardClientsBlocked',
  'TokenguardFishingSpike',
  'TokenguardHighLatencyP99',
  'TokenguardIntrospectionUnavailable',
  'TokenguardSharedStoreDown',
  'TokenguardUpstreamErrors',
];

// ---------------------------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------------------------

interface RuleTestFile {
  tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
}

test('promtool check rules accepts the rules, and rejects a broken one', async (t) => {
  const files = writeRuleFiles();
  t.teardown(() => rmSync(files.dir, { recursive: true, force: true }));
  const checked = await promtool(['check', 'rules', files.rules]);
  t.is(checked.code, 0, checked.output);
  t.regex(checked.output, new RegExp(`SUCCESS: ${rules.length} rules found`));

  const broken = writeRuleFiles({
    rulesYaml: repoFile('k8s/monitoring/prometheus-rule.yaml')
      .split('\nspec:\n')[1]!
      .replace('rate(tokenguard_requests_total[5m])', 'rate(tokenguard_requests_total[5m]'),
  });
  t.teardown(() => rmSync(broken.dir, { recursive: true, force: true }));
  const refused = await promtool(['check', 'rules', broken.rules]);
  t.not(refused.code, 0);
  t.regex(refused.output, /unclosed left parenthesis|parse error/);
});

test('every alert has promtool unit tests where it fires and where it stays silent', (t) => {
  const file = parseYaml(readFileSync(RULE_TESTS, 'utf8')) as RuleTestFile;
  const cases = file.tests.flatMap((group) => group.alert_rule_test ?? []);
  for (const name of ALERT_NAMES) {
    const mine = cases.filter((c) => c.alertname === name);
    t.true(
      mine.some((c) => c.exp_alerts.length > 0),
      `${name}: no case where it fires`,
    );
    t.true(
      mine.some((c) => c.exp_alerts.length === 0),
      `${name}: no case where it stays silent`,
    );
  }
});

test('promtool test rules: every alert fires when it should and stays silent otherwise', async (t) => {
  const files = writeRuleFiles();
  t.teardown(() => rmSync(files.dir, { recursive: true, force: true }));
  const result = await promtool(['test', 'rules', files.tests]);
  t.is(result.code, 0, result.output);
  t.regex(result.output, /SUCCESS/);

  // The tests can fail: a threshold moved by a factor of 100 breaks a firing case.
  const loosened = writeRuleFiles({
    rulesYaml: repoFile('k8s/monitoring/prometheus-rule.yaml')
      .split('\nspec:\n')[1]!
      .replace(
        'tokenguard:introspection_error_ratio:rate5m > 0.05',
        'tokenguard:introspection_error_ratio:rate5m > 5',
      ),
  });
  t.teardown(() => rmSync(loosened.dir, { recursive: true, force: true }));
  const failed = await promtool(['test', 'rules', loosened.tests]);
  t.not(failed.code, 0);
  t.regex(failed.output, /alertname: TokenguardAuthorizationServerErrors/);
});

// ---------------------------------------------------------------------------------------------
// A real Prometheus, two live gateways
// ---------------------------------------------------------------------------------------------

const NAMESPACE = 'tokenguard-test';
const JOB = 'orders-api-tokenguard-metrics';
const PODS = ['gateway-healthy', 'gateway-failing'];

/** What Grafana would send with the variables set to the test's gateways. */
function substituteGrafanaVariables(expr: string): string {
  return expr
    .replaceAll('$namespace', NAMESPACE)
    .replaceAll('$job', JOB)
    .replaceAll('$pod', PODS.join('|'))
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__range', '5m')
    .replaceAll('$__interval', '1s');
}

/**
 * An alert's expression with each comparison against a number made a `bool` comparison: it
 * returns a sample (0 or 1) whenever its operands have data, whatever the thresholds, so
 * "returns data" means "every series the alert reads exists and joins", not "it fires".
 */
function asBoolComparisons(expr: string): string {
  return expr.replace(/(==|!=|>=|<=|>|<)(?!\s*bool)(\s*)(?=[0-9.])/g, '$1 bool$2');
}

test('asBoolComparisons turns thresholds into bool comparisons and nothing else', (t) => {
  t.is(
    asBoolComparisons('a{x!="1", y=~"a|b"} > 1 and b / c > 0.05'),
    'a{x!="1", y=~"a|b"} > bool 1 and b / c > bool 0.05',
  );
  t.is(asBoolComparisons('max_over_time(up[5m]) == 0'), 'max_over_time(up[5m]) == bool 0');
  t.is(asBoolComparisons('x > bool 1'), 'x > bool 1');
});

/** Traffic that gives every series the dashboard and the rules read a sample. */
async function exerciseHealthy(harness: Harness): Promise<void> {
  const { url, adminUrl, as } = harness;
  const reader = as.issue({ scope: 'orders:read', sub: 'alice' });
  for (let i = 0; i < 3; i += 1) {
    await request(`${url}/api/orders/1`, { headers: { authorization: `Bearer ${reader}` } });
  }
  await request(`${url}/api/orders/1`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${reader}` },
  });
  await request(`${url}/api/any`);
  await request(`${url}/nowhere`);
  await request(`${url}/api/any`, { headers: { authorization: 'Bearer a b c' } });
  // max_failures is 3: the fourth guess is a block (429) and the blocked-clients gauge is 1.
  for (let i = 0; i < 5; i += 1) {
    await request(`${url}/api/any`, { headers: { authorization: `Bearer not-a-token-${i}` } });
  }
  await request(`${adminUrl}/admin/revoke`, {
    method: 'POST',
    headers: { authorization: `Bearer ${REVOKE}`, 'content-type': 'application/json' },
    body: JSON.stringify({ sub: 'alice' }),
  });
}

/** A gateway whose upstream is gone, whose Redis is gone, then whose AS goes down. */
async function exerciseFailing(harness: Harness): Promise<void> {
  const { url, as } = harness;
  const first = as.issue({ scope: 'orders:read' });
  await request(`${url}/api/orders/1`, { headers: { authorization: `Bearer ${first}` } });
  as.setFault('down');
  const second = as.issue({ scope: 'orders:read' });
  await request(`${url}/api/orders/1`, { headers: { authorization: `Bearer ${second}` } });
}

const REVOKE = 'monitoring-revoke-token-0123456789';

test('a real Prometheus scraping live gateways: every dashboard query, recording rule and alert returns data', async (t) => {
  t.timeout(180_000);
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const healthy = await startHarness({
    config: () => ({
      shared: { redis: { url: redis.url, key_prefix: 'monitoring:' } },
      admin: { host: '127.0.0.1', port: 0, revoke_token: REVOKE },
      fishing: { window_seconds: 60, max_failures: 3, block_seconds: 300 },
    }),
  });
  t.teardown(() => healthy.close());
  const [deadUpstream, deadRedis] = [await freePort(), await freePort()];
  const failing = await startHarness({
    config: () => ({
      shared: { redis: { url: `redis://127.0.0.1:${deadRedis}`, key_prefix: 'monitoring:' } },
      upstream: { url: `http://127.0.0.1:${deadUpstream}`, timeout_ms: 1000 },
    }),
  });
  t.teardown(() => failing.close());
  t.true(
    await eventuallyAsync(
      async () =>
        (await request(`${healthy.adminUrl}/metrics`)).body.includes(
          'tokenguard_shared_store_up 1',
        ),
      10_000,
    ),
    'the healthy gateway reached Redis',
  );

  const files = writeRuleFiles();
  t.teardown(() => rmSync(files.dir, { recursive: true, force: true }));
  const prometheus: Prometheus = await startPrometheus({
    job: JOB,
    ruleFile: files.rules,
    targets: [healthy, failing].map((harness, index) => ({
      address: new URL(harness.adminUrl).host,
      labels: { namespace: NAMESPACE, pod: PODS[index] as string },
    })),
  });
  t.teardown(() => prometheus.stop());

  // Both gateways are scraped before the traffic starts, so rate() sees it as increases.
  const targetHealth = async () => {
    const { activeTargets } = await prometheus.api<{
      activeTargets: { health: string; lastError: string }[];
    }>('targets');
    return activeTargets.map((target) => `${target.health} ${target.lastError}`.trim());
  };
  t.true(
    await eventuallyAsync(async () => (await targetHealth()).join() === 'up,up', 30_000),
    `targets: ${(await targetHealth()).join(', ')}`,
  );

  // Traffic between scrapes, so that rate() sees increases, twice over.
  for (let round = 0; round < 2; round += 1) {
    await exerciseHealthy(healthy);
    await exerciseFailing(failing);
    failing.as.setFault(null);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
  }

  const queries = [
    ...dashboardExpressions().map(({ where, expr }) => ({
      where,
      expr: substituteGrafanaVariables(expr),
    })),
    ...rules.map((rule) =>
      rule.record
        ? { where: `recording rule ${rule.record}`, expr: rule.record }
        : { where: `alert ${rule.alert}`, expr: asBoolComparisons(String(rule.expr)) },
    ),
  ];
  t.true(queries.length > 40, `only ${queries.length} queries`);
  const empty = new Map<string, string>();
  const everyQueryAnswers = async () => {
    empty.clear();
    for (const { where, expr } of queries) {
      const { result } = await prometheus.query(expr);
      if (result.length === 0) empty.set(where, expr);
    }
    return empty.size === 0;
  };
  t.true(
    await eventuallyAsync(everyQueryAnswers, 60_000),
    `no data:\n${[...empty].map(([where, expr]) => `${where}: ${expr}`).join('\n')}`,
  );

  // Self-check: a misspelt metric or a label value the gateway never uses returns nothing.
  t.deepEqual((await prometheus.query('rate(tokenguard_request_totl[1m])')).result, []);
  t.deepEqual(
    (await prometheus.query('tokenguard_requests_total{outcome="unavailabel"}')).result,
    [],
  );
  await t.throwsAsync(() => prometheus.query('rate(tokenguard_requests_total[1m]'));

  // Prometheus evaluated every rule without error.
  const loaded = await prometheus.api<{
    groups: { rules: { name: string; health: string; lastError?: string }[] }[];
  }>('rules');
  const evaluated = loaded.groups.flatMap((group) => group.rules);
  t.is(evaluated.length, rules.length);
  for (const rule of evaluated) t.is(rule.health, 'ok', `${rule.name}: ${rule.lastError}`);

  // The variables' own queries find the test's namespace, job and pods.
  for (const variable of dashboard.templating.list.filter((v) => v.type === 'query')) {
    const query = typeof variable.query === 'string' ? variable.query : variable.query?.query;
    const selector = grafanaVariablePromql(query ?? '');
    const label = /,\s*([a-zA-Z_]+)\s*\)$/.exec(query ?? '')?.[1];
    if (!selector || !label) continue;
    const { result } = await prometheus.query(substituteGrafanaVariables(selector));
    const values = new Set(result.map((series) => series.metric[label]));
    const wanted = { namespace: [NAMESPACE], job: [JOB], pod: PODS }[label] ?? [];
    for (const value of wanted) t.true(values.has(value), `$${variable.name} offers ${value}`);
  }

  // Everything PRODUCT.md lists is on the dashboard.
  const dashboardText = dashboardExpressions()
    .map(({ expr }) => expr)
    .join('\n');
  for (const family of [
    'tokenguard_requests_total',
    'tokenguard_request_duration_seconds',
    'tokenguard_introspection_requests_total',
    'tokenguard_introspection_duration_seconds',
    'tokenguard_cache_lookups_total',
    'tokenguard_cache_entries',
    'tokenguard_fishing_failures_total',
    'tokenguard_fishing_blocked_requests_total',
    'tokenguard_fishing_blocked_clients',
    'tokenguard_upstream_errors_total',
    'tokenguard_shared_store_up',
    'tokenguard_shared_store_errors_total',
    'tokenguard_revocations_total',
  ]) {
    t.true(dashboardText.includes(family), `${family} is used nowhere`);
  }
});
