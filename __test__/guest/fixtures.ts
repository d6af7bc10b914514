// Host-side companions of scripts/guest/fs-e2e.sh: the shared directory it starts from, the data it
// is expected to write, and a snapshot of what it leaves behind, for checks and for comparing daemons.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './harness.ts';

export const FIXTURE_TEXT = 'hello from the host\nsecond line\n';

export async function fsE2eScript(): Promise<string> {
  return fs.readFile(path.join(repoRoot, 'scripts', 'guest', 'fs-e2e.sh'), 'utf8');
}

/** A fresh shared directory holding what fs-e2e.sh expects to find. */
export async function makeSharedDir(label: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `virtiofsd-share-${label}-`));
  await fs.writeFile(path.join(dir, 'fixture.txt'), FIXTURE_TEXT, { mode: 0o644 });
  await fs.chmod(path.join(dir, 'fixture.txt'), 0o644);
  await fs.chmod(dir, 0o755);
  return dir;
}

/**
 * The 8 MiB file fs-e2e.sh writes: 128 blocks, each "block NNN" space-padded to 63 characters and a
 * newline, then a seed of 1023 lines of 63 hex digits from the LCG x = (75x + 74) mod 65537.
 */
export function expectedBigFile(): Buffer {
  const hex = '0123456789abcdef';
  let x = 12345;
  let seed = '';
  for (let line = 0; line < 1023; line++) {
    let s = '';
    for (let i = 0; i < 63; i++) {
      x = (x * 75 + 74) % 65537;
      s += hex[x % 16];
    }
    seed += s + '\n';
  }
  const blocks: string[] = [];
  for (let b = 0; b < 128; b++) {
    blocks.push(`block ${String(b).padStart(3, '0')}`.padEnd(63, ' ') + '\n' + seed);
  }
  return Buffer.from(blocks.join(''), 'ascii');
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface EntryState {
  type: 'file' | 'dir' | 'symlink' | 'fifo' | 'other';
  mode: string;
  uid: number;
  gid: number;
  nlink: number;
  size?: number;
  sha256?: string;
  target?: string;
}

/** Every entry under dir, keyed by relative path; no inode numbers or times, so two runs compare. */
export async function snapshot(dir: string): Promise<Record<string, EntryState>> {
  const result: Record<string, EntryState> = {};
  async function walk(rel: string): Promise<void> {
    const full = path.join(dir, rel);
    const st = await fs.lstat(full);
    const base = { mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid, nlink: st.nlink };
    if (st.isDirectory()) {
      result[rel || '.'] = { type: 'dir', ...base };
      for (const name of (await fs.readdir(full)).sort()) await walk(path.join(rel, name));
    } else if (st.isFile()) {
      result[rel] = { type: 'file', ...base, size: st.size, sha256: sha256(await fs.readFile(full)) };
    } else if (st.isSymbolicLink()) {
      result[rel] = { type: 'symlink', ...base, target: await fs.readlink(full) };
    } else {
      result[rel] = { type: st.isFIFO() ? 'fifo' : 'other', ...base };
    }
  }
  await walk('');
  return result;
}
