/**
 * Reads a YAML config, interpolates `${ENV}` in scalars, validates it against the schema and
 * reports every problem as `PATH:line:col: key.path: message` — positions come from the
 * YAML source, so an operator can jump straight to the offending line of a ConfigMap.
 */
import { readFileSync } from 'node:fs';
import { isMap, isScalar, LineCounter, parseDocument, visit, type Document, type Node } from 'yaml';
import type { z } from 'zod';
import { reviewConfig, validSections, type ConfigFinding } from './review.js';
import { configSchema, type Config } from './schema.js';
import { keysAt, placesOfKey } from './schema-shape.js';
import { didYouMean } from './suggest.js';

export interface ConfigProblem {
  line: number;
  col: number;
  /** `routes[1].scopes[0]`, `yaml` for syntax errors, `<root>` for the document itself. */
  keyPath: string;
  message: string;
  /** A warning is printed by `check` and logged at start-up; anything else is an error. */
  severity?: 'warning';
  /**
   * The other place the problem is about (the earlier route of a shadowed one); `defaulted`
   * when the config does not write it (the schema's default applies).
   */
  related?: { keyPath: string; line: number; col: number; defaulted?: boolean };
}

export class ConfigError extends Error {
  readonly code = 'TOKENGUARD_CONFIG_INVALID';
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
  ) {
    super(problems.map((problem) => formatProblem(file, problem)).join('\n'));
    this.name = 'ConfigError';
  }
}

export const formatProblem = (file: string, problem: ConfigProblem): string => {
  const other = problem.related;
  const related = !other
    ? ''
    : other.defaulted
      ? ` (${other.keyPath} is not written: its default)`
      : ` (${other.keyPath} is at ${file}:${other.line}:${other.col})`;
  const severity = problem.severity === 'warning' ? 'warning: ' : '';
  return `${file}:${problem.line}:${problem.col}: ${problem.keyPath}: ${severity}${problem.message}${related}`;
};

type Env = Readonly<Record<string, string | undefined>>;

/** A validated config and where each of its keys is written. */
export interface ConfigSource {
  config: Config;
  /** Line and column of the node at `path` (or of its nearest written ancestor). */
  positionOf(path: (string | number)[]): { line: number; col: number };
  /** What `check` prints and start-up logs (insecure settings acknowledged, risky choices). */
  warnings: ConfigProblem[];
}

/** Reads and validates `file`; throws ConfigError listing every problem. */
export function loadConfigFile(file: string, env: Env = process.env): Config {
  return loadConfigSource(file, env).config;
}

/** As loadConfigFile, keeping the positions of the keys for later findings. */
export function loadConfigSource(file: string, env: Env = process.env): ConfigSource {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new ConfigError(file, [
      { line: 1, col: 1, keyPath: '<file>', message: `cannot read the config file (${reason})` },
    ]);
  }
  return parseConfigSource(text, file, env);
}

/** Validates config text; `file` only names it in messages. */
export function parseConfig(text: string, file: string, env: Env = process.env): Config {
  return parseConfigSource(text, file, env).config;
}

export function parseConfigSource(
  text: string,
  file: string,
  env: Env = process.env,
): ConfigSource {
  try {
    return validateConfigText(text, file, env);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    // Never a stack trace for a config: a bug here still names the file. The fuzz test in
    // test/property/config-loader.test.ts fails whenever this line is reached.
    throw new ConfigError(file, [
      {
        line: 1,
        col: 1,
        keyPath: '<file>',
        message: `could not be validated (${(error as Error).message}); please report this`,
      },
    ]);
  }
}

