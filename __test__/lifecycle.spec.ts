// Starts real device processes (native artifacts required) through the library and the CLI.
import test from 'ava';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { cli, ensureBuilt, root, requireNative } from './support/build.ts';

test.before(() => {
  requireNative();
  ensureBuilt();
});

/**
 * Runs `body` (JavaScript, with `lib` = the built package and `dir` = a fresh temp dir) in a plain
 * Node process and returns what it returns, JSON-encoded. A separate process keeps the test
 * runner's TypeScript loader away from the CommonJS build, and exercises the package as shipped.
 * A thrown error comes back as `{ thrown: { name, message, reason } }`.
 */
async function libraryScenario(body: string, timeoutMs = 60_000): Promise<any> {
  const dir = tempDir();
  const script = `
    const lib = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
    const fs = require('node:fs');
    const net = require('node:net');
    const path = require('node:path');
    const dir = ${JSON.stringify(dir)};
    const isSocket = (f) => { try { return fs.statSync(f).isSocket(); } catch { return false; } };
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const vanish = (p) => new Promise((resolve, reject) => {
      const c = net.connect(p, () => { c.end(); resolve(); });
      c.on('error', reject);
    });
    (async () => { ${body} })().then(
      // A write to a pipe completes asynchronously: exit only once it is out.
      (result) => { process.stdout.write(JSON.stringify(result === undefined ? null : result), () => process.exit(0)); },
      (e) => { process.stdout.write(JSON.stringify({ thrown: { name: e.name, message: e.message, reason: e.reason ?? null } }), () => process.exit(0)); },
    );`;
  try {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearTimeout(timer);
    if (code !== 0) throw new Error(`library scenario failed (exit ${String(code)}): ${stderr}`);
    return { dir, result: JSON.parse(stdout) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-life-'));
}

function isSocket(file: string): boolean {
  try {
    return fs.statSync(file).isSocket();
  } catch {
    return false;
  }
}

async function waitFor(what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

interface CliRun {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startCli(args: string[]): CliRun {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  return { child, stderr: () => stderr, exit };
}

/** A vhost-user frontend that connects and goes away without a word. */
async function connectAndVanish(socketPath: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const client = net.connect(socketPath, () => {
      client.end();
      resolve();
    });
    client.on('error', reject);
  });
}

test('library: start, socket appears, stop removes it and exits 0', async (t) => {
  const { dir, result } = await libraryScenario(`
    const socketPath = path.join(dir, 'dev.sock');
    const device = await lib.startDevice({ sharedDir: dir, socketPath, tag: 'fs0' });
    const exits = [];
    device.on('exit', (status) => exits.push(status));
    const before = { pid: device.pid, socket: device.socket, sharedDir: device.sharedDir, isSocket: isSocket(socketPath), status: device.exitStatus };
    const stopped = await device.stop(5000);
    const exited = await device.exited;
    const again = await device.stop();
    return { before, stopped, exited, again, exits, exists: fs.existsSync(socketPath) };
  `);
  t.true(result.before.pid > 0, JSON.stringify(result));
  t.is(result.before.socket, path.join(dir, 'dev.sock'));
  t.is(result.before.sharedDir, dir);
  t.true(result.before.isSocket);
  t.is(result.before.status, null);
  t.deepEqual(result.stopped, { code: 0, signal: null });
  t.deepEqual(result.exited, { code: 0, signal: null });
  t.deepEqual(result.again, { code: 0, signal: null });
  t.deepEqual(result.exits, [{ code: 0, signal: null }]);
  t.false(result.exists);
});

test('library: a frontend that connects then vanishes makes the device exit 0', async (t) => {
  const { result } = await libraryScenario(`
    const socketPath = path.join(dir, 'dev.sock');
    const device = await lib.startDevice({ sharedDir: dir, socketPath });
    const events = [];
    device.on('connected', () => events.push('connected'));
    device.on('disconnected', () => events.push('disconnected'));
    await vanish(socketPath);
    const status = await device.exited;
    return { status, events, exists: fs.existsSync(socketPath), connected: device.connected };
  `);
  t.deepEqual(result.status, { code: 0, signal: null }, JSON.stringify(result));
  t.deepEqual(result.events, ['connected', 'disconnected']);
  t.false(result.exists);
  t.false(result.connected);
});

test('library: with reconnect, the device outlives its frontends and serves the next one', async (t) => {
  const { result } = await libraryScenario(`
    const socketPath = path.join(dir, 'dev.sock');
    const device = await lib.startDevice({ sharedDir: dir, socketPath, reconnect: true });
    const events = [];
    device.on('connected', (n) => events.push('connected ' + n));
    device.on('disconnected', (n) => events.push('disconnected ' + n));
    const until = async (count) => { while (events.length < count && device.exitStatus === null) await sleep(20); };
    for (let i = 1; i <= 3; i++) {
      await vanish(socketPath);
      await until(2 * i);
    }
    await sleep(200);
    const between = { running: device.exitStatus === null, connected: device.connected, socket: isSocket(socketPath) };
    const status = await device.stop(5000);
    return { events, between, reconnect: device.reconnect, connections: device.connections, status, exists: fs.existsSync(socketPath) };
  `);
  t.deepEqual(result.events, ['connected 1', 'disconnected 1', 'connected 2', 'disconnected 2', 'connected 3', 'disconnected 3'], JSON.stringify(result));
  t.deepEqual(result.between, { running: true, connected: false, socket: true });
  t.true(result.reconnect);
  t.is(result.connections, 3);
  t.deepEqual(result.status, { code: 0, signal: null });
  t.false(result.exists);
});

test('library: with reconnect, each frontend gets a fresh FUSE session (INIT again, the old inodes and handles gone)', async (t) => {
  const cargoTarget = process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, 'target');
  const loadTool = path.join(cargoTarget, 'debug', 'virtiofsd-load');
  execFileSync('cargo', ['build', '--quiet', '-p', 'virtiofsd-frontend', '--bin', 'virtiofsd-load'], { cwd: root, stdio: 'inherit' });
  const { result } = await libraryScenario(`
    const { execFileSync } = require('node:child_process');
    fs.writeFileSync(path.join(dir, 'a-file'), 'x');
    const socketPath = path.join(dir, 'dev.sock');
    const device = await lib.startDevice({ sharedDir: dir, socketPath, reconnect: true });
    const events = [];
    device.on('connected', (n) => events.push('connected ' + n));
    device.on('disconnected', (n) => events.push('disconnected ' + n));
    const probes = [];
    for (let i = 1; i <= 3; i++) {
      // A whole vhost-user session: INIT, GETATTR, STATFS, OPENDIR, READDIR, RELEASEDIR.
      const out = execFileSync(${JSON.stringify(loadTool)}, ['probe', '--socket', socketPath], { encoding: 'utf8', timeout: 30000 });
      probes.push(/^INIT: 7\./m.test(out) && out.includes('a-file'));
      while (events.length < 2 * i && device.exitStatus === null) await sleep(20);
    }
    const stats = await device.stats();
    const status = await device.stop(5000);
    return { events, probes, init: stats.requests.INIT, opendir: stats.requests.OPENDIR, inodes: stats.inodes, handles: stats.handles, status };
  `);
  t.deepEqual(result.probes, [true, true, true], JSON.stringify(result));
  t.deepEqual(result.events, ['connected 1', 'disconnected 1', 'connected 2', 'disconnected 2', 'connected 3', 'disconnected 3']);
  // Statistics go on across sessions; what the old guests held does not.
  t.is(result.init, 3);
  t.is(result.opendir, 3);
  t.is(result.inodes, 1, 'only the root');
  t.is(result.handles, 0);
  t.deepEqual(result.status, { code: 0, signal: null });
});

test('library: a root device that may open file handles (the default, or for a migration) keeps CAP_DAC_READ_SEARCH', async (t) => {
  if (process.geteuid?.() !== 0) {
    t.pass('capabilities are cut only for a root device');
    return;
  }
  const { result } = await libraryScenario(`
    const capabilities = async (extra) => {
      const device = await lib.startDevice({ sharedDir: dir, socketPath: path.join(dir, 'caps.sock'), ...extra });
      const stats = await device.stats();
      await device.stop(5000);
      return stats.capabilities;
    };
    const never = { inodeFileHandles: 'never' };
    return {
      byDefault: await capabilities({}),
      plain: await capabilities(never),
      findPaths: await capabilities({ ...never, migrationMode: 'find-paths', migrationVerifyHandles: true }),
      fileHandles: await capabilities({ ...never, migrationMode: 'file-handles' }),
      inodeHandles: await capabilities({ inodeFileHandles: 'mandatory' }),
    };
  `);
  t.true(result.byDefault.includes('dac_read_search'), JSON.stringify(result));
  t.false(result.plain.includes('dac_read_search'));
  t.false(result.findPaths.includes('dac_read_search'));
  t.true(result.fileHandles.includes('dac_read_search'));
  t.true(result.inodeHandles.includes('dac_read_search'));
  t.deepEqual(result.fileHandles.filter((c: string) => c !== 'dac_read_search'), result.plain);
  t.deepEqual(result.byDefault, result.fileHandles);
});

test('CLI: --reconnect keeps the daemon serving after its frontend leaves', async (t) => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'cli.sock');
  const run = startCli(['--shared-dir', dir, '--socket-path', socketPath, '--sandbox=none', '--reconnect']);
  try {
    await waitFor('the socket', () => isSocket(socketPath));
    for (let i = 0; i < 2; i++) {
      await connectAndVanish(socketPath);
      await new Promise((resolve) => setTimeout(resolve, 300));
      t.is(run.child.exitCode, null, `still running after frontend ${i + 1}: ${run.stderr()}`);
      t.true(isSocket(socketPath));
    }
    run.child.kill('SIGTERM');
    t.deepEqual(await run.exit, { code: 0, signal: null }, run.stderr());
    t.false(fs.existsSync(socketPath));
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('library: kill reports the signal', async (t) => {
  const { result } = await libraryScenario(`
    const device = await lib.startDevice({ sharedDir: dir, socketPath: path.join(dir, 'dev.sock') });
    device.kill('SIGKILL');
    return await device.exited;
  `);
  t.deepEqual(result, { code: null, signal: 'SIGKILL' });
});

test('library: stop escalates to SIGKILL when the device does not stop in time', async (t) => {
  const { result } = await libraryScenario(`
    const device = await lib.startDevice({ sharedDir: dir, socketPath: path.join(dir, 'dev.sock') });
    // A stopped (SIGSTOP) process cannot act on the stop command, so only SIGKILL ends it.
    process.kill(device.pid, 'SIGSTOP');
    const state = () => fs.readFileSync('/proc/' + device.pid + '/stat', 'utf8').split(') ')[1].charAt(0);
    while (state() !== 'T') await sleep(5);
    const started = Date.now();
    const status = await device.stop(300);
    return { status, elapsed: Date.now() - started };
  `);
  t.deepEqual(result.status, { code: null, signal: 'SIGKILL' });
  t.true(result.elapsed >= 250, JSON.stringify(result));
});

test('library: bad shared dir rejects with OptionError and starts nothing', async (t) => {
  const { result } = await libraryScenario(`
    try {
      await lib.startDevice({ sharedDir: path.join(dir, 'missing'), socketPath: path.join(dir, 'dev.sock') });
      return { started: true };
    } catch (e) {
      return { isOptionError: e instanceof lib.OptionError, message: e.message, exists: fs.existsSync(path.join(dir, 'dev.sock')) };
    }
  `);
  t.true(result.isOptionError, JSON.stringify(result));
  t.regex(result.message, /shared directory '.*missing' does not exist/);
  t.false(result.exists);
});

test('library: a socket that cannot be created rejects with DeviceError', async (t) => {
  const { result } = await libraryScenario(`
    try {
      await lib.startDevice({ sharedDir: dir, socketPath: path.join(dir, 'no', 'such', 'dev.sock') });
      return { started: true };
    } catch (e) {
      return { isDeviceError: e instanceof lib.DeviceError, reason: e.reason, message: e.message };
    }
  `);
  t.true(result.isDeviceError, JSON.stringify(result));
  t.true(['failed', 'exited'].includes(result.reason), JSON.stringify(result));
  t.true(result.message.length > 0);
});

test('library: a DeviceGroup starts several devices and stops them all', async (t) => {
  const { result } = await libraryScenario(`
    const group = new lib.DeviceGroup();
    const started = await group.startAll({
      a: { sharedDir: dir, socketPath: path.join(dir, 'a.sock') },
      b: { sharedDir: dir, socketPath: path.join(dir, 'b.sock'), readonly: true },
    });
    const names = [...started.keys()];
    const pids = names.map((n) => started.get(n).pid);
    const sockets = [isSocket(path.join(dir, 'a.sock')), isSocket(path.join(dir, 'b.sock'))];
    const statuses = Object.fromEntries(await group.stopAll());
    const left = [fs.existsSync(path.join(dir, 'a.sock')), fs.existsSync(path.join(dir, 'b.sock'))];
    return { names, pids, sockets, statuses, left, size: group.devices.size };
  `);
  t.deepEqual(result.names, ['a', 'b'], JSON.stringify(result));
  t.not(result.pids[0], result.pids[1]);
  t.deepEqual(result.sockets, [true, true]);
  t.deepEqual(result.statuses, { a: { code: 0, signal: null }, b: { code: 0, signal: null } });
  t.deepEqual(result.left, [false, false]);
  t.is(result.size, 0);
});

test('library: a group that cannot start every device stops the others', async (t) => {
  const { result } = await libraryScenario(`
    const group = new lib.DeviceGroup();
    let error = null;
    try {
      await group.startAll({
        good: { sharedDir: dir, socketPath: path.join(dir, 'good.sock') },
        bad: { sharedDir: path.join(dir, 'missing'), socketPath: path.join(dir, 'bad.sock') },
      });
    } catch (e) {
      error = e.name;
    }
    return { error, size: group.devices.size, goodLeft: fs.existsSync(path.join(dir, 'good.sock')) };
  `);
  t.deepEqual(result, { error: 'OptionError', size: 0, goodLeft: false });
});

test('CLI: SIGTERM stops the device, removes the socket and exits 0', async (t) => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'cli.sock');
  const run = startCli(['--shared-dir', dir, '--socket-path', socketPath]);
  try {
    await waitFor('the CLI socket', () => isSocket(socketPath));
    run.child.kill('SIGTERM');
    const status = await run.exit;
    t.deepEqual(status, { code: 0, signal: null }, run.stderr());
    t.false(fs.existsSync(socketPath));
    // The defaults (namespace sandbox, seccomp kill) start without a warning.
    t.notRegex(run.stderr(), /running without/);
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('CLI: SIGINT and SIGHUP also stop cleanly', async (t) => {
  for (const signal of ['SIGINT', 'SIGHUP'] as const) {
    const dir = tempDir();
    const socketPath = path.join(dir, 'cli.sock');
    const run = startCli(['--shared-dir', dir, '--socket-path', socketPath]);
    try {
      await waitFor('the CLI socket', () => isSocket(socketPath));
      run.child.kill(signal);
      t.deepEqual(await run.exit, { code: 0, signal: null }, `${signal}: ${run.stderr()}`);
      t.false(fs.existsSync(socketPath));
    } finally {
      run.child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('CLI: frontend connects then disconnects, daemon exits 0 and removes its socket', async (t) => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'cli.sock');
  // A relative socket path resolves against the working directory of the CLI.
  const run = startCli(['--shared-dir', dir, '--socket-path', path.relative(process.cwd(), socketPath)]);
  try {
    await waitFor('the CLI socket', () => isSocket(socketPath));
    await connectAndVanish(socketPath);
    t.deepEqual(await run.exit, { code: 0, signal: null }, run.stderr());
    t.false(fs.existsSync(socketPath));
    // Device log events reach stderr in the upstream format.
    t.regex(run.stderr(), /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO {2}\S+\] .*connected/im);
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('CLI: bad shared dir exits 1 with a clear message', async (t) => {
  const dir = tempDir();
  const run = startCli(['--shared-dir', path.join(dir, 'missing'), '--socket-path', path.join(dir, 'cli.sock')]);
  const status = await run.exit;
  t.deepEqual(status, { code: 1, signal: null });
  t.regex(run.stderr(), /virtiofsd: shared directory '.*missing' does not exist/);
  t.false(fs.existsSync(path.join(dir, 'cli.sock')));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('CLI: a socket that cannot be created exits 1', async (t) => {
  const dir = tempDir();
  const run = startCli(['--shared-dir', dir, '--socket-path', path.join(dir, 'no', 'dir', 'cli.sock')]);
  const status = await run.exit;
  t.is(status.code, 1, run.stderr());
  t.regex(run.stderr(), /ERROR +virtiofsd\] .*cli\.sock/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('CLI: --log-level=error keeps info and warning lines off stderr', async (t) => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'cli.sock');
  const run = startCli(['--log-level=error', '--shared-dir', dir, '--socket-path', socketPath]);
  try {
    await waitFor('the CLI socket', () => isSocket(socketPath));
    await connectAndVanish(socketPath);
    t.deepEqual(await run.exit, { code: 0, signal: null }, run.stderr());
    t.is(run.stderr(), '');
  } finally {
    run.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('library: device names in a group are unique', async (t) => {
  const { result } = await libraryScenario(`
    const group = new lib.DeviceGroup();
    await group.add('x', { sharedDir: dir, socketPath: path.join(dir, 'x.sock') });
    let error = null;
    try {
      await group.add('x', { sharedDir: dir, socketPath: path.join(dir, 'y.sock') });
    } catch (e) {
      error = { name: e.name, message: e.message };
    }
    const statuses = Object.fromEntries(await group.stopAll());
    return { error, statuses, second: fs.existsSync(path.join(dir, 'y.sock')) };
  `);
  t.deepEqual(result.error, { name: 'OptionError', message: "a device named 'x' is already in this group" });
  t.deepEqual(result.statuses, { x: { code: 0, signal: null } });
  t.false(result.second);
});
