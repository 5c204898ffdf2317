/**
 * The dashboard and the alerts must only name metrics the gateway really exports: a renamed
 * metric would otherwise leave a panel empty and an alert silent, with nothing failing. This
 * test extracts every metric name from every PromQL expression of
 * k8s/monitoring/grafana-dashboard.json and k8s/monitoring/prometheus-rule.yaml, scrapes the
 * /metrics of a real gateway, and fails on any name the scrape does not have. It also checks
 * the label values used in selectors against the bounded sets of src/metrics/metrics.ts, and
 * that every alert carries a severity, a summary, a description and a runbook anchor that
 * exists in docs/runbook.md.
 */
import { readFileSync } from 'node:fs';
import test from 'ava';
import { parse as parseYaml } from 'yaml';
import {
  CACHE_RESULTS,
  FISHING_REASONS,
  INTROSPECTION_RESULTS,
  OUTCOMES,
  REVOKED_BY,
  UPSTREAM_ERROR_KINDS,
} from '../src/metrics/metrics.js';
import { SHARED_OPS } from '../src/shared/store.js';
import { startRedis } from './_fleet.js';
import { eventuallyAsync, request, startHarness } from './_harness.js';

const repoFile = (path: string) => readFileSync(new URL(`../${path}`, import.meta.url), 'utf8');

// ---------------------------------------------------------------------------------------------
// PromQL metric-name extractor
// ---------------------------------------------------------------------------------------------

/** Aggregation operators: keywords, case-insensitive, never metric names. */
const AGGREGATIONS = new Set([
  'sum',
  'min',
  'max',
  'avg',
  'group',
  'stddev',
  'stdvar',
  'count',
  'count_values',
  'bottomk',
  'topk',
  'quantile',
  'limitk',
  'limit_ratio',
]);

/** PromQL functions (Prometheus 3.x); `start`/`end` are the `@` modifier's preprocessors. */
const FUNCTIONS = new Set([
  'abs',
  'absent',
  'absent_over_time',
  'acos',
  'acosh',
  'asin',
  'asinh',
  'atan',
  'atanh',
  'avg_over_time',
  'ceil',
  'changes',
  'clamp',
  'clamp_max',
  'clamp_min',
  'cos',
  'cosh',
  'count_over_time',
  'day_of_month',
  'day_of_week',
  'day_of_year',
  'days_in_month',
  'deg',
  'delta',
  'deriv',
  'double_exponential_smoothing',
  'end',
  'exp',
  'floor',
  'histogram_avg',
  'histogram_count',
  'histogram_fraction',
  'histogram_quantile',
  'histogram_stddev',
  'histogram_stdvar',
  'histogram_sum',
  'holt_winters',
  'hour',
  'idelta',
  'increase',
  'info',
  'irate',
  'label_join',
  'label_replace',
  'last_over_time',
  'ln',
  'log10',
  'log2',
  'mad_over_time',
  'max_over_time',
  'min_over_time',
  'minute',
  'month',
  'pi',
  'predict_linear',
  'present_over_time',
  'quantile_over_time',
  'rad',
  'rate',
  'resets',
  'round',
  'scalar',
  'sgn',
  'sin',
  'sinh',
  'sort',
  'sort_by_label',
  'sort_by_label_desc',
  'sort_desc',
  'sqrt',
  'start',
  'stddev_over_time',
  'stdvar_over_time',
  'sum_over_time',
  'tan',
  'tanh',
  'time',
  'timestamp',
  'vector',
  'year',
]);

/** Keywords whose parenthesised list that follows holds label names. */
const GROUPING_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
/** Binary set operators and modifiers; `inf`/`nan` are number literals. */
const OTHER_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'atan2', 'inf', 'nan']);

type TokenKind = 'ident' | 'string' | 'number' | 'variable' | 'punct';
interface Token {
  kind: TokenKind;
  text: string;
  /** The unescaped content of a string literal. */
  value?: string;
}

