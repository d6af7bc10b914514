// Host-only checks of the CLI options that decide how the vhost-user socket is provided and served:
// --fd, --socket-group, the deprecated --socket, and --thread-pool-size. No guest is booted; a
// plain client connecting and hanging up stands in for the VM monitor.
import test from 'ava';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { cli, ensureBuilt, root, requireNative } from './support/build.ts';

test.before(() => {
  requireNative();
  ensureBuilt();
});

interface Run {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function watch(child: ChildProcess): Run {
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const spawnError = new Promise<never>((_resolve, reject) => child.once('error', reject));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  return { child, stderr: () => stderr, exit: Promise.race([exited, spawnError]) };
}

function startCli(args: string[]): Run {
  return watch(spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
}

/**
 * Binds and listens on `socketPath` in a small Python process that then execs our CLI with the
 * listening socket as fd 3, which is how a VM manager hands a pre-opened socket to `--fd`. Node
 * cannot do this itself without its own event loop racing the daemon for `accept` (and closing a
 * Node server unlinks the path, which would hide whether the daemon removed it).
 */
const ADOPT_HELPER = `
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(4)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.execv(sys.argv[2], sys.argv[2:])
`;

function python3(): string {
  const probe = spawnSync('python3', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(`python3 is required to hand a listening socket to --fd, but it cannot be run: ${probe.error?.message ?? probe.stderr}`);
  }
  return 'python3';
}

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-sockopt-'));
}

function isSocket(file: string): boolean {
  try {
    return fs.statSync(file).isSocket();
  } catch {
    return false;
  }
}

async function waitFor(what: string, predicate: () => boolean, run: Run, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (run.child.exitCode !== null || run.child.signalCode !== null) {
      throw new Error(`the daemon exited (${run.child.exitCode ?? run.child.signalCode}) while waiting for ${what}:\n${run.stderr()}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${run.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A frontend that connects and hangs up without a word; resolves once connected. */
function connectAndVanish(socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const client = net.connect(socketPath, () => {
      client.end();
      resolve();
    });
    client.on('error', reject);
  });
}

/** Exit status, or a failure naming the daemon's stderr if it does not exit in time. */
async function exitWithin(run: Run, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`the daemon did not exit within ${ms} ms; stderr:\n${run.stderr()}`)), ms);
  });
  try {
    return await Promise.race([run.exit, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Lists the fds of a running process, to see what the daemon holds. */
function connectedSocketCount(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
      } catch {
        return false;
      }
    }).length;
  } catch {
    return 0;
  }
}

test('--fd: adopts an inherited listening socket, exits 0 after the frontend leaves, keeps the socket file', async (t) => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'adopted.sock');
  const run = watch(
    spawn(python3(), ['-c', ADOPT_HELPER, socketPath, process.execPath, cli, `--shared-dir=${dir}`, '--fd=3'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  try {
    await waitFor('the helper to bind the socket', () => isSocket(socketPath), run);
    // Wait until the daemon runs (its log line), so the connection reaches it rather than the helper.
    await waitFor('the daemon to start', () => /waiting for a vhost-user frontend/.test(run.stderr()), run);
    t.true(connectedSocketCount(run.child.pid as number) >= 1, 'the daemon holds no socket');
    await connectAndVanish(socketPath);
    t.deepEqual(await exitWithin(run, 10_000), { code: 0, signal: null }, run.stderr());
    t.regex(run.stderr(), /frontend connected/);
    t.regex(run.stderr(), /frontend disconnected/);
    t.true(isSocket(socketPath), 'the daemon removed a socket file it did not create');
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--fd: an fd that is not a listening socket exits 1 with a clear message', async (t) => {
  const dir = tempDir();
  // fd 3 is a pipe here, not a listening socket.
  const run = watch(spawn(process.execPath, [cli, `--shared-dir=${dir}`, '--fd=3'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] }));
  try {
    t.deepEqual(await exitWithin(run, 10_000), { code: 1, signal: null }, run.stderr());
    t.regex(run.stderr(), /ERROR +virtiofsd\] .*(file descriptor 3|fd 3)/i);
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--fd: an fd that is not open exits 1', async (t) => {
  const dir = tempDir();
  const run = startCli([`--shared-dir=${dir}`, '--fd=77']);
  try {
    t.deepEqual(await exitWithin(run, 10_000), { code: 1, signal: null }, run.stderr());
    t.regex(run.stderr(), /virtiofsd: descriptor 77 \(--fd\) is not open/);
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Any group other than our own primary group, so a chown to it is observable. */
function otherGroup(): { name: string; gid: number } {
  const mine = process.getgid?.() ?? 0;
  for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
    const [name, , gid] = line.split(':');
    if (name && gid !== undefined && /^\d+$/.test(gid) && Number(gid) !== mine) return { name, gid: Number(gid) };
  }
  throw new Error('no group other than our own in /etc/group: --socket-group cannot be tested');
}

for (const form of ['name', 'numeric id'] as const) {
  test(`--socket-group (${form}): the socket gets that group and mode 0660`, async (t) => {
    if (process.getuid?.() !== 0) throw new Error('--socket-group tests need root (chown of the socket to a foreign group)');
    const group = otherGroup();
    const dir = tempDir();
    const socketPath = path.join(dir, 'group.sock');
    const value = form === 'name' ? group.name : String(group.gid);
    const run = startCli([`--shared-dir=${dir}`, `--socket-path=${socketPath}`, `--socket-group=${value}`]);
    try {
      await waitFor('the socket', () => isSocket(socketPath), run);
      // The group is set after bind; wait for it rather than racing the daemon.
      await waitFor('the socket group', () => fs.statSync(socketPath).gid === group.gid, run, 5_000);
      const st = fs.statSync(socketPath);
      t.is(st.gid, group.gid);
      t.is((st.mode & 0o777).toString(8), '660');
      await connectAndVanish(socketPath);
      t.deepEqual(await exitWithin(run, 10_000), { code: 0, signal: null }, run.stderr());
      t.false(fs.existsSync(socketPath), 'the daemon leaves the socket it created behind');
    } finally {
      run.child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('--socket-group: a missing group exits 1 with a clear message and leaves no socket', async (t) => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'group.sock');
  const run = startCli([`--shared-dir=${dir}`, `--socket-path=${socketPath}`, '--socket-group=no-such-group-xyz']);
  try {
    t.deepEqual(await exitWithin(run, 10_000), { code: 1, signal: null }, run.stderr());
    t.regex(run.stderr(), /ERROR +virtiofsd\] .*group.*no-such-group-xyz.*(does not exist|not found|unable to find)/i);
    t.false(fs.existsSync(socketPath));
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--socket-group with --fd is refused as a usage error (exit 2, as upstream)', async (t) => {
  const dir = tempDir();
  const run = startCli([`--shared-dir=${dir}`, '--fd=3', '--socket-group=daemon']);
  try {
    t.deepEqual(await exitWithin(run, 10_000), { code: 2, signal: null }, run.stderr());
    t.regex(run.stderr(), /--socket-group/);
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--socket (deprecated): serves like --socket-path and warns', async (t) => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'old.sock');
  const run = startCli([`--shared-dir=${dir}`, '--socket', socketPath]);
  try {
    await waitFor('the socket', () => isSocket(socketPath), run);
    await connectAndVanish(socketPath);
    t.deepEqual(await exitWithin(run, 10_000), { code: 0, signal: null }, run.stderr());
    t.regex(run.stderr(), /WARN .*--socket is deprecated, use '--socket-path' instead/);
    t.false(fs.existsSync(socketPath));
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--thread-pool-size=4: starts, serves a connection and stops cleanly', async (t) => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'pool.sock');
  const first = startCli([`--shared-dir=${dir}`, `--socket-path=${socketPath}`, '--thread-pool-size=4']);
  try {
    await waitFor('the socket', () => isSocket(socketPath), first);
    await connectAndVanish(socketPath);
    t.deepEqual(await exitWithin(first, 10_000), { code: 0, signal: null }, first.stderr());
    t.false(fs.existsSync(socketPath));
  } finally {
    first.child.kill('SIGKILL');
  }
  // Stopped by a signal before any frontend arrives.
  const second = startCli([`--shared-dir=${dir}`, `--socket-path=${socketPath}`, '--thread-pool-size=4']);
  try {
    await waitFor('the socket', () => isSocket(socketPath), second);
    second.child.kill('SIGTERM');
    t.deepEqual(await exitWithin(second, 10_000), { code: 0, signal: null }, second.stderr());
    t.false(fs.existsSync(socketPath));
    t.notRegex(second.stderr(), /panick|ERROR/);
  } finally {
    second.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
