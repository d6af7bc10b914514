// POSIX conformance in the guest: scripts/guest/conformance.sh (with its static C helper) runs
// against our daemon and against the reference daemon (upstream virtiofsd), each on a fresh shared
// directory. Every case prints "<case>: ok" or "<case>: FAIL got X want Y", where Y is what a local
// Linux file system answers (checked by running the script on a host ext4 directory).
//
// Checks: our transcript has no FAIL; the reference fails only where REFERENCE_FAILS says so; and
// every case where the two transcripts differ is in KNOWN_DIFFERENCES, with the reason.
// docs/conformance-guest.md holds the same tables for readers.
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { repoRoot, type DaemonSpec, type GuestRun } from './guest/harness.ts';
import {
  describeTranscript as describe,
  failures,
  helper,
  parseTranscript as parse,
  removeHelper,
  runGuestRetrying,
  type Transcript,
} from './guest/suite.ts';

function each(names: string[], reason: string): Record<string, string> {
  return Object.fromEntries(names.map((name) => [name, reason]));
}

const REF_TRUSTED_LISTED =
  'the reference runs LISTXATTR with its own CAP_SYS_ADMIN and passes the list through, so an unprivileged guest user sees trusted.* names (the host file system lists them to privileged callers only, and the guest kernel does not filter a FUSE list)';
const REF_NO_TMPFILE = 'reference 1.13 does not implement FUSE_TMPFILE: open(O_TMPFILE) answers EOPNOTSUPP';
const REF_SGID_RULE =
  'Linux >= 6.2 strips setgid (even without group-exec) when a caller outside the file group writes; the reference leaves it';
const REF_TRUNC_SUID =
  'without --killpriv-v2 (the default) the reference does not clear setuid when a non-owner opens with O_TRUNC; the guest kernel leaves that to the server';

/** Cases the reference daemon (upstream virtiofsd 1.13, run with DAEMON_ARGS) gets wrong, and why. */
const REFERENCE_FAILS: Record<string, string> = {
  'xattr-trusted-user-hidden': REF_TRUSTED_LISTED,
  ...each(['tmpfile-create-link', 'tmpfile-content', 'tmpfile-not-listed', 'tmpfile-owner-user'], REF_NO_TMPFILE),
  'write-nonowner-clears-sgid-nox': REF_SGID_RULE,
  'open-trunc-nonowner-clears-suid': REF_TRUNC_SUID,
};

/**
 * Cases where our transcript line differs from the reference's, and why (the log names entries that
 * no longer differ). Ours passes every case, so today these are exactly the reference's failures.
 */
const KNOWN_DIFFERENCES: Record<string, string> = {
  ...REFERENCE_FAILS,
};

const MIN_CASES = 300;

const runs = new Map<string, Promise<{ run: GuestRun; transcript: Transcript }>>();
const dirs: string[] = [];
function suite(label: string, daemon: DaemonSpec): Promise<{ run: GuestRun; transcript: Transcript }> {
  let pending = runs.get(label);
  if (!pending) {
    pending = (async () => {
      const script = await fs.readFile(path.join(repoRoot, 'scripts', 'guest', 'conformance.sh'), 'utf8');
      const files = [{ name: 'test/cx', data: (await helper()).data, mode: 0o755 }];
      const freshDir = async () => {
        const dir = await fs.mkdtemp(path.join(os.tmpdir(), `virtiofsd-conf-${label}-`));
        dirs.push(dir);
        await fs.chmod(dir, 0o755);
        return dir;
      };
      const { run } = await runGuestRetrying(freshDir, { daemon, script, files, timeoutMs: 300_000 });
      return { run, transcript: parse(run.output) };
    })();
    runs.set(label, pending);
  }
  return pending;
}

// trusted.* and security.* xattrs need CAP_SYS_ADMIN on the host, which both sandboxes drop by
// default; both daemons get it back, so the xattr cases compare daemons, not capability sets.
const DAEMON_ARGS = ['--xattr', '--modcaps=+sys_admin'];
const ours = () => suite('ours', { kind: 'ours', extraArgs: DAEMON_ARGS });
const reference = () => suite('reference', { kind: 'reference', extraArgs: DAEMON_ARGS });

test.after.always(async () => {
  await Promise.allSettled(runs.values());
  for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
  await removeHelper();
});

test.serial('reference daemon: the suite runs and fails only where REFERENCE_FAILS says', async (t) => {
  const { run, transcript } = await reference();
  t.deepEqual(transcript.unexpected, [], `unexpected lines in the reference transcript:\n${run.output}`);
  t.truthy(transcript.summary, `no summary line; the script stopped early:\n${run.output}`);
  t.true(transcript.cases.size >= MIN_CASES, `only ${transcript.cases.size} cases ran`);
  const unlisted = failures(transcript).filter((line) => !(line.split(':')[0]! in REFERENCE_FAILS));
  t.deepEqual(unlisted, [], 'reference failures missing from REFERENCE_FAILS (a wrong expectation in the suite, or a reference bug to list)');
  const passingNow = Object.keys(REFERENCE_FAILS).filter((name) => transcript.cases.get(name) === 'ok');
  t.deepEqual(passingNow, [], 'REFERENCE_FAILS lists cases the reference passes: remove them');
  for (const line of failures(transcript)) t.log(line);
  t.log(`reference (${DAEMON_ARGS.join(' ')}): ${describe(transcript)} in ${run.durationMs} ms`);
});

test.serial('our daemon: every case passes', async (t) => {
  const { run, transcript } = await ours();
  t.log(`ours (${DAEMON_ARGS.join(' ')}): ${describe(transcript)} in ${run.durationMs} ms`);
  t.deepEqual(transcript.unexpected, [], `unexpected lines in our transcript:\n${run.output}`);
  t.truthy(transcript.summary, `no summary line; the script stopped early:\n${run.output}`);
  t.true(transcript.cases.size >= MIN_CASES, `only ${transcript.cases.size} cases ran`);
  t.deepEqual(failures(transcript), [], 'cases where our daemon is not POSIX-conformant ("got" is ours, "want" a local file system)');
  t.is(run.status, 0, 'the suite exits non-zero when a case fails');
  t.is(run.daemonExit.code, 0, `daemon exit ${JSON.stringify(run.daemonExit)}; stderr:\n${run.daemonStderr.slice(-4000)}`);
});

test.serial('differential: every difference from the reference is in KNOWN_DIFFERENCES with a reason', async (t) => {
  const [mine, theirs] = await Promise.all([ours(), reference()]);
  t.deepEqual([...mine.transcript.cases.keys()], [...theirs.transcript.cases.keys()], 'both runs executed the same cases in the same order');
  const differing: string[] = [];
  for (const [name, value] of mine.transcript.cases) {
    const other = theirs.transcript.cases.get(name);
    if (other !== undefined && other !== value) differing.push(name);
  }
  const unexplained = differing
    .filter((name) => !(name in KNOWN_DIFFERENCES))
    .map((name) => `${name}: ours "${mine.transcript.cases.get(name)}" vs reference "${theirs.transcript.cases.get(name)}"`);
  t.deepEqual(unexplained, [], 'differences from the reference without an entry in KNOWN_DIFFERENCES');
  const stale = Object.keys(KNOWN_DIFFERENCES).filter((name) => !differing.includes(name) && !(name in REFERENCE_FAILS));
  if (stale.length) t.log(`KNOWN_DIFFERENCES entries that no longer differ (remove them and their docs rows): ${stale.join(', ')}`);
  t.log(`${differing.length} differing cases`);
});
