// Live migration (issue #12): a guest moves between two QEMU 10 processes on this host, each with its
// own daemon over the same shared directory, and keeps working on the destination. Checked on the
// host: a sequence-numbered append log written across the move holds every number exactly once, in
// order; descriptors held across the move (read, write, append, a folder, renamed and unlinked files,
// a POSIX lock and a flock) are used afterwards; a failed migration leaves the source serving; a file
// deleted on the host while the guest holds it open gives what --migration-on-error says. Also a
// guest that reboots in the same QEMU keeps its share.
//
// MIGRATING lists the daemons the migration cases run against, both with their defaults (sandbox and
// seccomp on) and the same options; KNOWN_DIFFERENCES lists where ours answers otherwise after a
// move, and a HOLD_CASES entry's `ours` where a whole migration ends otherwise; each with its reason.
import test, { type ExecutionContext } from 'ava';
import { existsSync as fsExists } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { provision, repoRoot, startGuest, type DaemonSpec } from './guest/harness.ts';
import { checkSeq, MigrationPair, readScript, seqCount, until } from './guest/migration.ts';
import { helper, removeHelper } from './guest/suite.ts';

type Kind = 'ours' | 'reference';
const MIGRATING: Kind[] = ['reference', 'ours'];
const spec = (kind: Kind, extraArgs: string[] = []): DaemonSpec => ({ kind, extraArgs });
const MEM = 512;

const dirs: string[] = [];
async function share(label: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `virtiofsd-migshare-${label}-`));
  dirs.push(dir);
  await fs.chmod(dir, 0o755);
  return dir;
}
test.after.always(async () => {
  for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
  await removeHelper();
});

async function status(pair: MigrationPair, which: 'source' | 'dest'): Promise<string> {
  const guest = which === 'source' ? pair.source : pair.dest;
  const s = await guest!.qmp.execute<{ status: string }>('query-status');
  return s.status;
}

/** Boots the loop workload, migrates once it runs, lets it go on on the destination, stops it. */
async function loopMigration(t: ExecutionContext, kind: Kind, extraArgs: string[] = []) {
  const dir = await share(kind);
  const pair = await MigrationPair.start({ source: spec(kind, extraArgs), sharedDir: dir, script: await readScript('migration-loop.sh', repoRoot), memoryMiB: MEM });
  t.teardown(() => pair.stop());
  await until('the loop to run on the source', async () => ((await seqCount(dir)) >= 30 ? true : undefined), 120_000, pair.source);
  const before = await seqCount(dir);
  const result = await pair.migrate();
  t.is(result.status, 'completed', `migration ${result.status}: ${result.errorDesc ?? ''}\n${pair.dest?.daemonStderr() ?? ''}`);
  const atSwitch = await seqCount(dir);
  t.is(await status(pair, 'source'), 'postmigrate');
  t.is(await status(pair, 'dest'), 'running');
  await until('the loop to go on on the destination', async () => ((await seqCount(dir)) >= atSwitch + 30 ? true : undefined), 120_000, pair.dest);
  await fs.writeFile(path.join(dir, 'stop'), '');
  const run = await pair.dest!.wait(60_000);
  t.is(run.status, 0, run.output);
  const iterations = Number(/^iterations (\d+)$/m.exec(run.output)?.[1]);
  const seq = await checkSeq(dir);
  t.is(seq.fault, undefined);
  t.is(seq.n, iterations, 'seq.log holds as many lines as the guest made steps');
  t.true(before >= 30 && seq.n > atSwitch);
  // The source is left paused after the move; quitting it ends its daemon.
  await pair.source.qmp.execute('quit').catch(() => undefined);
  t.log(`${kind}: downtime ${result.downtimeMs} ms, total ${result.totalTimeMs} ms, setup ${result.setupTimeMs} ms; ${before} steps before, ${seq.n} in all`);
  return { result, pair };
}

