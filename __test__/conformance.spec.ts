// POSIX conformance in the guest: scripts/guest/conformance.sh (with its static C helper) runs
// against our daemon and against the reference daemon (upstream virtiofsd), each on a fresh shared
// directory. Every case prints "<case>: ok" or "<case>: FAIL got X want Y", where Y is what a local
// Linux file system answers (checked by running the script on a host ext4 directory).
//
// Checks: our transcript has no FAIL; the reference fails only where REFERENCE_FAILS says so; and
// every case where the two transcripts differ is in KNOWN_DIFFERENCES, with the reason.
// docs/conformance-guest.md holds the same tables for readers.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GuestError, repoRoot, runGuest, type DaemonSpec, type GuestRun } from './guest/harness.ts';

function each(names: string[], reason: string): Record<string, string> {
  return Object.fromEntries(names.map((name) => [name, reason]));
}

const REF_NO_SYS_ADMIN =
  'reference keeps only its default capability set (no CAP_SYS_ADMIN), which the host requires to write trusted.* and security.* xattrs';
const REF_NO_TMPFILE = 'reference 1.13 does not implement FUSE_TMPFILE: open(O_TMPFILE) answers EOPNOTSUPP';
const REF_SGID_RULE =
  'Linux >= 6.2 strips setgid (even without group-exec) when a caller outside the file group writes; the reference leaves it';
const REF_TRUNC_SUID =
  'without --killpriv-v2 (the default) the reference does not clear setuid when a non-owner opens with O_TRUNC; the guest kernel leaves that to the server';

/** Cases the reference daemon (upstream virtiofsd 1.13, run with --xattr) gets wrong, and why. */
const REFERENCE_FAILS: Record<string, string> = {
  ...each(
    [
      'xattr-trusted-set',
      'xattr-trusted-get',
      'xattr-trusted-list',
      'xattr-security-set',
      'xattr-security-get',
      'xattr-security-remove',
      'xattr-trusted-on-symlink',
      'xattr-trusted-on-symlink-read',
    ],
    REF_NO_SYS_ADMIN,
  ),
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
const LINE = /^([a-z0-9][a-z0-9-]*): (ok|FAIL got .* want .*)$/;
const SUMMARY = /^summary: total=(\d+) passed=(\d+) failed=(\d+)$/;

interface Transcript {
  /** Case name -> "ok" or "FAIL got X want Y", in script order. */
  cases: Map<string, string>;
  /** Lines that are neither a case nor the summary: the script or the helper misbehaved. */
  unexpected: string[];
  summary?: { total: number; passed: number; failed: number };
}

function parse(output: string): Transcript {
  const cases = new Map<string, string>();
  const unexpected: string[] = [];
  let summary: Transcript['summary'];
  for (const line of output.split('\n')) {
    if (line === '') continue;
    const m = LINE.exec(line);
    if (m?.[1] && m[2]) {
      if (cases.has(m[1])) unexpected.push(`duplicate case: ${line}`);
      cases.set(m[1], m[2]);
      continue;
    }
    const s = SUMMARY.exec(line);
    if (s) {
      summary = { total: Number(s[1]), passed: Number(s[2]), failed: Number(s[3]) };
      continue;
    }
    unexpected.push(line);
  }
  return { cases, unexpected, summary };
}

function failures(tr: Transcript): string[] {
  return [...tr.cases].filter(([, value]) => value !== 'ok').map(([name, value]) => `${name}: ${value}`);
}

let helperBuilt: Promise<Buffer> | undefined;
/** The helper, compiled statically (the initramfs has no libc). */
function helper(): Promise<Buffer> {
  helperBuilt ??= (async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-cx-'));
    try {
      const out = path.join(dir, 'cx');
      const src = path.join(repoRoot, 'scripts', 'guest', 'conformance-helper.c');
      const cc = spawnSync('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-Werror', '-o', out, src], { encoding: 'utf8' });
      if (cc.error || cc.status !== 0) {
        throw new Error(
          `cannot build the guest helper with \`gcc -static\` (the conformance suite needs gcc and a static libc, ` +
            `e.g. Debian's gcc and libc6-dev): ${cc.error?.message ?? ''}\n${cc.stderr}`,
        );
      }
      return await fs.readFile(out);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  })();
  return helperBuilt;
}

const runs = new Map<string, Promise<{ run: GuestRun; transcript: Transcript }>>();
const dirs: string[] = [];
function suite(label: string, daemon: DaemonSpec): Promise<{ run: GuestRun; transcript: Transcript }> {
  let pending = runs.get(label);
  if (!pending) {
    pending = (async () => {
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), `virtiofsd-conf-${label}-`));
      dirs.push(dir);
      await fs.chmod(dir, 0o755);
      const script = await fs.readFile(path.join(repoRoot, 'scripts', 'guest', 'conformance.sh'), 'utf8');
      const files = [{ name: 'test/cx', data: await helper(), mode: 0o755 }];
      const once = async (sharedDir: string) => runGuest({ daemon, sharedDir, script, files, timeoutMs: 300_000 });
      let run: GuestRun;
      try {
        run = await once(dir);
      } catch (error) {
        // TCG guests on a loaded host occasionally panic in kernel text patching (clocksource
        // watchdog); that says nothing about the daemon, so such a run is retried once, afresh.
        if (!(error instanceof GuestError) || !/Kernel panic/.test(error.console)) throw error;
        const retryDir = await fs.mkdtemp(path.join(os.tmpdir(), `virtiofsd-conf-${label}-retry-`));
        dirs.push(retryDir);
        await fs.chmod(retryDir, 0o755);
        run = await once(retryDir);
      }
      return { run, transcript: parse(run.output) };
    })();
    runs.set(label, pending);
  }
  return pending;
}

// trusted.* and security.* xattrs need CAP_SYS_ADMIN on the host, which the sandbox drops by
// default (as upstream does); the suite checks our xattr handling with it given back.
const ours = () => suite('ours', { kind: 'ours', extraArgs: ['--xattr', '--modcaps=+sys_admin'] });
const reference = () => suite('reference', { kind: 'reference', extraArgs: ['--xattr'] });

test.after.always(async () => {
  await Promise.allSettled(runs.values());
  for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
});

function describe(tr: Transcript): string {
  const s = tr.summary;
  return s ? `${s.passed}/${s.total} cases pass` : 'no summary line';
}

test.serial('reference daemon: the suite runs and fails only where REFERENCE_FAILS says', async (t) => {
  const { run, transcript } = await reference();
  t.deepEqual(transcript.unexpected, [], `unexpected lines in the reference transcript:\n${run.output}`);
  t.truthy(transcript.summary, `no summary line; the script stopped early:\n${run.output}`);
  t.true(transcript.cases.size >= MIN_CASES, `only ${transcript.cases.size} cases ran`);
  const unlisted = failures(transcript).filter((line) => !(line.split(':')[0]! in REFERENCE_FAILS));
  t.deepEqual(unlisted, [], 'reference failures missing from REFERENCE_FAILS (a wrong expectation in the suite, or a reference bug to list)');
  const passingNow = Object.keys(REFERENCE_FAILS).filter((name) => transcript.cases.get(name) === 'ok');
  t.deepEqual(passingNow, [], 'REFERENCE_FAILS lists cases the reference passes: remove them');
  t.log(`reference: ${describe(transcript)} in ${run.durationMs} ms`);
});

test.serial('our daemon: every case passes', async (t) => {
  const { run, transcript } = await ours();
  t.log(`ours (--xattr --modcaps=+sys_admin): ${describe(transcript)} in ${run.durationMs} ms`);
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
