// Shared by the suites that run the built package (dist/) as a user would.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../..', import.meta.url));
export const cli = path.join(root, 'dist', 'cli.js');

/** Compiles ts/ to dist/ when dist is missing or older than a source file. */
export function ensureBuilt(): void {
  const sources = fs.readdirSync(path.join(root, 'ts')).filter((name) => name.endsWith('.ts'));
  const stale = sources.some((name) => {
    const built = path.join(root, 'dist', name.replace(/\.ts$/, '.js'));
    return !fs.existsSync(built) || fs.statSync(built).mtimeMs < fs.statSync(path.join(root, 'ts', name)).mtimeMs;
  });
  if (stale) execFileSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });
}