for (const kind of MIGRATING) {
  test.serial(`${kind}: a guest looping over files is migrated and goes on with no lost or repeated write`, async (t) => {
    await loopMigration(t, kind);
  });
}

/** Host side of migration-hold.sh: the files it opens. */
async function holdDir(dir: string, vanish: boolean): Promise<string> {
  const held = path.join(dir, 'held-dir');
  await fs.mkdir(path.join(held, 'd'), { recursive: true });
  await fs.writeFile(path.join(held, 'r.txt'), 'read-me\n');
  await fs.writeFile(path.join(held, 'd', 'e1'), '');
  await fs.writeFile(path.join(held, 'd', 'e2'), '');
  if (vanish) await fs.writeFile(path.join(held, 'vanish'), 'vanish\n');
  return held;
}

function caseLines(output: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of output.matchAll(/^([a-z-]+): (\S+)$/gm)) out[m[1]!] = m[2]!;
  return out;
}

interface HoldRun {
  result: Awaited<ReturnType<MigrationPair['migrate']>>;
  pair: MigrationPair;
  held: string;
}

interface HoldOptions {
  extraArgs?: string[];
  /** The host deletes "vanish" while the guest holds it open. */
  vanish?: boolean;
  /** The guest unlinks "unl" while holding it open. */
  unlink?: boolean;
}

/** Boots migration-hold.sh, waits until its descriptors are held, migrates. */
async function holdMigration(t: ExecutionContext, kind: Kind, o: HoldOptions): Promise<HoldRun> {
  const dir = await share(`${kind}-hold`);
  const held = await holdDir(dir, o.vanish ?? false);
  const files = [
    { name: 'test/cx', data: (await helper()).data, mode: 0o755 },
    { name: 'test/hold-opts', data: o.unlink ? '' : 'nounlink', mode: 0o644 },
  ];
  const pair = await MigrationPair.start({
    source: spec(kind, o.extraArgs),
    sharedDir: dir,
    script: await readScript('migration-hold.sh', repoRoot),
    files,
    memoryMiB: MEM,
  });
  t.teardown(() => pair.stop());
  await until('the descriptors to be held', async () => ((await fs.stat(path.join(held, 'held')).catch(() => undefined)) ? true : undefined), 120_000, pair.source);
  if (o.vanish) await fs.rm(path.join(held, 'vanish'));
  const result = await pair.migrate();
  return { result, pair, held };
}

/** After a migration: where the guest ended up running ('dest', or 'source' resumed with cont), its cases. */
async function finish(pair: MigrationPair, held: string): Promise<{ where: string; cases: Record<string, string>; output: string }> {
  await new Promise((r) => setTimeout(r, 1000));
  const destAlive = pair.dest && pair.dest.qemu.exitCode === null && pair.dest.qemu.signalCode === null;
  let where = 'dest';
  let guest = pair.dest!;
  if (!destAlive || (await pair.dest!.qmp.execute<{ status: string }>('query-status').catch(() => ({ status: 'gone' }))).status !== 'running') {
    where = 'source';
    guest = pair.source;
    const st = await guest.qmp.execute<{ status: string }>('query-status');
    if (st.status !== 'running') await guest.qmp.execute('cont');
  } else {
    // The move is over: the source QEMU quits and its daemon ends, as in a real migration, so
    // nothing the source daemon still holds on the host (its locks) answers for the guest.
    await pair.source.qmp.execute('quit').catch(() => undefined);
    await until('the source daemon to end', async () => (pair.source.daemon.exitCode !== null || pair.source.daemon.signalCode !== null ? true : undefined), 15_000);
  }
  await fs.writeFile(path.join(held, 'go'), '');
  const run = await guest.wait(60_000);
  return { where, cases: caseLines(run.output), output: run.output };
}

const OK_CASES = ['read-fd', 'write-fd', 'append-fd', 'dir-fd', 'renamed-fd'];
const LOCKS = { 'posix-lock': 'held', flock: 'held' };

