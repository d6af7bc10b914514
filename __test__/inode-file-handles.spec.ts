// --inode-file-handles=prefer, the default: a root device holds looked-up inodes as file handles,
// so the descriptors it holds (a few pinned inodes at most) do not grow with the inodes the guest knows; a device that cannot
// open handles (an unprivileged user, --modcaps=-dac_read_search) serves with descriptors and
// says so once, and mandatory refuses to start there. Devices are driven without a VM by
// `virtiofsd-load hold` (CREATE is a lookup too), their statistics read with SIGUSR1; one guest
// looks up many files through a root device with the default.
import test, { type ExecutionContext } from 'ava';
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cli, ensureBuilt, requireNative, root } from './support/build.ts';
import { startGuest } from './guest/harness.ts';

const NOBODY = 65534;
const FILES = 200;
/** The line a device that cannot open handles logs once, at info level. */
const FALLBACK = /inode file handles: this device cannot open them, so inodes are held as O_PATH descriptors/g;
const cargoTarget = process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, 'target');
const loadTool = path.join(cargoTarget, 'debug', 'virtiofsd-load');

test.before(() => {
  if (process.getuid?.() !== 0) throw new Error('these tests must run as root (they switch to nobody and compare with a root device)');
  requireNative();
  ensureBuilt();
  execFileSync('cargo', ['build', '--quiet', '-p', 'virtiofsd-frontend', '--bin', 'virtiofsd-load'], { cwd: root, stdio: 'inherit' });
});

interface Stats {
  inodes: number;
  handles: number;
  fdsHeld: number;
  fdBudget: number;
  capabilities: string[];
  userNamespace: boolean;
  seccomp: string;
  requests: Record<string, number>;
}

interface Run {
  /** Exit status of the device. */
  code: number | null;
  stderr: string;
  /** Statistics while the frontend held its inodes; undefined when the device did not serve. */
  stats?: Stats;
  /** What `hold` reported. */
  hold?: { creates: number };
}

function tempDir(prefix: string, owner?: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  if (owner !== undefined) fs.chownSync(dir, owner, owner);
  return dir;
}

