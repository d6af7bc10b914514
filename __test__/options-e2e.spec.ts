// End-to-end checks of the CLI options that change how the share is served: --readonly, the cache
// policies, --writeback, --no-readdirplus and --thread-pool-size. Each option gets one short guest
// boot against our daemon and one against the reference daemon (upstream virtiofsd); the guest's
// transcript, its own checks and the host side must agree.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot, runGuest, type GuestRun } from './guest/harness.ts';
import { expectedBigFile, FIXTURE_TEXT, sha256, snapshot, type EntryState } from './guest/fixtures.ts';

type Daemon = 'ours' | 'reference';

interface Outcome {
  run: GuestRun;
  dir: string;
  state: Record<string, EntryState>;
}

const scratch: string[] = [];
test.after.always(async () => {
  for (const dir of scratch) await fs.rm(dir, { recursive: true, force: true });
});

function lines(output: string): string[] {
  return output.split('\n').filter((line) => line !== '');
}

async function guestScript(name: string): Promise<string> {
  return fs.readFile(path.join(repoRoot, 'scripts', 'guest', name), 'utf8');
}

async function freshDir(label: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `virtiofsd-opt-${label}-`));
  scratch.push(dir);
  await fs.chmod(dir, 0o755);
  await fs.writeFile(path.join(dir, 'fixture.txt'), FIXTURE_TEXT);
  await fs.chmod(path.join(dir, 'fixture.txt'), 0o644);
  return dir;
}

const LIVE_BEFORE = 'version one\n';
const LIVE_AFTER = 'version two, longer\n';

/**
 * Plays the host's part of the live-change check: once the guest creates "ready", rewrite live.txt
 * and create "done". Runs for the whole guest run; returns a stop function.
 */
function hostEditor(dir: string): () => void {
  let edited = false;
  const timer = setInterval(() => {
    if (edited || !existsSync(path.join(dir, 'ready'))) return;
    edited = true;
    writeFileSync(path.join(dir, 'live.txt'), LIVE_AFTER);
    writeFileSync(path.join(dir, 'done'), '');
  }, 20);
  return () => clearInterval(timer);
}

const WORKLOAD_OPTIONS: Record<string, string[]> = {
  'cache-never': ['--cache=never'],
  'cache-always': ['--cache=always'],
  'cache-metadata': ['--cache=metadata'],
  writeback: ['--writeback'],
  'no-readdirplus': ['--no-readdirplus'],
  'thread-pool-4': ['--thread-pool-size=4'],
};

/** Only with --cache=never must a host change be seen at once; other policies may cache. */
const LIVE_CHECK = new Set(['cache-never']);

const outcomes = new Map<string, Promise<Outcome>>();
function memo(key: string, make: () => Promise<Outcome>): Promise<Outcome> {
  let pending = outcomes.get(key);
  if (!pending) {
    pending = make();
    outcomes.set(key, pending);
  }
  return pending;
}

function workload(label: string, daemon: Daemon): Promise<Outcome> {
  return memo(`${label}/${daemon}`, async () => {
    const dir = await freshDir(`${label}-${daemon}`);
    const live = LIVE_CHECK.has(label);
    if (live) await fs.writeFile(path.join(dir, 'live.txt'), LIVE_BEFORE);
    const stop = live ? hostEditor(dir) : () => undefined;
    try {
      const run = await runGuest({
        daemon: { kind: daemon, extraArgs: WORKLOAD_OPTIONS[label] },
        sharedDir: dir,
        script: await guestScript('opt-workload.sh'),
        files: live ? [{ name: 'test/live', data: '1' }] : [],
        timeoutMs: 120_000,
      });
      return { run, dir, state: await snapshot(dir) };
    } finally {
      stop();
    }
  });
}

async function readonlyFixture(label: string): Promise<string> {
  const dir = await freshDir(label);
  await fs.mkdir(path.join(dir, 'sub', 'empty'), { recursive: true });
  await fs.writeFile(path.join(dir, 'sub', 'inner.txt'), 'inner\n');
  return dir;
}

interface ReadonlyOutcome extends Outcome {
  before: Record<string, EntryState>;
  mtimesBefore: Record<string, number>;
  mtimesAfter: Record<string, number>;
}

async function mtimes(dir: string, state: Record<string, EntryState>): Promise<Record<string, number>> {
  const result: Record<string, number> = {};
  for (const rel of Object.keys(state)) result[rel] = (await fs.lstat(path.join(dir, rel))).mtimeMs;
  return result;
}

function readonlyRun(daemon: Daemon): Promise<ReadonlyOutcome> {
  return memo(`readonly/${daemon}`, async () => {
    const dir = await readonlyFixture(`readonly-${daemon}`);
    const before = await snapshot(dir);
    const mtimesBefore = await mtimes(dir, before);
    const run = await runGuest({
      daemon: { kind: daemon, extraArgs: ['--readonly'] },
      sharedDir: dir,
      script: await guestScript('opt-readonly.sh'),
      timeoutMs: 120_000,
    });
    const state = await snapshot(dir);
    return { run, dir, state, before, mtimesBefore, mtimesAfter: await mtimes(dir, state) };
  }) as Promise<ReadonlyOutcome>;
}

