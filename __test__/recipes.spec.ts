// The command lines that libvirt, kata and the systemd recipe of docs/recipes.md pass: what they
// configure here, and that this CLI and the reference accept and refuse the same ones.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { NotSupportedError, OptionError } from '../ts/errors.ts';
import { OPTION_TABLE, checkRunnable, parseArgs } from '../ts/options.ts';
import { provision } from './guest/harness.ts';
import { cli, ensureBuilt } from './support/build.ts';

test.before(() => ensureBuilt());

const SHARE = '/srv/share';

interface Line {
  who: string;
  argv: string[];
}

/** libvirt's qemuVirtioFSBuildCommandLine: --fd, one -o list, --thread-pool-size, -d. */
const LIBVIRT: Line = { who: 'libvirt', argv: ['--fd=5', '-o', `source=${SHARE},cache=always,sandbox=namespace,xattr`, '--thread-pool-size=4', '-d'] };
const LIBVIRT_NO_LOCKS: Line = { who: 'libvirt <lock off>', argv: ['--fd=5', '-o', `source=${SHARE},no_flock,no_posix_lock`] };
const KATA: Line = { who: 'kata', argv: ['--syslog', '--cache=auto', `--shared-dir=${SHARE}`, '--fd=3', '--thread-pool-size=1', '--announce-submounts'] };
const KATA_OLD: Line = { who: 'kata (older)', argv: ['--syslog', '-o', 'cache=auto', '-o', 'no_posix_lock', '-o', `source=${SHARE}`, '--fd=3', '-f'] };
const KATA_OLD_DEBUG: Line = { who: 'kata (older, debug)', argv: ['--syslog', '-o', 'cache=auto', '-o', 'no_posix_lock', '-o', `source=${SHARE}`, '--fd=3', '-d'] };
const SYSTEMD: Line = { who: 'systemd', argv: ['--fd=3', `--shared-dir=${SHARE}`] };

const ACCEPTED = [LIBVIRT, LIBVIRT_NO_LOCKS, KATA, KATA_OLD, KATA_OLD_DEBUG, SYSTEMD];
const REFUSED: Line[] = [
  { who: 'libvirt <lock on>', argv: ['--fd=5', '-o', `source=${SHARE},posix_lock,flock`] },
  { who: 'kata (oldest, debug)', argv: ['--syslog', '-f', '-o', 'cache=auto', '-o', `source=${SHARE}`, '--fd=3', '-o', 'debug'] },
];

const syslogSupported = OPTION_TABLE.find((spec) => spec.long === 'syslog')?.notSupported !== true;

/** Whether a run would start; the only refusal allowed is --syslog while it is not supported. */
function runnable(argv: string[]): boolean {
  try {
    checkRunnable(parseArgs(argv));
    return true;
  } catch (error) {
    if (error instanceof NotSupportedError && error.message === 'not supported yet: --syslog' && !syslogSupported) return false;
    throw error;
  }
}

test('libvirt lines configure what the domain says', (t) => {
  const { options } = parseArgs(LIBVIRT.argv);
  t.like(options, { fd: 5, sharedDir: SHARE, cache: 'always', sandbox: 'namespace', xattr: true, threadPoolSize: 4, logLevel: 'debug' });
  t.true(runnable(LIBVIRT.argv));
  t.like(parseArgs(LIBVIRT_NO_LOCKS.argv).options, { noFlock: true, noPosixLock: true });
});

test('kata lines of both generations configure the same device', (t) => {
  for (const line of [KATA, KATA_OLD, KATA_OLD_DEBUG]) {
    const { options } = parseArgs(line.argv);
    t.like(options, { fd: 3, sharedDir: SHARE, cache: 'auto', syslog: true }, line.who);
    t.is(runnable(line.argv), syslogSupported, line.who);
  }
  t.true(parseArgs(KATA_OLD.argv).options.noPosixLock);
  t.is(parseArgs(KATA_OLD_DEBUG.argv).options.logLevel, 'debug');
});

test('the systemd recipe runs with descriptor 3', (t) => {
  t.like(parseArgs(SYSTEMD.argv).options, { fd: 3, sharedDir: SHARE });
  t.true(runnable(SYSTEMD.argv));
});

test('forms upstream 1.13 refuses are refused', (t) => {
  for (const line of REFUSED) t.throws(() => parseArgs(line.argv), { instanceOf: OptionError }, line.who);
});

test('ours and the reference accept and refuse the same lines', async (t) => {
  const { reference } = await provision();
  // --print-capabilities answers once the whole line has parsed, so the exit status says whether
  // the syntax was accepted, without a socket or a shared directory.
  for (const line of [...ACCEPTED, ...REFUSED]) {
    const argv = [...line.argv, '--print-capabilities'];
    const ours = spawnSync(process.execPath, [cli, ...argv], { encoding: 'utf8' });
    const theirs = spawnSync(reference, argv, { encoding: 'utf8' });
    const accepted = ACCEPTED.includes(line);
    t.is(ours.status === 0, accepted, `${line.who}: ours exited ${ours.status}: ${ours.stderr}`);
    t.is(theirs.status === 0, accepted, `${line.who}: the reference exited ${theirs.status}: ${theirs.stderr}`);
  }
});
