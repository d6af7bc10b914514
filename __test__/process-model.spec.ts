// The process model, seen from the host: every device is the native executable, started fresh.
// - The CLI becomes the device (same pid, no Node left), as libvirt and kata expect of the pid
//   they started and signal.
// - The library starts the executable as a child: nothing of the embedder's memory or environment
//   reaches the device, which a fork would carry into the sandbox.
// - A command-line device logs itself: RUST_LOG as upstream honours it, and --syslog.
import test from 'ava';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cli, requireNative, root } from './support/build.ts';

test.before(() => {
  if (process.getuid?.() !== 0) throw new Error('the process-model tests must run as root (they read other processes\' memory)');
  requireNative();
});

function tempDir(prefix = 'vfsd-pm-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

interface Run {
  child: ChildProcess;
  stderr: () => string;
  closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function watch(child: ChildProcess): Run {
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  return { child, stderr: () => stderr, closed };
}

async function until(what: string, check: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function isSocket(file: string): boolean {
  try {
    return fs.statSync(file).isSocket();
  } catch {
    return false;
  }
}

/** `pid` and every descendant, from the kernel's child lists. */
function tree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    for (const task of fs.readdirSync(`/proc/${out[i]}/task`)) {
      const kids = fs.readFileSync(`/proc/${out[i]}/task/${task}/children`, 'utf8').trim();
      if (kids !== '') out.push(...kids.split(/\s+/).map(Number));
    }
  }
  return out;
}

const comm = (pid: number): string => fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
const cmdline = (pid: number): string[] => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
const environ = (pid: number): string[] => fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter((a) => a !== '');

/** Whether `needle` occurs in any readable mapping of `pid` (as root, through /proc/PID/mem). */
function memoryContains(pid: number, needle: Buffer): boolean {
  const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n');
  const mem = fs.openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const line of maps) {
      const [range, perms, , , , name] = line.split(/\s+/);
      if (!perms.startsWith('r') || name === '[vvar]' || name === '[vsyscall]') continue;
      const [start, end] = range.split('-').map((hex) => BigInt(`0x${hex}`));
      const chunk = Buffer.alloc(1 << 20);
      // Overlapping reads, so a needle across a chunk boundary is still found.
      for (let at = start; at < end; at += BigInt(chunk.length - needle.length)) {
        const want = Number(end - at < BigInt(chunk.length) ? end - at : BigInt(chunk.length));
        let got = 0;
        try {
          got = fs.readSync(mem, chunk, 0, want, at);
        } catch {
          break;
        }
        if (chunk.subarray(0, got).includes(needle)) return true;
        if (got < want) break;
      }
    }
    return false;
  } finally {
    fs.closeSync(mem);
  }
}

