#!/usr/bin/env node
// `npm run build:native`: builds the two native artifacts of the host's platform package,
//   npm/<T>/virtiofsd.<T>.node   the napi addon (crates/napi, a cdylib)
//   npm/<T>/virtiofsd            the device executable (bin `virtiofsd` of crate virtiofsd-daemon)
// and binding.d.ts at the root, the addon's types for tsc. T is linux-{x64,arm64}-{gnu,musl}.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const rustTriples = {
  'linux-x64-gnu': 'x86_64-unknown-linux-gnu',
  'linux-x64-musl': 'x86_64-unknown-linux-musl',
  'linux-arm64-gnu': 'aarch64-unknown-linux-gnu',
  'linux-arm64-musl': 'aarch64-unknown-linux-musl',
};

function die(message) {
  process.stderr.write(`build-native: error: ${message}\n`);
  process.exit(1);
}

function hostPlatform() {
  if (process.platform !== 'linux') die(`unsupported platform ${process.platform}: only Linux hosts are supported`);
  const arch = { x64: 'x64', arm64: 'arm64' }[process.arch] ?? die(`unsupported CPU ${process.arch}`);
  // Node reports the glibc it runs on; a musl Node has none.
  const libc = process.report.getReport().header.glibcVersionRuntime ? 'gnu' : 'musl';
  return `linux-${arch}-${libc}`;
}

function run(cmd, args, env = {}) {
  process.stderr.write(`build-native: ${cmd} ${args.join(' ')}\n`);
  const result = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (result.error) die(`cannot run ${cmd}: ${result.error.message}`);
  if (result.status !== 0) die(`${cmd} ${args[0]} failed (exit ${result.status ?? result.signal})`);
}

const platform = hostPlatform();
const triple = rustTriples[platform];
const outDir = path.join(root, 'npm', platform);
const napiCli = path.join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js');

run(process.execPath, [
  napiCli, 'build', '--platform', '--release', '--no-js',
  '--manifest-path', 'crates/napi/Cargo.toml', '--package-json-path', 'package.json',
  '--target', triple, '--output-dir', path.relative(root, outDir), '--dts', path.relative(outDir, path.join(root, 'binding.d.ts')),
]);

function hasDeviceBin() {
  const result = spawnSync('cargo', ['metadata', '--no-deps', '--format-version', '1'], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (result.status !== 0) die(`cargo metadata failed: ${result.stderr}`);
  const daemon = JSON.parse(result.stdout).packages.find((p) => p.name === 'virtiofsd-daemon');
  return daemon?.targets.some((t) => t.kind.includes('bin') && t.name === 'virtiofsd') ?? false;
}

// Transitional: the executable target is being added; until then only the addon is built.
if (hasDeviceBin()) {
  run('cargo', ['build', '--release', '--locked', '-p', 'virtiofsd-daemon', '--bin', 'virtiofsd', '--target', triple]);
  const exe = path.join(outDir, 'virtiofsd');
  fs.copyFileSync(path.join(root, 'target', triple, 'release', 'virtiofsd'), `${exe}.tmp`);
  fs.chmodSync(`${exe}.tmp`, 0o755);
  fs.renameSync(`${exe}.tmp`, exe);
  process.stderr.write(`build-native: ${path.relative(root, outDir)}: virtiofsd.${platform}.node, virtiofsd\n`);
} else {
  process.stderr.write('build-native: warning: crate virtiofsd-daemon has no `virtiofsd` binary yet; only the addon was built\n');
}