function validateConfigText(text: string, file: string, env: Env): ConfigSource {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const position = (offset: number | undefined): { line: number; col: number } =>
    offset === undefined ? { line: 1, col: 1 } : lineCounter.linePos(offset);

  const syntaxProblems = [...doc.errors, ...doc.warnings].map((error) => ({
    ...position(error.pos[0]),
    keyPath: 'yaml',
    message: error.message.split('\n')[0] ?? error.message,
  }));
  if (syntaxProblems.length > 0) throw new ConfigError(file, syntaxProblems);

  const structureProblems = collectionKeys(doc).map((node) => ({
    ...position(node.range?.[0]),
    keyPath: 'yaml',
    message: 'a key must be a plain word, not a list or mapping',
  }));
  const interpolationProblems = interpolateEnv(doc, env).map(({ node, message, keyPath }) => ({
    ...position(node.range?.[0]),
    keyPath,
    message,
  }));
  const early = [...structureProblems, ...interpolationProblems];
  if (early.length > 0) throw new ConfigError(file, early.sort(byPosition));

  let raw: unknown;
  try {
    raw = doc.toJS() ?? {};
  } catch (error) {
    // yaml refuses alias bombs (billion laughs) here.
    throw new ConfigError(file, [
      { line: 1, col: 1, keyPath: 'yaml', message: (error as Error).message.split('\n')[0] ?? '' },
    ]);
  }
  const positionOf = (path: (string | number)[]) => position(nearestNode(doc, path)?.range?.[0]);
  const result = configSchema.safeParse(raw);
  const problems = result.success
    ? []
    : result.error.issues.flatMap((issue) => describeIssue(doc, raw, issue, position));
  const findings = result.success
    ? reviewConfig(result.data)
    : reviewConfig(validSections(raw), false);
  const asProblem = (finding: ConfigFinding): ConfigProblem => ({
    ...positionOf(finding.path),
    keyPath: formatKeyPath(finding.path),
    message: finding.message,
    ...(finding.severity === 'warning' ? { severity: 'warning' as const } : {}),
    ...(finding.related
      ? {
          related: {
            keyPath: formatKeyPath(finding.related),
            ...positionOf(finding.related),
            ...(doc.hasIn(finding.related) ? {} : { defaulted: true }),
          },
        }
      : {}),
  });
  problems.push(...findings.filter((finding) => finding.severity === 'error').map(asProblem));
  if (!result.success || problems.length > 0) {
    throw new ConfigError(file, problems.sort(byPosition));
  }
  return {
    config: result.data,
    positionOf,
    warnings: findings
      .filter((finding) => finding.severity === 'warning')
      .map(asProblem)
      .sort(byPosition),
  };
}

const byPosition = (a: ConfigProblem, b: ConfigProblem) => a.line - b.line || a.col - b.col;

/** Keys that are collections (`? [a]`): JavaScript objects cannot hold them. */
function collectionKeys(doc: Document): Node[] {
  const keys: Node[] = [];
  visit(doc, {
    Pair(_key, pair) {
      if (pair.key !== null && !isScalar(pair.key)) keys.push(pair.key as Node);
    },
  });
  return keys;
}