interface HoldCase {
  name: string;
  opts: HoldOptions;
  /** What the source's query-migrate ends with. */
  migration: 'completed' | 'failed';
  /** Where the guest runs afterwards. */
  where: 'dest' | 'source';
  cases: Record<string, string>;
  /** Why the reference behaves so. */
  why: string;
  /** Where ours ends otherwise (a known difference): its outcome and why. */
  ours?: { migration: 'completed' | 'failed'; where: 'dest' | 'source'; why: string };
}

const FILE_HANDLES = ['--migration-mode=file-handles', '--modcaps=+dac_read_search'];
const ALL_OK_FH = { ...Object.fromEntries(OK_CASES.map((c) => [c, 'ok'])), 'unlinked-fd': 'ok', ...LOCKS, 'vanished-fd': 'ok', close: 'ok' };
const GUEST_ERROR = ['--migration-on-error=guest-error'];

/**
 * Descriptors held across the move, as the reference (upstream virtiofsd 1.13, sandbox and seccomp
 * on) handles them. Its locks are the guest kernel's own (it takes no remote POSIX locks or flocks
 * by default), so they move with the guest's memory; ours differs there (KNOWN_DIFFERENCES). The
 * lock probe asks for a bounded range (0..99), not the whole file: see the report on GETLK below.
 */
const HOLD_CASES: HoldCase[] = [
  {
    name: 'every kind of descriptor, all still named',
    opts: {},
    migration: 'completed',
    where: 'dest',
    cases: { ...Object.fromEntries(OK_CASES.map((c) => [c, 'ok'])), ...LOCKS, close: 'ok' },
    why: 'find-paths (the default) finds each inode by its current name, the renamed file under its new one',
  },
  {
    name: 'a file unlinked in the guest while open, --migration-on-error=abort (the default)',
    opts: { unlink: true },
    migration: 'failed',
    where: 'source',
    cases: { ...Object.fromEntries(OK_CASES.map((c) => [c, 'ok'])), 'unlinked-fd': 'ok', ...LOCKS, close: 'ok' },
    why: 'an unlinked inode has no path to send; the destination refuses the state ("source has lost inode"), the source, told through the return path, runs on with every descriptor',
  },
  {
    name: 'a file unlinked in the guest while open, --migration-on-error=guest-error',
    opts: { unlink: true, extraArgs: GUEST_ERROR },
    migration: 'completed',
    where: 'dest',
    cases: { ...Object.fromEntries(OK_CASES.map((c) => [c, 'ok'])), 'unlinked-fd': 'EIO', ...LOCKS, close: 'failed' },
    why: 'the lost inode is marked invalid on the destination: its descriptor answers EIO, even on close (the flush fails)',
  },
  {
    name: 'a file deleted on the host while the guest holds it, --migration-on-error=abort (the default)',
    opts: { vanish: true },
    migration: 'failed',
    where: 'source',
    cases: { ...Object.fromEntries(OK_CASES.map((c) => [c, 'ok'])), ...LOCKS, 'vanished-fd': 'ok', close: 'ok' },
    why: 'as for an unlinked file: no path, the migration fails and the source (still holding the inode) serves on',
  },
  {
    name: 'a file deleted on the host while the guest holds it, --migration-on-error=guest-error',
    opts: { vanish: true, extraArgs: GUEST_ERROR },
    migration: 'completed',
    where: 'dest',
    cases: { ...Object.fromEntries(OK_CASES.map((c) => [c, 'ok'])), ...LOCKS, 'vanished-fd': 'EIO', close: 'ok' },
    why: 'the vanished inode is invalid on the destination: its descriptor answers EIO; every other one works',
  },
  {
    name: '--migration-mode=file-handles --inode-file-handles=prefer, with an unlinked and a vanished file',
    opts: { unlink: true, vanish: true, extraArgs: [...FILE_HANDLES, '--inode-file-handles=prefer'] },
    migration: 'completed',
    where: 'dest',
    cases: ALL_OK_FH,
    why: 'file handles name inodes, not paths: the destination opens even the unlinked ones, which the source keeps alive until it quits (needs CAP_DAC_READ_SEARCH, which the reference drops unless given --modcaps)',
  },
  {
    name: '--migration-mode=file-handles without CAP_DAC_READ_SEARCH given back',
    opts: { unlink: true, vanish: true, extraArgs: ['--migration-mode=file-handles'] },
    migration: 'failed',
    where: 'source',
    cases: ALL_OK_FH,
    why: 'the reference drops CAP_DAC_READ_SEARCH by default, so its destination cannot open the handles ("Opening file handle: Operation not permitted"); the migration fails and the source serves on',
    ours: {
      migration: 'completed',
      where: 'dest',
      why: 'a root daemon of ours with --migration-mode=file-handles keeps CAP_DAC_READ_SEARCH (--modcaps cannot drop it), so its destination opens the handles',
    },
  },
  {
    name: '--migration-mode=file-handles alone, with an unlinked and a vanished file',
    opts: { unlink: true, vanish: true, extraArgs: FILE_HANDLES },
    migration: 'completed',
    where: 'dest',
    cases: ALL_OK_FH,
    why: 'as with --inode-file-handles=prefer: the reference opens handles whatever its inode mode',
  },
];

