// The host's built platform package (npm run build:native): both artifacts are there, for the
// host's CPU, and load where the package claims they do: a gnu build needs nothing newer than
// glibc 2.28, a musl executable is static.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { root } from './support/build.ts';
import { EM_AARCH64, EM_X86_64, compareVersions, maxGlibcVersion, readElf } from './support/elf.ts';
import { hostPlatform, nativeArtifacts } from './support/platform.ts';

const GLIBC_BASELINE = '2.28';
const platform = hostPlatform();
const { dir, addon, executable } = nativeArtifacts(platform);
const musl = platform.endsWith('-musl');
const machine = platform.includes('-arm64-') ? EM_AARCH64 : EM_X86_64;

test.before(() => {
  for (const file of [addon, executable]) {
    if (!fs.existsSync(file)) throw new Error(`${path.relative(root, file)} is missing: run 'npm run build:native' first`);
  }
});

test('each platform package ships exactly its addon and executable, at the root version', (t) => {
  const rootPkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string; repository: unknown };
  for (const [name, cpu, libc] of [
    ['linux-x64-gnu', 'x64', 'glibc'], ['linux-x64-musl', 'x64', 'musl'],
    ['linux-arm64-gnu', 'arm64', 'glibc'], ['linux-arm64-musl', 'arm64', 'musl'],
  ]) {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'npm', name, 'package.json'), 'utf8')) as Record<string, unknown>;
    t.is(pkg.name, `@virtiofsd/binding-${name}`);
    t.is(pkg.version, rootPkg.version, `${name}: the platform packages are released with the root package`);
    t.deepEqual([pkg.os, pkg.cpu, pkg.libc], [['linux'], [cpu], [libc]], name);
    t.deepEqual([...(pkg.files as string[])].sort(), ['virtiofsd', `virtiofsd.${name}.node`], name);
    t.is(pkg.main, `virtiofsd.${name}.node`);
    t.deepEqual(pkg.publishConfig, { access: 'public' }, name);
    t.is((pkg.repository as { url: string }).url, (rootPkg.repository as { url: string }).url, name);
  }
});

test('the executable is an executable file for the platform CPU, mode 0755', (t) => {
  t.is(fs.statSync(executable).mode & 0o777, 0o755);
  const info = readElf(executable);
  t.is(info.machine, machine);
  // ET_DYN as well: Rust links position-independent executables by default.
  t.true(info.type === 2 || info.type === 3, `e_type ${info.type}`);
});

test('the addon is a shared object for the platform CPU', (t) => {
  const info = readElf(addon);
  t.is(info.type, 3);
  t.is(info.machine, machine);
  t.is(info.interpreter, null);
  t.true(info.needed.some((lib) => lib.startsWith('libc.')), `needed: ${info.needed.join(', ')}`);
});

if (musl) {
  test('musl: the executable is static (no interpreter, no shared libraries)', (t) => {
    const info = readElf(executable);
    t.is(info.interpreter, null);
    t.deepEqual(info.needed, []);
    t.deepEqual(info.versionNeeds, []);
  });
} else {
  for (const [label, file] of [['addon', addon], ['executable', executable]] as const) {
    test(`gnu: the ${label} requires glibc ${GLIBC_BASELINE} at most`, (t) => {
      const info = readElf(file);
      const libc = info.versionNeeds.find((need) => need.file === 'libc.so.6');
      t.truthy(libc, `${label} has no version needs on libc.so.6: ${JSON.stringify(info.versionNeeds)}`);
      const max = maxGlibcVersion(info);
      t.not(max, null);
      t.true(compareVersions(max!, GLIBC_BASELINE) <= 0, `${label} requires GLIBC_${max}, newer than ${GLIBC_BASELINE}`);
    });
  }
}

test('the ELF reader agrees with readelf on the version needs', (t) => {
  // readelf comes with binutils, which the Rust toolchain's linker needs anyway.
  for (const file of [addon, executable]) {
    const result = spawnSync('readelf', ['--version-info', '--wide', file], { encoding: 'utf8' });
    if (result.error) throw new Error(`readelf is needed to cross-check the ELF reader: ${result.error.message}`);
    t.is(result.status, 0, result.stderr);
    const fromReadelf = [...result.stdout.matchAll(/Name: (\S+)\s+Flags: (\S+)/g)]
      .map(([, name, flags]) => `${name}${flags.includes('WEAK') ? ' weak' : ''}`).sort();
    const ours = readElf(file).versionNeeds.flatMap((need) => need.versions.map((v) => `${v.name}${v.weak ? ' weak' : ''}`)).sort();
    t.deepEqual(ours, fromReadelf, path.basename(file));
  }
});
