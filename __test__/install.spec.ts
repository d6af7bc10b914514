// Installs the package as a user gets it, the root tarball and the host's platform package, into
// an empty folder with a PATH that has no Rust toolchain, then serves a directory from there: the
// command and the library must find the installed device executable, and a VM-less vhost-user
// frontend (virtiofsd-load) reads what the host wrote and writes what the host then reads.
import test from 'ava';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureBuilt, root } from './support/build.ts';
import { hostPlatform, nativeArtifacts } from './support/platform.ts';

const platform = hostPlatform();
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-install-'));
const app = path.join(scratch, 'app');
const installed = path.join(app, 'node_modules');
const cargoTarget = process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, 'target');
const loadTool = path.join(cargoTarget, 'debug', 'virtiofsd-load');

/** Finds `name` on the caller's PATH. */
function which(name: string): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return fs.realpathSync(candidate);
    } catch {
      // not in this folder
    }
  }
  throw new Error(`${name} is not on PATH`);
}

/**
 * The caller's PATH without any folder that holds cargo or rustc, and no Cargo/rustup variables.
 * node and npm come from a folder of their own, so a Rust toolchain that shares their folder (a
 * distribution's cargo in /usr/bin) is left out as well.
 */
function toolchainFreeEnv(): NodeJS.ProcessEnv {
  const bin = path.join(scratch, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  fs.symlinkSync(which('npm'), path.join(bin, 'npm'));
  const hasRust = (dir: string) => ['cargo', 'rustc', 'rustup'].some((tool) => fs.existsSync(path.join(dir, tool)));
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter((dir) => dir !== '' && !hasRust(dir));
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(CARGO|RUSTUP|RUSTC|RUST_)/.test(key) && !key.startsWith('npm_')) env[key] = value;
  }
  return { ...env, PATH: [bin, ...dirs].join(path.delimiter), npm_config_cache: path.join(scratch, 'npm-cache') };
}
const env = toolchainFreeEnv();

interface Packed { filename: string; files: { path: string; mode: number }[] }

function pack(dir: string): Packed {
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', scratch], { cwd: dir, env, encoding: 'utf8' });
  const [result] = JSON.parse(out) as Packed[];
  return { ...result, filename: path.join(scratch, result.filename) };
}

function isElf(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const magic = Buffer.alloc(4);
    return fs.readSync(fd, magic, 0, 4, 0) === 4 && magic.readUInt32BE(0) === 0x7f454c46;
  } finally {
    fs.closeSync(fd);
  }
}

function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.join(entry.parentPath, entry.name));
}

let rootPack: Packed;
let platformPack: Packed;

test.before(() => {
  ensureBuilt();
  const { addon, executable } = nativeArtifacts(platform);
  for (const file of [addon, executable]) {
    if (!fs.existsSync(file)) throw new Error(`${path.relative(root, file)} is missing: run 'npm run build:native' first`);
  }
  execFileSync('cargo', ['build', '--quiet', '-p', 'virtiofsd-frontend', '--bin', 'virtiofsd-load'], { cwd: root, stdio: 'inherit' });
  rootPack = pack(root);
  platformPack = pack(path.join(root, 'npm', platform));
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  const install = spawnSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--no-package-lock', rootPack.filename, platformPack.filename], { cwd: app, env, encoding: 'utf8' });
  if (install.status !== 0) throw new Error(`npm install of the packed tarballs failed (${install.status ?? install.signal}): ${install.stderr}`);
});

test.after.always(() => {
  fs.rmSync(scratch, { recursive: true, force: true });
});

test('the install environment has no Rust toolchain', (t) => {
  const cargo = spawnSync('cargo', ['--version'], { env });
  t.is((cargo.error as NodeJS.ErrnoException | undefined)?.code, 'ENOENT', 'cargo must not be found on the install PATH');
  t.true(fs.existsSync(path.join(installed, '.bin', 'virtiofsd')));
});

test('the root package holds no native code', (t) => {
  const native = rootPack.files.filter((file) => file.path.endsWith('.node') || /(^|\/)virtiofsd$/.test(file.path));
  t.deepEqual(native, []);
  const elf = filesUnder(path.join(installed, 'virtiofsd')).filter(isElf);
  t.deepEqual(elf, []);
});

