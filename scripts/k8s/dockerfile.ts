/**
 * Static checks of the Dockerfile, for a machine without a Docker engine: the generic lint
 * of dockerfile-utils (the Docker language server's validator) plus tokenguard's image
 * contract, and a model of the runtime stage (its copies, environment and command) that
 * test/k8s.test.ts replays outside Docker.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { DockerfileParser, Env, ModifiableInstruction, type Instruction } from 'dockerfile-ast';
import { validate, ValidationSeverity } from 'dockerfile-utils';

export const IMAGE_CONFIG_PATH = '/etc/tokenguard/config.yaml';
export const REQUIRED_PORTS = [8000, 9100];

export interface Stage {
  name: string | undefined;
  image: string;
  instructions: Instruction[];
}

export interface RuntimeModel {
  workdir: string;
  env: Record<string, string>;
  /** ENTRYPOINT followed by CMD, exec form. */
  command: string[];
  user: string;
  /** COPY instructions: from a stage (by name) or the build context (`from` undefined). */
  copies: {
    from: string | undefined;
    sources: string[];
    destination: string;
    /** The destination ends with `/` (or is `.`): files go inside it. */
    intoDirectory: boolean;
  }[];
}

/** Resolves `${NAME}` / `$NAME` in FROM lines with the defaults of the global ARGs. */
function expandGlobalArgs(text: string, args: Record<string, string>): string {
  return text.replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, braced?: string, bare?: string) => {
    const name = braced ?? bare ?? '';
    return args[name] ?? whole;
  });
}

export function parseDockerfile(content: string): {
  stages: Stage[];
  globalArgs: Record<string, string>;
} {
  const dockerfile = DockerfileParser.parse(content);
  const globalArgs: Record<string, string> = {};
  for (const arg of dockerfile.getInitialARGs()) {
    const property = arg.getProperty();
    if (property) globalArgs[property.getName()] = property.getValue() ?? '';
  }
  const froms = dockerfile.getFROMs();
  const stages = froms.map((from, index) => {
    const first = from.getRange().start.line;
    const next = froms[index + 1]?.getRange().start.line ?? Number.POSITIVE_INFINITY;
    return {
      name: from.getBuildStage() ?? undefined,
      image: expandGlobalArgs(from.getImage() ?? '', globalArgs),
      instructions: dockerfile.getInstructions().filter((instruction) => {
        const line = instruction.getRange().start.line;
        return line >= first && line < next;
      }),
    };
  });
  return { stages, globalArgs };
}

const keyword = (instruction: Instruction) => instruction.getKeyword().toUpperCase();

/** Arguments of an exec-form (JSON array) instruction, or undefined for shell form. */
function execForm(instruction: Instruction): string[] | undefined {
  const raw = instruction.getArgumentsContent()?.trim() ?? '';
  if (!raw.startsWith('[')) return undefined;
  try {
    const parsed: unknown = JSON.parse(raw);
    return Array.isArray(parsed) && parsed.every((item) => typeof item === 'string')
      ? parsed
      : undefined;
  } catch {
    return undefined;
  }
}

/** An instruction's --flags (parsed by dockerfile-ast) and its other arguments. */
function flagsAndArgs(instruction: Instruction): { flags: Record<string, string>; args: string[] } {
  const flags: Record<string, string> = {};
  if (instruction instanceof ModifiableInstruction) {
    for (const flag of instruction.getFlags()) flags[flag.getName()] = flag.getValue() ?? '';
  }
  return { flags, args: instruction.getArguments().map((argument) => argument.getValue()) };
}

export type Copy = RuntimeModel['copies'][number];

export function parseCopy(instruction: Instruction, workdir: string): Copy {
  const { flags, args } = flagsAndArgs(instruction);
  const destination = args.pop() ?? '';
  return {
    from: flags.from,
    sources: args,
    destination: path.posix.resolve(workdir, destination),
    intoDirectory: /(^|\/)\.?$/.test(destination),
  };
}

