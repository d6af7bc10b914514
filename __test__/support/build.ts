// Shared by the suites that run the built package (dist/) as a user would.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../..', import.meta.url));
export const cli = path.join(root, 'dist', 'cli.js');

/** Fails with a clear message unless this platform's device executable and addon are built. */
export function requireNative(): void {
  ensureBuilt();
  // The package's own lookup, in a plain Node process as the package runs; it fails naming the
  // platform and the build command when the artifacts are missing.
  const lookup = `require(${JSON.stringify(path.join(root, 'dist', 'native.js'))}).nativeArtifacts()`;
  const result = spawnSync(process.execPath, ['-e', lookup], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`native artifacts missing: ${result.stderr.split('\n').find((line) => line.includes('Error')) ?? result.stderr}`);
}

/** Compiles ts/ to dist/ when dist is missing or older than a source file. */
export function ensureBuilt(): void {
  const sources = fs.readdirSync(path.join(root, 'ts')).filter((name) => name.endsWith('.ts'));
  const stale = sources.some((name) => {
    const built = path.join(root, 'dist', name.replace(/\.ts$/, '.js'));
    return !fs.existsSync(built) || fs.statSync(built).mtimeMs < fs.statSync(path.join(root, 'ts', name)).mtimeMs;
  });
  if (stale || !fs.existsSync(path.join(root, 'dist', 'index.mjs'))) {
    execFileSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });
    // The ES module entry is generated from the CommonJS one (as `npm run build:ts` does).
    execFileSync(process.execPath, [path.join(root, 'scripts', 'esm-entry.mjs')], { stdio: 'inherit' });
  }
}
