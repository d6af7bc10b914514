// The load tool's fixtures, created once per invocation in one temporary shared directory.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

const META_FILES = 1000;
const DIR10K_FILES = 10_000;
const DATA_MIB = 256;
/** `walk/`: 250 directories of 200 files of 100 bytes, 8 directories to a directory (3 levels). */
export const WALK_TREE = { files: 50_000, perDir: 200, fanout: 8, fileBytes: 100 } as const;

/** Runs `virtiofsd-load mktree` and returns its JSON report. */
export function mktree(tool: string, dir: string, files: number, perDir: number, fanout: number, fileBytes: number): { created: boolean; files: number; dirs: number; seconds: number } {
  const args = ['mktree', '--dir', dir, '--files', String(files), '--per-dir', String(perDir), '--fanout', String(fanout), '--file-bytes', String(fileBytes)];
  const out = spawnSync(tool, args, { encoding: 'utf8' });
  if (out.error) throw new Error(`cannot run ${tool}: ${out.error.message}`);
  if (out.status !== 0) throw new Error(`virtiofsd-load ${args.join(' ')} failed (exit ${out.status}): ${out.stderr.slice(-2000)}`);
  return JSON.parse(out.stdout.trim().split('\n').pop() ?? '') as { created: boolean; files: number; dirs: number; seconds: number };
}

/** Only scratch/ is written by workloads (reset per run), and data.bin keeps its size. */
export async function makeFixtures(share: string, tool: string): Promise<void> {
  await fs.mkdir(path.join(share, 'meta'));
  for (let i = 0; i < META_FILES; i++) await fs.writeFile(path.join(share, 'meta', `f${i}`), `small file ${i}\n`);
  await fs.mkdir(path.join(share, 'dir10k'));
  for (let i = 0; i < DIR10K_FILES; i++) await fs.writeFile(path.join(share, 'dir10k', `f${i}`), '');
  await fs.mkdir(path.join(share, 'scratch'));
  await writeDataFile(share);
  mktree(tool, path.join(share, 'walk'), WALK_TREE.files, WALK_TREE.perDir, WALK_TREE.fanout, WALK_TREE.fileBytes);
}

async function writeDataFile(share: string): Promise<void> {
  // Random bytes: real extents, nothing sparse or trivially compressible.
  const file = await fs.open(path.join(share, 'data.bin'), 'w');
  try {
    for (let i = 0; i < DATA_MIB; i++) await file.write(randomBytes(1 << 20));
  } finally {
    await file.close();
  }
}

export async function resetFixtures(share: string): Promise<void> {
  await fs.rm(path.join(share, 'scratch'), { recursive: true, force: true });
  await fs.mkdir(path.join(share, 'scratch'));
  const size = (await fs.stat(path.join(share, 'data.bin')).catch(() => undefined))?.size;
  if (size !== DATA_MIB << 20) await writeDataFile(share);
}
