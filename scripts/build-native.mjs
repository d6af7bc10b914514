#!/usr/bin/env node
// `npm run build:native [-- --target <rust triple>]`: builds the two native artifacts of one
// platform package, by default the host's:
//   npm/<T>/virtiofsd.<T>.node   the napi addon (crates/napi, a cdylib)
//   npm/<T>/virtiofsd            the device executable (bin `virtiofsd` of crate virtiofsd-daemon)
// and binding.d.ts at the root, the addon's types for tsc. T is linux-{x64,arm64}-{gnu,musl}.
//
// Both are linked by zig through cargo-zigbuild (scripts/toolchain.sh installs them): gnu builds
// against the glibc 2.28 symbol set, so they load on any distribution with glibc 2.28 or newer
// whatever glibc the build host has; the musl executable is static, the musl addon is not (Node
// loads it with dlopen, which a static binary cannot serve).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The oldest glibc the gnu artifacts support; __test__/native-artifacts.spec.ts checks it. */
const GLIBC = '2.28';

const platforms = {
  'x86_64-unknown-linux-gnu': 'linux-x64-gnu',
  'x86_64-unknown-linux-musl': 'linux-x64-musl',
  'aarch64-unknown-linux-gnu': 'linux-arm64-gnu',
  'aarch64-unknown-linux-musl': 'linux-arm64-musl',
};

function die(message) {
  process.stderr.write(`build-native: error: ${message}\n`);
  process.exit(1);
}

function hostTriple() {
  if (process.platform !== 'linux') die(`unsupported platform ${process.platform}: only Linux hosts are supported`);
  const arch = { x64: 'x86_64', arm64: 'aarch64' }[process.arch] ?? die(`unsupported CPU ${process.arch}`);
  // Node reports the glibc it runs on; a musl Node has none.
  const libc = process.report.getReport().header.glibcVersionRuntime ? 'gnu' : 'musl';
  return `${arch}-unknown-linux-${libc}`;
}

function parseArgs(argv) {
  let target = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--target') target = argv[++i] ?? die('--target needs a value');
    else if (arg.startsWith('--target=')) target = arg.slice('--target='.length);
    else die(`unknown argument ${arg} (usage: build-native.mjs [--target <rust triple>])`);
  }
  return { target: target ?? hostTriple() };
}

function run(cmd, args, env = {}) {
  process.stderr.write(`build-native: ${cmd} ${args.join(' ')}\n`);
  const result = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (result.error) die(`cannot run ${cmd}: ${result.error.message}`);
  if (result.status !== 0) die(`${path.basename(cmd)} ${args[0]} failed (exit ${result.status ?? result.signal})`);
}

/** PATH with zig and cargo-zigbuild in front, installing them first when missing. */
function toolchainPath() {
  const result = spawnSync('bash', [path.join(root, 'scripts', 'toolchain.sh')], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (result.status !== 0) die('the zig toolchain is missing and could not be installed (see above); run scripts/toolchain.sh to retry');
  const dirs = result.stdout.trim().split('\n').pop();
  return `${dirs}${path.delimiter}${process.env.PATH ?? ''}`;
}

function installExecutable(from, to) {
  const tmp = `${to}.tmp-${process.pid}`;
  fs.copyFileSync(from, tmp);
  fs.chmodSync(tmp, 0o755);
  fs.renameSync(tmp, to);
}

const { target } = parseArgs(process.argv.slice(2));
const platform = platforms[target] ?? die(`unsupported target ${target}; one of: ${Object.keys(platforms).join(', ')}`);
const musl = target.endsWith('-musl');
// cargo-zigbuild reads the glibc version off the triple; Cargo itself sees the plain triple.
const zigTarget = musl ? target : `${target}.${GLIBC}`;
const outDir = path.join(root, 'npm', platform);
const env = { PATH: toolchainPath() };

run(process.execPath, [
  path.join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js'),
  'build', '--platform', '--release', '--no-js', '--cross-compile', '--target', zigTarget,
  '--manifest-path', 'crates/napi/Cargo.toml', '--package-json-path', 'package.json',
  '--output-dir', path.relative(root, outDir), '--dts', path.relative(outDir, path.join(root, 'binding.d.ts')),
], env);

// napi builds the musl addon with -crt-static; the executable keeps musl's default static linking.
// Different flags, different target dir: sharing one would rebuild every crate on each switch.
const cargoTarget = process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, 'target');
const targetDir = musl ? path.join(cargoTarget, 'static') : cargoTarget;
run('cargo', [
  'zigbuild', '--release', '--locked', '-p', 'virtiofsd-daemon', '--bin', 'virtiofsd',
  '--target', zigTarget, '--target-dir', targetDir,
], musl ? { ...env, RUSTFLAGS: '-C target-feature=+crt-static' } : env);
installExecutable(path.join(targetDir, target, 'release', 'virtiofsd'), path.join(outDir, 'virtiofsd'));
process.stderr.write(`build-native: npm/${platform}: virtiofsd.${platform}.node, virtiofsd\n`);