const ENV_REFERENCE = /\$\$\{|\$\{([^}]*)\}|\$\{/g;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

interface InterpolationProblem {
  node: Node;
  keyPath: string;
  message: string;
}

/**
 * `${VAR}`, `${VAR:-default}` and `$${` (a literal `${`) in every value scalar, before the
 * value is typed: an unquoted `port: ${PORT}` becomes a number, a quoted one stays a string.
 */
function interpolateEnv(doc: Document, env: Env): InterpolationProblem[] {
  const problems: InterpolationProblem[] = [];
  visit(doc, {
    Scalar(key, node, path) {
      if (key === 'key' || typeof node.value !== 'string' || !node.value.includes('$')) return;
      const keyPath = formatKeyPath(nodePath(path, node));
      const source = node.value;
      let failed = false;
      const replaced = source.replace(ENV_REFERENCE, (match: string, body: string | undefined) => {
        if (match === '$${') return '${';
        if (body === undefined) {
          failed = true;
          problems.push({ node, keyPath, message: 'unterminated ${ (write $${ for a literal ${)' });
          return match;
        }
        const separator = body.indexOf(':-');
        const name = separator === -1 ? body : body.slice(0, separator);
        if (!ENV_NAME.test(name)) {
          failed = true;
          problems.push({
            node,
            keyPath,
            message: `\${${body}} is not a valid variable reference`,
          });
          return match;
        }
        const value = env[name];
        if (value !== undefined) return value;
        if (separator !== -1) return body.slice(separator + 2);
        failed = true;
        problems.push({ node, keyPath, message: `environment variable ${name} is not set` });
        return match;
      });
      if (failed || replaced === source) return;
      node.value = node.type === 'PLAIN' ? retype(replaced) : replaced;
    },
  });
  return problems;
}

const YAML_CORE_SCALAR =
  /^(?:[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|true|false|True|False|TRUE|FALSE|null|Null|NULL|~)$/;

/** Types an interpolated plain scalar as the YAML 1.2 core schema would have. */
function retype(value: string): unknown {
  if (!YAML_CORE_SCALAR.test(value)) return value;
  if (/^(?:null|Null|NULL|~)$/.test(value)) return null;
  if (/^(?:true|True|TRUE)$/.test(value)) return true;
  if (/^(?:false|False|FALSE)$/.test(value)) return false;
  return Number(value);
}

/** The key path of `node` given the ancestors `visit` hands over. */
function nodePath(ancestors: readonly unknown[], node: unknown): (string | number)[] {
  const keys: (string | number)[] = [];
  const chain = [...ancestors, node];
  for (let index = 1; index < chain.length; index += 1) {
    const parent = chain[index - 1];
    const child = chain[index];
    if (parent && typeof parent === 'object' && 'items' in parent && Array.isArray(parent.items)) {
      const position = parent.items.indexOf(child);
      if (position !== -1 && !isMap(parent)) keys.push(position);
    }
    if (parent && typeof parent === 'object' && 'key' in parent && 'value' in parent) {
      const pairKey = (parent as { key: unknown }).key;
      if (isScalar(pairKey)) keys.push(String(pairKey.value));
    }
  }
  return keys;
}

/** A key that would not read as one word in a key path (empty, blanks, `.`, `[`) is quoted. */
const PLAIN_KEY = /^[^\s.[\]"]+$/;

export function formatKeyPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '<root>';
  return path
    .map((key, index) => {
      if (typeof key === 'number') return `[${key}]`;
      const name = String(key);
      return `${index === 0 ? '' : '.'}${PLAIN_KEY.test(name) ? name : JSON.stringify(name)}`;
    })
    .join('');
}

function describeIssue(
  doc: Document,
  raw: unknown,
  issue: z.core.$ZodIssue,
  position: (offset: number | undefined) => { line: number; col: number },
  prefix: readonly (string | number)[] = [],
): ConfigProblem[] {
  const path = [...prefix, ...issue.path].filter(
    (key): key is string | number => typeof key !== 'symbol',
  );
  if (issue.code === 'unrecognized_keys') {
    const parent = doc.getIn(path, true);
    const known = keysAt(path) ?? [];
    const present = new Set(issue.keys);
    return issue.keys.map((key) => {
      const pair = isMap(parent)
        ? parent.items.find((item) => isScalar(item.key) && item.key.value === key)
        : undefined;
      const keyNode = pair?.key as Node | undefined;
      return {
        ...position(keyNode?.range?.[0] ?? nearestNode(doc, path)?.range?.[0]),
        keyPath: formatKeyPath([...path, key]),
        message: `unknown key${unknownKeyHint(key, path, known, present, raw)}`,
      };
    });
  }
  if (issue.code === 'invalid_union') {
    // The option whose own type matched (a list given where a string or a list is allowed)
    // says what is wrong inside it; otherwise the value's type matched no option.
    const matched = issue.errors.filter(
      (errors) => !errors.some((error) => error.code === 'invalid_type' && error.path.length === 0),
    );
    const [only] = matched;
    if (matched.length === 1 && only) {
      return only.flatMap((error) => describeIssue(doc, raw, error, position, path));
    }
  }
  return [
    {
      ...position(nearestNode(doc, path)?.range?.[0]),
      keyPath: formatKeyPath(path),
      message: issueMessage(raw, issue, path),
    },
  ];
}

/** "; did you mean `scopes`?", or where a key of that name belongs. */
function unknownKeyHint(
  key: string,
  path: (string | number)[],
  known: readonly string[],
  present: ReadonlySet<string>,
  raw: unknown,
): string {
  const siblings = valueAt(raw, path);
  const written =
    siblings !== null && typeof siblings === 'object' ? new Set(Object.keys(siblings)) : present;
  const hint = didYouMean(
    key,
    known.filter((candidate) => !written.has(candidate)),
  );
  if (hint !== '') return hint;
  const here = path.filter((part) => typeof part === 'string').join('.');
  const elsewhere = placesOfKey(key).filter(
    (place) => place.replace(/\[\]/g, '') !== (here === '' ? key : `${here}.${key}`),
  );
  return elsewhere.length > 0
    ? `; \`${key}\` belongs under ${elsewhere.map((place) => `\`${place.slice(0, place.lastIndexOf('.')) || '<root>'}\``).join(' or ')}`
    : '';
}

/** The value at `path` in the parsed document (undefined when absent). */
function valueAt(raw: unknown, path: readonly (string | number)[]): unknown {
  let current = raw;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    if (!Object.hasOwn(current, key)) return undefined;
    current = (current as Record<string | number, unknown>)[key];
  }
  return current;
}

/** The node at `path`, or its nearest ancestor that exists (a missing key points at its map). */
function nearestNode(doc: Document, path: (string | number)[]): Node | undefined {
  for (let length = path.length; length > 0; length -= 1) {
    const node = doc.getIn(path.slice(0, length), true) as Node | undefined;
    if (node && typeof node === 'object' && 'range' in node) return node;
  }
  return (doc.contents as Node | null) ?? undefined;
}

const EXPECTED: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  object: 'a mapping',
  record: 'a mapping',
  array: 'a list',
};

/** What was written, in words; never the text itself (it may be a secret). */
function describeValue(value: unknown, expected: string): string {
  if (value === null) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  if (value instanceof Uint8Array) return 'binary data';
  if (value instanceof Date) return 'a date';
  switch (typeof value) {
    case 'number':
      return expected === 'int' && Number.isFinite(value) ? String(value) : 'a number';
    case 'boolean':
      return `${String(value)} (a boolean)`;
    case 'object':
      return 'a mapping';
    case 'string':
      return 'a string';
    default:
      return typeof value;
  }
}

function issueMessage(raw: unknown, issue: z.core.$ZodIssue, path: (string | number)[]): string {
  switch (issue.code) {
    case 'invalid_type': {
      const actual = valueAt(raw, path);
      const parent = valueAt(raw, path.slice(0, -1));
      const present =
        path.length === 0 ||
        (parent !== null &&
          typeof parent === 'object' &&
          Object.hasOwn(parent, path.at(-1) as PropertyKey));
      if (!present) return 'is required';
      const expected = EXPECTED[issue.expected] ?? `a ${issue.expected}`;
      if (actual === null) return `is empty; it must be ${expected}`;
      return `must be ${expected}, got ${describeValue(actual, issue.expected)}`;
    }
    case 'invalid_value': {
      const actual = valueAt(raw, path);
      const choices = issue.values.map((value) => JSON.stringify(value)).join(', ');
      const hint =
        typeof actual === 'string'
          ? didYouMean(
              actual,
              issue.values.filter((value): value is string => typeof value === 'string'),
            )
          : '';
      return `must be one of ${choices}${hint}`;
    }
    case 'too_small':
      if (issue.origin === 'array') {
        return issue.minimum === 1
          ? 'must not be empty'
          : `must have at least ${String(issue.minimum)} items`;
      }
      if (issue.origin === 'string') {
        return issue.minimum === 1
          ? 'must not be empty'
          : `must be at least ${String(issue.minimum)} characters`;
      }
      if (!issue.inclusive && issue.minimum === 0) return 'must be greater than 0';
      return `must be ${issue.inclusive ? 'at least' : 'greater than'} ${String(issue.minimum)}`;
    case 'too_big':
      if (issue.origin === 'array') return `must have at most ${String(issue.maximum)} items`;
      if (issue.origin === 'string') return `must be at most ${String(issue.maximum)} characters`;
      return `must be ${issue.inclusive ? 'at most' : 'less than'} ${String(issue.maximum)}`;
    case 'invalid_union': {
      const expected = [
        ...new Set(
          issue.errors.flatMap((errors) =>
            errors
              .filter((error) => error.code === 'invalid_type' && error.path.length === 0)
              .map((error) =>
                error.code === 'invalid_type' ? EXPECTED[error.expected] : undefined,
              )
              .filter((name): name is string => name !== undefined),
          ),
        ),
      ];
      const actual = valueAt(raw, path);
      return expected.length > 0
        ? `must be ${expected.join(' or ')}, got ${describeValue(actual, '')}`
        : 'has the wrong type or form';
    }
    case 'invalid_key':
      return issue.issues[0]?.message ?? 'is not an acceptable key';
    default:
      return issue.message;
  }
}