interface LabelMatcher {
  /** The metric the selector belongs to, if written before `{`. */
  metric: string | undefined;
  label: string;
  op: string;
  value: string;
}

interface PromqlAnalysis {
  metrics: Set<string>;
  functions: Set<string>;
  matchers: LabelMatcher[];
  /** Syntax problems found on the way: unbalanced brackets, unknown functions, … */
  problems: string[];
}

const IDENT = /[a-zA-Z_:][a-zA-Z0-9_:]*/y;
// A number, a duration (`5m`, `1h30m`, `250ms`) or a hexadecimal literal.
const NUMBER =
  /(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)/y;
// Grafana variables: $name, $__rate_interval, ${name}, ${name:format}.
const VARIABLE = /\$(?:\{[^}]*\}|[a-zA-Z_][a-zA-Z0-9_]*)/y;
const PUNCT = /==|!=|=~|!~|<=|>=|[(){}[\],<>=+\-*/%^@]/y;

/** The tokens of `expr`; a character no token accepts is reported and skipped. */
function lex(expr: string, problems: string[]): Token[] {
  const tokens: Token[] = [];
  let offset = 0;
  while (offset < expr.length) {
    const step = lexOne(expr, offset, problems);
    if (step === undefined) break;
    if (step.token) tokens.push(step.token);
    if (step.next > offset) {
      offset = step.next;
    } else {
      problems.push(
        `unexpected character ${JSON.stringify(expr.charAt(offset))} at offset ${offset}`,
      );
      offset += 1;
    }
  }
  return tokens;
}

/** One token (or skipped whitespace/comment) at `offset`; undefined after a fatal problem. */
function lexOne(
  expr: string,
  offset: number,
  problems: string[],
): { token?: Token; next: number } | undefined {
  const c = expr.charAt(offset);
  if (/\s/.test(c)) return { next: offset + 1 };
  if (c === '#') {
    const end = expr.indexOf('\n', offset);
    return { next: end === -1 ? expr.length : end };
  }
  if (c === '"' || c === "'" || c === '`') {
    let j = offset + 1;
    let value = '';
    while (j < expr.length && expr.charAt(j) !== c) {
      if (c !== '`' && expr.charAt(j) === '\\' && j + 1 < expr.length) {
        value += expr.charAt(j + 1);
        j += 2;
      } else {
        value += expr.charAt(j);
        j += 1;
      }
    }
    if (j >= expr.length) {
      problems.push(`unterminated string starting at offset ${offset}`);
      return undefined;
    }
    return { token: { kind: 'string', text: expr.slice(offset, j + 1), value }, next: j + 1 };
  }
  for (const [kind, re] of [
    ['variable', VARIABLE],
    ['number', NUMBER],
    ['ident', IDENT],
    ['punct', PUNCT],
  ] as const) {
    re.lastIndex = offset;
    const match = re.exec(expr);
    if (match) return { token: { kind, text: match[0] }, next: offset + match[0].length };
  }
  return { next: offset };
}

const CLOSERS: Record<string, string> = { ')': '(', '}': '{', ']': '[' };

/**
 * Metric names, functions and label matchers of one PromQL expression. A bracket stack
 * tells what an identifier is: inside `{…}` a label name, inside `[…]` part of a range or
 * subquery, inside the `(…)` after by/without/on/ignoring/group_left/group_right a label
 * name; elsewhere an aggregation, a keyword, a function when `(` follows, else a metric.
 * Strings, numbers, durations and Grafana variables are tokens of their own, so nothing in
 * them is ever mistaken for a name.
 */
