// The "inodes" section: every inode of a large tree stays known to the daemon (a guest that has
// walked the tree and forgets nothing), and what that costs the device process in descriptors and
// memory. Both daemons with their defaults: only --socket-path and --shared-dir.
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { errorText, KINDS, log, num, sleep, type Kind } from './common.mts';
import { fdLimit, sample, startDaemon, stopDaemon, type Daemon } from './daemon.mts';
import { mktree } from './fixtures.mts';

export interface InodesOptions {
  files: number;
  /** Where the tree lives between invocations. */
  dir: string;
}

const PER_DIR = 1000;
/** A daemon may take a long time over a million lookups on a busy machine. */
const WALK_TIMEOUT_MS = 30 * 60_000;

export function defaultInodesDir(files: number): string {
  return path.join(os.tmpdir(), `virtiofsd-bench-tree-${files}`);
}

interface TreeResult {
  inodes: number;
  failed: number;
  unlistedDirs: number;
  firstError: string | null;
  seconds: number;
}

export interface InodesRow {
  kind: Kind;
  result?: TreeResult;
  fds?: number;
  fdLimit?: number;
  rssMiB?: number;
  peakRssMiB?: number;
  privateMiB?: number;
  error?: string;
}

export interface InodesReport {
  files: number;
  dirs: number;
  treeCreated: boolean;
  rows: InodesRow[];
}

async function measure(kind: Kind, tool: string, reference: string, tree: string): Promise<InodesRow> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-bench-inodes-'));
  const socket = path.join(work, 'vfs.sock');
  let daemon: Daemon | undefined;
  try {
    daemon = await startDaemon(kind, reference, socket, tree, []);
    // The tool prints its result and keeps the connection until its stdin closes: the daemon
    // exits when it disconnects, and would take its descriptors and memory with it.
    const t = spawn(tool, ['tree', '--socket', socket, '--hold'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    t.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    t.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exit = new Promise<number | null>((resolve) => t.once('close', (code) => resolve(code)));
    const spawnError = new Promise<Error>((resolve) => t.once('error', resolve));
    const deadline = Date.now() + WALK_TIMEOUT_MS;
    let code: number | null | undefined;
    void exit.then((c) => (code = c));
    while (!stdout.includes('\n')) {
      const failed = await Promise.race([spawnError, sleep(100).then(() => undefined)]);
      if (failed) throw new Error(`cannot run the load tool ${tool}: ${failed.message}`);
      if (code !== undefined) throw new Error(`load tool failed (exit ${code}) walking the tree of ${kind}:\n${stderr.slice(-4000)}\n--- daemon ---\n${daemon.output().slice(-4000)}`);
      if (Date.now() > deadline) {
        t.kill('SIGKILL');
        throw new Error(`the tree walk through ${kind} did not finish within ${WALK_TIMEOUT_MS / 60_000} minutes`);
      }
    }
    const result = JSON.parse(stdout.trim().split('\n')[0]!) as TreeResult;
    const s = await sample(daemon.devicePid);
    const limit = await fdLimit(daemon.devicePid);
    t.stdin.end();
    const exitCode = await exit;
    if (!s) throw new Error(`the ${kind} device process was gone before it could be sampled`);
    if (exitCode !== 0) throw new Error(`load tool failed (exit ${exitCode}) after the tree walk through ${kind}:\n${stderr.slice(-4000)}`);
    return { kind, result, fds: s.fds, fdLimit: limit, rssMiB: s.rssKiB / 1024, peakRssMiB: s.hwmKiB / 1024, privateMiB: s.privateKiB / 1024 };
  } finally {
    // Closing a million descriptors takes the daemon a while.
    if (daemon) await stopDaemon(daemon, 60_000);
    await fs.rm(work, { recursive: true, force: true });
  }
}

export async function runInodes(opts: InodesOptions, tool: string, reference: string): Promise<InodesReport> {
  log(`inodes: making (or checking) a tree of ${opts.files} files in ${opts.dir}`);
  const made = mktree(tool, opts.dir, opts.files, PER_DIR, 0, 0);
  log(`inodes: tree ${made.created ? 'created' : 'reused'} (${made.files} files, ${made.dirs} directories, ${made.seconds.toFixed(1)} s)`);
  const rows: InodesRow[] = [];
  for (const kind of KINDS) {
    try {
      const row = await measure(kind, tool, reference, opts.dir);
      rows.push(row);
      log(`inodes ${kind}: ${row.result!.inodes} looked up (${row.result!.failed} failed) in ${row.result!.seconds.toFixed(1)} s, ${row.fds} fds, ${num(row.privateMiB)} MiB private`);
    } catch (err) {
      rows.push({ kind, error: errorText(err) });
      log(`inodes ${kind} FAILED: ${errorText(err)}`);
    }
  }
  return { files: made.files, dirs: made.dirs, treeCreated: made.created, rows };
}

export function inodesTable(r: InodesReport): string {
  const byKind = (k: Kind): InodesRow | undefined => r.rows.find((x) => x.kind === k);
  const ours = byKind('ours');
  const ref = byKind('reference');
  const row = (label: string, f: (x: InodesRow) => string): string => `| ${label} | ${[ours, ref].map((x) => (!x ? '–' : x.error ? 'FAILED' : f(x))).join(' | ')} |`;
  const lines = [
    `Inodes: a tree of ${r.files} empty files in ${r.dirs} directories, READDIR of every directory and a LOOKUP of every entry with no FORGET, both daemons with their defaults; the device process sampled at the end, before the tool disconnects.`,
    '',
    '| measure | ours | reference |',
    '| --- | ---: | ---: |',
    row('inodes looked up', (x) => String(x.result!.inodes)),
    row('failed lookups (first error)', (x) => `${x.result!.failed}${x.result!.firstError ? ` (${x.result!.firstError})` : ''}`),
    row('directories that could not be read', (x) => String(x.result!.unlistedDirs)),
    row('time (s)', (x) => x.result!.seconds.toFixed(1)),
    row('lookups per second', (x) => num((x.result!.inodes + x.result!.failed) / x.result!.seconds)),
    row('open descriptors at the end', (x) => String(x.fds)),
    row('descriptor limit (soft)', (x) => num(x.fdLimit)),
    row('RSS at the end (MiB)', (x) => num(x.rssMiB)),
    row('peak RSS (MiB)', (x) => num(x.peakRssMiB)),
    row('private memory at the end (MiB)', (x) => num(x.privateMiB)),
  ];
  for (const x of r.rows) if (x.error) lines.push('', `${x.kind} FAILED: ${x.error.split('\n')[0]}`);
  return lines.join('\n') + '\n';
}
