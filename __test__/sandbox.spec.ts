// The default sandbox seen from the host: namespaces, root, capabilities and descriptors of the
// device processes, --modcaps, and an unprivileged start in a user namespace serving a real guest.
import test from 'ava';
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cli, ensureBuilt, root, requireNative } from './support/build.ts';
import { runGuest } from './guest/harness.ts';

const NOBODY = 65534;
/** CHOWN DAC_OVERRIDE FOWNER FSETID SETGID SETUID MKNOD SETFCAP */
const BASE_CAPS = 0x880000dbn;
/** And DAC_READ_SEARCH, which the default --inode-file-handles=prefer opens its handles with. */
const DEFAULT_CAPS = BASE_CAPS | (1n << 2n);
const CAP = { dac_read_search: 2, sys_admin: 21, mknod: 27 };
const PROC_SUPER_MAGIC = 0x9fa0;

test.before(() => {
  if (process.getuid?.() !== 0) throw new Error('the sandbox tests must run as root (they inspect other processes and switch to nobody)');
  requireNative();
  ensureBuilt();
});

interface Started {
  cli: ChildProcess;
  socket: string;
  share: string;
  /** The device process (child of the CLI) and the serving process (its child, PID 1 of its namespace). */
  device: number;
  server: number;
  stderr: () => string;
}

function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

function children(pid: number): number[] {
  const text = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
  return text === '' ? [] : text.split(/\s+/).map(Number);
}