function analysePromql(expr: string): PromqlAnalysis {
  const problems: string[] = [];
  const metrics = new Set<string>();
  const functions = new Set<string>();
  const matchers: LabelMatcher[] = [];
  if (expr.trim() === '') problems.push('empty expression');
  const tokens = lex(expr, problems);
  if (tokens.length === 0 && expr.trim() !== '') problems.push('no PromQL token');

  type Frame = { open: string; labels: boolean; metric: string | undefined };
  const stack: Frame[] = [];
  let selectorMetric: string | undefined;
  for (let k = 0; k < tokens.length; k += 1) {
    const token = tokens[k] as Token;
    const previous = tokens[k - 1];
    const next = tokens[k + 1];
    const frame = stack[stack.length - 1];
    if (
      token.kind === 'punct' &&
      (token.text === '(' || token.text === '{' || token.text === '[')
    ) {
      const labels =
        token.text === '(' &&
        previous?.kind === 'ident' &&
        GROUPING_KEYWORDS.has(previous.text.toLowerCase());
      stack.push({
        open: token.text,
        labels,
        metric: token.text === '{' ? selectorMetric : undefined,
      });
      selectorMetric = undefined;
      continue;
    }
    selectorMetric = undefined;
    if (token.kind === 'punct' && CLOSERS[token.text] !== undefined) {
      const top = stack.pop();
      if (top?.open !== CLOSERS[token.text]) {
        problems.push(`unbalanced ${JSON.stringify(token.text)} at token ${k}`);
        if (top) stack.push(top);
      }
      continue;
    }
    if (token.kind !== 'ident') continue;

    if (frame?.open === '[' || frame?.labels) continue;
    if (frame?.open === '{') {
      const op = next?.kind === 'punct' ? next.text : undefined;
      const valueToken = tokens[k + 2];
      if (op && ['=', '!=', '=~', '!~'].includes(op) && valueToken?.kind === 'string') {
        const value = valueToken.value ?? '';
        if (token.text === '__name__' && op === '=') metrics.add(value);
        else matchers.push({ metric: frame.metric, label: token.text, op, value });
        k += 2;
      } else {
        problems.push(`label matcher ${JSON.stringify(token.text)} without operator and string`);
      }
      continue;
    }
    const word = token.text.toLowerCase();
    const followedByParen = next?.kind === 'punct' && next.text === '(';
    if (GROUPING_KEYWORDS.has(word) || OTHER_KEYWORDS.has(word)) continue;
    if (AGGREGATIONS.has(word)) {
      functions.add(word);
      continue;
    }
    if (followedByParen) {
      if (FUNCTIONS.has(token.text)) functions.add(token.text);
      else problems.push(`unknown function ${JSON.stringify(token.text)}`);
      continue;
    }
    metrics.add(token.text);
    if (next?.kind === 'punct' && next.text === '{') selectorMetric = token.text;
  }
  for (const frame of stack) problems.push(`unclosed ${JSON.stringify(frame.open)}`);
  return { metrics, functions, matchers, problems };
}

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

function ruleExpressions(): Expression[] {
  return rules.map((rule) => ({
    where: rule.alert ? `alert ${rule.alert}` : `recording rule ${rule.record}`,
    expr: typeof rule.expr === 'string' ? rule.expr : '',
  }));
}

// ---------------------------------------------------------------------------------------------
// The Prometheus text exposition
// ---------------------------------------------------------------------------------------------

interface Scrape {
  /** `# TYPE` declarations: metric family name → type. */
  types: Map<string, string>;
  /** Every series name a sample line carries (`…_bucket`, `…_sum`, `…_count` included). */
  samples: Set<string>;
}

function parseExposition(text: string): Scrape {
  const types = new Map<string, string>();
  const samples = new Set<string>();
  for (const line of text.split('\n')) {
    const typeLine = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)\s*$/.exec(line);
    if (typeLine) {
      types.set(typeLine[1] as string, typeLine[2] as string);
      continue;
    }
    if (line.startsWith('#') || line.trim() === '') continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+\S+/.exec(line);
    if (sample) samples.add(sample[1] as string);
  }
  return { types, samples };
}

const SERIES_SUFFIXES: Record<string, readonly string[]> = {
  histogram: ['_bucket', '_sum', '_count'],
  summary: ['_sum', '_count'],
};