export function runtimeModel(stage: Stage): RuntimeModel {
  const model: RuntimeModel = { workdir: '/', env: {}, command: [], user: '', copies: [] };
  let entrypoint: string[] = [];
  let cmd: string[] = [];
  for (const instruction of stage.instructions) {
    switch (keyword(instruction)) {
      case 'WORKDIR':
        model.workdir = path.posix.resolve(model.workdir, instruction.getArgumentsContent() ?? '');
        break;
      case 'ENV':
        if (instruction instanceof Env) {
          for (const property of instruction.getProperties()) {
            model.env[property.getName()] = property.getValue() ?? '';
          }
        }
        break;
      case 'USER':
        model.user = instruction.getArgumentsContent()?.trim() ?? '';
        break;
      case 'ENTRYPOINT':
        entrypoint = execForm(instruction) ?? [
          '/bin/sh',
          '-c',
          instruction.getArgumentsContent() ?? '',
        ];
        cmd = [];
        break;
      case 'CMD':
        cmd = execForm(instruction) ?? ['/bin/sh', '-c', instruction.getArgumentsContent() ?? ''];
        break;
      case 'COPY':
        model.copies.push(parseCopy(instruction, model.workdir));
        break;
      default:
        break;
    }
  }
  model.command = [...entrypoint, ...cmd];
  return model;
}

/** Minimal .dockerignore semantics: `*`, `**`, `?`, `!` re-includes, last match wins. */
export function dockerIgnored(patterns: string[], file: string): boolean {
  let ignored = false;
  for (const raw of patterns) {
    const negate = raw.startsWith('!');
    const pattern = path.posix
      .normalize((negate ? raw.slice(1) : raw).trim())
      .replace(/^\/+|\/+$/g, '');
    const regex = new RegExp(
      `^${pattern
        .split('**')
        .map((part) =>
          part
            .replace(/[.+^${}()|[\]\\]/g, '\\$&')
            .replace(/\*/g, '[^/]*')
            .replace(/\?/g, '[^/]'),
        )
        .join('.*')}(?:/.*)?$`,
    );
    if (regex.test(file)) ignored = !negate;
  }
  return ignored;
}

export function readDockerignore(root: string): string[] {
  const file = path.join(root, '.dockerignore');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
}

/**
 * Every problem found, as `Dockerfile:line: message`. `root` is the build context (for
 * .dockerignore and COPY sources), `nodeMajor` the Node.js major the tests run on.
 */
