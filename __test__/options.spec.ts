import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LIBRARY_OPTIONS, LONG_OPTIONS, checkRunnable, parseArgs } from '../ts/options.ts';
import type { CliOptions, ParsedArgs } from '../ts/options.ts';
import { buildDeviceConfig, checkDeviceOptions, cliConfig, configWarnings, deviceLabels, parseRustLog } from '../ts/config.ts';
import type { DeviceOptions } from '../ts/config.ts';
import { NotSupportedError, OptionError } from '../ts/errors.ts';
import { HELP_TEXT } from '../ts/help.ts';
import { formatLogLine, levelEnabled } from '../ts/log.ts';
import { LineSplitter, ProtocolError, parseDeviceMessage } from '../ts/protocol.ts';
import { parseIdRange } from '../ts/validate.ts';
import { parseIdTranslation, parseXattrMap } from '../ts/policy.ts';

const BASE = ['--shared-dir', '/tmp', '--socket-path', '/tmp/x.sock'];

function usageError(t: import('ava').ExecutionContext, argv: string[], message: string | RegExp): void {
  const error = t.throws(() => checkRunnable(parseArgs(argv)), { instanceOf: OptionError });
  if (typeof message === 'string') t.is(error?.message, message);
  else t.regex(error?.message ?? '', message);
}

/** A parse result as if `option` were marked unsupported (no option of the table is, now). */
function unsupported(t: import('ava').ExecutionContext, argv: string[], option: string): void {
  const parsed = { ...parseArgs(argv), unsupported: [option] };
  const error = t.throws(() => checkRunnable(parsed), { instanceOf: NotSupportedError });
  t.is(error?.message, `not supported yet: ${option}`);
  t.is(error?.option, option);
}

function opts(argv: string[]): CliOptions {
  const parsed: ParsedArgs = parseArgs(argv);
  checkRunnable(parsed);
  return parsed.options;
}

test('minimal command line in both value forms', (t) => {
  const spaced = opts(['--shared-dir', '/tmp', '--socket-path', '/tmp/x.sock']);
  const equals = opts(['--shared-dir=/tmp', '--socket-path=/tmp/x.sock']);
  t.is(spaced.sharedDir, '/tmp');
  t.is(spaced.socketPath, '/tmp/x.sock');
  t.deepEqual(spaced, equals);
});

test('a value may itself contain an equal sign or start with a dash', (t) => {
  t.is(opts([...BASE, '--tag=a=b']).tag, 'a=b');
  t.is(opts(['--shared-dir', '-weird', '--socket-path', '/tmp/x.sock']).sharedDir, '-weird');
});

test('--tag accepts up to 36 bytes and rejects empty or longer', (t) => {
  t.is(opts([...BASE, '--tag', 'a'.repeat(36)]).tag, 'a'.repeat(36));
  usageError(t, [...BASE, '--tag', 'a'.repeat(37)], /invalid value 'a{37}' for '--tag': the tag must be 1 to 36 bytes/);
  usageError(t, [...BASE, '--tag='], /invalid value '' for '--tag'/);
  // 12 three-byte characters is 36 bytes; 13 is too many even though it is 13 characters.
  t.is(opts([...BASE, '--tag', '€'.repeat(12)]).tag, '€'.repeat(12));
  usageError(t, [...BASE, '--tag', '€'.repeat(13)], /the tag must be 1 to 36 bytes/);
});

test('--socket is a deprecated alias with a warning', (t) => {
  const parsed = parseArgs(['--shared-dir', '/tmp', '--socket', '/tmp/y.sock']);
  checkRunnable(parsed);
  t.is(parsed.options.socket, '/tmp/y.sock');
  t.true(parsed.warnings.some((w) => w.includes('--socket is deprecated')));
  t.is(cliConfig(parsed.options).socket.kind, 'path');
});

test('exactly one of --socket-path, --socket, --fd', (t) => {
  usageError(t, ['--shared-dir', '/tmp'], "a vhost-user socket is required: use '--socket-path <PATH>' or '--fd <FD>'");
  usageError(t, [...BASE, '--fd', '3'], "'--socket-path' cannot be used with '--fd'");
  usageError(t, [...BASE, '--socket', '/tmp/z'], "'--socket-path' cannot be used with '--socket'");
  t.is(opts(['--shared-dir', '/tmp', '--fd', '3']).fd, 3);
});

test('--fd must be a non-negative 31-bit integer', (t) => {
  usageError(t, ['--shared-dir', '/tmp', '--fd', 'abc'], "invalid value 'abc' for '--fd': expected a non-negative integer");
  usageError(t, ['--shared-dir', '/tmp', '--fd', '-1'], "invalid value '-1' for '--fd': expected a non-negative integer");
  usageError(t, ['--shared-dir', '/tmp', '--fd', '2147483648'], /must be between 0 and 2147483647/);
});

test('--socket-group needs a socket path and a name', (t) => {
  t.is(opts([...BASE, '--socket-group', 'kvm']).socketGroup, 'kvm');
  usageError(t, ['--shared-dir', '/tmp', '--fd', '3', '--socket-group', 'kvm'], /only applies to a socket created with '--socket-path'/);
  usageError(t, [...BASE, '--socket-group='], "invalid value '' for '--socket-group': must not be empty");
});

test('--shared-dir is required, also given as -o source=', (t) => {
  usageError(t, ['--socket-path', '/tmp/x.sock'], "the shared directory is required: use '--shared-dir <DIR>'");
  t.is(opts(['-o', 'source=/tmp', '--socket-path', '/tmp/x.sock']).sharedDir, '/tmp');
  usageError(t, ['--shared-dir=', '--socket-path', '/tmp/x.sock'], "invalid value '' for '--shared-dir': must not be empty");
});

test('--thread-pool-size is an unsigned integer', (t) => {
  t.is(opts([...BASE, '--thread-pool-size', '0']).threadPoolSize, 0);
  t.is(opts([...BASE, '--thread-pool-size=64']).threadPoolSize, 64);
  usageError(t, [...BASE, '--thread-pool-size=-1'], "invalid value '-1' for '--thread-pool-size': expected a non-negative integer");
  usageError(t, [...BASE, '--thread-pool-size=1e3'], /expected a non-negative integer/);
  // The device refuses more than 1024 threads: the command line says so instead of a failed start.
  t.is(opts([...BASE, '--thread-pool-size=1024']).threadPoolSize, 1024);
  usageError(t, [...BASE, '--thread-pool-size=1025'], "invalid value '1025' for '--thread-pool-size': must be between 0 and 1024");
});

