/**
 * Reads a YAML config, interpolates `${ENV}` in scalars, validates it against the schema and
 * reports every problem as `PATH:line:col: key.path: message` — positions come from the
 * YAML source, so an operator can jump straight to the offending line of a ConfigMap.
 */
import { readFileSync } from 'node:fs';
import { isMap, isScalar, LineCounter, parseDocument, visit, type Document, type Node } from 'yaml';
import type { z } from 'zod';
import { configSchema, type Config } from './schema.js';

export interface ConfigProblem {
  line: number;
  col: number;
  /** `routes[1].scopes[0]`, `yaml` for syntax errors, `<root>` for the document itself. */
  keyPath: string;
  message: string;
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

export const formatProblem = (file: string, problem: ConfigProblem): string =>
  `${file}:${problem.line}:${problem.col}: ${problem.keyPath}: ${problem.message}`;

type Env = Readonly<Record<string, string | undefined>>;

/** A validated config and where each of its keys is written. */
export interface ConfigSource {
  config: Config;
  /** Line and column of the node at `path` (or of its nearest written ancestor). */
  positionOf(path: (string | number)[]): { line: number; col: number };
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

  const interpolationProblems = interpolateEnv(doc, env).map(({ node, message, keyPath }) => ({
    ...position(node.range?.[0]),
    keyPath,
    message,
  }));
  if (interpolationProblems.length > 0) throw new ConfigError(file, interpolationProblems);

  const result = configSchema.safeParse(doc.toJS() ?? {});
  if (result.success) {
    return {
      config: result.data,
      positionOf: (path) => position(nearestNode(doc, path)?.range?.[0]),
    };
  }
  const problems = result.error.issues.flatMap((issue) => describeIssue(doc, issue, position));
  throw new ConfigError(
    file,
    problems.sort((a, b) => a.line - b.line || a.col - b.col),
  );
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

export function formatKeyPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '<root>';
  return path
    .map((key, index) =>
      typeof key === 'number' ? `[${key}]` : `${index === 0 ? '' : '.'}${String(key)}`,
    )
    .join('');
}

function describeIssue(
  doc: Document,
  issue: z.core.$ZodIssue,
  position: (offset: number | undefined) => { line: number; col: number },
): ConfigProblem[] {
  const path = issue.path.filter((key): key is string | number => typeof key !== 'symbol');
  if (issue.code === 'unrecognized_keys') {
    const parent = doc.getIn(path, true);
    return issue.keys.map((key) => {
      const pair = isMap(parent)
        ? parent.items.find((item) => isScalar(item.key) && item.key.value === key)
        : undefined;
      const keyNode = pair?.key as Node | undefined;
      return {
        ...position(keyNode?.range?.[0] ?? nearestNode(doc, path)?.range?.[0]),
        keyPath: formatKeyPath([...path, key]),
        message: 'unknown key',
      };
    });
  }
  return [
    {
      ...position(nearestNode(doc, path)?.range?.[0]),
      keyPath: formatKeyPath(path),
      message: issueMessage(doc, issue, path),
    },
  ];
}

/** The node at `path`, or its nearest ancestor that exists (a missing key points at its map). */
function nearestNode(doc: Document, path: (string | number)[]): Node | undefined {
  for (let length = path.length; length > 0; length -= 1) {
    const node = doc.getIn(path.slice(0, length), true) as Node | undefined;
    if (node && typeof node === 'object' && 'range' in node) return node;
  }
  return (doc.contents as Node | null) ?? undefined;
}

function issueMessage(doc: Document, issue: z.core.$ZodIssue, path: (string | number)[]): string {
  switch (issue.code) {
    case 'invalid_type': {
      if (!doc.hasIn(path) && path.length > 0) return 'is required';
      const actual = doc.getIn(path);
      const got = actual === null ? 'null' : Array.isArray(actual) ? 'a list' : typeof actual;
      const expected =
        issue.expected === 'object'
          ? 'a mapping'
          : issue.expected === 'array'
            ? 'a list'
            : `a ${issue.expected}`;
      return `must be ${expected}, got ${got}`;
    }
    case 'invalid_value':
      return `must be one of ${issue.values.map((value) => JSON.stringify(value)).join(', ')}`;
    case 'too_small':
      if (issue.origin === 'array') return `must have at least ${String(issue.minimum)} item(s)`;
      if (issue.origin === 'string') return 'must not be empty';
      return `must be ${issue.inclusive ? 'at least' : 'greater than'} ${String(issue.minimum)}`;
    case 'too_big':
      return `must be ${issue.inclusive ? 'at most' : 'less than'} ${String(issue.maximum)}`;
    case 'invalid_union':
      return 'has the wrong type or form';
    case 'invalid_key':
      return issue.issues[0]?.message ?? 'is not an acceptable key';
    default:
      return issue.message;
  }
}