test('the platform package holds the addon and an executable device program', (t) => {
  const dir = path.join(installed, '@virtiofsd', `binding-${platform}`);
  t.deepEqual(fs.readdirSync(dir).sort(), ['README.md', 'package.json', 'virtiofsd', `virtiofsd.${platform}.node`]);
  t.is(fs.statSync(path.join(dir, 'virtiofsd')).mode & 0o111, 0o111);
  t.true(isElf(path.join(dir, 'virtiofsd')));
  t.true(isElf(path.join(dir, `virtiofsd.${platform}.node`)));
});

function installedExecutable(): string {
  return fs.realpathSync(path.join(installed, '@virtiofsd', `binding-${platform}`, 'virtiofsd'));
}

function sharedDir(): { dir: string; socket: string } {
  const base = fs.mkdtempSync(path.join(scratch, 'share-'));
  const dir = path.join(base, 'shared');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'from-host.txt'), 'written on the host\n');
  fs.writeFileSync(path.join(dir, 'data.bin'), Buffer.alloc(2 << 20));
  return { dir, socket: path.join(base, 'vfsd.sock') };
}

async function waitForSocket(socket: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!fs.existsSync(socket)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the device exited (${child.exitCode ?? child.signalCode}) before listening: ${stderr()}`);
    if (Date.now() > deadline) throw new Error(`no socket at ${socket} after 30 s: ${stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Resolves once the child has exited and its output streams are drained ('exit' can come first). */
function closed(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
}

function within<T>(promise: Promise<T>, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what())), 30_000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function load(args: string[]): string {
  const result = spawnSync(loadTool, args, { encoding: 'utf8', timeout: 60_000 });
  if (result.status !== 0) throw new Error(`virtiofsd-load ${args.join(' ')} failed (${result.status ?? result.signal}): ${result.stderr}`);
  return result.stdout;
}

test('the installed command serves a directory: the frontend lists a host file, then writes one', async (t) => {
  const executable = installedExecutable();
  for (const step of ['probe', 'write'] as const) {
    const { dir, socket } = sharedDir();
    const child = spawn(path.join(installed, '.bin', 'virtiofsd'), [`--socket-path=${socket}`, `--shared-dir=${dir}`], { cwd: app, env, stdio: ['ignore', 'ignore', 'pipe'] });
    const done = closed(child);
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    try {
      await waitForSocket(socket, child, () => stderr);
      // The command replaces itself with the installed device executable: same pid, that program.
      t.is(fs.readlinkSync(`/proc/${child.pid}/exe`), executable, 'the device runs the installed package\'s executable');
      if (step === 'probe') {
        const out = load(['probe', '--socket', socket]);
        t.regex(out, /^READDIR \/: \d+ entries: .*\bfrom-host\.txt\b/m);
      } else {
        load(['bench', '--socket', socket, '--workload', 'seqwrite', '--ops', '2', '--seconds', '30']);
        const data = fs.readFileSync(path.join(dir, 'data.bin'));
        t.is(data.length, 2 << 20);
        t.true(data.every((byte) => byte === 0xa5), 'the frontend\'s writes reach the host file');
      }
      // As upstream, the device exits when its frontend disconnects.
      const { code, signal } = await within(done, () => `the device did not exit after the frontend left: ${stderr}`);
      t.deepEqual({ code, signal }, { code: 0, signal: null }, stderr);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }
});

test('the installed library starts a device from the installed executable', async (t) => {
  const executable = installedExecutable();
  const { dir, socket } = sharedDir();
  const script = `
    const { startDevice } = require('virtiofsd');
    (async () => {
      const device = await startDevice({ sharedDir: ${JSON.stringify(dir)}, socketPath: ${JSON.stringify(socket)} });
      process.stdout.write(JSON.stringify({ pid: device.pid }) + '\\n');
      const { code } = await device.exited;
      process.stdout.write(JSON.stringify({ code }) + '\\n');
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const child = spawn(process.execPath, ['-e', script], { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const done = closed(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  try {
    await waitForSocket(socket, child, () => stderr);
    const deadline = Date.now() + 30_000;
    while (!stdout.includes('\n')) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`startDevice did not resolve: ${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const { pid } = JSON.parse(stdout.split('\n')[0]) as { pid: number };
    t.is(fs.readlinkSync(`/proc/${pid}/exe`), executable, 'the device runs the installed package\'s executable');
    const out = load(['probe', '--socket', socket]);
    t.regex(out, /\bfrom-host\.txt\b/);
    const { code } = await within(done, () => `the library process did not end: ${stderr}`);
    t.is(code, 0, stderr);
    const lines = stdout.trim().split('\n').map((line) => JSON.parse(line) as { code?: number });
    t.is(lines[1]?.code, 0, stdout);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});