async function startCli(args: string[], opts: { asNobody?: boolean; unsandboxed?: boolean } = {}): Promise<Started> {
  const share = tempDir('vfsd-sandbox-share-');
  const sockDir = tempDir('vfsd-sandbox-sock-');
  if (opts.asNobody) {
    fs.chownSync(share, NOBODY, NOBODY);
    fs.chownSync(sockDir, NOBODY, NOBODY);
  }
  fs.writeFileSync(path.join(share, 'hello'), 'hi');
  const socket = path.join(sockDir, 'vfs.sock');
  const argv = [cli, `--shared-dir=${share}`, `--socket-path=${socket}`, ...args];
  const child = opts.asNobody
    ? spawn('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(process.execPath, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += String(d)));
  try {
    return await findProcesses(child, socket, share, () => err, opts.unsandboxed ?? false);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
}

async function findProcesses(child: ChildProcess, socket: string, share: string, stderr: () => string, unsandboxed: boolean): Promise<Started> {
  const deadline = Date.now() + 20_000;
  // The socket is bound before the sandbox is entered: wait for the serving process's log line.
  while (!stderr().includes('waiting for a vhost-user frontend')) {
    if (child.exitCode !== null) throw new Error(`daemon exited with ${child.exitCode}: ${stderr()}`);
    if (Date.now() > deadline) throw new Error(`daemon did not listen in time: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  // The CLI became the device executable (with setpriv, setpriv's exec'd image): same pid.
  const device = child.pid!;
  const comm = fs.readFileSync(`/proc/${device}/comm`, 'utf8').trim();
  if (comm !== 'virtiofsd') throw new Error(`the CLI process should have become the device, but it runs '${comm}'`);
  // The serving process sends "listening" once set up, so it exists by the time the socket does.
  if (unsandboxed) return { cli: child, socket, share, device, server: device, stderr };
  const servers = children(device);
  if (servers.length !== 1) throw new Error(`expected one serving process under the device process, found ${servers.length}`);
  return { cli: child, socket, share, device, server: servers[0]!, stderr };
}

async function stop(s: Started): Promise<number | null> {
  const exited = new Promise<number | null>((r) => s.cli.once('exit', (code) => r(code)));
  s.cli.kill('SIGTERM');
  return exited;
}

function ns(pid: number | 'self', kind: string): string {
  return fs.readlinkSync(`/proc/${pid}/ns/${kind}`);
}

function capSet(pid: number, field: 'CapEff' | 'CapPrm' | 'CapBnd' | 'CapInh'): bigint {
  const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith(`${field}:`));
  if (!line) throw new Error(`no ${field} in /proc/${pid}/status`);
  return BigInt(`0x${line.split(/\s+/)[1]}`);
}

test.serial('default: namespaces, root, capabilities and descriptors of the serving process', async (t) => {
  const s = await startCli([]);
  try {
    for (const kind of ['mnt', 'net']) {
      t.not(ns(s.device, kind), ns('self', kind), `device process ${kind} namespace`);
      t.not(ns(s.server, kind), ns('self', kind), `serving process ${kind} namespace`);
    }
    t.not(ns(s.device, 'pid_for_children'), ns('self', 'pid'));
    t.not(ns(s.server, 'pid'), ns('self', 'pid'));
    t.not(ns(s.server, 'mnt'), ns(s.device, 'mnt'), 'the serving process pivots in a mount namespace of its own');
    const nspid = fs.readFileSync(`/proc/${s.server}/status`, 'utf8').split('\n').find((l) => l.startsWith('NSpid:'))!;
    t.is(nspid.split(/\s+/).at(-1), '1', 'PID 1 of its namespace');

    const rootStat = fs.statSync(`/proc/${s.server}/root/`);
    const shareStat = fs.statSync(s.share);
    t.is(rootStat.ino, shareStat.ino, 'its root is the shared directory');
    t.is(rootStat.dev, shareStat.dev);
    t.true(fs.existsSync(`/proc/${s.server}/root/hello`));
    t.false(fs.existsSync(`/proc/${s.server}/root/${path.relative('/', s.socket)}`), 'host paths are gone');

    for (const field of ['CapEff', 'CapPrm', 'CapBnd'] as const) {
      t.is(capSet(s.server, field), DEFAULT_CAPS, `${field} of the serving process`);
      t.is(capSet(s.device, field) & ~DEFAULT_CAPS, 0n, `${field} of the waiting process`);
    }
    t.is(capSet(s.server, 'CapInh'), 0n);

    const status = fs.readFileSync(`/proc/${s.server}/status`, 'utf8');
    t.regex(status, /^Seccomp:\s+2$/m, 'a seccomp filter is installed');

    const waiterFds = fs.readdirSync(`/proc/${s.device}/fd`).map(Number);
    t.deepEqual(waiterFds.filter((fd) => fd > 2), [], 'the waiting process holds no descriptor but stdio');

    for (const fd of fs.readdirSync(`/proc/${s.server}/fd`)) {
      const p = `/proc/${s.server}/fd/${fd}`;
      let link: string;
      try {
        link = fs.readlinkSync(p);
      } catch {
        continue; // closed meanwhile
      }
      if (/^(socket|anon_inode|pipe):/.test(link) || link === '/dev/null') continue;
      if (/^\/\d+\/fd$/.test(link)) continue; // the private /proc/self/fd handle (procfs of the namespace)
      // The private /proc/self/fd handle: a detached bind mount of procfs (its link reads '/').
      if (fs.statfsSync(p).type === PROC_SUPER_MAGIC) continue;
      const st = fs.statSync(p);
      t.is(st.dev, shareStat.dev, `descriptor ${fd} (${link}) is inside the share`);
    }
  } finally {
    t.is(await stop(s), 0, s.stderr());
  }
  t.false(fs.existsSync(s.socket), 'the socket file is removed on stop');
  t.notRegex(s.stderr(), /without a sandbox|without seccomp/);
});

test.serial('--modcaps and --inode-file-handles change the capability sets', async (t) => {
  const s = await startCli(['--modcaps=+sys_admin:-mknod']);
  try {
    const expected = (DEFAULT_CAPS | (1n << BigInt(CAP.sys_admin))) & ~(1n << BigInt(CAP.mknod));
    t.is(capSet(s.server, 'CapEff'), expected);
    t.is(capSet(s.server, 'CapBnd'), expected);
  } finally {
    t.is(await stop(s), 0, s.stderr());
  }
  // Without file handles the device does not keep CAP_DAC_READ_SEARCH.
  const never = await startCli(['--inode-file-handles=never']);
  try {
    t.is(capSet(never.server, 'CapEff'), BASE_CAPS);
    t.is(capSet(never.server, 'CapBnd'), BASE_CAPS);
  } finally {
    t.is(await stop(never), 0, never.stderr());
  }
  // Dropping it makes the default fall back to descriptors; the device still starts.
  const dropped = await startCli(['--modcaps=-dac_read_search']);
  try {
    t.is(capSet(dropped.server, 'CapEff'), BASE_CAPS);
  } finally {
    t.is(await stop(dropped), 0, dropped.stderr());
  }
  t.regex(dropped.stderr(), /inode file handles: this device cannot open them/);
});

test.serial('--sandbox=none --seccomp=none: host namespaces, a warning for each', async (t) => {
  const s = await startCli(['--sandbox=none', '--seccomp=none'], { unsandboxed: true });
  try {
    t.is(s.server, s.device, 'no PID-namespace child');
    for (const kind of ['mnt', 'net', 'pid']) t.is(ns(s.device, kind), ns('self', kind));
    t.regex(fs.readFileSync(`/proc/${s.device}/status`, 'utf8'), /^Seccomp:\s+0$/m);
  } finally {
    t.is(await stop(s), 0, s.stderr());
  }
  t.regex(s.stderr(), /running without a sandbox \(--sandbox=none\)/);
  t.regex(s.stderr(), /running without seccomp \(--seccomp=none\)/);
});

test.serial('an ordinary user: user namespace, and a guest creates, writes, reads and removes files', async (t) => {
  const s = await startCli([], { asNobody: true });
  try {
    t.not(ns(s.server, 'user'), ns('self', 'user'), 'a user namespace');
    t.is(fs.statSync(`/proc/${s.server}`).uid, NOBODY);
  } finally {
    t.is(await stop(s), 0, s.stderr());
  }

  const share = tempDir('vfsd-sandbox-guest-');
  fs.chownSync(share, NOBODY, NOBODY);
  const script = [
    'set -e',
    'echo payload > created',
    'cat created',
    'mkdir d && echo more >> d/f && cat d/f',
    'rm d/f && rmdir d',
    'echo keep > kept',
    'rm created',
    'ls',
  ].join('\n');
  const run = await runGuest({
    // The harness makes its socket directory as root; hand it to nobody before dropping to it.
    daemon: {
      argv: [
        'sh',
        '-c',
        `for a; do case $a in --socket-path=*) chown ${NOBODY} "$(dirname "\${a#--socket-path=}")";; esac; done; ` +
          `exec setpriv --reuid=${NOBODY} --regid=${NOBODY} --clear-groups "$0" "$@"`,
        process.execPath,
        cli,
      ],
    },
    sharedDir: share,
    script,
    timeoutMs: 180_000,
  });
  t.is(run.status, 0, run.output + run.daemonStderr);
  t.regex(run.output, /payload[\s\S]*more[\s\S]*kept/);
  t.deepEqual(fs.readdirSync(share), ['kept']);
  t.is(fs.readFileSync(path.join(share, 'kept'), 'utf8'), 'keep\n');
  t.is(fs.statSync(path.join(share, 'kept')).uid, NOBODY, 'files belong to the user who started the daemon');
});

