// Policy options in the guest: scripts/guest/policy.sh, one section per daemon configuration
// (--translate-uid/gid, --posix-acl, ACLs refused without it plus --killpriv-v2, --xattrmap,
// --security-label, and ours only: --posix-acl with --translate-uid/gid). Each section runs once
// against our daemon and once against the reference daemon (upstream virtiofsd 1.13) with the SAME
// options, each on a fresh shared directory that the spec prepares on the host before the run (files
// with host owners, host xattrs and ACLs) and checks on the host after it (owners, xattr names and
// ACL ids as the host stores them, read with the same static helper the guest uses). A host check is
// one more case, "host-<name>: ok" or "host-<name>: FAIL got X want Y", in the section's transcript.
//
// Checks, per section: our transcript has no FAIL (but the PROTOCOL_LIMITS answers no FUSE server
// can improve on); the reference fails only where REFERENCE_FAILS says so; and every case where the two transcripts differ is in KNOWN_DIFFERENCES with the reason
// (an entry that no longer differs is reported in the log). docs/conformance-guest.md holds the
// same tables for readers.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { provision, repoRoot, type DaemonSpec, type GuestRun } from './guest/harness.ts';
import {
  describeTranscript,
  failures,
  helper,
  parseTranscript,
  removeHelper,
  runGuestRetrying,
  type Transcript,
} from './guest/suite.ts';

function each(names: string[], reason: string): Record<string, string> {
  return Object.fromEntries(names.map((name) => [name, reason]));
}

const REF_FORBID_EIO =
  'the reference answers EIO, not EPERM: its id-mapping error is an io::Error without an errno, which its FUSE reply turns into EIO';
const REF_KILLPRIV_SGID =
  "with KILLPRIV_V2 the reference clears the bits by doing the write/truncate without CAP_FSETID under its own credentials, so the host kernel decides setgid by the daemon's group (0), not the guest caller's: setgid is dropped on files of another group although the caller is a member, and kept on group-0 files although the caller is not";
const REF_NO_TMPFILE = 'reference 1.13 does not implement FUSE_TMPFILE: open(O_TMPFILE) answers EOPNOTSUPP';

/** Cases the reference daemon gets wrong, and why. */
const REFERENCE_FAILS: Record<string, string> = {
  ...each(
    [
      'tr-forbid-create-uid',
      'tr-forbid-create-gid',
      'tr-forbid-mkdir',
      'tr-forbid-symlink',
      'tr-forbid-mknod',
      'tr-forbid-chown-uid',
      'tr-forbid-chown-gid',
    ],
    REF_FORBID_EIO,
  ),
  ...each(
    [
      'kp-owner-write',
      'kp-nonowner-write-group-member',
      'kp-nonowner-write-not-in-group',
      'kp-owner-truncate',
      'kp-owner-open-trunc',
      'kp-nonowner-truncate-group-member',
      'kp-nonowner-open-trunc-not-in-group',
      'host-kp-owner-write',
    ],
    REF_KILLPRIV_SGID,
  ),
  ...each(['sl-tmpfile', 'sl-tmpfile-label', 'host-sl-tmpfile'], REF_NO_TMPFILE),
};

/**
 * Cases no FUSE server can answer as a local file system, because the request does not carry what
 * the answer depends on: the answer both daemons give ("got") and why. Both tests accept exactly
 * that failure; the log reports a case that starts passing.
 */
const PROTOCOL_LIMITS: Record<string, { got: string; reason: string }> = {
  'kp-owner-write-supplementary-group': {
    got: '745',
    reason:
      'with KILLPRIV_V2 the guest sets FUSE_WRITE_KILL_SUIDGID on every write by a caller without CAP_FSETID and leaves the setgid decision to the server, ' +
      "whose request names the caller's uid and primary gid only: membership of the file's group through a supplementary group is invisible, so the server clears setgid",
  },
};

function atProtocolLimit(line: string): boolean {
  const [name, value] = [line.slice(0, line.indexOf(': ')), line.slice(line.indexOf(': ') + 2)];
  const limit = PROTOCOL_LIMITS[name];
  return limit !== undefined && value.startsWith(`FAIL got ${limit.got} want `);
}

function reportLimits(t: import('ava').ExecutionContext, tr: Transcript): void {
  for (const name of Object.keys(PROTOCOL_LIMITS)) if (tr.cases.get(name) === 'ok') t.log(`PROTOCOL_LIMITS lists ${name}, which passes now`);
}