/**
 * Whether PromQL can select `name` from this scrape: a series a sample carries, a declared
 * counter or gauge (a labelled one has no sample before its first increment), or the
 * _bucket/_sum/_count series of a declared histogram (none before its first observation).
 * A histogram's bare family name selects nothing and is refused.
 */
function resolveMetric(name: string, scrape: Scrape): { base: string; exists: boolean } {
  for (const [type, suffixes] of Object.entries(SERIES_SUFFIXES)) {
    for (const suffix of suffixes) {
      const base = name.slice(0, -suffix.length);
      if (name.endsWith(suffix) && scrape.types.get(base) === type) return { base, exists: true };
    }
  }
  const type = scrape.types.get(name);
  const declaredSeries = type !== undefined && SERIES_SUFFIXES[type] === undefined;
  return { base: name, exists: scrape.samples.has(name) || declaredSeries };
}

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

/** The bounded label values of src/metrics/metrics.ts, by metric family and label. */
const LABEL_VALUES: Record<string, Record<string, readonly string[]>> = {
  tokenguard_requests_total: { outcome: OUTCOMES },
  tokenguard_request_duration_seconds: { outcome: OUTCOMES },
  tokenguard_introspection_requests_total: { result: INTROSPECTION_RESULTS },
  tokenguard_introspection_duration_seconds: { result: INTROSPECTION_RESULTS },
  tokenguard_cache_lookups_total: { result: CACHE_RESULTS },
  tokenguard_fishing_failures_total: { reason: FISHING_REASONS },
  tokenguard_upstream_errors_total: { kind: UPSTREAM_ERROR_KINDS },
  tokenguard_shared_store_errors_total: { op: SHARED_OPS },
  tokenguard_shared_store_duration_seconds: { op: SHARED_OPS },
  tokenguard_revocations_total: { by: REVOKED_BY },
  // Recording rules keep the labels they aggregate by.
  'tokenguard:requests:rate5m': { outcome: OUTCOMES },
};

const stripSeriesSuffix = (name: string) => name.replace(/_(?:bucket|sum|count)$/, '');

