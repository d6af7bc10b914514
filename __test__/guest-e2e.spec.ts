// End-to-end: a Linux guest under QEMU mounts the share through a daemon and runs
// scripts/guest/fs-e2e.sh. Checked three ways: the guest's own transcript, the host side of every
// change, and -- differentially -- against the reference daemon (upstream virtiofsd) on an identical
// directory.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runGuest, type DaemonSpec, type GuestRun } from './guest/harness.ts';
import { expectedBigFile, FIXTURE_TEXT, fsE2eScript, makeSharedDir, sha256, snapshot, type EntryState } from './guest/fixtures.ts';

interface Outcome {
  run: GuestRun;
  dir: string;
  state: Record<string, EntryState>;
  /** Times of "t", taken before anything on the host reads it (a read moves atime). */
  tTimes: { atimeMs: number; mtimeMs: number };
}

// Each daemon is booted once and its outcome shared by the tests that inspect it.
const outcomes = new Map<string, Promise<Outcome>>();
const sharedDirs: Promise<string>[] = [];
function outcome(label: string, daemon: DaemonSpec, numRequestQueues?: number): Promise<Outcome> {
  let pending = outcomes.get(label);
  if (!pending) {
    const made = makeSharedDir(label);
    sharedDirs.push(made);
    pending = (async () => {
      const dir = await made;
      const run = await runGuest({ daemon, sharedDir: dir, script: await fsE2eScript(), timeoutMs: 180_000, numRequestQueues });
      const { atimeMs, mtimeMs } = await fs.lstat(path.join(dir, 't'));
      return { run, dir, tTimes: { atimeMs, mtimeMs }, state: await snapshot(dir) };
    })();
    outcomes.set(label, pending);
  }
  return pending;
}
const ours = () => outcome('ours', { kind: 'ours' });
const reference = () => outcome('reference', { kind: 'reference' });
// Several request queues (the guest maps them to its CPUs) served by a thread pool, started through
// the library API: the same script must give the same results.
const libraryDevice = path.join(path.dirname(fileURLToPath(import.meta.url)), 'guest', 'library-device.cjs');
const multiqueue = () =>
  outcome('ours-multiqueue', { argv: [process.execPath, libraryDevice, '--queues=2', '--thread-pool-size=4'] }, 2);

test.after.always(async () => {
  await Promise.allSettled(outcomes.values());
  for (const made of sharedDirs) {
    const dir = await made.catch(() => undefined);
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  }
});

const bigSha = sha256(expectedBigFile());

function lines(output: string): string[] {
  return output.split('\n').filter((line) => line !== '');
}

function checkTranscript(t: ExecutionContext, { run }: Outcome): void {
  const out = lines(run.output);
  t.deepEqual(
    out.filter((line) => line.startsWith('MISMATCH')),
    [],
    `guest checks failed:\n${run.output}`,
  );
  t.is(run.status, 0, `guest script exit status; transcript:\n${run.output}`);
  for (const expected of [
    'fixture-read: hello from the host|second line|',
    `fixture-sha256: ${sha256(FIXTURE_TEXT)}`,
    `big-write-sha256: ${bigSha}`,
    `big-read-sha256: ${bigSha}`,
    'big-size: 8388608',
    'readdir-count: 1000',
    'chown: 1234:5678',
    'utimes: 981173106 981173106',
    'failures: 0',
  ]) {
    t.true(out.includes(expected), `missing line "${expected}" in transcript:\n${run.output}`);
  }
}

