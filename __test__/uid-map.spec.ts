// --uid-map/--gid-map outside an unprivileged namespace sandbox: refused before any process
// starts, in the option checks, the library's config builder and the command line.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkRunnable, parseArgs } from '../ts/options.ts';
import { buildDeviceConfig } from '../ts/config.ts';
import { OptionError } from '../ts/errors.ts';
import { ID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE, checkIdMapsAllowed } from '../ts/validate.ts';
import { cli, ensureBuilt } from './support/build.ts';

const BASE = ['--shared-dir', '/tmp', '--socket-path', '/tmp/x.sock'];
const RANGE = { inside: 0, outside: 300000, count: 65536 };
const isRoot = process.geteuid?.() === 0;

function refused(t: import('ava').ExecutionContext, argv: string[], option: string): void {
  const error = t.throws(() => checkRunnable(parseArgs(argv)), { instanceOf: OptionError });
  t.true(error?.message.includes(`'${option}'`), error?.message);
  t.true(error?.message.includes(ID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE), error?.message);
}

test('ranges are refused as root and with --sandbox=chroot|none', (t) => {
  for (const sandbox of ['chroot', 'none'] as const) {
    for (const euid of [0, 1000]) {
      t.throws(() => checkIdMapsAllowed('--uid-map', sandbox, euid), {
        instanceOf: OptionError,
        message: `'--uid-map' cannot be used with '--sandbox=${sandbox}': ${ID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE}`,
      });
    }
  }
  t.throws(() => checkIdMapsAllowed('--gid-map', 'namespace', 0), {
    instanceOf: OptionError,
    message: `'--gid-map' cannot be used when running as root: ${ID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE}`,
  });
  t.notThrows(() => checkIdMapsAllowed('--uid-map', 'namespace', 1000));
  t.notThrows(() => checkIdMapsAllowed('--uid-map', 'namespace', undefined));
  for (const sandbox of ['namespace', 'chroot', 'none'] as const) {
    t.notThrows(() => checkIdMapsAllowed(null, sandbox, 0), 'no ranges: nothing to refuse');
  }
});

test('the command line refuses ranges it would ignore', (t) => {
  for (const sandbox of ['chroot', 'none']) {
    refused(t, [...BASE, `--sandbox=${sandbox}`, '--uid-map=:0:300000:65536:'], '--uid-map');
    refused(t, [...BASE, '--sandbox', sandbox, '--gid-map=:0:300000:65536:'], '--gid-map');
  }
  if (isRoot) {
    refused(t, [...BASE, '--uid-map=:0:300000:65536:'], '--uid-map');
    refused(t, [...BASE, '--sandbox=namespace', '--gid-map=:0:300000:65536:'], '--gid-map');
  } else {
    t.notThrows(() => checkRunnable(parseArgs([...BASE, '--uid-map=:0:300000:65536:'])));
  }
  t.notThrows(() => checkRunnable(parseArgs([...BASE, '--sandbox=none'])));
});

test('the library refuses ranges it would ignore', (t) => {
  const base = { sharedDir: '/tmp', fd: 3 };
  for (const sandbox of ['chroot', 'none'] as const) {
    t.throws(() => buildDeviceConfig({ ...base, sandbox, uidMap: [RANGE] }), {
      instanceOf: OptionError,
      message: new RegExp(`'uidMap' cannot be used with '--sandbox=${sandbox}'`),
    });
    t.throws(() => buildDeviceConfig({ ...base, sandbox, gidMap: [RANGE] }), { instanceOf: OptionError, message: /'gidMap'/ });
  }
  if (isRoot) {
    t.throws(() => buildDeviceConfig({ ...base, uidMap: [RANGE] }), { instanceOf: OptionError, message: /running as root/ });
  } else {
    t.deepEqual(buildDeviceConfig({ ...base, uidMap: [RANGE] }).uidMap, [RANGE]);
  }
  t.deepEqual(buildDeviceConfig({ ...base, sandbox: 'none' }).uidMap, []);
});

test('the CLI exits with the error before starting a device', (t) => {
  ensureBuilt();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-uidmap-'));
  try {
    const socket = path.join(dir, 'vfs.sock');
    const cases: [string[], string][] = [[['--sandbox=none', '--uid-map=:0:300000:65536:'], '--uid-map']];
    if (isRoot) cases.push([['--uid-map=:0:300000:65536:'], '--uid-map'], [['--gid-map=:0:300000:65536:'], '--gid-map']);
    for (const [args, option] of cases) {
      const r = spawnSync(process.execPath, [cli, `--shared-dir=${dir}`, `--socket-path=${socket}`, ...args], {
        encoding: 'utf8',
        timeout: 20_000,
      });
      t.is(r.status, 1, r.stderr);
      t.regex(r.stderr, new RegExp(`'${option}'.*${ID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE.replace(/[/-]/g, '\\$&')}`));
      t.false(fs.existsSync(socket), 'no device started: nothing listens');
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