test('--cache takes the four policies', (t) => {
  for (const policy of ['auto', 'always', 'never', 'metadata']) {
    t.is(opts([...BASE, '--cache', policy]).cache, policy as CliOptions['cache']);
  }
  usageError(t, [...BASE, '--cache=none'], "invalid value 'none' for '--cache': expected one of auto, always, never, metadata");
});

test('--log-level takes the six levels, case-insensitively, and -d means debug', (t) => {
  for (const level of ['error', 'warn', 'info', 'debug', 'trace', 'off']) {
    t.is(opts([...BASE, '--log-level', level]).logLevel, level as CliOptions['logLevel']);
  }
  t.is(opts([...BASE, '--log-level=DEBUG']).logLevel, 'debug');
  usageError(t, [...BASE, '--log-level=loud'], /invalid value 'loud' for '--log-level': expected one of error, warn/);
  const parsed = parseArgs([...BASE, '-d']);
  t.is(parsed.options.logLevel, 'debug');
  t.true(parsed.warnings.some((w) => w.startsWith('-d is deprecated')));
});

test('supported boolean flags', (t) => {
  const o = opts([...BASE, '--readonly', '--no-readdirplus', '--writeback', '--allow-direct-io', '--allow-mmap', '-f']);
  t.true(o.readonly);
  t.true(o.noReaddirplus);
  t.true(o.writeback);
  t.true(o.allowDirectIo);
  t.true(o.allowMmap);
  t.is(opts(BASE).announceSubmounts, undefined);
  t.true(opts([...BASE, '--announce-submounts']).announceSubmounts);
  t.false(opts([...BASE, '--no-announce-submounts']).announceSubmounts);
  t.false(opts([...BASE, '--no-killpriv-v2']).killprivV2);
  t.true(opts([...BASE, '--print-capabilities']).printCapabilities);
  t.true(opts([...BASE, '-h']).help);
  t.true(opts([...BASE, '--help']).help);
  t.true(opts([...BASE, '-V']).version);
  t.true(opts([...BASE, '--version']).version);
});

test('flags refuse values', (t) => {
  usageError(t, [...BASE, '--readonly=true'], "unexpected value 'true' for '--readonly'");
});

test('--rlimit-nofile is an unsigned integer, 0 allowed', (t) => {
  t.is(opts([...BASE, '--rlimit-nofile', '0']).rlimitNofile, 0);
  t.is(opts([...BASE, '--rlimit-nofile=4096']).rlimitNofile, 4096);
  usageError(t, [...BASE, '--rlimit-nofile=-5'], /invalid value '-5' for '--rlimit-nofile'/);
});

test('--sandbox and --seccomp: every upstream value; namespace and kill by default', (t) => {
  for (const mode of ['namespace', 'chroot', 'none'] as const) {
    t.is(opts([...BASE, '--sandbox', mode]).sandbox, mode);
    t.is(cliConfig(opts(['--shared-dir', '/tmp', '--fd', '5', `--sandbox=${mode}`])).sandbox, mode);
  }
  for (const action of ['kill', 'log', 'trap', 'none'] as const) {
    t.is(opts([...BASE, `--seccomp=${action}`]).seccomp, action);
    t.is(cliConfig(opts(['--shared-dir', '/tmp', '--fd', '5', `--seccomp=${action}`])).seccomp, action);
  }
  const defaults = cliConfig(opts(['--shared-dir', '/tmp', '--fd', '5']));
  t.is(defaults.sandbox, 'namespace');
  t.is(defaults.seccomp, 'kill');
  t.deepEqual(defaults.modcaps, { add: [], drop: [] });
  t.deepEqual(defaults.uidMap, []);
  t.deepEqual(defaults.gidMap, []);
  usageError(t, [...BASE, '--sandbox=jail'], "invalid value 'jail' for '--sandbox': expected one of namespace, chroot, none");
  usageError(t, [...BASE, '--seccomp=allow'], /invalid value 'allow' for '--seccomp'/);
});

test('--inode-file-handles requires an equal sign; fallback is a deprecated alias of prefer', (t) => {
  t.is(opts([...BASE, '--inode-file-handles=never']).inodeFileHandles, 'never');
  t.is(opts([...BASE, '--inode-file-handles=prefer']).inodeFileHandles, 'prefer');
  t.is(opts([...BASE, '--inode-file-handles=mandatory']).inodeFileHandles, 'mandatory');
  const fallback = parseArgs([...BASE, '--inode-file-handles=fallback']);
  t.is(fallback.options.inodeFileHandles, 'prefer');
  t.true(fallback.warnings.some((w) => w.includes('--inode-file-handles=fallback is deprecated')));
  t.is(cliConfig(opts([...BASE, '--inode-file-handles=mandatory'])).inodeFileHandles, 'mandatory');
  usageError(t, [...BASE, '--inode-file-handles', 'never'], /'--inode-file-handles' needs its value after an equal sign/);
  usageError(t, [...BASE, '--inode-file-handles=sometimes'], /invalid value 'sometimes' for '--inode-file-handles'/);
});

test('no option is marked unsupported: every one of the table is implemented', (t) => {
  for (const argv of [
    ['--migration-mode=file-handles'],
    ['--migration-on-error=guest-error'],
    ['--migration-verify-handles'],
    ['--migration-confirm-paths'],
    ['--reconnect'],
  ]) {
    t.deepEqual(parseArgs([...BASE, ...argv]).unsupported, [], argv.join(' '));
  }
  t.false(HELP_TEXT.includes('(not supported yet)'));
});