test('the CLI becomes the device executable: same pid, no Node left, only PATH in its environment', async (t) => {
  const dir = tempDir();
  const socket = path.join(dir, 'vfs.sock');
  fs.mkdirSync(path.join(dir, 'share'));
  const run = watch(
    spawn(process.execPath, [cli, `--socket-path=${socket}`, `--shared-dir=${path.join(dir, 'share')}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, EMBEDDER_SECRET: 'do-not-pass-me-on' },
    }),
  );
  try {
    await until('the socket', () => isSocket(socket));
    const pid = run.child.pid!;
    const processes = tree(pid);
    t.deepEqual(
      processes.map(comm),
      processes.map(() => 'virtiofsd'),
      'every process of the device is the native executable',
    );
    // The device waits for the namespace sandbox's serving process: two processes, as upstream.
    t.is(processes.length, 2);
    t.is(fs.realpathSync(`/proc/${pid}/exe`), fs.realpathSync(path.join(root, 'npm', platform(), 'virtiofsd')));
    const argv = cmdline(pid);
    t.is(argv[0], 'virtiofsd');
    t.regex(argv[1], /^--config-fd=\d+$/);
    t.deepEqual(argv.slice(2), [`--socket-path=${socket}`, `--shared-dir=${path.join(dir, 'share')}`]);
    for (const p of processes) t.deepEqual(environ(p).map((e) => e.split('=')[0]), ['PATH'], `environment of ${p}`);

    run.child.kill('SIGTERM');
    t.deepEqual(await run.closed, { code: 0, signal: null }, run.stderr());
    t.false(fs.existsSync(socket), 'the device removed its socket');
    t.regex(run.stderr(), /INFO +virtiofsd\S*\] waiting for a vhost-user frontend on /);
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

function platform(): string {
  const probe = spawnSync(process.execPath, ['-e', `process.stdout.write(require(${JSON.stringify(path.join(root, 'dist', 'native.js'))}).platformName())`], {
    encoding: 'utf8',
  });
  return probe.stdout;
}

test("a library device is a fresh executable: the embedder's secrets are not in its memory or environment", async (t) => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'share'));
  const socket = path.join(dir, 'lib.sock');
  const secret = `embedder-secret-${Math.random().toString(36).slice(2)}-${Date.now()}`;
  // The embedder keeps the secret in a Buffer, in a KeyObject and in its environment, then
  // starts a device and reports the device's pid; it keeps running (and so holds the secret)
  // until told to stop.
  const script = `
    const crypto = require('node:crypto');
    const lib = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
    const held = Buffer.from(process.env.SECRET_SEED + '');
    const key = crypto.createSecretKey(Buffer.from(process.env.SECRET_SEED + ''));
    (async () => {
      const device = await lib.startDevice({ sharedDir: ${JSON.stringify(path.join(dir, 'share'))}, socketPath: ${JSON.stringify(socket)} });
      process.stdout.write(JSON.stringify({ device: device.pid, held: held.length, key: key.symmetricKeySize }) + '\\n');
      process.stdin.on('data', async () => { await device.stop(); process.exit(0); });
    })().catch((e) => { process.stderr.write(String(e.stack)); process.exit(1); });`;
  const embedder = spawn(process.execPath, ['-e', script], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, SECRET_SEED: secret },
  });
  let out = '';
  embedder.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const run = watch(embedder);
  try {
    await until('the device', () => out.includes('\n'), 20_000);
    const { device } = JSON.parse(out) as { device: number };
    const needle = Buffer.from(secret);
    // The search works: the embedder's own memory has the secret.
    t.true(memoryContains(embedder.pid!, needle), 'the secret is in the embedder (control)');
    t.is(Number(fs.readFileSync(`/proc/${device}/stat`, 'utf8').split(') ')[1].split(' ')[1]), embedder.pid!, 'a child of the embedder');
    const processes = tree(device);
    t.is(processes.length, 2, 'the device and its serving process');
    for (const p of processes) {
      t.is(comm(p), 'virtiofsd');
      t.false(memoryContains(p, needle), `the secret is not in device process ${p}`);
      t.false(environ(p).some((e) => e.includes(secret)), `nor in its environment`);
    }
    t.deepEqual(cmdline(device).slice(0, 3), ['virtiofsd', '--config-fd=3', '--control-fd=4']);
    t.true(cmdline(device).includes(`--socket-path=${socket}`));
    embedder.stdin!.write('stop\n');
    t.is((await run.closed).code, 0, run.stderr());
    t.false(fs.existsSync(socket));
  } finally {
    embedder.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

async function cliLog(args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  const dir = tempDir();
  const socket = path.join(dir, 'log.sock');
  const run = watch(
    spawn(process.execPath, [cli, `--socket-path=${socket}`, `--shared-dir=${dir}`, '--sandbox=none', ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...env },
    }),
  );
  try {
    await Promise.race([until('the socket', () => isSocket(socket)), run.closed]);
    // Let start-up logging finish before stopping.
    await new Promise((r) => setTimeout(r, 200));
    run.child.kill('SIGTERM');
    const { code } = await run.closed;
    return { code, stderr: run.stderr() };
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('RUST_LOG overrides --log-level, with target directives, as upstream', async (t) => {
  const waiting = /INFO +virtiofsd_daemon::run\] waiting for a vhost-user frontend/;
  const quiet = await cliLog(['--log-level=debug'], { RUST_LOG: 'error' });
  t.is(quiet.code, 0, quiet.stderr);
  t.notRegex(quiet.stderr, waiting, 'RUST_LOG=error hides what --log-level=debug would show');
  const targeted = await cliLog(['--log-level=error'], { RUST_LOG: 'warn,virtiofsd_daemon=info' });
  t.regex(targeted.stderr, waiting, 'a target directive raises one target');
  const refused = spawnSync(process.execPath, [cli, '--socket-path=/tmp/x.sock', `--shared-dir=${os.tmpdir()}`], {
    encoding: 'utf8',
    env: { ...process.env, RUST_LOG: 'info/some.*regex' },
  });
  t.is(refused.status, 1);
  t.regex(refused.stderr, /RUST_LOG='info\/some\.\*regex': message filters \('\/regex'\) are not supported/);
});

/**
 * Runs `shell` in a private mount namespace whose /dev is a fresh tmpfs holding only /dev/null
 * and a datagram socket at /dev/log that a small receiver copies to `received`, one line per
 * message, so the machine's own system logger is never involved.
 */
const SYSLOG_RECEIVER = `
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('/dev/log')
open(sys.argv[2], 'w').close()
with open(sys.argv[1], 'ab', buffering=0) as out:
    while True:
        out.write(s.recv(65536) + b'\\n')
`;

test('--syslog sends the log to /dev/log, through the sandbox, and nothing to stderr', async (t) => {
  const dir = tempDir();
  const received = path.join(dir, 'received');
  const ready = path.join(dir, 'ready');
  const share = path.join(dir, 'share');
  const socket = path.join(dir, 'vfs.sock');
  fs.mkdirSync(share);
  fs.writeFileSync(path.join(dir, 'receiver.py'), SYSLOG_RECEIVER);
  const shell = [
    'set -e',
    'mount -t tmpfs -o mode=755 devtmp /dev',
    'mknod -m 666 /dev/null c 1 3',
    // Its own stdio, so it holds no end of the pipes this test reads to the end.
    `python3 ${dir}/receiver.py ${received} ${ready} </dev/null >/dev/null 2>&1 &`,
    `while [ ! -e ${ready} ]; do sleep 0.01; done`,
    `exec ${process.execPath} ${cli} --syslog --socket-path=${socket} --shared-dir=${share}`,
  ].join('\n');
  const run = watch(spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', shell], { stdio: ['ignore', 'ignore', 'pipe'] }));
  try {
    await until('the socket', () => isSocket(socket));
    await until('a syslog message', () => fs.existsSync(received) && fs.readFileSync(received, 'utf8').includes('waiting for'));
    run.child.kill('SIGTERM');
    // Bounded: whatever else might still hold the stderr pipe, the device's own exit decides.
    const exit = await Promise.race([
      run.closed,
      new Promise<{ code: number | null }>((resolve) => run.child.once('exit', (code) => setTimeout(() => resolve({ code }), 2_000))),
    ]);
    t.is(exit.code, 0, run.stderr());
    const lines = fs.readFileSync(received, 'utf8').trim().split('\n');
    // LOG_USER (1) * 8 + info (6) = 14; the pid is the device's own (the CLI's pid).
    t.true(lines.includes(`<14>virtiofsd[${run.child.pid}]: waiting for a vhost-user frontend on ${socket}`), lines.join('\n'));
    t.true(lines.some((line) => /^<14>virtiofsd\[\d+\]: signal 15 received; stopping$/.test(line)), 'logged from inside the sandbox');
    t.is(run.stderr(), '', 'nothing on stderr');
  } finally {
    run.child.kill('SIGKILL');
    spawnSync('pkill', ['-f', `${dir}/receiver.py`]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--syslog without a system logger refuses to start, saying why', (t) => {
  const dir = tempDir();
  const shell = ['set -e', 'mount -t tmpfs devtmp /dev', 'mknod -m 666 /dev/null c 1 3',
    `exec ${process.execPath} ${cli} --syslog --socket-path=${dir}/s.sock --shared-dir=${dir}`].join('\n');
  const result = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', shell], { encoding: 'utf8', timeout: 20_000 });
  t.is(result.status, 1, result.stderr);
  t.regex(result.stderr, /ERROR +virtiofsd\] --syslog: cannot connect to \/dev\/log: /);
  fs.rmSync(dir, { recursive: true, force: true });
});
