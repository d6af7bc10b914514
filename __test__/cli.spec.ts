// Runs the built CLI (dist/cli.js) as a user would. Everything here exits before a device starts,
// so the native binding is not needed.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cli, ensureBuilt, root } from './support/build.ts';
const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;

function run(args: string[], script = cli): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const HINT = "For more information, try '--help'.\n";

test.before(() => ensureBuilt());

test('--help and -h print usage and every option, exit 0', (t) => {
  for (const flag of ['--help', '-h']) {
    const { status, stdout, stderr } = run([flag]);
    t.is(status, 0);
    t.is(stderr, '');
    t.regex(stdout, /^Usage: virtiofsd --shared-dir <SHARED_DIR> --socket-path <SOCKET_PATH> \[OPTIONS\]$/m);
    for (const option of ['--shared-dir', '--socket-path', '--fd', '--cache', '--sandbox', '--translate-gid', '--migration-confirm-paths', '-o <COMPAT_OPTIONS>']) {
      t.true(stdout.includes(option), `${option} missing from --help`);
    }
  }
});

test('--help wins over other options', (t) => {
  const { status, stdout } = run(['--xattr', '--help']);
  t.is(status, 0);
  t.true(stdout.includes('Usage:'));
});

test('--version and -V print the package version', (t) => {
  for (const flag of ['--version', '-V']) {
    const { status, stdout, stderr } = run([flag]);
    t.is(status, 0);
    t.is(stdout, `virtiofsd ${version}\n`);
    t.is(stderr, '');
  }
});

test('unknown option: exit 2, as upstream with a message and a hint', (t) => {
  const { status, stdout, stderr } = run(['--bogus', '--shared-dir', '/tmp', '--socket-path', '/tmp/x.sock']);
  t.is(status, 2);
  t.is(stdout, '');
  t.is(stderr, `virtiofsd: unexpected argument '--bogus'\n${HINT}`);
});

test('bad value: exit 2, as upstream naming the option and value', (t) => {
  const { status, stderr } = run(['--cache=sometimes', '--shared-dir', '/tmp', '--socket-path', '/tmp/x.sock']);
  t.is(status, 2);
  t.is(stderr, `virtiofsd: invalid value 'sometimes' for '--cache': expected one of auto, always, never, metadata\n${HINT}`);
});

test('missing value: exit 2, as upstream', (t) => {
  const { status, stderr } = run(['--shared-dir', '/tmp', '--socket-path']);
  t.is(status, 2);
  t.is(stderr, `virtiofsd: a value is required for '--socket-path'\n${HINT}`);
});