test('--migration-*: parsed, defaulted as upstream and carried to the device configuration', (t) => {
  const defaults = cliConfig(opts(BASE));
  t.is(defaults.migrationMode, 'find-paths');
  t.is(defaults.migrationOnError, 'abort');
  t.false(defaults.migrationVerifyHandles);
  t.false(defaults.migrationConfirmPaths);
  t.false(defaults.reconnect);
  const set = cliConfig(opts([...BASE, '--migration-on-error=guest-error', '--migration-verify-handles', '--migration-confirm-paths', '--reconnect']));
  t.is(set.migrationOnError, 'guest-error');
  t.true(set.migrationVerifyHandles);
  t.true(set.migrationConfirmPaths);
  t.true(set.reconnect);
  t.is(cliConfig(opts([...BASE, '--migration-mode=file-handles'])).migrationMode, 'file-handles');
  t.is(cliConfig(opts([...BASE, '--migration-mode', 'find-paths'])).migrationMode, 'find-paths');
  usageError(t, [...BASE, '--reconnect=yes'], "unexpected value 'yes' for '--reconnect'");
});

test('--migration-verify-handles and --migration-confirm-paths are refused with --migration-mode=file-handles, as upstream', (t) => {
  for (const flag of ['--migration-verify-handles', '--migration-confirm-paths']) {
    const error = t.throws(() => cliConfig(opts([...BASE, '--migration-mode=file-handles', flag])), { instanceOf: OptionError });
    t.is(error?.message, `'${flag}' cannot be used with '--migration-mode=file-handles' (because it is unnecessary: file handles name the very inodes)`);
    t.is(error?.key, flag);
    t.is(error?.reason, 'conflict');
  }
});

test('an unprivileged daemon with --migration-mode=file-handles is warned that it could not be the destination', (t) => {
  const config = cliConfig(opts([...BASE, '--migration-mode=file-handles']));
  t.deepEqual(configWarnings(config, 1000), [
    'migration with file handles (--migration-mode=file-handles): this unprivileged daemon can send such a state, but as a migration destination it could not open the handles (that needs CAP_DAC_READ_SEARCH)',
  ]);
  t.deepEqual(configWarnings(config, 0), []);
  t.deepEqual(configWarnings(cliConfig(opts(BASE)), 1000), []);
});

test('a device that must open file handles keeps CAP_DAC_READ_SEARCH: --modcaps cannot drop it; prefer falls back instead', (t) => {
  // The default (prefer) and its spellings: the device holds descriptors without the capability.
  for (const extra of [[], ['--inode-file-handles=prefer'], ['--inode-file-handles=fallback'], ['--inode-file-handles=never']]) {
    const config = cliConfig(opts([...BASE, ...extra, '--modcaps=-dac_read_search']));
    t.deepEqual(config.modcaps.drop, ['dac_read_search'], extra.join(' '));
    t.is(config.inodeFileHandles, extra[0] === '--inode-file-handles=never' ? 'never' : 'prefer');
  }
  for (const [option, shown] of [
    ['--inode-file-handles=mandatory', '--inode-file-handles=mandatory'],
    ['--migration-mode=file-handles', '--migration-mode=file-handles'],
  ]) {
    const error = t.throws(() => cliConfig(opts([...BASE, option, '--modcaps=-DAC_READ_SEARCH'])), { instanceOf: OptionError });
    t.is(error?.message, `'--modcaps' cannot drop dac_read_search with ${shown}, which opens file handles`);
    t.is(error?.key, '--modcaps');
  }
});

test('unsupported value options are validated first, then refused', (t) => {
  usageError(t, [...BASE, '--xattrmap=bad'], /invalid value 'bad' for '--xattrmap'/);
  usageError(t, [...BASE, '--modcaps=sys_admin'], /'sys_admin' is not \+capability or -capability/);
  usageError(t, [...BASE, '--uid-map=0:1:2'], /invalid value '0:1:2' for '--uid-map'/);
  usageError(t, [...BASE, '--gid-map=:0:1:2:3:'], "invalid value ':0:1:2:3:' for '--gid-map': expected 3 values, got 4");
  usageError(t, [...BASE, '--translate-uid=foo:1:2:3'], /unknown type 'foo'/);
  usageError(t, [...BASE, '--translate-gid=guest:1:2'], /'guest' takes 3 values \(guest:<guest>:<host>:<count>\), got 2/);
  usageError(t, [...BASE, '--migration-mode=teleport'], /invalid value 'teleport' for '--migration-mode'/);
  usageError(t, [...BASE, '--migration-on-error=ignore'], /invalid value 'ignore' for '--migration-on-error'/);
});

test('--modcaps: names are checked and compiled to add/drop lists, later items win', (t) => {
  const config = (v: string) => cliConfig(opts(['--shared-dir', '/tmp', '--fd', '5', `--modcaps=${v}`])).modcaps;
  t.deepEqual(config('+sys_admin:-chown'), { add: ['sys_admin'], drop: ['chown'] });
  t.deepEqual(config('+CAP_SYS_ADMIN:-Mknod'), { add: ['sys_admin'], drop: ['mknod'] });
  t.deepEqual(config('+chown:-chown'), { add: [], drop: ['chown'] });
  t.deepEqual(config('-chown:+chown'), { add: ['chown'], drop: [] });
  t.deepEqual(cliConfig(opts(['--shared-dir', '/tmp', '--fd', '5', '-o', 'modcaps=+net_admin'])).modcaps, { add: ['net_admin'], drop: [] });
  usageError(t, [...BASE, '--modcaps=+sys_everything'], /unknown capability 'sys_everything'/);
  usageError(t, [...BASE, '--modcaps=+chown:'], /'' is not \+capability or -capability/);
  t.throws(() => buildDeviceConfig({ sharedDir: '/tmp', fd: 3, modcaps: '+bogus' }), { message: /unknown capability 'bogus'/ });
});

