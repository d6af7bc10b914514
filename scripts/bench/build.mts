// Building what `npm run bench` runs: our daemon (when older than its sources) and the load tool.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { repoRoot } from '../../__test__/guest/harness.ts';
import { log } from './common.mts';

export function run(cmd: string, args: string[]): void {
  log(`$ ${cmd} ${args.join(' ')}`);
  // The build's own output is progress: keep stdout clean for the results.
  const result = spawnSync(cmd, args, { cwd: repoRoot, stdio: ['ignore', process.stderr, process.stderr] });
  if (result.error) throw new Error(`cannot run ${cmd}: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${result.status})`);
}

async function newestMtime(dir: string, test: (name: string) => boolean): Promise<number> {
  let newest = 0;
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    if (!entry.isFile() || !test(entry.name)) continue;
    const st = await fs.stat(path.join(entry.parentPath ?? entry.path, entry.name));
    newest = Math.max(newest, st.mtimeMs);
  }
  return newest;
}

async function mtimeOf(file: string): Promise<number> {
  return (await fs.stat(file).catch(() => undefined))?.mtimeMs ?? 0;
}

/** `npm run build` when dist/ or the native addon is older than its sources (or missing). */
export async function ensureDaemonBuilt(build: boolean): Promise<void> {
  const cli = path.join(repoRoot, 'dist', 'cli.js');
  const addon = path.join(repoRoot, 'npm', 'linux-x64-gnu', 'virtiofsd');
  const tsNewest = await newestMtime(path.join(repoRoot, 'ts'), (n) => n.endsWith('.ts'));
  let rustNewest = 0;
  for (const crate of ['fuse', 'passthrough', 'device', 'daemon', 'napi']) {
    rustNewest = Math.max(rustNewest, await newestMtime(path.join(repoRoot, 'crates', crate), (n) => n.endsWith('.rs') || n === 'Cargo.toml'));
  }
  const stale = (await mtimeOf(cli)) < tsNewest || (await mtimeOf(addon)) < rustNewest;
  if (!stale) return;
  if (!build) {
    if ((await mtimeOf(cli)) === 0 || (await mtimeOf(addon)) === 0) throw new Error('our daemon is not built and --no-build was given (run `npm run build`)');
    log('warning: dist/ or the native addon is older than its sources; benchmarking them anyway (--no-build)');
    return;
  }
  run('npm', ['run', 'build']);
}

export async function ensureLoadTool(loadTool: string | undefined, build: boolean): Promise<string> {
  if (loadTool) {
    await fs.access(loadTool, fs.constants.X_OK).catch(() => {
      throw new Error(`--load-tool ${loadTool} is not an executable file`);
    });
    return loadTool;
  }
  const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(repoRoot, process.env.CARGO_TARGET_DIR) : path.join(repoRoot, 'target');
  const tool = path.join(targetDir, 'release', 'virtiofsd-load');
  if (build) run('cargo', ['build', '--release', '-p', 'virtiofsd-frontend']);
  await fs.access(tool, fs.constants.X_OK).catch(() => {
    throw new Error(`load generator ${tool} is missing (cargo build --release -p virtiofsd-frontend)`);
  });
  return tool;
}