/**
 * Cases where our transcript line differs from the reference's, and why. Every reference failure is
 * one (ours passes every case); the others are differences where neither answer is wrong.
 */
const KNOWN_DIFFERENCES: Record<string, string> = {
  ...REFERENCE_FAILS,
};

// --- host side ------------------------------------------------------------------------------------

let hostHelper = '';

/** Runs the helper on the host in `dir`; its output lines joined by "|" (as the script's t does). */
function hx(dir: string, ...args: string[]): string {
  const r = spawnSync(hostHelper, args, { cwd: dir, encoding: 'utf8' });
  if (r.error) throw r.error;
  const out = `${r.stdout}${r.stderr}`.replace(/\n+$/, '').split('\n').join('|');
  return out === '' ? '<nothing>' : out;
}

/** Like hx, for setup: the helper must answer "ok". */
function hxOk(dir: string, ...args: string[]): void {
  const out = hx(dir, ...args);
  if (out !== 'ok') throw new Error(`host setup: cx ${args.join(' ')} answered ${out}`);
}

async function file(dir: string, rel: string, owner: [number, number], mode: number, data = ''): Promise<void> {
  const p = path.join(dir, rel);
  await fs.mkdir(path.dirname(p), { recursive: true });
  await fs.writeFile(p, data);
  await fs.chown(p, owner[0], owner[1]);
  await fs.chmod(p, mode);
}

async function directory(dir: string, rel: string, mode = 0o755): Promise<void> {
  const p = path.join(dir, rel);
  await fs.mkdir(p, { recursive: true });
  await fs.chmod(p, mode);
}

interface HostCheck {
  name: string;
  want: string;
  /** The helper's arguments (run in the shared directory), e.g. ['aclget', 'acl/f', 'access']. */
  cx: string[];
}

function hostCase(dir: string, check: HostCheck): [string, string] {
  const got = hx(dir, ...check.cx);
  return [`host-${check.name}`, got === check.want ? 'ok' : `FAIL got ${got} want ${check.want}`];
}

// --- the sections ---------------------------------------------------------------------------------

interface Section {
  /** POLICY value of scripts/guest/policy.sh. */
  name: string;
  /** What the section exercises, for test titles. */
  title: string;
  /** Daemon options, the same for both daemons. */
  args: string[];
  kernelArgs?: string[];
  /** When set, the reference daemon is not run, for this reason (the reference test checks it instead). */
  oursOnly?: string;
  setup?: (dir: string) => Promise<void>;
  host: HostCheck[];
  minCases: number;
}

const both = (type: string, spec: string) => [`--translate-uid=${type}:${spec}`, `--translate-gid=${type}:${spec}`];

const XATTRMAP =
  '/prefix/all/trusted./user.virtiofs./ /bad/server//trusted./ /bad/client/user.virtiofs.// ' +
  '/unsupported/all/user.unsup./user.unsup./ /bad/all/user.hidden./user.hidden./ /ok/all///';

const owned = (name: string, want: string, p: string): HostCheck => ({ name, want, cx: ['owner', p] });
const acl = (name: string, want: string, p: string, which = 'access'): HostCheck => ({ name, want, cx: ['aclget', p, which] });
const xget = (name: string, want: string, p: string, x: string): HostCheck => ({ name, want, cx: ['lgetx', p, x] });