/** Grants nobody a subordinate ID range (what an administrator does for --uid-map/--gid-map). */
function grantSubordinateIds(file: '/etc/subuid' | '/etc/subgid', start: number, count: number): void {
  const entry = `nobody:${start}:${count}`;
  const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : [];
  if (!lines.includes(entry)) fs.writeFileSync(file, [...lines, entry, ''].join('\n'));
}

test.serial('an ordinary user with --uid-map/--gid-map ranges: mapped through newuidmap/newgidmap', async (t) => {
  grantSubordinateIds('/etc/subuid', 300000, 65536);
  grantSubordinateIds('/etc/subgid', 300000, 65536);
  const maps = ['--uid-map=:0:65534:1:', '--uid-map=:1:300000:1000:', '--gid-map=:0:65534:1:', '--gid-map=:1:300000:1000:'];
  const s = await startCli(maps, { asNobody: true });
  try {
    const table = (kind: 'uid_map' | 'gid_map') =>
      fs.readFileSync(`/proc/${s.server}/${kind}`, 'utf8').trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number));
    t.deepEqual(table('uid_map'), [[0, NOBODY, 1], [1, 300000, 1000]]);
    t.deepEqual(table('gid_map'), [[0, NOBODY, 1], [1, 300000, 1000]]);
  } finally {
    t.is(await stop(s), 0, s.stderr());
  }

  // A range the administrator did not grant is refused with the helper's reason.
  const sockDir = tempDir('vfsd-sandbox-refused-');
  fs.chownSync(sockDir, NOBODY, NOBODY);
  const refused = spawn('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, cli,
    `--shared-dir=${os.tmpdir()}`, `--socket-path=${path.join(sockDir, 'x.sock')}`,
    '--uid-map=:0:65534:1:', '--uid-map=:1:900000:10:'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  refused.stderr!.on('data', (d) => (err += String(d)));
  const code = await new Promise<number | null>((r) => refused.once('exit', (c) => r(c)));
  t.is(code, 1, err);
  t.regex(err, /cannot set up ID mappings: newuidmap failed .*not allowed/);
});