test('--uid-map/--gid-map reach the device config', (t) => {
  const parsed = parseArgs(['--shared-dir', '/tmp', '--fd', '5', '--uid-map=:0:100000:65536:', '--gid-map', '/0/100000/65536/']);
  t.deepEqual(parsed.options.uidMap, [{ inside: 0, outside: 100000, count: 65536 }]);
  t.deepEqual(parsed.options.gidMap, [{ inside: 0, outside: 100000, count: 65536 }]);
  // Only an unprivileged device uses ranges; root's are refused (see uid-map.spec.ts).
  if (process.geteuid?.() !== 0) {
    const config = cliConfig(parsed.options);
    t.deepEqual(config.uidMap, [{ inside: 0, outside: 100000, count: 65536 }]);
    t.deepEqual(config.gidMap, [{ inside: 0, outside: 100000, count: 65536 }]);
  }
  const base = { sharedDir: '/tmp', fd: 3 };
  t.throws(() => buildDeviceConfig({ ...base, uidMap: [{ inside: 0, outside: 1, count: 0 }] }), { message: /'uidMap.count'/ });
  t.throws(() => buildDeviceConfig({ ...base, gidMap: [{ inside: 4294967295, outside: 0, count: 2 }] }), { message: /32-bit ID space/ });
  t.throws(() => buildDeviceConfig({ ...base, uidMap: 'x' as never }), { message: /expected an array/ });
});

test('id maps and translations accumulate across repeats', (t) => {
  const parsed = parseArgs([...BASE, '--uid-map=:0:100:1:', '--uid-map=:1:200:2:', '--translate-uid=host:1:2:3', '--translate-uid=squash-guest:0:5:10']);
  t.deepEqual(parsed.options.uidMap, [
    { inside: 0, outside: 100, count: 1 },
    { inside: 1, outside: 200, count: 2 },
  ]);
  t.deepEqual(parsed.options.translateUid, ['host:1:2:3', 'squash-guest:0:5:10']);
  t.deepEqual(parseIdTranslation('x', 'forbid-guest:7:3'), { type: 'forbid-guest', guest: 7, count: 3 });
  t.throws(() => parseIdRange('x', ':0:1:0:'), { message: /count must be at least 1/ });
  t.throws(() => parseIdRange('x', ':0:4294967295:2:'), { message: /exceeds the 32-bit ID space/ });
});

test('last value wins for repeated options', (t) => {
  const o = opts([...BASE, '--cache=never', '--cache', 'always', '--log-level=warn', '--log-level=trace']);
  t.is(o.cache, 'always');
  t.is(o.logLevel, 'trace');
  t.is(opts(['--shared-dir=/a', '--shared-dir=/tmp', '--socket-path=/tmp/x.sock']).sharedDir, '/tmp');
});

test('-o legacy options follow upstream 1.13', (t) => {
  const o = opts(['-o', 'source=/tmp,cache=none,no_xattr,no_flock,no_posix_lock,no_readdirplus,writeback,allow_direct_io,announce_submounts,no_killpriv_v2', '--socket-path=/tmp/x.sock']);
  t.is(o.sharedDir, '/tmp');
  t.is(o.cache, 'never');
  t.true(o.noReaddirplus);
  t.true(o.writeback);
  t.true(o.allowDirectIo);
  t.true(o.announceSubmounts);
  t.false(o.killprivV2);
  t.false(o.xattr);
  t.true(o.noFlock);
  t.true(o.noPosixLock);
  const locks = cliConfig(opts(['-o', 'source=/tmp,no_flock,no_posix_lock', '--socket-path=/tmp/x.sock']));
  t.deepEqual([locks.flock, locks.posixLocks], [false, false]);
  const enabled = opts([...BASE, '-o', 'xattr,killpriv_v2']);
  t.true(enabled.xattr);
  t.true(enabled.killprivV2);
  const reverted = opts([...BASE, '--writeback', '--allow-direct-io', '--no-readdirplus', '-o', 'no_writeback,no_allow_direct_io,readdirplus']);
  t.false(reverted.writeback);
  t.false(reverted.allowDirectIo);
  t.false(reverted.noReaddirplus);
  for (const [value, policy] of [['auto', 'auto'], ['always', 'always'], ['metadata', 'metadata']]) {
    t.is(opts([...BASE, `-ocache=${value}`]).cache, policy as CliOptions['cache']);
  }
  const parsed = parseArgs([...BASE, '-o', 'cache=auto']);
  t.true(parsed.warnings.some((w) => w.includes("'-o' option format is deprecated")));
});

test('-o overrides --shared-dir and repeated -o accumulate', (t) => {
  t.is(opts(['--shared-dir=/nonexistent', '-o', 'source=/tmp', '--socket-path=/tmp/x.sock']).sharedDir, '/tmp');
  const o = opts([...BASE, '-o', 'writeback', '-o', 'cache=always']);
  t.true(o.writeback);
  t.is(o.cache, 'always');
});

test('-o errors and unsupported legacy options', (t) => {
  usageError(t, [...BASE, '-o', 'cache=never'], "invalid compat value 'never' for '-o cache'");
  usageError(t, [...BASE, '-o', 'cache='], "invalid compat value '' for '-o cache'");
  usageError(t, [...BASE, '-o', 'cache'], "invalid compat argument '-o cache'");
  usageError(t, [...BASE, '-o', 'sandbox'], "invalid compat argument '-o sandbox'");
  usageError(t, [...BASE, '-o', 'sandbox=none'], "invalid compat value 'none' for '-o sandbox'");
  usageError(t, [...BASE, '-o', 'bogus'], "invalid compat argument '-o bogus'");
  usageError(t, [...BASE, '-o', 'writeback=1'], "invalid compat argument '-o writeback=1'");
  usageError(t, [...BASE, '-o', 'flock'], "invalid compat argument '-o flock'");
  usageError(t, [...BASE, '-o', 'posix_lock'], "invalid compat argument '-o posix_lock'");
  usageError(t, [...BASE, '-o', 'log_level=debug'], "invalid compat argument '-o log_level=debug'");
  usageError(t, [...BASE, '-o', 'timeout=5'], "invalid compat argument '-o timeout=5'");
  usageError(t, [...BASE, '-o', ''], "invalid compat argument '-o '");
  usageError(t, [...BASE, '-o', 'writeback,'], "invalid compat argument '-o '");
  usageError(t, [...BASE, '-o', 'source'], "invalid compat argument '-o source'");
  usageError(t, [...BASE, '-o', 'modcaps=nope'], /invalid value 'nope' for '-o modcaps'/);
  t.is(opts([...BASE, '-o', 'sandbox=chroot']).sandbox, 'chroot');
  t.is(opts([...BASE, '-o', 'sandbox=namespace']).sandbox, 'namespace');
  t.is(opts([...BASE, '-o', 'modcaps=+chown']).modcaps, '+chown');
});