const SECTIONS: Section[] = [
  {
    name: 'translate',
    title: '--translate-uid/gid of every type',
    args: [
      ...both('map', '1000:101000:100'),
      ...both('squash-guest', '3000:103000:10'),
      ...both('squash-host', '105000:5000:10'),
      ...both('forbid-guest', '2000:1'),
      ...both('guest', '6000:106000:10'),
      ...both('host', '107000:7000:10'),
    ],
    async setup(dir) {
      await directory(dir, 'tr');
      for (const id of [101000, 101099, 101100, 107002, 500, 106000, 103000]) await file(dir, `tr/h${id}`, [id, id], 0o644);
      await file(dir, 'tr/h105003', [105003, 105007], 0o644);
      await file(dir, 'tr/h101005', [101005, 101005], 0o600, 'h');
      await file(dir, 'tr/h1005', [1005, 1005], 0o600, 'h');
    },
    host: [
      owned('tr-create-root', '0:0 644', 'tr/g/c0'),
      owned('tr-create-map', '101000:101001 644', 'tr/g/c1000'),
      owned('tr-create-map-other-ids', '101050:101060 644', 'tr/g/c1050'),
      owned('tr-mkdir-map', '101000:101000 755', 'tr/g/d1000'),
      owned('tr-create-in-mapped-dir', '101000:101000 644', 'tr/g/d1000/n'),
      owned('tr-symlink-map-lchown', '101010:101011 777', 'tr/g/s1000'),
      owned('tr-mknod-map', '101000:101000 644', 'tr/g/p1000'),
      owned('tr-create-squash', '103000:103000 644', 'tr/g/c3005'),
      owned('tr-create-guest-type', '106003:106004 644', 'tr/g/c6003'),
      owned('tr-create-unmapped', '5000:5000 644', 'tr/g/c5000'),
      owned('tr-forbid-neighbour', '2001:2001 644', 'tr/g/c2001'),
      ...['c2000', 'c2000g', 'd2000', 's2000', 'p2000'].map((n) => owned(`tr-forbid-absent-${n}`, 'ENOENT', `tr/g/${n}`)),
      owned('tr-chown-map', '101042:101043 644', 'tr/g/o1'),
      owned('tr-chown-squash', '103000:103000 644', 'tr/g/o2'),
      owned('tr-chown-unmapped', '4000:4000 644', 'tr/g/o3'),
      owned('tr-chown-host-range', '101005:101005 644', 'tr/g/o4'),
      owned('tr-setgid-dir', '101000:101070 2777', 'tr/g/sg'),
      owned('tr-setgid-dir-file', '0:101070 644', 'tr/g/sg/f'),
      owned('tr-setgid-dir-user', '101001:101070 2755', 'tr/g/sg/d'),
      owned('tr-map-chmod-by-owner', '101005:101005 640', 'tr/h101005'),
      { name: 'tr-map-owner-writes', want: 'hx', cx: ['pread', 'tr/h101005', '0', '10'] },
      owned('tr-unmapped-alias-untouched', '1005:1005 600', 'tr/h1005'),
    ],
    minCases: 65,
  },
  {
    name: 'acl',
    title: '--posix-acl',
    args: ['--posix-acl'],
    host: [
      acl('acl-removed', 'ENODATA', 'acl/f'),
      owned('acl-removed-mode', '0:0 640', 'acl/f'),
      acl('acl-sgid-kept-member', 'u::rwx,u:1002:rwx,g::rwx,m::rwx,o::r-x', 'acl/e'),
      owned('acl-sgid-kept-member-mode', '1000:3000 2775', 'acl/e'),
      acl('acl-default-removed', 'ENODATA', 'acl/d', 'default'),
      acl('acl-inherit-file', 'u::rw-,u:1000:rwx,g::r-x,g:2000:rwx,m::rw-,o::---', 'acl/moved'),
      owned('acl-inherit-file-mode', '0:0 660', 'acl/moved'),
      acl('acl-inherit-dir', 'u::rwx,u:1000:rwx,g::r-x,g:2000:rwx,m::r-x,o::---', 'acl/d/sub'),
      acl('acl-inherit-dir-default', 'u::rwx,u:1000:rwx,g::r-x,g:2000:rwx,m::rwx,o::---', 'acl/d/sub', 'default'),
      acl('acl-inherit-named-user', 'u::rw-,u:1000:rwx,g::r-x,g:2000:rwx,m::r--,o::---', 'acl/d/sub/u1'),
      owned('acl-inherit-named-user-owner', '1000:1000 640', 'acl/d/sub/u1'),
      owned('acl-inherit-mknod', '0:0 640', 'acl/d/p'),
      owned('acl-umask-file', '0:0 600', 'acl/nf'),
      owned('acl-umask-dir', '0:0 700', 'acl/nd'),
    ],
    minCases: 57,
  },
  {
    name: 'noacl',
    title: '--xattr --killpriv-v2 (ACLs refused, setuid/setgid on writes)',
    args: ['--xattr', '--killpriv-v2'],
    async setup(dir) {
      await directory(dir, 'na');
      await file(dir, 'na/hostacl', [0, 0], 0o644);
      hxOk(dir, 'aclset', 'na/hostacl', 'access', 'u::rw-,u:1000:rwx,g::r--,m::rwx,o::r--');
      await directory(dir, 'na/hostdef');
      hxOk(dir, 'aclset', 'na/hostdef', 'default', 'u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---');
    },
    host: [
      acl('noacl-host-acl-kept', 'u::rw-,u:1000:rwx,g::r--,m::rwx,o::r--', 'na/hostacl'),
      acl('noacl-host-default-kept', 'u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---', 'na/hostdef', 'default'),
      acl('noacl-set-refused', 'ENODATA', 'na/f'),
      acl('noacl-set-default-refused', 'ENODATA', 'na/d', 'default'),
      xget('noacl-user-xattr', 'v', 'na/f', 'user.a'),
      owned('kp-owner-write', '1000:1000 2745', 'na/kp/owner-write'),
      owned('kp-owner-write-not-in-group', '1000:3000 745', 'na/kp/owner-write-not-in-group'),
    ],
    minCases: 25,
  },
  {
    name: 'xattrmap',
    title: '--xattr --xattrmap',
    args: ['--xattr', `--xattrmap=${XATTRMAP}`],
    async setup(dir) {
      await directory(dir, 'xm');
      await file(dir, 'xm/f', [0, 0], 0o644);
      const values: [string, string][] = [
        ['user.virtiofs.foo', 'fv'],
        ['user.virtiofs.trusted.pre', 'pre'],
        ['trusted.secret', 'ts'],
        ['user.plain', 'pv'],
        ['user.hidden.h', 'hv'],
        ['user.unsup.u', 'uv'],
      ];
      for (const [name, value] of values) hxOk(dir, 'setx', 'xm/f', name, value);
    },
    host: [
      {
        name: 'xm-stored-names',
        want: 'trusted.secret,user.hidden.h,user.other,user.plain,user.unsup.u,user.virtiofs.foo,user.virtiofs.trusted.keep,user.virtiofs.trusted.pre',
        cx: ['listx', 'xm/f', ''],
      },
      xget('xm-trusted-stored-prefixed', 'kv', 'xm/f', 'user.virtiofs.trusted.keep'),
      xget('xm-trusted-not-stored-raw', 'ENODATA', 'xm/f', 'trusted.keep'),
      xget('xm-host-trusted-untouched', 'ts', 'xm/f', 'trusted.secret'),
      xget('xm-host-prefixed-untouched', 'fv', 'xm/f', 'user.virtiofs.foo'),
      { name: 'xm-new-file-stored', want: 'user.virtiofs.trusted.n', cx: ['listx', 'xm/n', ''] },
    ],
    minCases: 28,
  },
  {
    name: 'label',
    title: '--security-label --modcaps=+sys_admin, SELinux guest',
    // security.* xattrs need CAP_SYS_ADMIN on the host, which both sandboxes drop by default.
    args: ['--security-label', '--modcaps=+sys_admin'],
    // Debian's kernel builds SELinux in but enables AppArmor first; SELinux without a policy labels
    // new inodes "unlabeled" and implements dentry_init_security, so FUSE sends the label.
    kernelArgs: ['lsm=selinux'],
    async setup(dir) {
      await directory(dir, 'sl');
      await file(dir, 'sl/host', [0, 0], 0o644);
    },
    host: [
      xget('sl-create', 'relabeled', 'sl/f', 'security.selinux'),
      xget('sl-mkdir', 'unlabeled', 'sl/d', 'security.selinux'),
      xget('sl-mknod', 'unlabeled', 'sl/p', 'security.selinux'),
      xget('sl-symlink', 'unlabeled', 'sl/s', 'security.selinux'),
      xget('sl-user-create', 'unlabeled', 'sl/d/u', 'security.selinux'),
      xget('sl-tmpfile', 'unlabeled', 'sl/tl', 'security.selinux'),
      owned('sl-user-create-owner', '1000:1000 644', 'sl/d/u'),
      xget('sl-host-unlabeled', 'ENODATA', 'sl/host', 'security.selinux'),
    ],
    minCases: 18,
  },
  {
    name: 'acl-translate',
    title: '--posix-acl with --translate-uid/gid',
    args: ['--posix-acl', ...both('map', '1000:101000:100'), ...both('squash-guest', '3000:103000:10'), ...both('forbid-guest', '2000:1')],
    oursOnly: 'upstream refuses --translate-uid/--translate-gid together with --posix-acl',
    async setup(dir) {
      await directory(dir, 'at');
      await file(dir, 'at/h', [0, 0], 0o644);
      hxOk(dir, 'aclset', 'at/h', 'access', 'u::rw-,u:101020:rw-,g::r--,g:101021:r--,m::rw-,o::r--');
      await directory(dir, 'at/hd');
      hxOk(dir, 'aclset', 'at/hd', 'default', 'u::rwx,u:101030:rwx,g::r-x,m::rwx,o::---');
    },
    host: [
      acl('at-set', 'u::rw-,u:50000:r--,u:101005:rwx,g::r--,g:101007:r-x,m::r--,o::---', 'at/f'),
      acl('at-squash', 'u::rw-,u:103000:rwx,g::r--,m::rwx,o::r--', 'at/q'),
      owned('at-owner-maps', '101005:101005 674', 'at/q'),
      acl('at-host-acl-kept', 'u::rw-,u:101020:rw-,g::r--,g:101021:r--,m::rw-,o::r--', 'at/h'),
      acl('at-inherit-host-default', 'u::rw-,u:101030:rwx,g::r-x,m::r--,o::---', 'at/hd/n'),
      acl('at-default-set', 'u::rwx,u:101040:rwx,g::r-x,g:101041:r-x,m::rwx,o::---', 'at/d', 'default'),
      acl('at-default-inherit-dir', 'u::rwx,u:101040:rwx,g::r-x,g:101041:r-x,m::rwx,o::---', 'at/d/s'),
      acl('at-default-inherit-dir-default', 'u::rwx,u:101040:rwx,g::r-x,g:101041:r-x,m::rwx,o::---', 'at/d/s', 'default'),
      owned('at-named-user-creates', '101040:101040 600', 'at/d/s/u'),
    ],
    minCases: 26,
  },
];