function checkGuest(t: ExecutionContext, { run }: Outcome, required: string[]): void {
  const out = lines(run.output);
  t.deepEqual(
    out.filter((line) => line.startsWith('MISMATCH')),
    [],
    `guest checks failed:\n${run.output}`,
  );
  t.is(run.status, 0, `guest script exit status; transcript:\n${run.output}`);
  for (const expected of required) {
    t.true(out.includes(expected), `missing line "${expected}" in transcript:\n${run.output}`);
  }
}

function checkDaemonExit(t: ExecutionContext, { run }: Outcome): void {
  t.true(run.daemonExit.exitedOnItsOwn, `daemon still running after QEMU quit; stderr:\n${run.daemonStderr}`);
  t.is(run.daemonExit.code, 0, `daemon exit ${JSON.stringify(run.daemonExit)}; stderr:\n${run.daemonStderr}`);
}

const BIG = expectedBigFile().subarray(0, 4 * 1024 * 1024);
const BIG_TRUNCATED = BIG.subarray(0, 1_000_000);

function workloadLines(live: boolean): string[] {
  const required = [
    `big-write-sha256: ${sha256(BIG)}`,
    `big-read-sha256: ${sha256(BIG)}`,
    `big-truncated: 1000000 ${sha256(BIG_TRUNCATED)}`,
    'readdir-count: 200 202',
    'failures: 0',
  ];
  if (live) required.push('live-after: version two, longer 20');
  return required;
}

async function checkWorkloadHost(t: ExecutionContext, { dir, state }: Outcome, live: boolean): Promise<void> {
  const at = (rel: string) => path.join(dir, rel);
  t.is(await fs.readFile(at('dir/renamed.txt'), 'latin1'), 'alpha\nbe', 'written, appended, renamed, appended, truncated');
  t.false('w.txt' in state, 'w.txt was renamed away');
  const big = await fs.readFile(at('big.bin'));
  t.is(big.length, 1_000_000);
  t.is(sha256(big), sha256(BIG_TRUNCATED), 'big.bin on the host differs from the generated data');
  const many = (await fs.readdir(at('many'))).sort();
  t.deepEqual(many, Array.from({ length: 100 }, (_, i) => `e-${i + 101}`).sort());
  t.is(await fs.readFile(at('fixture.txt'), 'utf8'), FIXTURE_TEXT, 'the fixture is untouched');
  if (live) {
    t.is(await fs.readFile(at('live.txt'), 'utf8'), LIVE_AFTER);
    t.false('ready' in state || 'done' in state, 'the guest removes its handshake files');
  }
}

for (const label of Object.keys(WORKLOAD_OPTIONS)) {
  const live = LIVE_CHECK.has(label);
  const args = WORKLOAD_OPTIONS[label].join(' ');
  test.serial(`${args}: our daemon passes the workload and the host side matches`, async (t) => {
    const mine = await workload(label, 'ours');
    checkGuest(t, mine, workloadLines(live));
    await checkWorkloadHost(t, mine, live);
    checkDaemonExit(t, mine);
    t.log(`${args}, our daemon: ${mine.run.durationMs} ms`);
  });

  test.serial(`${args}: same transcript and host state as the reference`, async (t) => {
    const theirs = await workload(label, 'reference');
    checkGuest(t, theirs, workloadLines(live));
    await checkWorkloadHost(t, theirs, live);
    const mine = await workload(label, 'ours');
    t.deepEqual(lines(mine.run.output), lines(theirs.run.output));
    t.deepEqual(mine.state, theirs.state);
  });
}

const ROFS = 'Read-only file system';
const READONLY_LINES = [
  'read: hello from the host|second line|',
  'read-sub: inner',
  ...['create', 'create-redirect', 'mkdir', 'write-existing', 'truncate-existing', 'truncate-size', 'rm', 'rmdir', 'chmod', 'chown', 'touch-existing', 'mv', 'symlink', 'hardlink', 'mkfifo'].map(
    (name) => `${name}: ${ROFS}`,
  ),
  'gone: no no no no no no no',
  'failures: 0',
];

async function checkReadonlyHost(t: ExecutionContext, done: ReadonlyOutcome): Promise<void> {
  t.deepEqual(done.state, done.before, 'the shared directory changed');
  t.deepEqual(done.mtimesAfter, done.mtimesBefore, 'a modification time changed');
  t.is(await fs.readFile(path.join(done.dir, 'fixture.txt'), 'utf8'), FIXTURE_TEXT);
}

test.serial('--readonly: our daemon serves reads and refuses every change with EROFS', async (t) => {
  const mine = await readonlyRun('ours');
  checkGuest(t, mine, READONLY_LINES);
  await checkReadonlyHost(t, mine);
  checkDaemonExit(t, mine);
  t.log(`--readonly, our daemon: ${mine.run.durationMs} ms`);
});

test.serial('--readonly: same transcript as the reference, whose host side is unchanged too', async (t) => {
  const theirs = await readonlyRun('reference');
  checkGuest(t, theirs, READONLY_LINES);
  await checkReadonlyHost(t, theirs);
  const mine = await readonlyRun('ours');
  t.deepEqual(lines(mine.run.output), lines(theirs.run.output));
});