test('unknown options, missing values and stray arguments are errors', (t) => {
  usageError(t, [...BASE, '--bogus'], "unexpected argument '--bogus'");
  usageError(t, [...BASE, '--bogus=1'], "unexpected argument '--bogus'");
  usageError(t, [...BASE, '-x'], "unexpected argument '-x'");
  usageError(t, [...BASE, 'extra'], "unexpected argument 'extra'");
  usageError(t, [...BASE, '--', 'extra'], "unexpected argument 'extra'");
  usageError(t, [...BASE, '--cache'], "a value is required for '--cache'");
  usageError(t, [...BASE, '-o'], "a value is required for '-o'");
  usageError(t, ['--shared-dir'], "a value is required for '--shared-dir'");
});

test('short flags cluster like upstream', (t) => {
  const parsed = parseArgs([...BASE, '-df']);
  t.is(parsed.options.logLevel, 'debug');
  t.is(parseArgs([...BASE, '-fosource=/tmp']).options.sharedDir, '/tmp');
});

test('unsupported options would be reported before missing required ones', (t) => {
  unsupported(t, ['--migration-confirm-paths'], '--migration-confirm-paths');
});

test('--help, --version and --print-capabilities parse without required options', (t) => {
  t.true(parseArgs(['--help']).options.help);
  t.true(parseArgs(['-V']).options.version);
  t.true(parseArgs(['--print-capabilities']).options.printCapabilities);
});

test('the help text documents every option the parser knows', (t) => {
  // Whole option names from the headings of the entries (`  -h, --help`, `      --socket <SOCKET>`),
  // so that `--socket-path` does not count as `--socket`, nor `--no-killpriv-v2` as `--killpriv-v2`.
  const headings = HELP_TEXT.split('\n').filter((line) => /^ {2}-/.test(line) || /^ {6}--/.test(line));
  const documentedLong = headings.flatMap((line) => [...line.matchAll(/(?<![\w-])--([a-z0-9]+(?:-[a-z0-9]+)*)(?![\w-])/g)].map((m) => m[1]));
  const documentedShort = headings.flatMap((line) => [...line.matchAll(/^ {2}-([A-Za-z])(?![\w-])/g)].map((m) => m[1]));
  t.deepEqual([...documentedLong].sort(), [...LONG_OPTIONS].sort());
  t.deepEqual([...documentedShort].sort(), ['V', 'd', 'f', 'h', 'o']);
  // A heading per option, not a mention in another option's text: --socket has its own entry.
  t.true(headings.includes('      --socket <SOCKET>'));
  // The long options of upstream virtiofsd 1.13, none missing, plus ours (--reconnect, --max-request-queues).
  const upstream = ['shared-dir', 'tag', 'socket', 'socket-path', 'socket-group', 'fd', 'thread-pool-size', 'xattr', 'posix-acl', 'xattrmap', 'sandbox', 'readonly', 'seccomp', 'announce-submounts', 'no-announce-submounts', 'inode-file-handles', 'cache', 'allow-mmap', 'no-readdirplus', 'writeback', 'allow-direct-io', 'print-capabilities', 'modcaps', 'log-level', 'syslog', 'rlimit-nofile', 'no-killpriv-v2', 'killpriv-v2', 'security-label', 'uid-map', 'gid-map', 'translate-uid', 'translate-gid', 'preserve-noatime', 'migration-mode', 'migration-on-error', 'migration-verify-handles', 'migration-confirm-paths', 'help', 'version'];
  t.deepEqual([...LONG_OPTIONS].sort(), [...upstream, 'reconnect', 'max-request-queues'].sort());
});

test('xattrmap rule syntax (more in policy-options.spec.ts)', (t) => {
  t.deepEqual(
    parseXattrMap('x', ':prefix:all:trusted.:user.vm.: :ok:all:::').map((rule) => rule.text),
    [':prefix:all:trusted.:user.vm.:', ':ok:all:::'],
  );
  t.throws(() => parseXattrMap('x', ':prefix:everywhere:a:b:'), { message: /unknown scope 'everywhere'/ });
  t.throws(() => parseXattrMap('x', ':map:a:'), { message: /incomplete rule/ });
  t.throws(() => parseXattrMap('x', ''), { message: /no rules given/ });
});

// Config compilation: the JSON contract with the Rust core.

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-options-'));
}

test('CLI options compile to the device config', (t) => {
  const dir = tempDir();
  const parsed = parseArgs(['--shared-dir', dir, '--socket-path', 'rel.sock', '--socket-group', 'kvm', '--tag', 'fs0', '--cache=metadata', '--thread-pool-size=8', '--readonly', '--no-readdirplus', '--writeback', '--allow-direct-io', '--allow-mmap', '--no-announce-submounts', '--rlimit-nofile=2048', '--log-level=warn', '--sandbox=none', '--seccomp=none', '--xattr', '--killpriv-v2', '--preserve-noatime', '--inode-file-handles=never', '--max-request-queues=4']);
  checkRunnable(parsed);
  const config = cliConfig(parsed.options, '/some/cwd', {});
  t.deepEqual(config, {
    sharedDir: dir,
    socket: { kind: 'path', path: '/some/cwd/rel.sock', group: 'kvm' },
    tag: 'fs0',
    maxRequestQueues: 4,
    queueSize: 1024,
    threadPoolSize: 8,
    cache: 'metadata',
    readonly: true,
    readdirplus: false,
    writeback: true,
    allowDirectIo: true,
    allowMmap: true,
    announceSubmounts: false,
    killprivV2: true,
    xattr: true,
    posixAcl: false,
    securityLabel: false,
    xattrMap: null,
    inodeFileHandles: 'never',
    preserveNoatime: true,
    posixLocks: true,
    flock: true,
    rlimitNofile: 2048,
    logLevel: 'warn',
    logTargets: [],
    syslog: false,
    sandbox: 'none',
    seccomp: 'none',
    uidMap: [],
    gidMap: [],
    translateUid: { guestToHost: [], hostToGuest: [] },
    translateGid: { guestToHost: [], hostToGuest: [] },
    modcaps: { add: [], drop: [] },
    migrationMode: 'find-paths',
    migrationOnError: 'abort',
    migrationVerifyHandles: false,
    migrationConfirmPaths: false,
    reconnect: false,
  });
  fs.rmSync(dir, { recursive: true });
});