// --- runs -----------------------------------------------------------------------------------------

/** Guest runs at a time (each QEMU takes one host core under TCG). */
const JOBS = Math.max(1, Number(process.env.POLICY_GUEST_JOBS ?? 2) || 1);
let running = 0;
const waiting: (() => void)[] = [];
async function limited<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= JOBS) await new Promise<void>((resolve) => waiting.push(resolve));
  running++;
  try {
    return await fn();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

interface Result {
  run: GuestRun;
  transcript: Transcript;
}

const dirs: string[] = [];
const runs = new Map<string, Promise<Result>>();
let scriptText: Promise<string> | undefined;

function suite(section: Section, kind: 'ours' | 'reference'): Promise<Result> {
  const key = `${section.name}/${kind}`;
  let pending = runs.get(key);
  if (!pending) {
    pending = limited(async () => {
      const cx = await helper();
      hostHelper = cx.file;
      scriptText ??= fs.readFile(path.join(repoRoot, 'scripts', 'guest', 'policy.sh'), 'utf8');
      const script = `POLICY=${section.name}\n${await scriptText}`;
      const freshDir = async () => {
        const dir = await fs.mkdtemp(path.join(os.tmpdir(), `virtiofsd-policy-${section.name}-${kind}-`));
        dirs.push(dir);
        await fs.chmod(dir, 0o755);
        await section.setup?.(dir);
        return dir;
      };
      const daemon: DaemonSpec = { kind, extraArgs: section.args };
      const { run, sharedDir } = await runGuestRetrying(freshDir, {
        daemon,
        script,
        files: [{ name: 'test/cx', data: cx.data, mode: 0o755 }],
        kernelArgs: section.kernelArgs,
        timeoutMs: 240_000,
      });
      const transcript = parseTranscript(run.output);
      for (const check of section.host) {
        const [name, value] = hostCase(sharedDir, check);
        if (transcript.cases.has(name)) transcript.unexpected.push(`duplicate case: ${name}`);
        transcript.cases.set(name, value);
      }
      return { run, transcript };
    });
    runs.set(key, pending);
  }
  return pending;
}

test.after.always(async () => {
  await Promise.allSettled(runs.values());
  for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
  await removeHelper();
});

function complete(t: import('ava').ExecutionContext, section: Section, label: string, { run, transcript }: Result): void {
  t.deepEqual(transcript.unexpected, [], `unexpected lines in the ${label} transcript:\n${run.output}`);
  t.truthy(transcript.summary, `no summary line; the script stopped early:\n${run.output}`);
  const guestCases = transcript.cases.size - section.host.length;
  t.true(guestCases >= section.minCases, `only ${guestCases} guest cases ran`);
}

for (const section of SECTIONS) {
  const flags = section.title;
  if (!section.oursOnly) {
    test(`reference daemon, ${section.name} (${flags}): fails only where REFERENCE_FAILS says`, async (t) => {
      t.timeout(600_000);
      const result = await suite(section, 'reference');
      for (const line of failures(result.transcript)) t.log(line);
      complete(t, section, 'reference', result);
      const unlisted = failures(result.transcript).filter((line) => !(line.split(':')[0]! in REFERENCE_FAILS) && !atProtocolLimit(line));
      reportLimits(t, result.transcript);
      t.deepEqual(unlisted, [], 'reference failures missing from REFERENCE_FAILS (a wrong expectation in the suite, or a reference bug to list)');
      const passingNow = Object.keys(REFERENCE_FAILS).filter((name) => result.transcript.cases.get(name) === 'ok');
      t.deepEqual(passingNow, [], 'REFERENCE_FAILS lists cases the reference passes: remove them');
      t.log(`reference ${section.name}: ${describeTranscript(result.transcript)}, ${section.host.length} host checks, ${result.run.durationMs} ms`);
    });
  }

  test(`our daemon, ${section.name} (${flags}): every case passes`, async (t) => {
    t.timeout(600_000);
    const result = await suite(section, 'ours');
    t.log(`options: ${section.args.join(' ')}`);
    t.log(`ours ${section.name}: ${describeTranscript(result.transcript)}, ${section.host.length} host checks, ${result.run.durationMs} ms`);
    complete(t, section, 'our', result);
    reportLimits(t, result.transcript);
    for (const line of failures(result.transcript).filter(atProtocolLimit)) t.log(`protocol limit: ${line}`);
    t.deepEqual(failures(result.transcript).filter((line) => !atProtocolLimit(line)), [], `cases where our daemon is wrong ("got" is ours); daemon stderr:\n${result.run.daemonStderr.slice(-3000)}`);
    if (!failures(result.transcript).some(atProtocolLimit)) t.is(result.run.status, 0, 'the script exits non-zero when a case fails');
    t.is(result.run.daemonExit.code, 0, `daemon exit ${JSON.stringify(result.run.daemonExit)}; stderr:\n${result.run.daemonStderr.slice(-4000)}`);
  });

  if (!section.oursOnly) {
    test(`differential, ${section.name}: every difference from the reference is in KNOWN_DIFFERENCES`, async (t) => {
      t.timeout(600_000);
      const [mine, theirs] = await Promise.all([suite(section, 'ours'), suite(section, 'reference')]);
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
      const stale = Object.keys(KNOWN_DIFFERENCES).filter(
        (name) => mine.transcript.cases.has(name) && !differing.includes(name) && !(name in REFERENCE_FAILS),
      );
      if (stale.length) t.log(`KNOWN_DIFFERENCES entries that no longer differ (remove them and their docs rows): ${stale.join(', ')}`);
      t.log(`${section.name}: ${differing.length} differing cases`);
    });
  }
}

// The one configuration the reference does not run: it refuses it at start-up, which is itself the
// known difference (ours translates the ids inside ACL values instead).
test('reference daemon refuses --posix-acl with --translate-uid/--translate-gid (ours runs the acl-translate section)', async (t) => {
  t.timeout(60_000);
  const paths = await provision();
  const section = SECTIONS.find((s) => s.name === 'acl-translate')!;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-policy-refuse-'));
  dirs.push(dir);
  for (const args of [section.args, ['--posix-acl', ...both('map', '1000:101000:100')], ['--posix-acl', '--translate-gid=map:1000:101000:100']]) {
    const child = spawn(paths.reference, [...args, `--socket-path=${path.join(dir, 'vfs.sock')}`, `--shared-dir=${dir}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    clearTimeout(timer);
    t.true(code !== null && code !== 0 && signal === null, `reference with ${args.join(' ')}: exit ${code} ${signal}; stderr: ${stderr}`);
    t.regex(stderr, /posix.?acl|translate/i, `reference with ${args.join(' ')} says why: ${stderr}`);
    t.log(`reference ${args.join(' ')}: exit ${code}: ${stderr.trim().split('\n')[0]}`);
  }
});