const OURS_LOCKS_LOST =
  'ours takes POSIX locks and flocks on the host for the guest (remote locks), and they do not move (docs/architecture.md: the source records the lock owners, the destination does not restore them): once the source daemon ends, a fresh process in the guest finds the range free. The reference by default leaves locking to the guest kernel, whose locks move with its memory';

/**
 * Where ours differs from the reference after a move to the destination, and why: descriptor case
 * -> [what ours gives, reason]. Every other case must match the reference's.
 */
// (GETLK: ours answers a whole-file conflict with end = u64::MAX, which the guest kernel rejects with
// EIO; that is not a migration matter and the probe avoids it.)
const KNOWN_DIFFERENCES: Record<string, [string, string]> = {
  'posix-lock': ['unlocked', OURS_LOCKS_LOST],
  flock: ['unlocked', OURS_LOCKS_LOST],
};

for (const kind of MIGRATING) {
  for (const c of HOLD_CASES) {
    test.serial(`${kind}: held descriptors: ${c.name}`, async (t) => {
      const { result, pair, held } = await holdMigration(t, kind, c.opts);
      const want = kind === 'ours' && c.ours ? { ...c, ...c.ours } : c;
      const differs = kind === 'ours' && want.where === 'dest';
      const wantCases = differs ? { ...want.cases, ...Object.fromEntries(Object.entries(KNOWN_DIFFERENCES).map(([k, [v]]) => [k, v])) } : want.cases;
      t.is(result.status, want.migration, `${result.errorDesc ?? ''}\n--- source daemon ---\n${pair.source.daemonStderr().slice(-2000)}\n--- destination daemon ---\n${pair.dest?.daemonStderr().slice(-2000) ?? ''}\n--- destination console ---\n${pair.dest?.console().slice(-2000) ?? ''}`);
      if (want.migration === 'failed') {
        // The source resumes on its own once the migration failed.
        await until('the source to run again', async () => ((await status(pair, 'source')) === 'running' ? true : undefined), 20_000);
      }
      const end = await finish(pair, held);
      t.is(end.where, want.where);
      t.deepEqual(end.cases, wantCases, end.output);
      // What the descriptors wrote reached the host once, through whichever daemon served them.
      t.is(await fs.readFile(path.join(held, 'w.txt'), 'utf8'), 'before\nafter\n');
      t.is(await fs.readFile(path.join(held, 'a.txt'), 'utf8'), 'A1\nA2\n');
      t.is(await fs.readFile(path.join(held, 'ren-new'), 'utf8'), 'R1\nR2\n');
      t.false(fsExists(path.join(held, 'ren-old')));
      if (c.opts.unlink) t.false(fsExists(path.join(held, 'unl')));
      t.log(`${result.status}, downtime ${result.downtimeMs ?? '-'} ms: ${want.why}`);
    });
  }
}