test('defaults of the device config', (t) => {
  const config = cliConfig(opts(['--shared-dir', '/tmp', '--fd', '5']));
  t.deepEqual(config.socket, { kind: 'fd', fd: 5 });
  t.is(config.tag, null);
  t.is(config.cache, 'auto');
  t.is(config.threadPoolSize, 0);
  t.true(config.readdirplus);
  t.true(config.announceSubmounts);
  t.false(config.killprivV2);
  t.false(config.xattr);
  t.is(config.inodeFileHandles, 'prefer', 'as upstream since 1.13.3');
  t.false(config.preserveNoatime);
  t.true(config.posixLocks);
  t.true(config.flock);
  t.is(config.rlimitNofile, null);
  t.is(config.logLevel, 'info');
});

test('relative shared dir resolves against cwd; missing or non-directory is an error', (t) => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'share'));
  fs.writeFileSync(path.join(dir, 'file'), 'x');
  t.is(buildDeviceConfig({ sharedDir: 'share', socketPath: 's.sock', cwd: dir }).sharedDir, path.join(dir, 'share'));
  t.throws(() => buildDeviceConfig({ sharedDir: 'missing', socketPath: 's.sock', cwd: dir }), {
    instanceOf: OptionError,
    message: `shared directory '${path.join(dir, 'missing')}' does not exist`,
  });
  t.throws(() => buildDeviceConfig({ sharedDir: 'file', socketPath: 's.sock', cwd: dir }), {
    instanceOf: OptionError,
    message: `shared directory '${path.join(dir, 'file')}' is not a directory`,
  });
  fs.rmSync(dir, { recursive: true });
});

test('library options are validated with the CLI rules', (t) => {
  const base = { sharedDir: '/tmp', socketPath: '/tmp/x.sock' };
  t.throws(() => buildDeviceConfig({ ...base, tag: 'x'.repeat(37) }), { message: /the tag must be 1 to 36 bytes/ });
  t.throws(() => buildDeviceConfig({ ...base, cache: 'none' as never }), { message: /invalid value 'none' for 'cache'/ });
  t.throws(() => buildDeviceConfig({ ...base, logLevel: 'loud' as never }), { message: /invalid value 'loud' for 'logLevel'/ });
  t.throws(() => buildDeviceConfig({ ...base, threadPoolSize: -1 }), { message: /'threadPoolSize': must be an integer/ });
  t.throws(() => buildDeviceConfig({ ...base, threadPoolSize: 1.5 }), { message: /'threadPoolSize': must be an integer/ });
  t.throws(() => buildDeviceConfig({ ...base, fd: 3 }), { message: "'socketPath' cannot be used with 'fd'" });
  t.throws(() => buildDeviceConfig({ sharedDir: '/tmp' }), { message: "a vhost-user socket is required: set 'socketPath' or 'fd'" });
  t.throws(() => buildDeviceConfig({ sharedDir: '/tmp', fd: 3, socketGroup: 'kvm' }), { message: /'socketGroup' only applies/ });
  t.throws(() => buildDeviceConfig({ ...base, readonly: 'yes' as never }), { message: "invalid value for 'readonly': expected a boolean" });
  t.throws(() => buildDeviceConfig({ ...base, queueSize: 1000 }), { message: /must be a power of two/ });
  t.throws(() => buildDeviceConfig({ ...base, maxRequestQueues: 64 }), { message: /'maxRequestQueues'/ });
  t.is(buildDeviceConfig({ ...base, maxRequestQueues: 2 }).maxRequestQueues, 2);
  t.true(buildDeviceConfig({ ...base, killprivV2: true }).killprivV2);
  t.throws(() => buildDeviceConfig({ ...base, inodeFileHandles: 'fallback' as never }), { message: /invalid value 'fallback' for 'inodeFileHandles'/ });
  t.throws(() => buildDeviceConfig({ ...base, xattr: 1 as never }), { message: "invalid value for 'xattr': expected a boolean" });
  t.throws(() => buildDeviceConfig({ ...base, sandbox: 'jail' as never }), { message: /invalid value 'jail' for 'sandbox'/ });
  t.throws(() => buildDeviceConfig({ ...base, seccomp: 'allow' as never }), { message: /invalid value 'allow' for 'seccomp'/ });
  t.throws(() => buildDeviceConfig(null as never), { message: 'device options must be an object' });
  t.is(buildDeviceConfig({ ...base, queueSize: 256 }).queueSize, 256);
});

function optionError(t: import('ava').ExecutionContext, run: () => unknown): OptionError | undefined {
  return t.throws(run, { instanceOf: OptionError });
}

test('a misspelt library key is an OptionError naming it, before any process starts', (t) => {
  const base = { sharedDir: '/tmp', socketPath: '/tmp/x.sock' };
  const misspelt = optionError(t, () => buildDeviceConfig({ ...base, readOnly: true } as DeviceOptions));
  t.is(misspelt?.message, "unknown option 'readOnly' (did you mean 'readonly'?)");
  t.is(misspelt?.key, 'readOnly');
  t.is(misspelt?.reason, 'unknown-option');
  t.is(optionError(t, () => buildDeviceConfig({ ...base, threadPoolSise: 4 } as DeviceOptions))?.message, "unknown option 'threadPoolSise' (did you mean 'threadPoolSize'?)");
  // Command-line options without a library key are not library options.
  t.is(optionError(t, () => buildDeviceConfig({ ...base, syslog: true } as DeviceOptions))?.message, "unknown option 'syslog'");
  // Even unset: a key no option has is a mistake.
  t.is(optionError(t, () => buildDeviceConfig({ ...base, posixAcls: undefined } as DeviceOptions))?.key, 'posixAcls');
  for (const notOptions of [[], 'x', 3]) {
    t.is(optionError(t, () => buildDeviceConfig(notOptions as never))?.reason, 'invalid-type');
  }
});