export function lintDockerfile(file: string, root: string, nodeMajor: number): string[] {
  const content = readFileSync(file, 'utf8');
  const name = path.relative(root, file) || file;
  const problems = validate(content, {
    deprecatedMaintainer: ValidationSeverity.ERROR,
    directiveCasing: ValidationSeverity.ERROR,
    emptyContinuationLine: ValidationSeverity.ERROR,
    instructionCasing: ValidationSeverity.ERROR,
    instructionCmdMultiple: ValidationSeverity.ERROR,
    instructionEntrypointMultiple: ValidationSeverity.ERROR,
    instructionHealthcheckMultiple: ValidationSeverity.ERROR,
    instructionJSONInSingleQuotes: ValidationSeverity.ERROR,
    instructionWorkdirRelative: ValidationSeverity.ERROR,
  }).map((diagnostic) => `${name}:${diagnostic.range.start.line + 1}: ${diagnostic.message}`);

  const { stages, globalArgs } = parseDockerfile(content);
  const at = (instruction: Instruction | undefined) =>
    `${name}:${instruction ? instruction.getRange().start.line + 1 : 1}`;
  if (stages.length < 2) problems.push(`${name}:1: must be multi-stage (build, then runtime)`);
  const runtime = stages.at(-1);
  if (!runtime) return problems;
  const stageNames = new Set(stages.map((stage) => stage.name).filter(Boolean));

  for (const stage of stages) {
    if (/:latest$/.test(stage.image) || !/[:@]/.test(stage.image.split('/').at(-1) ?? '')) {
      problems.push(
        `${at(stage.instructions[0])}: base image ${stage.image} must have a fixed tag or digest`,
      );
    }
    if (/\$/.test(stage.image))
      problems.push(`${at(stage.instructions[0])}: unresolved variable in ${stage.image}`);
  }
  if (globalArgs.NODE_MAJOR !== undefined && Number(globalArgs.NODE_MAJOR) !== nodeMajor) {
    problems.push(
      `${name}:1: NODE_MAJOR=${globalArgs.NODE_MAJOR} but the tests run on Node.js ${nodeMajor}`,
    );
  }

  const runs = (stage: Stage) =>
    stage.instructions
      .filter((instruction) => keyword(instruction) === 'RUN')
      .map((instruction) => flagsAndArgs(instruction).args.join(' '));
  const buildStage = stages.find((stage) =>
    runs(stage).some((command) => /\bnpm (run build|run-script build)\b/.test(command)),
  );
  if (!buildStage) problems.push(`${name}:1: no stage runs \`npm run build\``);
  else if (!runs(buildStage).some((command) => /\bnpm ci\b(?!.*--omit=dev)/.test(command))) {
    problems.push(
      `${at(buildStage.instructions[0])}: the build stage must install with \`npm ci\` (dev dependencies included)`,
    );
  }
  const prodStages = stages.filter((stage) =>
    runs(stage).some((command) => /\bnpm (ci|prune)\b.*--omit=dev/.test(command)),
  );
  if (prodStages.length === 0)
    problems.push(`${name}:1: no stage installs production dependencies only (--omit=dev)`);

  if (/(^|\/)(node):/.test(runtime.image) && !/slim|alpine/.test(runtime.image)) {
    problems.push(
      `${at(runtime.instructions[0])}: runtime base ${runtime.image} is not a small image (distroless or slim)`,
    );
  }
  for (const instruction of runtime.instructions) {
    if (keyword(instruction) === 'RUN') {
      problems.push(
        `${at(instruction)}: the runtime stage must not RUN anything (no shell in the image)`,
      );
    }
  }
  const model = runtimeModel(runtime);
  const user = model.user.split(':')[0] ?? '';
  if (!/^\d+$/.test(user) || user === '0') {
    problems.push(
      `${name}:1: the runtime USER must be a numeric non-root UID (is "${model.user}")`,
    );
  }
  const entrypoint = runtime.instructions
    .filter((instruction) => keyword(instruction) === 'ENTRYPOINT')
    .at(-1);
  if (!entrypoint) problems.push(`${name}:1: the runtime stage needs an ENTRYPOINT`);
  for (const instruction of runtime.instructions.filter((item) =>
    ['ENTRYPOINT', 'CMD'].includes(keyword(item)),
  )) {
    if (!execForm(instruction))
      problems.push(`${at(instruction)}: ${keyword(instruction)} must use the exec (JSON) form`);
  }
  if (model.command.length > 0 && path.posix.basename(model.command[0] ?? '') !== 'node') {
    problems.push(`${at(entrypoint)}: the command must start with node (is ${model.command[0]})`);
  }
  if (!model.command.some((argument) => /(^|\/)dist\/cli\.js$/.test(argument))) {
    problems.push(`${at(entrypoint)}: the command must run dist/cli.js`);
  }
  const exposed = runtime.instructions
    .filter((instruction) => keyword(instruction) === 'EXPOSE')
    .flatMap((instruction) =>
      instruction.getArguments().map((argument) => Number.parseInt(argument.getValue(), 10)),
    );
  for (const port of REQUIRED_PORTS) {
    if (!exposed.includes(port)) problems.push(`${name}:1: the runtime stage must EXPOSE ${port}`);
  }
  if (model.env.TOKENGUARD_CONFIG !== IMAGE_CONFIG_PATH) {
    problems.push(
      `${name}:1: the runtime stage must set ENV TOKENGUARD_CONFIG=${IMAGE_CONFIG_PATH}`,
    );
  }
  if (/--max-old-space-size-percentage/.test(model.env.NODE_OPTIONS ?? '') && nodeMajor < 24) {
    problems.push(
      `${name}:1: NODE_OPTIONS uses --max-old-space-size-percentage, unknown to Node.js ${nodeMajor}`,
    );
  }

  const ignore = readDockerignore(root);
  for (const copy of stages.flatMap((stage) => runtimeModel(stage).copies)) {
    if (copy.from !== undefined) {
      if (!stageNames.has(copy.from))
        problems.push(`${name}:1: COPY --from=${copy.from} names no stage`);
      continue;
    }
    for (const source of copy.sources) {
      if (!existsSync(path.join(root, source)))
        problems.push(`${name}:1: COPY source ${source} does not exist`);
      else if (dockerIgnored(ignore, path.posix.normalize(source).replace(/\/$/, ''))) {
        problems.push(`${name}:1: COPY source ${source} is excluded by .dockerignore`);
      }
    }
  }
  for (const excluded of ['node_modules', 'dist', '.git', 'coverage']) {
    if (!dockerIgnored(ignore, excluded)) problems.push(`.dockerignore: must exclude ${excluded}`);
  }
  if (
    !model.copies.some((copy) =>
      copy.sources.some((source) => path.posix.basename(source) === 'package.json'),
    )
  ) {
    problems.push(`${name}:1: the runtime stage must COPY package.json ("type": "module")`);
  }
  for (const copy of model.copies) {
    const fromStage = stages.find((stage) => stage.name === copy.from);
    if (
      copy.sources.some((source) => /node_modules/.test(source)) &&
      fromStage &&
      !prodStages.includes(fromStage)
    ) {
      problems.push(
        `${name}:1: node_modules must come from the production-only stage, not "${copy.from}"`,
      );
    }
  }
  return problems;
}
