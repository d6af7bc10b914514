// `virtiofsd-descriptor`: the vhost-user backend descriptor it writes parses, names this package's
// `virtiofsd` as an executable, and that program answers --print-capabilities as a virtio-fs
// backend. It runs from a copy of the built package whose bin is executable, as npm leaves an
// installed one (the source checkout's dist/cli.js is not).
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CAPABILITIES } from '../ts/help.ts';
import { ensureBuilt, root } from './support/build.ts';

test.before(() => ensureBuilt());

interface Installed {
  dir: string;
  cli: string;
  descriptorBin: string;
}

/** The package's manifest and dist/ in a fresh directory, with its bins executable or not. */
function installCopy(executable: boolean): Installed {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-descriptor-'));
  fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
  fs.cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> };
  for (const bin of Object.values(manifest.bin)) fs.chmodSync(path.join(dir, bin), executable ? 0o755 : 0o644);
  return { dir, cli: path.join(dir, manifest.bin.virtiofsd), descriptorBin: path.join(dir, manifest.bin['virtiofsd-descriptor']) };
}

/** The environment a VM manager would run the bin with: node must be found through PATH. */
const env = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}` };

function runDescriptor(pkg: Installed, args: string[]) {
  return spawnSync(pkg.descriptorBin, args, { encoding: 'utf8', env });
}

test('package.json declares the descriptor command next to virtiofsd', (t) => {
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> };
  t.deepEqual(Object.keys(manifest.bin).sort(), ['virtiofsd', 'virtiofsd-descriptor']);
  t.true(fs.existsSync(path.join(root, manifest.bin['virtiofsd-descriptor'])));
  t.is(fs.readFileSync(path.join(root, manifest.bin['virtiofsd-descriptor']), 'utf8').split('\n')[0], '#!/usr/bin/env node');
});

test('--install writes 50-virtiofsd.json naming the executable virtiofsd, which answers --print-capabilities', (t) => {
  const pkg = installCopy(true);
  try {
    const target = path.join(pkg.dir, 'etc', 'qemu', 'vhost-user');
    const result = runDescriptor(pkg, ['--install', target]);
    t.is(result.status, 0, result.stderr);
    const file = path.join(target, '50-virtiofsd.json');
    t.is(result.stdout, `${file}\n`);
    t.deepEqual(fs.readdirSync(target), ['50-virtiofsd.json'], 'a temporary file was left behind');
    t.is(fs.statSync(file).mode & 0o777, 0o644);
    const descriptor = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    // QEMU's vhost-user.json schema: description, type, binary (and optional tags).
    t.deepEqual(Object.keys(descriptor).sort(), ['binary', 'description', 'type']);
    t.is(descriptor.type, 'fs');
    t.regex(descriptor.description as string, /^virtiofsd \d+\.\d+\.\d+/);
    t.is(descriptor.binary, fs.realpathSync(pkg.cli));
    fs.accessSync(descriptor.binary as string, fs.constants.X_OK);
    const capabilities = execFileSync(descriptor.binary as string, ['--print-capabilities'], { encoding: 'utf8', env });
    t.deepEqual(JSON.parse(capabilities), CAPABILITIES);
  } finally {
    fs.rmSync(pkg.dir, { recursive: true, force: true });
  }
});

test('without --install it prints the same descriptor', (t) => {
  const pkg = installCopy(true);
  try {
    const printed = runDescriptor(pkg, []);
    t.is(printed.status, 0, printed.stderr);
    runDescriptor(pkg, [`--install=${pkg.dir}/out`]);
    t.is(printed.stdout, fs.readFileSync(path.join(pkg.dir, 'out', '50-virtiofsd.json'), 'utf8'));
  } finally {
    fs.rmSync(pkg.dir, { recursive: true, force: true });
  }
});

test('refuses a virtiofsd that is not executable, and writes nothing', (t) => {
  const pkg = installCopy(false);
  try {
    const result = spawnSync(process.execPath, [pkg.descriptorBin, '--install', path.join(pkg.dir, 'out')], { encoding: 'utf8', env });
    t.is(result.status, 1);
    t.regex(result.stderr, /^virtiofsd-descriptor: .*cli\.js is not executable.*'--binary'/);
    t.false(fs.existsSync(path.join(pkg.dir, 'out')));
  } finally {
    fs.rmSync(pkg.dir, { recursive: true, force: true });
  }
});

test('--binary names another program, which must be a virtio-fs backend', (t) => {
  const pkg = installCopy(true);
  try {
    const other = path.join(pkg.dir, 'virtiofsd-wrapper');
    fs.writeFileSync(other, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(pkg.cli)} "$@"\n`, { mode: 0o755 });
    const ok = runDescriptor(pkg, ['--binary', other]);
    t.is(ok.status, 0, ok.stderr);
    t.is((JSON.parse(ok.stdout) as { binary: string }).binary, other);

    const notBackend = runDescriptor(pkg, ['--binary', '/bin/true']);
    t.is(notBackend.status, 1);
    t.regex(notBackend.stderr, /--print-capabilities did not print JSON/);
    const missing = runDescriptor(pkg, ['--binary', path.join(pkg.dir, 'nothing-here')]);
    t.is(missing.status, 1);
    t.regex(missing.stderr, /is not executable/);
  } finally {
    fs.rmSync(pkg.dir, { recursive: true, force: true });
  }
});

test('usage errors exit 1; --help exits 0', (t) => {
  const pkg = installCopy(true);
  try {
    const bad = runDescriptor(pkg, ['--bogus']);
    t.is(bad.status, 1);
    t.is(bad.stderr, "virtiofsd-descriptor: unexpected argument '--bogus'\n");
    t.is(runDescriptor(pkg, ['--install']).status, 1);
    const help = runDescriptor(pkg, ['--help']);
    t.is(help.status, 0);
    t.regex(help.stdout, /--install <DIR>/);
    t.regex(help.stdout, /\/etc\/qemu\/vhost-user/);
  } finally {
    fs.rmSync(pkg.dir, { recursive: true, force: true });
  }
});