async function checkHostSide(t: ExecutionContext, { dir, state, tTimes }: Outcome): Promise<void> {
  const at = (rel: string) => path.join(dir, rel);
  const entry = (rel: string): EntryState => {
    const found = state[rel];
    if (!found) throw new Error(`${rel} missing on the host`);
    return found;
  };
  const big = await fs.readFile(at('big.bin'));
  t.is(big.length, 8 * 1024 * 1024);
  t.is(sha256(big), bigSha, 'big.bin on the host differs from the generated data');
  t.is(await fs.readFile(at('d3/c.txt'), 'latin1'), 'hel\0\0\0XY', 'written, truncated, grown, patched, renamed');
  t.is(await fs.readFile(at('d3/old.txt'), 'utf8'), 'new\n', 'rename over an existing file');
  for (const gone of ['a.txt', 'b.txt', 'd1/b.txt', 'd2', 'd3/new.txt', 'h1', 'u', 'emptydir', 'many/entry-1', 'big-copy.bin']) {
    t.false(gone in state, `${gone} should be gone`);
  }
  t.is(entry('h2').nlink, 2);
  t.is(entry('h3').nlink, 2);
  t.is((await fs.stat(at('h2'))).ino, (await fs.stat(at('h3'))).ino, 'h2 and h3 are one inode');
  t.is(await fs.readFile(at('h3'), 'utf8'), 'linked\n');
  t.deepEqual([entry('sl').type, entry('sl').target], ['symlink', 'd3/old.txt']);
  t.deepEqual([entry('dangling').type, entry('dangling').target], ['symlink', 'does/not/exist']);
  t.is(entry('m').mode, '751');
  t.deepEqual([entry('md').type, entry('md').mode], ['dir', '700']);
  t.deepEqual([entry('o').uid, entry('o').gid], [4321, 5678]);
  t.is(Math.floor(tTimes.atimeMs / 1000), 981173106);
  t.is(Math.floor(tTimes.mtimeMs / 1000), 1262304000);
  t.is(entry('fifo').type, 'fifo');
  t.deepEqual([entry('nonempty/f').type, entry('nonempty/f').size], ['file', 0]);
  t.is(await fs.readFile(at('deep/a/b/c/leaf'), 'utf8'), 'leaf\n');
  const many = (await fs.readdir(at('many'))).sort();
  const expectedMany = Array.from({ length: 500 }, (_, i) => `entry-${i + 501}`).sort();
  t.deepEqual(many, expectedMany);
  t.is(await fs.readFile(at('fixture.txt'), 'utf8'), FIXTURE_TEXT, 'the fixture is untouched');
}

test.serial('our daemon: the guest script passes', async (t) => {
  checkTranscript(t, await ours());
});

test.serial('our daemon: the host side shows every change', async (t) => {
  await checkHostSide(t, await ours());
});

test.serial('our daemon: exits on its own once QEMU disconnects', async (t) => {
  const { run } = await ours();
  t.true(run.daemonExit.exitedOnItsOwn, `daemon still running after QEMU quit; stderr:\n${run.daemonStderr}`);
  t.is(run.daemonExit.code, 0, `daemon exit ${JSON.stringify(run.daemonExit)}; stderr:\n${run.daemonStderr}`);
  t.log(`guest run with our daemon: ${run.durationMs} ms`);
});

test.serial('reference daemon (oracle): the guest script passes and the host side matches', async (t) => {
  const done = await reference();
  checkTranscript(t, done);
  await checkHostSide(t, done);
  t.true(done.run.daemonExit.exitedOnItsOwn, 'the reference exits when the frontend disconnects');
  t.log(`guest run with the reference daemon: ${done.run.durationMs} ms`);
});

test.serial('differential: our transcript equals the reference transcript', async (t) => {
  const [mine, theirs] = await Promise.all([ours(), reference()]);
  t.deepEqual(lines(mine.run.output), lines(theirs.run.output));
});

test.serial('differential: our host-side state equals the reference state', async (t) => {
  const [mine, theirs] = await Promise.all([ours(), reference()]);
  // Snapshots leave out times and inode numbers, which differ between any two runs.
  t.deepEqual(mine.state, theirs.state);
});

test.serial('our daemon with 2 request queues and a thread pool: same transcript and host state as the reference', async (t) => {
  const [mine, theirs] = await Promise.all([multiqueue(), reference()]);
  checkTranscript(t, mine);
  await checkHostSide(t, mine);
  t.deepEqual(lines(mine.run.output), lines(theirs.run.output));
  t.deepEqual(mine.state, theirs.state);
  t.is(mine.run.daemonExit.code, 0, `daemon exit ${JSON.stringify(mine.run.daemonExit)}; stderr:\n${mine.run.daemonStderr}`);
  t.log(`guest run with 2 queues and 4 pool threads: ${mine.run.durationMs} ms`);
});