for (const kind of MIGRATING) {
  test.serial(`${kind}: a migration whose destination is killed midway fails and the source serves on`, async (t) => {
    const dir = await share(`${kind}-killed`);
    const pair = await MigrationPair.start({ source: spec(kind), sharedDir: dir, script: await readScript('migration-loop.sh', repoRoot), memoryMiB: MEM });
    t.teardown(() => pair.stop());
    await until('the loop to run on the source', async () => ((await seqCount(dir)) >= 30 ? true : undefined), 120_000, pair.source);
    const result = await pair.migrate({
      // About 8 s for the guest's RAM: time to kill the destination while it is copied.
      maxBandwidth: 8 << 20,
      started: async () => {
        await until(
          'the RAM copy to be under way',
          async () => {
            const info = await pair.source.qmp.execute<{ status: string; ram?: { transferred?: number } }>('query-migrate');
            return info.status === 'active' && (info.ram?.transferred ?? 0) > 8 << 20 ? true : undefined;
          },
          60_000,
        );
        await pair.dest!.stop();
      },
    });
    t.is(result.status, 'failed');
    t.is(await status(pair, 'source'), 'running');
    const atFail = await seqCount(dir);
    await until('the loop to go on on the source', async () => ((await seqCount(dir)) >= atFail + 30 ? true : undefined), 120_000, pair.source);
    await fs.writeFile(path.join(dir, 'stop'), '');
    const run = await pair.source.wait(60_000);
    t.is(run.status, 0, run.output);
    const seq = await checkSeq(dir);
    t.is(seq.fault, undefined);
    t.is(seq.n, Number(/^iterations (\d+)$/m.exec(run.output)?.[1]));
    t.log(`${kind}: ${result.errorDesc ?? 'failed'}; ${seq.n} steps, ${atFail} before the failure`);
  });
}

// A reboot in the same QEMU (no migration): the device is reset without an unmount, the guest mounts
// again (its new FUSE_INIT starts a new session). On the system QEMU and on the migration QEMU.
const REBOOTING: Kind[] = ['reference', 'ours'];
for (const kind of REBOOTING) {
  for (const mode of ['reboot', 'reset'] as const) {
    for (const qemu of ['system', 'migration'] as const) {
      const how = mode === 'reboot' ? 'reboot -f in the guest' : 'system_reset on the monitor';
      test.serial(`${kind}: a guest rebooted (${how}, ${qemu} QEMU) mounts the share again and keeps working`, async (t) => {
        const dir = await share(`${kind}-${mode}`);
        const paths = await provision();
        const guest = await startGuest({
          daemon: spec(kind),
          sharedDir: dir,
          script: await readScript('migration-reboot.sh', repoRoot),
          files: [{ name: 'test/mode', data: `${mode}\n`, mode: 0o644 }],
          allowReboot: true,
          memoryMiB: MEM,
          qemu: qemu === 'system' ? paths.qemu : paths.qemuMigration,
        });
        t.teardown(() => guest.stop());
        if (mode === 'reset') {
          const boot1 = path.join(dir, 'boot1');
          // Its content, not only its name: the reset must not land between the create and the write.
          await until('the first boot to write boot1', async () => ((await fs.readFile(boot1, 'utf8').catch(() => '')) === 'first boot\n' ? true : undefined), 120_000, guest);
          await guest.qmp.execute('system_reset');
        }
        const run = await guest.wait(180_000);
        t.is(run.status, 0, `${run.output}\n--- daemon ---\n${run.daemonStderr.slice(-3000)}`);
        t.regex(run.output, /^first boot\nsecond boot\nboot1\nboot2\n$/);
        t.is(await fs.readFile(path.join(dir, 'boot2'), 'utf8'), 'second boot\n');
      });
    }
  }
}