// Every key of DeviceOptions, written out: the compiler checks this list against the interface
// (a key missing or invented fails to type-check), the test against the option table.
const EVERY_DEVICE_OPTION: Record<keyof DeviceOptions, true> = {
  sharedDir: true, socketPath: true, socketGroup: true, fd: true, tag: true, cache: true, threadPoolSize: true,
  readonly: true, readdirplus: true, writeback: true, allowDirectIo: true, allowMmap: true, announceSubmounts: true,
  killprivV2: true, xattr: true, inodeFileHandles: true, preserveNoatime: true, posixLocks: true, flock: true,
  rlimitNofile: true, logLevel: true, maxRequestQueues: true, queueSize: true, sandbox: true, seccomp: true,
  uidMap: true, gidMap: true, modcaps: true, cwd: true, posixAcl: true, securityLabel: true, xattrMap: true,
  translateUid: true, translateGid: true, migrationMode: true, migrationOnError: true, migrationVerifyHandles: true,
  migrationConfirmPaths: true, reconnect: true,
};

test('library migration and reconnect options: strict values, defaults, and the refusals of the command line', (t) => {
  const base = { sharedDir: '/tmp', socketPath: '/tmp/x.sock' };
  const config = buildDeviceConfig({ ...base, migrationMode: 'file-handles', migrationOnError: 'guest-error', reconnect: true });
  t.is(config.migrationMode, 'file-handles');
  t.is(config.migrationOnError, 'guest-error');
  t.true(config.reconnect);
  const paths = buildDeviceConfig({ ...base, migrationVerifyHandles: true, migrationConfirmPaths: true });
  t.is(paths.migrationMode, 'find-paths');
  t.true(paths.migrationVerifyHandles && paths.migrationConfirmPaths);
  const badMode = optionError(t, () => buildDeviceConfig({ ...base, migrationMode: 'find_paths' as never }));
  t.is(badMode?.key, 'migrationMode');
  t.is(badMode?.reason, 'invalid-value');
  t.is(optionError(t, () => buildDeviceConfig({ ...base, migrationOnError: 'ignore' as never }))?.key, 'migrationOnError');
  t.is(optionError(t, () => buildDeviceConfig({ ...base, reconnect: 'yes' as never }))?.reason, 'invalid-type');
  for (const key of ['migrationVerifyHandles', 'migrationConfirmPaths'] as const) {
    const error = optionError(t, () => buildDeviceConfig({ ...base, migrationMode: 'file-handles', [key]: true }));
    t.is(error?.message, `'${key}' cannot be used with migrationMode 'file-handles' (because it is unnecessary: file handles name the very inodes)`);
    t.is(error?.key, key);
    t.is(error?.reason, 'conflict');
    // false is no contradiction.
    t.is(buildDeviceConfig({ ...base, migrationMode: 'file-handles', [key]: false }).migrationMode, 'file-handles');
  }
  const dropped = optionError(t, () => buildDeviceConfig({ ...base, migrationMode: 'file-handles', modcaps: '-dac_read_search' }));
  t.is(dropped?.message, "'modcaps' cannot drop dac_read_search with migrationMode 'file-handles', which opens file handles");
  t.is(dropped?.key, 'modcaps');
  const mandatory = optionError(t, () => buildDeviceConfig({ ...base, inodeFileHandles: 'mandatory', modcaps: '-dac_read_search' }));
  t.is(mandatory?.message, "'modcaps' cannot drop dac_read_search with inodeFileHandles 'mandatory', which opens file handles");
  t.is(mandatory?.reason, 'conflict');
  // 'prefer' (the default) falls back to descriptors without the capability.
  t.is(buildDeviceConfig({ ...base, modcaps: '-dac_read_search' }).inodeFileHandles, 'prefer');
  t.is(buildDeviceConfig({ ...base, inodeFileHandles: 'prefer', modcaps: '-dac_read_search' }).modcaps.drop[0], 'dac_read_search');
});

test('the option table checks every library key and no other', (t) => {
  t.deepEqual([...LIBRARY_OPTIONS.keys()].sort(), Object.keys(EVERY_DEVICE_OPTION).sort());
});

test('a library value of the wrong type is an OptionError naming its key', (t) => {
  const wrong: Record<string, unknown> = { boolean: 'yes', integer: '4', string: 5, tag: 5, enum: 1, modcaps: ['+chown'], idRanges: { inside: 0 }, idTranslations: 'map:0:1:1', xattrMap: 5 };
  for (const [key, option] of LIBRARY_OPTIONS) {
    const error = optionError(t, () => checkDeviceOptions({ [key]: wrong[option.check.type] }));
    t.is(error?.key, key, `${key}: ${error?.message}`);
    t.is(error?.reason, 'invalid-type', `${key}: ${error?.message}`);
  }
  t.is(optionError(t, () => checkDeviceOptions({ threadPoolSize: null }))?.reason, 'invalid-type', 'null only where it means "not set"');
  checkDeviceOptions({ tag: null, rlimitNofile: null });
  const range = optionError(t, () => checkDeviceOptions({ uidMap: [{ inside: 0, outside: 1, count: 1, size: 2 }] }));
  t.is(range?.key, 'uidMap[0].size');
  t.is(range?.reason, 'unknown-option');
});

