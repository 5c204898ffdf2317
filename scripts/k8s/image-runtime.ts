/**
 * Replays the image without Docker: each build stage in a directory of its own (its COPY
 * instructions from the context, its RUN commands: `npm run build` on exactly the files the
 * stage copied, the production install with the Dockerfile's own `npm ci --omit=dev`), then
 * the runtime stage's COPY instructions into a root filesystem, then the image's ENTRYPOINT
 * + CMD with the image's ENV — `node` standing in for the distroless binary. A file the build
 * stage forgets to copy, a wrong path, a missing file or a bad NODE_OPTIONS fails here.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  parseCopy,
  parseDockerfile,
  runtimeModel,
  type Copy,
  type RuntimeModel,
  type Stage,
} from './dockerfile.js';

const execFileAsync = promisify(execFile);

export interface ImageLayout {
  /** Where the image's root filesystem is laid out. */
  root: string;
  model: RuntimeModel;
  /** The working directory of the container, inside `root`. */
  cwd: string;
}

/** Copies a COPY instruction's context sources into `dir` (the stage's WORKDIR `workdir`). */
function copyFromContext(repoRoot: string, copy: Copy, dir: string, workdir: string): void {
  if (copy.from !== undefined)
    throw new Error(`COPY --from=${copy.from} in a build stage is not replayed`);
  const target = path.join(dir, path.posix.relative(workdir, copy.destination));
  for (const source of copy.sources) {
    const from = path.join(repoRoot, source);
    if (!existsSync(from)) throw new Error(`COPY ${source}: not in the build context`);
    const into = !statSync(from).isDirectory() && (copy.sources.length > 1 || copy.intoDirectory);
    cpSync(from, into ? path.join(target, path.basename(source)) : target, { recursive: true });
  }
}

/**
 * Replays a build stage in a directory of its own, instruction by instruction: COPY from the
 * context, and RUN. `npm ci --omit=dev` runs for real (from the npm cache); a full `npm ci`
 * is stood in for by the repository's node_modules (same lockfile, already installed);
 * anything else (`npm run build`) runs in a shell, as in the build container.
 */
async function replayStage(repoRoot: string, stage: Stage, dir: string): Promise<string> {
  let workdir = '/';
  mkdirSync(dir, { recursive: true });
  for (const instruction of stage.instructions) {
    const keyword = instruction.getKeyword().toUpperCase();
    if (keyword === 'WORKDIR') {
      workdir = path.posix.resolve(workdir, instruction.getArgumentsContent() ?? '');
    } else if (keyword === 'COPY') {
      copyFromContext(repoRoot, parseCopy(instruction, workdir), dir, workdir);
    } else if (keyword === 'RUN') {
      const command = instruction.getArguments().map((argument) => argument.getValue());
      const isNpmCi = command[0] === 'npm' && command[1] === 'ci';
      if (isNpmCi && !command.includes('--omit=dev')) {
        symlinkSync(path.join(repoRoot, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
        continue;
      }
      const [file, args] = isNpmCi
        ? ['npm', command.slice(1)]
        : ['/bin/sh', ['-c', command.join(' ')]];
      try {
        await execFileAsync(file, args as string[], {
          cwd: dir,
          env: { ...process.env, npm_config_prefer_offline: 'true', npm_config_loglevel: 'error' },
          timeout: 120_000,
        });
      } catch (error) {
        const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
        throw new Error(
          `stage ${stage.name}: RUN ${command.join(' ')} failed:\n${stdout}${stderr}`,
          { cause: error },
        );
      }
    }
  }
  return workdir;
}

/** Lays out the runtime stage's files under a new temporary directory. */
export async function layOutImage(repoRoot: string, dockerfile: string): Promise<ImageLayout> {
  const { stages } = parseDockerfile(readFileSync(dockerfile, 'utf8'));
  const runtime = stages.at(-1);
  if (!runtime) throw new Error('Dockerfile has no stage');
  const model = runtimeModel(runtime);
  const work = mkdtempSync(path.join(tmpdir(), 'tokenguard-image-'));

  try {
    return await replayImage(repoRoot, stages, model, work);
  } catch (error) {
    rmSync(work, { recursive: true, force: true });
    throw error;
  }
}

async function replayImage(
  repoRoot: string,
  stages: Stage[],
  model: RuntimeModel,
  work: string,
): Promise<ImageLayout> {
  const root = path.join(work, 'rootfs');
  const stageRoots = new Map<string, { dir: string; workdir: string }>();
  await Promise.all(
    stages.slice(0, -1).map(async (stage, index) => {
      const dir = path.join(work, `stage-${index}`);
      const workdir = await replayStage(repoRoot, stage, dir);
      if (stage.name) stageRoots.set(stage.name, { dir, workdir });
    }),
  );

  for (const copy of model.copies) {
    const target = path.join(root, copy.destination);
    for (const source of copy.sources) {
      let from: string;
      if (copy.from === undefined) from = path.join(repoRoot, source);
      else {
        const stage = stageRoots.get(copy.from);
        if (!stage) throw new Error(`COPY --from=${copy.from}: no such stage to replay`);
        from = path.join(
          stage.dir,
          path.posix.relative(stage.workdir, path.posix.resolve(stage.workdir, source)),
        );
      }
      if (!existsSync(from)) throw new Error(`COPY ${source}: ${from} does not exist`);
      const into = !statSync(from).isDirectory() && (copy.sources.length > 1 || copy.intoDirectory);
      const destination = into ? path.join(target, path.basename(from)) : target;
      mkdirSync(path.dirname(destination), { recursive: true });
      // A symlinked node_modules (the stand-in for a full install) is copied as a link.
      cpSync(from, destination, { recursive: true, verbatimSymlinks: true });
    }
  }
  return { root, model, cwd: path.join(root, model.workdir) };
}

/** The image's command line, with its first word (the node binary) mapped to this Node. */
export function imageCommand(
  layout: ImageLayout,
  args: string[] = [],
): { file: string; args: string[] } {
  const [binary, ...rest] = layout.model.command;
  if (!binary || path.posix.basename(binary) !== 'node') {
    throw new Error(
      `the image's command does not start with node: ${JSON.stringify(layout.model.command)}`,
    );
  }
  return { file: process.execPath, args: [...rest, ...args] };
}

/** Starts the image's command as the container would, with `env` added to the image's ENV. */
export function startImage(
  layout: ImageLayout,
  env: Record<string, string>,
  args: string[] = [],
): ChildProcess {
  const { file, args: argv } = imageCommand(layout, args);
  return spawn(file, argv, {
    cwd: layout.cwd,
    // The container's environment: the image's ENV and what the pod adds, nothing else.
    env: { ...layout.model.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
