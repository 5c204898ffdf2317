/**
 * Unknown-field check ("strict" validation, as `kubectl apply --validate=strict` or
 * kubeconform -strict would do). The compiled schemas of kubernetes-models check types,
 * enums and required fields but accept any extra key, so a misspelt `readinessprobe:` would
 * pass and silently do nothing. kubernetes-models also ships the same schemas as TypeScript
 * interfaces; type-checking each manifest as an object literal of its interface makes the
 * compiler's excess-property check find every unknown field, at any depth.
 */
import path from 'node:path';
import ts from 'typescript';
import type { Manifest } from './manifests.js';
import { describeManifest } from './validate.js';

const VIRTUAL_FILE = path.join(import.meta.dirname, '__strict_fields__.ts');
const declarationCache = new Map<string, ts.SourceFile>();

function typeModule(manifest: Manifest): string {
  const group = manifest.apiVersion.split('/')[0];
  const pkg =
    group === 'monitoring.coreos.com'
      ? '@kubernetes-models/prometheus-operator'
      : 'kubernetes-models';
  return `${pkg}/${manifest.apiVersion}/${manifest.kind}`;
}

/** The JSON path (`/spec/template/...`) of the literal at `position`, and its manifest. */
function locate(source: ts.SourceFile, position: number): { index: number; pointer: string } {
  let node: ts.Node = source;
  for (;;) {
    const child: ts.Node | undefined = node
      .getChildren(source)
      .find((candidate) => candidate.getStart(source) <= position && position < candidate.getEnd());
    if (!child) break;
    node = child;
  }
  const segments: string[] = [];
  let index = -1;
  for (let current: ts.Node | undefined = node; current; current = current.parent) {
    const parent: ts.Node | undefined = current.parent;
    if (ts.isPropertyAssignment(current) && ts.isStringLiteral(current.name)) {
      segments.unshift(current.name.text);
    } else if (parent && ts.isArrayLiteralExpression(parent)) {
      segments.unshift(String(parent.elements.indexOf(current as ts.Expression)));
    } else if (ts.isVariableDeclaration(current) && ts.isIdentifier(current.name)) {
      index = Number(current.name.text.slice(1));
      break;
    }
  }
  return { index, pointer: `/${segments.join('/')}` };
}

/** Deletes the value at `pointer` (so the next round can look past it). */
function removeAt(manifest: Manifest, pointer: string): boolean {
  const keys = pointer.split('/').slice(1);
  const last = keys.pop();
  let parent: unknown = manifest;
  for (const key of keys) {
    parent = Array.isArray(parent)
      ? parent[Number(key)]
      : (parent as Record<string, unknown>)?.[key];
  }
  if (last === undefined || typeof parent !== 'object' || parent === null) return false;
  if (Array.isArray(parent)) return parent.splice(Number(last), 1).length === 1;
  return delete (parent as Record<string, unknown>)[last];
}

/**
 * One message per unknown field or mistyped value, `Kind name: /json/path: message`.
 * TypeScript reports one problem per object literal; each is removed and the check re-run
 * until none is left, so every problem is listed.
 */
export function checkUnknownFields(manifests: Manifest[]): string[] {
  const current = structuredClone(manifests);
  const messages: string[] = [];
  let previous: ts.Program | undefined;
  for (let round = 0; round < 50 && current.length > 0; round += 1) {
    const { program, problems } = typeCheck(current, previous);
    previous = program;
    if (problems.length === 0) break;
    let removed = false;
    for (const problem of problems) {
      messages.push(problem.message);
      const manifest = current[problem.index];
      if (manifest && removeAt(manifest, problem.pointer)) removed = true;
    }
    if (!removed) break;
  }
  return [...new Set(messages)];
}

function typeCheck(
  manifests: Manifest[],
  oldProgram: ts.Program | undefined,
): { program: ts.Program; problems: { index: number; pointer: string; message: string }[] } {
  const text = manifests
    .map(
      (manifest, index) =>
        `import type { I${manifest.kind} as T${index} } from ${JSON.stringify(typeModule(manifest))};\n` +
        `export const m${index}: T${index} = ${JSON.stringify(manifest, null, 1)};\n`,
    )
    .join('');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    lib: ['lib.es2022.d.ts'],
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (file, language, ...rest) => {
    if (file === VIRTUAL_FILE) return ts.createSourceFile(file, text, language, true);
    // Declaration files do not change between rounds: parse each once.
    const cached = declarationCache.get(file) ?? getSourceFile.call(host, file, language, ...rest);
    if (cached) declarationCache.set(file, cached);
    return cached;
  };
  host.fileExists = (file) => file === VIRTUAL_FILE || fileExists.call(host, file);
  host.readFile = (file) => (file === VIRTUAL_FILE ? text : readFile.call(host, file));
  const program = ts.createProgram([VIRTUAL_FILE], options, host, oldProgram);
  const source = program.getSourceFile(VIRTUAL_FILE);
  if (!source) throw new Error('strict field check: the generated source was not loaded');
  const diagnostics = [
    ...program.getSyntacticDiagnostics(source),
    ...program.getSemanticDiagnostics(source),
  ];
  const problems = diagnostics.map((diagnostic) => {
    const message = ts
      .flattenDiagnosticMessageText(diagnostic.messageText, '\n')
      .split('\n')
      .map((line) => line.trim())
      .filter(Boolean);
    const { index, pointer } = locate(source, diagnostic.start ?? 0);
    const manifest = manifests[index];
    const where = manifest ? `${describeManifest(manifest)}: ${pointer}` : 'manifests';
    const excess = message.find((line) => line.includes('Object literal may only specify known'));
    const field = excess?.match(/'"?([^'"]+)"?' does not exist in type '([^']+)'/);
    return {
      index,
      pointer,
      message: field
        ? `${where}: unknown field "${field[1]}" (not in ${field[2]})`
        : `${where}: ${message.at(-1) ?? 'type error'}`,
    };
  });
  return { program, problems };
}