test('--migration-* and --reconnect are accepted; path checks with file handles are refused, as upstream', (t) => {
  // From a copy without the native artifacts: an accepted command line gets past compilation,
  // then fails to start.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-cli-'));
  const copy = path.join(dir, 'pkg');
  fs.cpSync(path.join(root, 'dist'), path.join(copy, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'));
  const script = path.join(copy, 'dist', 'cli.js');
  const base = ['--shared-dir', dir, '--socket-path', path.join(dir, 's.sock')];
  for (const args of [
    ['--migration-mode=file-handles', '--migration-on-error=guest-error', '--reconnect'],
    ['--migration-mode=find-paths', '--migration-verify-handles', '--migration-confirm-paths', '--migration-on-error=abort'],
  ]) {
    const started = run([...base, ...args], script);
    t.is(started.status, 1, args.join(' '));
    t.regex(started.stderr, /^virtiofsd: the native package for linux-[a-z0-9]+-[a-z]+ is missing/m);
    t.notRegex(started.stderr, /not supported/);
  }
  for (const flag of ['--migration-verify-handles', '--migration-confirm-paths']) {
    const refused = run([...base, '--migration-mode=file-handles', flag], script);
    t.is(refused.status, 1, flag);
    t.is(
      refused.stderr,
      `virtiofsd: '${flag}' cannot be used with '--migration-mode=file-handles' (because it is unnecessary: file handles name the very inodes)\n${HINT}`,
    );
  }
  fs.rmSync(dir, { recursive: true });
});

test('the policy options are accepted and compiled before the device starts', (t) => {
  // From a copy without the native artifacts: the run gets past compilation, then fails to start.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-cli-'));
  const copy = path.join(dir, 'pkg');
  fs.cpSync(path.join(root, 'dist'), path.join(copy, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'));
  const script = path.join(copy, 'dist', 'cli.js');
  const policies = ['--posix-acl', '--security-label', '--xattrmap=:map::user.virtiofs.:', '--translate-uid=map:1000:101000:1000', '--translate-gid', 'squash-guest/0/0/10', '-o', 'no_security_label'];
  const started = run(['--shared-dir', dir, '--socket-path', path.join(dir, 's.sock'), ...policies], script);
  t.is(started.status, 1);
  t.regex(started.stderr, /^virtiofsd: the native package for linux-[a-z0-9]+-[a-z]+ is missing/m);
  t.notRegex(started.stderr, /not supported/);
  // A rule that does not parse is a usage error (2); rules that conflict are refused after parsing (1).
  const syntax = run(['--shared-dir', dir, '--socket-path', path.join(dir, 's.sock'), '--translate-uid=map:1:2'], script);
  t.is(syntax.status, 2);
  t.is(syntax.stderr, `virtiofsd: invalid value 'map:1:2' for '--translate-uid': 'map' takes 3 values (map:<guest>:<host>:<count>), got 2\n${HINT}`);
  const overlap = run(['--shared-dir', dir, '--socket-path', path.join(dir, 's.sock'), '--translate-gid=map:0:0:10', '--translate-gid=forbid-guest:9:1'], script);
  t.is(overlap.status, 1);
  t.is(overlap.stderr, `virtiofsd: '--translate-gid' rules 'map:0:0:10' and 'forbid-guest:9:1' overlap: both translate guest gids 9\n${HINT}`);
  fs.rmSync(dir, { recursive: true });
});

test('missing shared dir: exit 2, as upstream', (t) => {
  const { status, stderr } = run(['--socket-path', '/tmp/x.sock']);
  t.is(status, 2);
  t.is(stderr, `virtiofsd: the shared directory is required: use '--shared-dir <DIR>'\n${HINT}`);
});

test('missing socket: exit 2, as upstream', (t) => {
  const { status, stderr } = run(['--shared-dir', '/tmp']);
  t.is(status, 2);
  t.true(stderr.startsWith("virtiofsd: a vhost-user socket is required"), stderr);
});

test('shared dir that does not exist or is a file: exit 1 before starting', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-cli-'));
  const missing = path.join(dir, 'missing');
  let result = run(['--shared-dir', missing, '--socket-path', path.join(dir, 's.sock')]);
  t.is(result.status, 1);
  t.true(result.stderr.startsWith(`virtiofsd: shared directory '${missing}' does not exist\n`), result.stderr);
  const file = path.join(dir, 'file');
  fs.writeFileSync(file, '');
  result = run(['--shared-dir', file, '--socket-path', path.join(dir, 's.sock')]);
  t.is(result.status, 1);
  t.true(result.stderr.startsWith(`virtiofsd: shared directory '${file}' is not a directory\n`), result.stderr);
  t.false(fs.existsSync(path.join(dir, 's.sock')));
  fs.rmSync(dir, { recursive: true });
});

test('--help, --version and --print-capabilities work without the native package', (t) => {
  // A copy of the package without its native artifacts: looking for them would fail these commands.
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-nobinding-'));
  fs.cpSync(path.join(root, 'dist'), path.join(copy, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'));
  const script = path.join(copy, 'dist', 'cli.js');
  t.is(run(['--help'], script).status, 0);
  t.is(run(['--version'], script).stdout, `virtiofsd ${version}\n`);
  t.is(run(['--print-capabilities'], script).status, 0);
  // Starting a device there must fail loudly, not crash with a stack trace.
  const started = run(['--shared-dir', copy, '--socket-path', path.join(copy, 's.sock')], script);
  t.is(started.status, 1);
  t.regex(started.stderr, /virtiofsd: the native package for linux-[a-z0-9]+-[a-z]+ is missing/);
  fs.rmSync(copy, { recursive: true });
});

test('deprecated forms warn on stderr in the log format', (t) => {
  // Run from a copy without the native artifacts: the run gets past the warnings, then fails to
  // start, so no device is left behind.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-cli-'));
  const copy = path.join(dir, 'pkg');
  fs.cpSync(path.join(root, 'dist'), path.join(copy, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'));
  const { status, stderr } = run(['--shared-dir', dir, '--socket', path.join(dir, 's.sock'), '-o', 'cache=auto'], path.join(copy, 'dist', 'cli.js'));
  t.is(status, 1);
  t.regex(stderr, /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ WARN {2}virtiofsd\] --socket is deprecated/m);
  t.regex(stderr, /WARN {2}virtiofsd\] the '-o' option format is deprecated/);
  t.notRegex(stderr, /running without/, 'the defaults (namespace, seccomp kill) do not warn');
  fs.rmSync(dir, { recursive: true });
});

test('--sandbox=none and --seccomp=none each warn at start', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-cli-'));
  const copy = path.join(dir, 'pkg');
  fs.cpSync(path.join(root, 'dist'), path.join(copy, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'));
  const script = path.join(copy, 'dist', 'cli.js');
  const both = run(['--shared-dir', dir, '--socket-path', path.join(dir, 's.sock'), '--sandbox=none', '--seccomp=none'], script);
  t.is(both.status, 1);
  t.regex(both.stderr, /WARN {2}virtiofsd\] running without a sandbox \(--sandbox=none\)/);
  t.regex(both.stderr, /WARN {2}virtiofsd\] running without seccomp \(--seccomp=none\)/);
  const one = run(['--shared-dir', dir, '--socket-path', path.join(dir, 's.sock'), '--sandbox=chroot', '--seccomp=none'], script);
  t.notRegex(one.stderr, /without a sandbox/);
  t.regex(one.stderr, /without seccomp/);
  fs.rmSync(dir, { recursive: true });
});

test('--log-level=error hides warnings', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-cli-'));
  const copy = path.join(dir, 'pkg');
  fs.cpSync(path.join(root, 'dist'), path.join(copy, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'));
  const { status, stderr } = run(['--log-level=error', '--shared-dir', dir, '--socket', path.join(dir, 's.sock')], path.join(copy, 'dist', 'cli.js'));
  t.is(status, 1);
  t.false(stderr.includes('WARN'), stderr);
  t.regex(stderr, /the native package for linux-[a-z0-9]+-[a-z]+ is missing/);
  fs.rmSync(dir, { recursive: true });
});