test('library limits are the device\'s: a value TypeScript accepts is never refused by Rust', (t) => {
  const base = { sharedDir: '/tmp', socketPath: '/tmp/x.sock' };
  // The Rust limit (crates/daemon/src/config/schema.rs), written out: the TS layer used to take 2^32-1.
  t.is(buildDeviceConfig({ ...base, threadPoolSize: 1024 }).threadPoolSize, 1024);
  const tooMany = optionError(t, () => buildDeviceConfig({ ...base, threadPoolSize: 1025 }));
  t.is(tooMany?.message, "invalid value '1025' for 'threadPoolSize': must be an integer between 0 and 1024");
  t.is(tooMany?.key, 'threadPoolSize');
  t.is(tooMany?.reason, 'out-of-range');
  // Every integer option at its generated bounds (equal to Rust's by the schema tests).
  for (const [key, option] of LIBRARY_OPTIONS) {
    if (option.check.type !== 'integer') continue;
    const { min, max } = option.check;
    checkDeviceOptions({ [key]: max });
    checkDeviceOptions({ [key]: min });
    t.is(optionError(t, () => checkDeviceOptions({ [key]: max + 1 }))?.reason, 'out-of-range', key);
    t.is(optionError(t, () => checkDeviceOptions({ [key]: min - 1 }))?.reason, 'out-of-range', key);
  }
  t.is(optionError(t, () => checkDeviceOptions({ maxRequestQueues: 64 }))?.message, "invalid value '64' for 'maxRequestQueues': must be an integer between 1 and 63");
  t.throws(() => parseArgs(['--max-request-queues=64']), { message: /'--max-request-queues'.*63/ });
  t.throws(() => parseArgs(['--max-request-queues=0']), { message: /'--max-request-queues'/ });
  t.is(optionError(t, () => checkDeviceOptions({ queueSize: 65536 }))?.key, 'queueSize');
  t.is(optionError(t, () => checkDeviceOptions({ tag: 'é'.repeat(19) }))?.reason, 'out-of-range', '38 bytes');
  t.is(optionError(t, () => checkDeviceOptions({ modcaps: '+sys_everything' }))?.key, 'modcaps');
});

test('option errors of the command line name the option too', (t) => {
  const error = t.throws(() => parseArgs([...BASE, '--thread-pool-size=2048']), { instanceOf: OptionError });
  t.is(error?.key, '--thread-pool-size');
  t.is(error?.reason, 'out-of-range');
  const parsed = { ...parseArgs(BASE), unsupported: ['--migration-verify-handles'] };
  const refused = t.throws(() => checkRunnable(parsed), { instanceOf: NotSupportedError });
  t.is(refused?.reason, 'not-supported');
  t.is(refused?.key, '--migration-verify-handles');
});

// Control protocol and log formatting.

test('control messages parse strictly', (t) => {
  t.deepEqual(parseDeviceMessage('{"event":"listening","socket":"/tmp/a.sock"}'), { event: 'listening', socket: '/tmp/a.sock' });
  t.deepEqual(parseDeviceMessage('{"event":"connected"}'), { event: 'connected' });
  t.deepEqual(parseDeviceMessage('{"event":"log","level":"info","target":"t","message":"m"}'), { event: 'log', level: 'info', target: 't', message: 'm' });
  t.deepEqual(parseDeviceMessage('{"event":"error","message":"boom"}'), { event: 'error', message: 'boom' });
  t.throws(() => parseDeviceMessage('not json'), { instanceOf: ProtocolError });
  t.throws(() => parseDeviceMessage('[1]'), { instanceOf: ProtocolError });
  t.throws(() => parseDeviceMessage('{"event":"teleported"}'), { message: "unknown control event 'teleported'" });
  t.throws(() => parseDeviceMessage('{"event":"log","level":"loud","message":"m"}'), { message: "unknown log level 'loud'" });
  t.throws(() => parseDeviceMessage('{"event":"listening"}'), { message: "control message lacks string field 'socket'" });
});

test('line splitting keeps partial lines', (t) => {
  const splitter = new LineSplitter();
  t.deepEqual(splitter.push('{"a":1}\n{"b"'), ['{"a":1}']);
  t.deepEqual(splitter.push(':2}\n\n'), ['{"b":2}']);
});

test('log lines look like upstream and filter by level', (t) => {
  t.is(formatLogLine('info', 'virtiofsd', 'hello', new Date('2026-11-27T19:00:00.123Z')), '[2026-11-27T19:00:00Z INFO  virtiofsd] hello\n');
  t.is(formatLogLine('error', 'x', 'y', new Date('2026-11-27T19:00:00Z')), '[2026-11-27T19:00:00Z ERROR x] y\n');
  t.true(levelEnabled('warn', 'info'));
  t.false(levelEnabled('debug', 'info'));
  t.false(levelEnabled('error', 'off'));
  t.true(levelEnabled('trace', 'trace'));
});

test('RUST_LOG directives compile to a default level and per-target levels', (t) => {
  t.deepEqual(parseRustLog('debug'), { level: 'debug', targets: [] });
  t.deepEqual(parseRustLog('WARN, virtiofsd_fuse=trace,vhost_user_backend'), {
    level: 'warn',
    targets: [
      { target: 'virtiofsd_fuse', level: 'trace' },
      { target: 'vhost_user_backend', level: 'trace' },
    ],
  });
  // Without a bare level, everything else stays at env_logger's default, error.
  t.deepEqual(parseRustLog('virtiofsd_daemon=info'), { level: 'error', targets: [{ target: 'virtiofsd_daemon', level: 'info' }] });
  t.throws(() => parseRustLog('x=loud'), { instanceOf: OptionError, message: /invalid level 'loud' in 'x=loud'/ });
  t.throws(() => parseRustLog('a=b=c'), { instanceOf: OptionError, message: /invalid directive 'a=b=c'/ });
  t.throws(() => parseRustLog('info/regex'), { instanceOf: OptionError, message: /message filters/ });
});

test('the command line takes RUST_LOG over --log-level, and --syslog, into the device config', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-rustlog-'));
  const parsed = parseArgs(['--shared-dir', dir, '--socket-path', path.join(dir, 's'), '--log-level=debug', '--syslog']);
  const plain = cliConfig(parsed.options, dir, {});
  t.is(plain.logLevel, 'debug');
  t.deepEqual(plain.logTargets, []);
  t.true(plain.syslog);
  const overridden = cliConfig(parsed.options, dir, { RUST_LOG: 'info,virtiofsd_fuse=off' });
  t.is(overridden.logLevel, 'info');
  t.deepEqual(overridden.logTargets, [{ target: 'virtiofsd_fuse', level: 'off' }]);
  t.deepEqual(deviceLabels(plain), [`--socket-path=${path.join(dir, 's')}`, `--shared-dir=${dir}`]);
  // The library has no environment-driven logging: its records go to the embedder.
  const library = buildDeviceConfig({ sharedDir: dir, socketPath: path.join(dir, 's') });
  t.false(library.syslog);
  t.deepEqual(library.logTargets, []);
  fs.rmSync(dir, { recursive: true });
});