/** Values a matcher names: the string for = and !=, the alternatives of a plain a|b|c regex. */
function matchedValues(matcher: LabelMatcher): string[] | undefined {
  if (matcher.op === '=' || matcher.op === '!=') return [matcher.value];
  if (/^[a-zA-Z0-9_]+(?:\|[a-zA-Z0-9_]+)*$/.test(matcher.value)) return matcher.value.split('|');
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const EXTRACTOR_CASES: [string, string[]][] = [
  [
    'sum by (outcome) (rate(tokenguard_requests_total{route="x", outcome!~"a|b"}[$__rate_interval]))',
    ['tokenguard_requests_total'],
  ],
  [
    'histogram_quantile(0.99, sum by (le) (rate(foo_seconds_bucket{pod=~"${pod:regex}"}[5m])))',
    ['foo_seconds_bucket'],
  ],
  ['sum(rate(a_total[1h30m])) by (job) / on (job) group_left (pod) b offset 5m', ['a_total', 'b']],
  ['label_replace(up, "dst", "not_a_metric $1", "src", "(.*)")', ['up']],
  ['{__name__="from_name_label", job="x"}', ['from_name_label']],
  ['count_values("version", build_info)', ['build_info']],
  ['max_over_time(rate(x_total[5m])[1h:1m])', ['x_total']],
  ['sum(x) without (instance) > bool 0 and y unless z # rate(in_a_comment[5m])', ['x', 'y', 'z']],
  ['tokenguard:requests:rate5m{outcome="unavailable"} @ start()', ['tokenguard:requests:rate5m']],
  ['-x * 2e3 + 0x1f - Inf + NaN + .5', ['x']],
  ['SUM BY (le) (x)', ['x']],
  ['topk($limit, sum by (route) (rate(w[$__range])))', ['w']],
];

for (const [expr, expected] of EXTRACTOR_CASES) {
  test(`extractor: ${expr}`, (t) => {
    const analysis = analysePromql(expr);
    t.deepEqual(analysis.problems, []);
    t.deepEqual([...analysis.metrics].sort(), [...expected].sort());
  });
}

const BROKEN_EXPRESSIONS: [string, RegExp][] = [
  ['', /empty expression/],
  ['rate(x[5m]', /unclosed "\("/],
  ['sum(x{a="b"}))', /unbalanced "\)"/],
  ['rate(x[5m)]', /unbalanced/],
  ['rat(x[5m])', /unknown function "rat"/],
  ['sum(x{a="b})', /unterminated string/],
  ['x{job}', /label matcher "job" without operator/],
  ['x ; y', /unexpected character ";"/],
];

for (const [expr, problem] of BROKEN_EXPRESSIONS) {
  test(`extractor reports a broken expression: ${JSON.stringify(expr)}`, (t) => {
    const { problems } = analysePromql(expr);
    t.true(
      problems.some((p) => problem.test(p)),
      `expected ${problem} among ${JSON.stringify(problems)}`,
    );
  });
}

test('Grafana variable queries are reduced to their PromQL', (t) => {
  t.is(
    grafanaVariablePromql('label_values(tokenguard_requests_total{namespace=~"$namespace"}, pod)'),
    'tokenguard_requests_total{namespace=~"$namespace"}',
  );
  t.is(grafanaVariablePromql('query_result(topk(5, x))'), 'topk(5, x)');
  t.is(grafanaVariablePromql('label_values(namespace)'), undefined);
});

test('every dashboard and rule expression is non-empty and balanced, with known functions', (t) => {
  const expressions = [...dashboardExpressions(), ...ruleExpressions()];
  t.true(expressions.length > 30, `only ${expressions.length} expressions found`);
  for (const { where, expr } of expressions) {
    const { problems, metrics } = analysePromql(expr);
    t.deepEqual(problems, [], `${where}: ${expr}`);
    t.true(metrics.size > 0, `${where} names no metric: ${expr}`);
  }
});

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
    const recorded = [...analysePromql(expr).metrics].filter((name) => recordedNames.has(name));
    t.deepEqual(recorded, [], where);
  }
});

test('the PrometheusRule carries the alerts of the issue, each fully annotated', (t) => {
  t.is(ruleFile.apiVersion, 'monitoring.coreos.com/v1');
  t.is(ruleFile.kind, 'PrometheusRule');
  t.is(ruleFile.metadata.name, 'tokenguard');
  t.is(ruleFile.metadata.labels?.['app.kubernetes.io/name'], 'tokenguard');
  t.deepEqual(alerts.map((rule) => rule.alert).sort(), [
    'TokenguardAuthorizationServerErrors',
    'TokenguardCacheHitRatioCollapse',
    'TokenguardClientsBlocked',
    'TokenguardFishingSpike',
    'TokenguardHighLatencyP99',
    'TokenguardIntrospectionUnavailable',
    'TokenguardSharedStoreDown',
    'TokenguardUpstreamErrors',
  ]);
  const anchors = markdownAnchors(runbook);
  for (const rule of alerts) {
    const name = rule.alert as string;
    t.true(
      ['critical', 'warning', 'info'].includes(rule.labels?.severity ?? ''),
      `${name} severity`,
    );
    t.regex(rule.for ?? '', /^\d+[smh]$/, `${name} for`);
    for (const key of ['summary', 'description', 'runbook']) {
      t.true((rule.annotations?.[key] ?? '').trim().length > 0, `${name} annotation ${key}`);
    }
    const link = /^docs\/runbook\.md#(.+)$/.exec(rule.annotations?.runbook ?? '');
    t.truthy(link, `${name} runbook points into docs/runbook.md`);
    t.true(anchors.has(link?.[1] ?? ''), `${name}: docs/runbook.md has no anchor #${link?.[1]}`);
  }
  for (const rule of rules) {
    t.true((rule.record === undefined) !== (rule.alert === undefined), 'record or alert, not both');
    if (rule.record)
      t.regex(rule.record, /^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$/, 'level:metric:operations');
  }
  t.is(recordedNames.size, rules.length - alerts.length, 'recording rule names are unique');
});