async function until<T>(what: string, probe: () => T | undefined, child: ChildProcess, stderr: () => string, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the device ended (${child.exitCode ?? child.signalCode}) before ${what}: ${stderr()}`);
    if (Date.now() > deadline) throw new Error(`no ${what} in time: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts the CLI (as nobody with `asNobody`) on a fresh share; when it listens, creates FILES
 * files through `virtiofsd-load hold`, reads the device's statistics while they are held, then
 * lets the frontend go, which ends the device.
 */
async function serve(args: string[], opts: { asNobody?: boolean; creates?: number } = {}): Promise<Run> {
  const owner = opts.asNobody ? NOBODY : undefined;
  const share = tempDir('vfsd-fh-share-', owner);
  const socket = path.join(tempDir('vfsd-fh-sock-', owner), 'vfs.sock');
  const argv = [cli, `--shared-dir=${share}`, `--socket-path=${socket}`, ...args];
  const device = opts.asNobody
    ? spawn('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(process.execPath, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  device.stderr!.on('data', (d) => (stderr += String(d)));
  const exited = new Promise<number | null>((r) => device.once('exit', (code) => r(code)));
  const err = () => stderr;
  let hold: ChildProcess | undefined;
  try {
    const listening = await Promise.race([
      until('listening', () => (stderr.includes('waiting for a vhost-user frontend') ? true : undefined), device, err).catch(() => false),
      exited.then(() => false),
    ]);
    if (!listening) {
      if (device.exitCode === null && device.signalCode === null) device.kill('SIGKILL');
      return { code: await exited, stderr };
    }
    const creates = String(opts.creates ?? FILES);
    const h = spawn(loadTool, ['hold', '--socket', socket, '--creates', creates, '--missing-lookups', '3'], { stdio: ['pipe', 'pipe', 'inherit'] });
    hold = h;
    let out = '';
    h.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    const held = await until('hold report', () => (out.includes('\n') ? JSON.parse(out) : undefined), device, err);
    // The CLI process became the device; with the namespace sandbox it forwards the signal.
    device.kill('SIGUSR1');
    const line = await until('statistics', () => stderr.split('\n').find((l) => l.startsWith('{"event":"stats"')), device, err);
    h.stdin!.end();
    return { code: await exited, stderr, stats: JSON.parse(line).stats, hold: held };
  } finally {
    hold?.kill('SIGKILL');
    if (device.exitCode === null && device.signalCode === null) device.kill('SIGKILL');
    fs.rmSync(share, { recursive: true, force: true });
    fs.rmSync(path.dirname(socket), { recursive: true, force: true });
  }
}

const fallbacks = (stderr: string) => stderr.match(FALLBACK)?.length ?? 0;

test('--help and the man page state prefer as the default; the library defaults to it', (t) => {
  const help = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
  t.is(help.status, 0);
  const entry = help.stdout.slice(help.stdout.indexOf('--inode-file-handles='));
  t.regex(entry.slice(0, entry.indexOf('\n      --', 1)), /\[default: prefer\]/);
  const man = fs.readFileSync(path.join(root, 'dist', 'virtiofsd.1'), 'utf8');
  const manEntry = man.slice(man.indexOf('\\fB\\-\\-inode\\-file\\-handles'));
  t.regex(manEntry.slice(0, manEntry.indexOf('.TP')), /Default: prefer\./);
  // The library's options compile through the same module.
  const lib = spawnSync(process.execPath, ['-e', `const lib = require(${JSON.stringify(path.join(root, 'dist', 'config.js'))});
    const dir = require('node:os').tmpdir();
    const c = lib.buildDeviceConfig({ sharedDir: dir, fd: 3 });
    const dropped = lib.buildDeviceConfig({ sharedDir: dir, fd: 3, modcaps: '-dac_read_search' });
    process.stdout.write(JSON.stringify([c.inodeFileHandles, dropped.inodeFileHandles]));`], { encoding: 'utf8' });
  t.is(lib.status, 0, lib.stderr);
  t.deepEqual(JSON.parse(lib.stdout), ['prefer', 'prefer']);
});

/**
 * A small open-file limit gives a budget of 336 descriptors, of which a quarter (84) may pin
 * handle-held inodes: fewer than the inodes the tests make, so the bound shows.
 */
const SMALL_LIMIT = '--rlimit-nofile=400';

/** Handle-held inodes beyond the pinned slots hold no descriptor: the count stays bounded. */
function checkBounded(t: ExecutionContext, stats: Stats | undefined, label = ''): void {
  const s = stats!;
  t.is(s.fdBudget, 336, label);
  t.true(s.fdsHeld <= Math.floor(s.fdBudget / 4) + s.handles, `${label} ${JSON.stringify(s)}`);
  t.true(s.fdsHeld < s.inodes / 2, `${label} ${JSON.stringify(s)}`);
}

test.serial('root, the default: created and looked-up inodes are file handles, the descriptors held stay bounded', async (t) => {
  const run = await serve([SMALL_LIMIT]);
  t.is(run.code, 0, run.stderr);
  t.is(run.hold?.creates, FILES);
  t.is(run.stats?.inodes, FILES + 1);
  // The first inodes keep their descriptor while pinned slots last; the others hold none.
  checkBounded(t, run.stats);
  t.true(run.stats!.capabilities.includes('dac_read_search'), 'a root device keeps CAP_DAC_READ_SEARCH for its handles');
  t.is(run.stats?.seccomp, 'kill');
  t.is(fallbacks(run.stderr), 0, run.stderr);
});

test.serial('root, --inode-file-handles=never: one descriptor per inode, as before', async (t) => {
  const run = await serve(['--inode-file-handles=never']);
  t.is(run.code, 0, run.stderr);
  t.is(run.stats?.fdsHeld, FILES + run.stats!.handles, JSON.stringify(run.stats));
  t.false(run.stats!.capabilities.includes('dac_read_search'));
});

test.serial('root with --sandbox=chroot and --sandbox=none: file handles too', async (t) => {
  for (const sandbox of ['chroot', 'none']) {
    const run = await serve([`--sandbox=${sandbox}`, SMALL_LIMIT]);
    t.is(run.code, 0, run.stderr);
    t.is(run.stats?.inodes, FILES + 1, sandbox);
    checkBounded(t, run.stats, sandbox);
    t.is(fallbacks(run.stderr), 0, run.stderr);
  }
});

test.serial('an unprivileged user, the default: starts, serves with descriptors, and says why once', async (t) => {
  const run = await serve([], { asNobody: true });
  t.is(run.code, 0, run.stderr);
  t.true(run.stats?.userNamespace, 'the namespace sandbox runs in a user namespace');
  t.is(run.stats?.seccomp, 'kill', 'a filter that kills on open_by_handle_at, which the fallen-back device never calls');
  t.is(run.stats?.inodes, FILES + 1);
  t.is(run.stats?.fdsHeld, FILES + run.stats!.handles, JSON.stringify(run.stats));
  t.is(fallbacks(run.stderr), 1, run.stderr);
  t.regex(run.stderr, / INFO .*inode file handles: this device cannot open them.*Operation not permitted.*CAP_DAC_READ_SEARCH in the initial user namespace/);
  t.notRegex(run.stderr, / (WARN|ERROR) /, 'quietly: no warning, no error');
});

test.serial('an unprivileged user without a sandbox: the same fallback', async (t) => {
  // Without a user namespace it cannot create as the frontend's root: lookups only.
  const run = await serve(['--sandbox=none'], { asNobody: true, creates: 0 });
  t.is(run.code, 0, run.stderr);
  t.false(run.stats?.userNamespace);
  t.is(run.stats?.requests.LOOKUP, 3);
  t.is(fallbacks(run.stderr), 1, run.stderr);
  t.notRegex(run.stderr, / ERROR /);
});

test.serial('root with --modcaps=-dac_read_search and the default: starts, serves with descriptors, says why once', async (t) => {
  const run = await serve(['--modcaps=-dac_read_search']);
  t.is(run.code, 0, run.stderr);
  t.false(run.stats!.capabilities.includes('dac_read_search'));
  t.is(run.stats?.fdsHeld, FILES + run.stats!.handles, JSON.stringify(run.stats));
  t.is(fallbacks(run.stderr), 1, run.stderr);
  t.notRegex(run.stderr, / (WARN|ERROR) /);
});

test.serial('mandatory is refused where prefer falls back', async (t) => {
  // The command line refuses a contradiction before any device starts.
  const dropped = await serve(['--inode-file-handles=mandatory', '--modcaps=-dac_read_search']);
  t.is(dropped.code, 1);
  t.regex(dropped.stderr, /'--modcaps' cannot drop dac_read_search with --inode-file-handles=mandatory, which opens file handles/);
  t.is(dropped.stats, undefined);
  // An unprivileged device finds out itself, at start.
  for (const sandbox of ['namespace', 'none']) {
    const run = await serve(['--inode-file-handles=mandatory', `--sandbox=${sandbox}`], { asNobody: true });
    t.is(run.code, 1, run.stderr);
    t.regex(
      run.stderr,
      /inode file handles are mandatory, but this device cannot open them \(opening file handles needs CAP_DAC_READ_SEARCH in the initial user namespace\): open_by_handle_at refused the shared directory's own handle: Operation not permitted/,
    );
    t.false(run.stderr.includes('waiting for a vhost-user frontend'), 'it never listened');
  }
  // --migration-mode=file-handles must open handles as a destination: refused as before.
  const migration = await serve(['--migration-mode=file-handles', '--modcaps=-dac_read_search']);
  t.is(migration.code, 1);
  t.regex(migration.stderr, /cannot drop dac_read_search with --migration-mode=file-handles/);
});

test.serial('guest: with the default, looking up many files leaves the descriptors held bounded', async (t) => {
  const share = tempDir('vfsd-fh-guest-');
  const count = 400;
  for (let d = 0; d < 4; d++) {
    fs.mkdirSync(path.join(share, `d${d}`));
    for (let f = 0; f < count / 4; f++) fs.writeFileSync(path.join(share, `d${d}`, `f${f}`), `${d}/${f}\n`);
  }
  // The guest keeps every looked-up inode (its dentry cache) until the host says go.
  const script = [
    'set -e',
    'n=0; for f in d*/f*; do [ -e "$f" ] && n=$((n + 1)); done',
    'echo "looked up $n"',
    'touch looked-up',
    'i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done',
    'cat d3/f99',
  ].join('\n');
  const guest = await startGuest({ daemon: { kind: 'ours', extraArgs: [SMALL_LIMIT] }, sharedDir: share, script, timeoutMs: 180_000 });
  try {
    const deadline = Date.now() + 120_000;
    while (!fs.existsSync(path.join(share, 'looked-up'))) {
      if (Date.now() > deadline) throw new Error(`the guest did not look the files up in time:\n${guest.console().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    guest.daemon.kill('SIGUSR1');
    let line: string | undefined;
    while (!(line = guest.daemonStderr().split('\n').find((l) => l.startsWith('{"event":"stats"')))) {
      if (Date.now() > deadline) throw new Error(`no statistics: ${guest.daemonStderr()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    fs.writeFileSync(path.join(share, 'go'), '');
    const run = await guest.wait(120_000);
    t.is(run.status, 0, run.output + run.daemonStderr);
    t.regex(run.output, new RegExp(`looked up ${count}\\b[\\s\\S]*3/99`));
    const stats = JSON.parse(line).stats as Stats;
    t.true(stats.inodes > count, `the guest holds its ${count} files and 4 directories: ${JSON.stringify(stats)}`);
    checkBounded(t, stats, 'guest');
    t.is(fallbacks(run.daemonStderr), 0);
  } finally {
    await guest.stop();
    fs.rmSync(share, { recursive: true, force: true });
  }
});