test('selector label values are the bounded values of src/metrics/metrics.ts', (t) => {
  for (const { where, expr } of [...dashboardExpressions(), ...ruleExpressions()]) {
    for (const matcher of analysePromql(expr).matchers) {
      if (matcher.metric === undefined) continue;
      const family = recordedNames.has(matcher.metric)
        ? matcher.metric
        : stripSeriesSuffix(matcher.metric);
      const allowed = LABEL_VALUES[family]?.[matcher.label];
      const values = matchedValues(matcher);
      if (!allowed || !values) continue;
      for (const value of values) {
        t.true(
          allowed.includes(value),
          `${where}: ${matcher.label}="${value}" is not one of ${allowed.join(', ')}`,
        );
      }
    }
  }
});

test('every metric the dashboard and the rules name exists in a live gateway scrape', async (t) => {
  // Fleet mode, with a real Redis: its series exist only then.
  const redis = await startRedis();
  const harness = await startHarness({
    config: () => ({ shared: { redis: { url: redis.url, key_prefix: 'monitoring:' } } }),
  });
  t.teardown(async () => {
    await harness.close();
    await redis.stop();
  });
  const { url, adminUrl, as } = harness;
  t.true(
    await eventuallyAsync(
      async () =>
        (await request(`${adminUrl}/metrics`)).body.includes('tokenguard_shared_store_up 1'),
      10_000,
    ),
    'the gateway reached Redis',
  );

  // Observe something in each labelled family so its series exist, not just its TYPE line.
  t.is((await request(`${url}/api/any`)).status, 401);
  const bogus = await request(`${url}/api/any`, {
    headers: { authorization: 'Bearer not-a-real-token' },
  });
  t.is(bogus.status, 401);
  const token = as.issue({ scope: 'orders:read' });
  const forwarded = await request(`${url}/api/orders/1`, {
    headers: { authorization: `Bearer ${token}` },
  });
  t.is(forwarded.status, 200);

  const response = await request(`${adminUrl}/metrics`);
  t.is(response.status, 200);
  const scrape = parseExposition(response.body);
  t.is(scrape.types.get('tokenguard_request_duration_seconds'), 'histogram');
  t.true(scrape.samples.has('tokenguard_request_duration_seconds_bucket'));
  t.true(scrape.samples.has('tokenguard_introspection_duration_seconds_bucket'));

  // Self-check: a misspelt metric must be caught, or this test could never fail.
  const misspelt = [...analysePromql('rate(tokenguard_request_totl[5m])').metrics];
  t.deepEqual(misspelt, ['tokenguard_request_totl']);
  t.false(resolveMetric('tokenguard_request_totl', scrape).exists);
  t.false(
    resolveMetric('tokenguard_request_duration_seconds', scrape).exists,
    'bare histogram name',
  );
  t.false(resolveMetric('tokenguard_requests_total_bucket', scrape).exists, 'counter _bucket');
  t.true(resolveMetric('tokenguard_request_duration_seconds_count', scrape).exists);

  const used = new Map<string, Set<string>>();
  for (const { where, expr } of [...dashboardExpressions(), ...ruleExpressions()]) {
    for (const name of analysePromql(expr).metrics) {
      if (recordedNames.has(name)) continue;
      const { base, exists } = resolveMetric(name, scrape);
      t.true(exists, `${where} uses ${name}, which the gateway does not export`);
      used.set(base, (used.get(base) ?? new Set()).add(where));
    }
  }
  // Everything PRODUCT.md lists is on the dashboard.
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
    t.true(used.has(family), `${family} is used nowhere`);
  }
});
