// The policy options: --translate-uid/--translate-gid, --xattrmap, --posix-acl and
// --security-label on the command line and as library options, compiled into the device's
// tables; and explainPolicy, answered by the device's own policy code through the built addon.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkRunnable, parseArgs } from '../ts/options.ts';
import { buildDeviceConfig, checkDeviceOptions, cliCompile, cliConfig, compileDevice } from '../ts/config.ts';
import type { DeviceOptions } from '../ts/config.ts';
import { OptionError } from '../ts/errors.ts';
import type { OptionErrorReason } from '../ts/errors.ts';
import { HELP_TEXT, NOT_SUPPORTED_MARK } from '../ts/help.ts';
import { CLI_NAMING, LIBRARY_NAMING, compilePolicies, formatXattrRule, parseIdTranslation, parseXattrMap } from '../ts/policy.ts';
import type { DeviceIdentity, PolicyContext } from '../ts/policy.ts';
import { cli, ensureBuilt, requireNative, root } from './support/build.ts';
import { libraryScenario } from './support/scenario.ts';
import type { PolicyQuery } from '../ts/explain.ts';

const BASE = ['--shared-dir', '/tmp', '--socket-path', '/tmp/x.sock'];
const isRoot = process.geteuid?.() === 0;
const ROOT: DeviceIdentity = { euid: 0, egid: 0, overflowUid: 65534, overflowGid: 65534 };
const USER: DeviceIdentity = { euid: 1000, egid: 1000, overflowUid: 65534, overflowGid: 65534 };
const AS_ROOT: PolicyContext = { sandbox: 'none', uidMap: [], gidMap: [], identity: ROOT };

function cliError(t: import('ava').ExecutionContext, argv: string[]): OptionError | undefined {
  return t.throws(() => cliConfig(checkedArgs(argv)), { instanceOf: OptionError });
}

function checkedArgs(argv: string[]) {
  const parsed = parseArgs(argv);
  checkRunnable(parsed);
  return parsed.options;
}

/** The compiled uid tables of a command line (as root: every host id usable). */
function uidTables(...rules: string[]) {
  return compilePolicies({ translateUid: rules }, AS_ROOT, CLI_NAMING).translateUid;
}

// --- --translate-uid / --translate-gid --------------------------------------------------------

test('every translation type compiles to upstream\'s directions', (t) => {
  t.deepEqual(uidTables('map:1000:101000:1000'), {
    guestToHost: [{ first: 1000, count: 1000, kind: 'range', target: 101000 }],
    hostToGuest: [{ first: 101000, count: 1000, kind: 'range', target: 1000 }],
  });
  t.deepEqual(uidTables('guest:1000:2000:10'), { guestToHost: [{ first: 1000, count: 10, kind: 'range', target: 2000 }], hostToGuest: [] });
  t.deepEqual(uidTables('host:2000:1000:10'), { guestToHost: [], hostToGuest: [{ first: 2000, count: 10, kind: 'range', target: 1000 }] });
  t.deepEqual(uidTables('squash-guest:0:65534:1000'), { guestToHost: [{ first: 0, count: 1000, kind: 'squash', target: 65534 }], hostToGuest: [] });
  t.deepEqual(uidTables('squash-host:5000:0:10'), { guestToHost: [], hostToGuest: [{ first: 5000, count: 10, kind: 'squash', target: 0 }] });
  t.deepEqual(uidTables('forbid-guest:7:3'), { guestToHost: [{ first: 7, count: 3, kind: 'fail', target: 0 }], hostToGuest: [] });
  // Sorted by first id whatever the order given.
  t.deepEqual(uidTables('guest:500:0:1', 'forbid-guest:7:3', 'map:100:200:1').guestToHost.map((rule) => rule.first), [7, 100, 500]);
});

test('translation rules reach the device config through the command line, repeatable, per kind', (t) => {
  const config = cliConfig(checkedArgs([...BASE, '--translate-uid=map:1000:101000:1000', '--translate-uid', 'forbid-guest:0:1', '--translate-gid=squash-host:0:100:1']));
  t.deepEqual(config.translateUid.guestToHost, [
    { first: 0, count: 1, kind: 'fail', target: 0 },
    { first: 1000, count: 1000, kind: 'range', target: 101000 },
  ]);
  t.deepEqual(config.translateGid, { guestToHost: [], hostToGuest: [{ first: 0, count: 1, kind: 'squash', target: 100 }] });
  const plain = cliConfig(checkedArgs(BASE));
  t.deepEqual(plain.translateUid, { guestToHost: [], hostToGuest: [] });
  t.deepEqual(plain.translateGid, { guestToHost: [], hostToGuest: [] });
});

test('type names are case-insensitive; the separator is the first other character, used for every field', (t) => {
  t.deepEqual(parseIdTranslation('x', 'MAP:1:2:3'), { type: 'map', guest: 1, host: 2, count: 3 });
  t.deepEqual(parseIdTranslation('x', 'Squash-Guest:1:2:3'), { type: 'squash-guest', guest: 1, host: 2, count: 3 });
  t.deepEqual(parseIdTranslation('x', 'map/1000/101000/1000'), { type: 'map', guest: 1000, host: 101000, count: 1000 });
  t.deepEqual(parseIdTranslation('x', 'host,5,6,7'), { type: 'host', host: 5, guest: 6, count: 7 });
  t.deepEqual(parseIdTranslation('x', 'guest 1 2 3'), { type: 'guest', guest: 1, host: 2, count: 3 });
  t.deepEqual(parseIdTranslation('x', 'forbid-guest.9.1'), { type: 'forbid-guest', guest: 9, count: 1 });
  // One separator for the whole rule: a colon among slashes is part of a field.
  t.throws(() => parseIdTranslation('--translate-uid', 'map/1:2/3'), { message: "invalid value 'map/1:2/3' for '--translate-uid': 'map' takes 3 values (map/<guest>/<host>/<count>), got 2" });
  t.throws(() => parseIdTranslation('--translate-uid', 'map/1/2:3/4'), { message: /'2:3' is not a number \(the host field\)/ });
  // `_` belongs to the type name, which then is unknown.
  t.throws(() => parseIdTranslation('--translate-uid', 'squash_guest:1:2:3'), { message: /unknown type 'squash_guest', expected guest, host, squash-guest, squash-host, forbid-guest or map/ });
});

test('translation syntax errors name the option, the value and what was expected', (t) => {
  const cases: [string, string | RegExp][] = [
    ['map', "invalid value 'map' for '--translate-uid': no separator after the type: expected <type>:<id>:<id>:<count> (or forbid-guest:<id>:<count>), any separator that is not a letter, digit, '-' or '_'"],
    ['', /no separator after the type/],
    ['teleport:1:2:3', "invalid value 'teleport:1:2:3' for '--translate-uid': unknown type 'teleport', expected guest, host, squash-guest, squash-host, forbid-guest or map"],
    ['guest:1:2', "invalid value 'guest:1:2' for '--translate-uid': 'guest' takes 3 values (guest:<guest>:<host>:<count>), got 2"],
    ['host:1:2:3:4', /'host' takes 3 values \(host:<host>:<guest>:<count>\), got 4/],
    ['forbid-guest:1:2:3', /'forbid-guest' takes 2 values \(forbid-guest:<guest>:<count>\), got 3/],
    ['map:1:2:3:', /takes 3 values .*, got 4/],
    ['map:a:2:3', /'a' is not a number \(the guest field\)/],
    ['map:-1:2:3', /'-1' is not a number/],
    ['map::2:3', /'' is not a number \(the guest field\)/],
    ['map:1:4294967296:3', /4294967296 is larger than 4294967295, the largest id/],
    ['map:1:2:0', "invalid value 'map:1:2:0' for '--translate-uid': the count must be at least 1"],
    ['forbid-guest:1:0', /the count must be at least 1/],
  ];
  for (const [value, message] of cases) {
    const error = t.throws(() => parseArgs([...BASE, '--translate-uid', value]), { instanceOf: OptionError }, value);
    if (typeof message === 'string') t.is(error?.message, message);
    else t.regex(error?.message ?? '', message);
    t.is(error?.key, '--translate-uid');
  }
  t.is(t.throws(() => parseArgs([...BASE, '--translate-gid=map:1:2:0']), { instanceOf: OptionError })?.reason, 'out-of-range');
});

test('a range passing 4294967295 is refused, on either side; one ending there is not', (t) => {
  const refuse = (value: string, why: RegExp): void => {
    const error = t.throws(() => parseIdTranslation('--translate-uid', value), { instanceOf: OptionError }, value);
    t.regex(error?.message ?? '', why);
    t.is(error?.reason, 'out-of-range');
  };
  refuse('map:4294967295:0:2', /the guest range 4294967295-4294967296 passes 4294967295, the largest id/);
  refuse('map:0:4294967290:10', /the host range 4294967290-4294967299 passes/);
  refuse('guest:0:4294967295:2', /the host range/);
  refuse('host:4294967295:0:2', /the host range/);
  refuse('host:0:4294967295:2', /the guest range/);
  refuse('squash-guest:4294967295:0:2', /the guest range/);
  refuse('forbid-guest:4294967295:2', /the guest range/);
  // A squash has a single target: only its source range counts.
  t.deepEqual(parseIdTranslation('x', 'squash-guest:1:4294967294:4294967295'), { type: 'squash-guest', guest: 1, host: 4294967294, count: 4294967295 });
  // Sources may end at 4294967295; nothing may be translated to it, which is no id.
  t.deepEqual(parseIdTranslation('x', 'forbid-guest:4294967295:1'), { type: 'forbid-guest', guest: 4294967295, count: 1 });
  t.deepEqual(parseIdTranslation('x', 'squash-host:4294967290:0:6'), { type: 'squash-host', host: 4294967290, guest: 0, count: 6 });
  refuse('map:0:4294967295:1', /the host side reaches 4294967295, which is no id \(chown\(2\) reads it as "unchanged"\): no rule can translate to it \(forbid-guest refuses guest ids\)/);
  refuse('map:4294967294:0:2', /the guest side reaches 4294967295/);
  refuse('squash-guest:0:4294967295:10', /the host side reaches 4294967295/);
  refuse('squash-host:0:4294967295:10', /the guest side reaches 4294967295/);
  refuse('host:0:4294967294:2', /the guest side reaches 4294967295/);
});

test('overlapping source ranges in one direction are refused, naming both rules', (t) => {
  const error = cliError(t, [...BASE, '--translate-uid', 'guest:1000:2000:10', '--translate-uid', 'map:1005:3000:10']);
  t.is(error?.message, "'--translate-uid' rules 'guest:1000:2000:10' and 'map:1005:3000:10' overlap: both translate guest uids 1005-1009");
  t.is(error?.key, '--translate-uid');
  t.is(error?.reason, 'conflict');
  // The host side of map rules, in the other direction.
  t.regex(cliError(t, [...BASE, '--translate-gid=map:0:100:10', '--translate-gid=host:105:0:1'])?.message ?? '', /'--translate-gid' rules 'map:0:100:10' and 'host:105:0:1' overlap: both translate host gids 105$/);
  t.regex(cliError(t, [...BASE, '--translate-uid=forbid-guest:5:1', '--translate-uid=squash-guest:0:0:10'])?.message ?? '', /rules 'forbid-guest:5:1' and 'squash-guest:0:0:10' overlap: both translate guest uids 5$/);
  // Same source ids in different directions, or of different kinds, are fine.
  const config = cliConfig(checkedArgs([...BASE, '--translate-uid=guest:0:10:5', '--translate-uid=host:0:10:5', '--translate-gid=map:0:10:5']));
  t.is(config.translateUid.guestToHost.length, 1);
  t.is(config.translateUid.hostToGuest.length, 1);
  // Adjacent ranges do not overlap.
  t.notThrows(() => uidTables('map:0:100:10', 'map:10:200:10'));
  // The library names rules by index.
  const library = t.throws(() => buildDeviceConfig({ sharedDir: '/tmp', fd: 3, translateUid: [{ type: 'map', guest: 0, host: 10, count: 5 }, 'squash-guest:4:0:1'] }), { instanceOf: OptionError });
  t.is(library?.message, "'translateUid' rules 0 (map:0:10:5) and 1 (squash-guest:4:0:1) overlap: both translate guest uids 4");
  t.is(library?.key, 'translateUid[1]');
});

test('host ids must be ones the device can use: checked for unprivileged devices', (t) => {
  const context = (sandbox: PolicyContext['sandbox'], uidMap: PolicyContext['uidMap'] = []): PolicyContext => ({ sandbox, uidMap, gidMap: [], identity: USER });
  const compile = (ctx: PolicyContext, ...rules: string[]) => compilePolicies({ translateUid: rules }, ctx, CLI_NAMING);
  // Root: any id.
  t.notThrows(() => compilePolicies({ translateUid: ['squash-guest:0:2000:100'] }, { ...context('none'), identity: ROOT }, CLI_NAMING));
  // Without a user namespace: only the user's own id.
  t.notThrows(() => compile(context('none'), 'squash-guest:0:1000:4294967295'));
  let error = t.throws(() => compile(context('none'), 'map:1000:2000:1'), { instanceOf: OptionError });
  t.is(
    error?.message,
    "'--translate-uid' rule 'map:1000:2000:1' cannot work: it sends guest uids to host uid 2000, which the device cannot act as: an unprivileged device without a user namespace acts as its own uid 1000 only",
  );
  t.is(error?.kind, 'environment');
  t.is(error?.reason, 'conflict');
  // The namespace sandbox maps the user's own id to 0, the only one inside.
  t.notThrows(() => compile(context('namespace'), 'squash-guest:0:0:65536'));
  error = t.throws(() => compile(context('namespace'), 'squash-guest:0:1000:65536'), { instanceOf: OptionError });
  t.regex(error?.message ?? '', /host uid 1000, which the device cannot act as: the device's user namespace holds only uid 0 \(your own uid 1000 seen from inside; host ids in translation rules are ids inside it\)/);
  // With ranges, every target id inside them.
  const ranges = [{ inside: 0, outside: 1000, count: 1 }, { inside: 1, outside: 100000, count: 65535 }];
  t.notThrows(() => compile(context('namespace', ranges), 'map:0:0:65536'));
  error = t.throws(() => compile(context('namespace', ranges), 'map:0:65530:10'), { instanceOf: OptionError });
  t.regex(error?.message ?? '', /host uid 65536, which the device cannot act as: the device's user namespace holds only the uids of its --uid-map ranges/);
  // forbid-guest has no host side.
  t.notThrows(() => compile(context('none'), 'forbid-guest:0:100'));
  // A host-to-guest rule over ids the namespace never shows can never match ...
  error = t.throws(() => compile(context('namespace', ranges), 'host:100000:0:10'), { instanceOf: OptionError });
  t.is(error?.message, "'--translate-uid' rule 'host:100000:0:10' cannot work: the device never sees host uids 100000-100009 (the device's user namespace holds only the uids of its --uid-map ranges (host ids in translation rules are ids inside it); others appear as 65534)");
  // ... unless it covers the overflow id unmapped owners appear as; without a namespace every id shows.
  t.notThrows(() => compile(context('namespace'), 'squash-host:65534:0:1'));
  t.notThrows(() => compile(context('none'), 'host:100000:1000:10'));
  // The library names its keys.
  error = t.throws(() => compilePolicies({ translateGid: [{ type: 'guest', guest: 0, host: 5, count: 1 }] }, context('none'), LIBRARY_NAMING), { instanceOf: OptionError });
  t.regex(error?.message ?? '', /^'translateGid' rule 0 \(guest:0:5:1\) cannot work: it sends guest gids to host gid 5/);
  t.is(error?.key, 'translateGid[0]');
});

test('--translate-* may be combined with --posix-acl (upstream refuses; the ids inside ACLs are translated)', (t) => {
  const config = cliConfig(checkedArgs([...BASE, '--posix-acl', '--translate-uid=map:0:100000:65536']));
  t.true(config.posixAcl);
  t.is(config.translateUid.guestToHost.length, 1);
});

// --- --xattrmap -------------------------------------------------------------------------------

const xattrRules = (value: string) => compilePolicies({ xattrMap: value }, AS_ROOT, CLI_NAMING);

test('xattrmap rules compile: scopes set client and server, map rules expand as upstream', (t) => {
  t.deepEqual(xattrRules(':prefix:client:trusted.:user.virtiofs.: :ok:server::security.: :bad:all:::').xattrMap, [
    { kind: 'prefix', client: true, server: false, key: 'trusted.', prepend: 'user.virtiofs.' },
    { kind: 'ok', client: false, server: true, key: '', prepend: 'security.' },
    { kind: 'bad', client: true, server: true, key: '', prepend: '' },
  ]);
  t.deepEqual(xattrRules('/map/trusted./user.virtiofs./').xattrMap, [
    { kind: 'prefix', client: true, server: true, key: 'trusted.', prepend: 'user.virtiofs.' },
    { kind: 'bad', client: true, server: true, key: 'user.virtiofs.', prepend: 'trusted.' },
    { kind: 'ok', client: true, server: true, key: '', prepend: '' },
  ]);
  t.deepEqual(xattrRules(':map::user.virtiofs.:').xattrMap, [
    { kind: 'prefix', client: true, server: true, key: '', prepend: 'user.virtiofs.' },
    { kind: 'bad', client: true, server: true, key: '', prepend: '' },
  ]);
  // Rules after others, unsupported, each rule with its own separator.
  const compiled = xattrRules(' :unsupported:all:security.:security.:|ok|client|user.||  /map/a./b./ ');
  t.deepEqual(compiled.xattrMap?.map((rule) => rule.kind), ['unsupported', 'ok', 'prefix', 'bad', 'ok']);
  t.deepEqual(compiled.warnings, []);
  t.deepEqual(compiled.sources.xattrMap.map((source) => source.text), [
    'rule 1 (:unsupported:all:security.:security.:)',
    'rule 2 (|ok|client|user.||)',
    'rule 3 (/map/a./b./)',
    'rule 3 (/map/a./b./)',
    'rule 3 (/map/a./b./)',
  ]);
  t.deepEqual(cliConfig(checkedArgs(BASE)).xattrMap, null);
});

test('xattrmap rules may be separated by newlines, tabs or nothing', (t) => {
  const upstreamExample = `
    /prefix/all/trusted./user.virtiofs./
    /bad/server//trusted./
    /bad/client/user.virtiofs.//
    /ok/all///
  `;
  t.deepEqual(xattrRules(upstreamExample).xattrMap, [
    { kind: 'prefix', client: true, server: true, key: 'trusted.', prepend: 'user.virtiofs.' },
    { kind: 'bad', client: false, server: true, key: '', prepend: 'trusted.' },
    { kind: 'bad', client: true, server: false, key: 'user.virtiofs.', prepend: '' },
    { kind: 'ok', client: true, server: true, key: '', prepend: '' },
  ]);
  t.is(xattrRules(':prefix:all::user.virtiofs.::bad:all:::').xattrMap?.length, 2);
  t.is(xattrRules(':ok:all:::\t\n:bad:all:::').xattrMap?.length, 2);
  // Fields keep inner spaces and any character but the separator.
  t.deepEqual(xattrRules('#ok#all#user.a b:c##').xattrMap?.[0], { kind: 'ok', client: true, server: true, key: 'user.a b:c', prepend: '' });
  t.deepEqual(xattrRules('💡ok💡all💡user.é💡💡').xattrMap?.[0].key, 'user.é');
});

test('xattrmap errors point at the rule: its number, its text and what was expected', (t) => {
  const cases: [string, string][] = [
    [':ok:all::: :bad:everywhere:::', "rule 2 (:bad:everywhere:::): unknown scope 'everywhere', expected client, server or all"],
    [':allow:all:::', "rule 1 (:allow:all:::): unknown rule type 'allow', expected prefix, ok, bad, unsupported or map"],
    [':prefix:client:hi', "rule 1 (:prefix:client:hi): incomplete rule: expected :type:scope:key:prepend:, closed by its separator ':'"],
    [':ok:all::: /map/a/b', "rule 2 (/map/a/b): incomplete rule: expected /map/key/prepend/, closed by its separator '/'"],
    [':ok', "rule 1 (:ok): incomplete rule: expected :type:scope:key:prepend:, closed by its separator ':'"],
    [':map:trusted.:virtiofs.user.::map:trusted.:virtiofs.user.:', 'rule 1 (:map:trusted.:virtiofs.user.:): a map rule must be the last rule'],
    [':map::x.: :ok:all:::', 'rule 1 (:map::x.:): a map rule must be the last rule'],
    [':OK:all:::', "rule 1 (:OK:all:::): unknown rule type 'OK', expected prefix, ok, bad, unsupported or map"],
    ['   ', 'no rules given'],
  ];
  for (const [value, why] of cases) {
    const error = t.throws(() => parseArgs([...BASE, `--xattrmap=${value}`]), { instanceOf: OptionError }, value);
    t.is(error?.message, `invalid value '${value}' for '--xattrmap': ${why}`);
    t.is(error?.key, '--xattrmap');
    t.is(error?.reason, 'invalid-value');
  }
});

test('xattrmap without a catch-all gets a final bad rule, and a warning that says so', (t) => {
  const compiled = xattrRules(':prefix:client:trusted.:user.virtiofs.:');
  t.deepEqual(compiled.xattrMap?.at(-1), { kind: 'bad', client: true, server: true, key: '', prepend: '' });
  t.is(compiled.sources.xattrMap.at(-1)?.index, null);
  t.deepEqual(compiled.warnings, [
    "'--xattrmap' has no rule matching every guest name (a client or all rule with an empty key) nor every host name (a server or all rule with an empty prepend): a final :bad:all::: rule was added, so names no rule matches are refused (EPERM) when the guest uses them and hidden from its listings, as the old C virtiofsd did",
  ]);
  // One side missing is enough.
  t.regex(xattrRules(':ok:client:::').warnings[0] ?? '', /^'--xattrmap' has no rule matching every host name \(/);
  t.regex(xattrRules(':ok:server:::').warnings[0] ?? '', /^'--xattrmap' has no rule matching every guest name \(/);
  // A catch-all on each side, split over two rules, needs none.
  t.deepEqual(xattrRules(':ok:client::: :bad:server:::').warnings, []);
  t.deepEqual(xattrRules(':map:a.:b.:').warnings, []);
  // The library's warning names its key.
  const library = compileDevice({ sharedDir: '/tmp', fd: 3, xattrMap: [{ type: 'ok', scope: 'client', key: 'user.', prepend: '' }] });
  t.true(library.warnings.some((warning) => warning.startsWith("'xattrMap' has no rule matching every guest name")));
  t.is(library.config.xattrMap?.length, 2);
});

test('the command line prints the catch-all warning in the log format', (t) => {
  ensureBuilt();
  // A copy without the native artifacts: the run gets past the warnings, then fails to start.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-policy-'));
  try {
    const copy = path.join(dir, 'pkg');
    fs.cpSync(path.join(root, 'dist'), path.join(copy, 'dist'), { recursive: true });
    fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'));
    const run = spawnSync(process.execPath, [path.join(copy, 'dist', 'cli.js'), '--shared-dir', dir, '--socket-path', path.join(dir, 's.sock'), '--xattrmap=:prefix:all:trusted.:user.vm.:'], { encoding: 'utf8', timeout: 30_000 });
    t.is(run.status, 1);
    t.regex(run.stderr, /WARN {2}virtiofsd\] '--xattrmap' has no rule matching every guest name .* a final :bad:all::: rule was added/);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

// --- -o forms, implied --xattr, help --------------------------------------------------------------

test('-o xattrmap=, posix_acl, no_posix_acl, security_label, no_security_label', (t) => {
  const o = checkedArgs([...BASE, '-o', 'xattrmap=:map::user.virtiofs.:,posix_acl,security_label']);
  t.is(o.xattrmap, ':map::user.virtiofs.:');
  t.true(o.posixAcl);
  t.true(o.securityLabel);
  const config = cliConfig(o);
  t.true(config.xattr && config.posixAcl && config.securityLabel);
  t.is(config.xattrMap?.length, 2);
  // -o comes after the long options, as upstream: it wins.
  const off = checkedArgs([...BASE, '--posix-acl', '--security-label', '-o', 'no_posix_acl,no_security_label']);
  t.false(off.posixAcl);
  t.false(off.securityLabel);
  t.is(checkedArgs([...BASE, '--xattrmap=:ok:all:::', '-o', 'xattrmap=:bad:all:::']).xattrmap, ':bad:all:::');
  // -o splits on commas and, as upstream, an item on '='.
  const bad = t.throws(() => parseArgs([...BASE, '-o', 'xattrmap=:bad:all::']), { instanceOf: OptionError });
  t.is(bad?.message, "invalid value ':bad:all::' for '-o xattrmap': rule 1 (:bad:all::): incomplete rule: expected :type:scope:key:prepend:, closed by its separator ':'");
  t.is(bad?.key, '-o xattrmap');
  t.is(t.throws(() => parseArgs([...BASE, '-o', 'xattrmap=:ok:all:a=b::']))?.message, "invalid compat argument '-o xattrmap=:ok:all:a=b::'");
  t.is(t.throws(() => parseArgs([...BASE, '-o', 'xattrmap']))?.message, "invalid compat argument '-o xattrmap'");
  t.is(t.throws(() => parseArgs([...BASE, '-o', 'posix_acl=1']))?.message, "invalid compat argument '-o posix_acl=1'");
});

test('--posix-acl, --security-label and --xattrmap imply --xattr, as upstream even after -o no_xattr', (t) => {
  for (const option of ['--posix-acl', '--security-label', '--xattrmap=:ok:all:::']) {
    const config = cliConfig(checkedArgs([...BASE, option]));
    t.true(config.xattr, option);
    t.true(cliConfig(checkedArgs([...BASE, option, '-o', 'no_xattr'])).xattr, `${option} -o no_xattr`);
  }
  t.false(cliConfig(checkedArgs(BASE)).xattr);
  const both = cliConfig(checkedArgs([...BASE, '--posix-acl', '--security-label']));
  t.deepEqual([both.posixAcl, both.securityLabel], [true, true]);
});

test('no option is marked unsupported any more: neither the policy options nor --migration-*', (t) => {
  const entries = HELP_TEXT.split('\n\n').filter((entry) => entry.trim().startsWith('-'));
  const marked = entries.filter((entry) => entry.includes(NOT_SUPPORTED_MARK)).map((entry) => entry.trim().split(/\s/)[0]);
  t.deepEqual(marked, []);
  for (const option of ['--posix-acl', '--xattrmap', '--security-label', '--translate-uid', '--translate-gid']) {
    const entry = entries.find((text) => text.trim().startsWith(option)) ?? '';
    t.false(/not supported/i.test(entry), entry);
  }
  t.notThrows(() => checkRunnable(parseArgs([...BASE, '--posix-acl', '--security-label', '--xattrmap=:ok:all:::', '--translate-uid=map:0:0:1', '--translate-gid=map:0:0:1'])));
});

// --- the library ---------------------------------------------------------------------------------

const LIB = { sharedDir: '/tmp', fd: 3 } as const;

function libError(t: import('ava').ExecutionContext, options: Record<string, unknown>): OptionError | undefined {
  return t.throws(() => buildDeviceConfig({ ...LIB, ...options } as DeviceOptions), { instanceOf: OptionError });
}

test('library translation rules: typed objects of every type, or upstream strings', (t) => {
  const config = buildDeviceConfig({
    ...LIB,
    translateUid: [
      { type: 'map', guest: 1000, host: 101000, count: 1000 },
      { type: 'guest', guest: 0, host: 65534, count: 1 },
      { type: 'host', host: 0, guest: 5, count: 1 },
      { type: 'squash-guest', guest: 5000, host: 7, count: 10 },
      { type: 'squash-host', host: 200000, guest: 65534, count: 1000 },
      { type: 'forbid-guest', guest: 6000, count: 2 },
    ],
    translateGid: ['MAP/10/20/30'],
  });
  t.deepEqual(config.translateUid, {
    guestToHost: [
      { first: 0, count: 1, kind: 'range', target: 65534 },
      { first: 1000, count: 1000, kind: 'range', target: 101000 },
      { first: 5000, count: 10, kind: 'squash', target: 7 },
      { first: 6000, count: 2, kind: 'fail', target: 0 },
    ],
    hostToGuest: [
      { first: 0, count: 1, kind: 'range', target: 5 },
      { first: 101000, count: 1000, kind: 'range', target: 1000 },
      { first: 200000, count: 1000, kind: 'squash', target: 65534 },
    ],
  });
  t.deepEqual(config.translateGid.guestToHost, [{ first: 10, count: 30, kind: 'range', target: 20 }]);
  t.deepEqual(buildDeviceConfig({ ...LIB, translateUid: [] }).translateUid, { guestToHost: [], hostToGuest: [] });
});

test('library translation rules are strict: shape, fields, types and limits', (t) => {
  const cases: [unknown, string, OptionErrorReason, string | RegExp][] = [
    ['map:1:2:3', 'translateUid', 'invalid-type', /expected an array of translation rules/],
    [[5], 'translateUid[0]', 'invalid-type', /expected a translation rule/],
    [[{ type: 'teleport', guest: 1, host: 2, count: 3 }], 'translateUid[0].type', 'invalid-value', /expected one of guest, host, squash-guest, squash-host, forbid-guest or map/],
    [[{ guest: 1, host: 2, count: 3 }], 'translateUid[0].type', 'missing', /'translateUid\[0\].type' is required/],
    [[{ type: 'map', guest: 1, host: 2, count: 3, extra: 1 }], 'translateUid[0].extra', 'unknown-option', "unknown option 'translateUid[0].extra': a 'map' rule has guest, host or count"],
    [[{ type: 'forbid-guest', guest: 1, host: 2, count: 3 }], 'translateUid[0].host', 'unknown-option', /a 'forbid-guest' rule has guest or count/],
    [[{ type: 'map', guest: 1, count: 3 }], 'translateUid[0].host', 'missing', /'translateUid\[0\].host' is required/],
    [[{ type: 'map', guest: '1', host: 2, count: 3 }], 'translateUid[0].guest', 'invalid-type', /must be an integer between 0 and 4294967295/],
    [[{ type: 'map', guest: 1.5, host: 2, count: 3 }], 'translateUid[0].guest', 'invalid-type', /must be an integer/],
    [[{ type: 'map', guest: -1, host: 2, count: 3 }], 'translateUid[0].guest', 'out-of-range', /between 0 and 4294967295/],
    [[{ type: 'map', guest: 1, host: 2, count: 0 }], 'translateUid[0].count', 'out-of-range', /between 1 and 4294967295/],
    [[{ type: 'map', guest: 4294967295, host: 2, count: 2 }], 'translateUid[0]', 'out-of-range', "invalid value for 'translateUid[0]' (map:4294967295:2:2): the guest range 4294967295-4294967296 passes 4294967295, the largest id"],
    [['guest:1:2'], 'translateUid[0]', 'invalid-value', /'guest' takes 3 values/],
  ];
  for (const [translateUid, key, reason, message] of cases) {
    const error = libError(t, { translateUid });
    t.is(error?.key, key, JSON.stringify(translateUid));
    t.is(error?.reason, reason, JSON.stringify(translateUid));
    if (typeof message === 'string') t.is(error?.message, message);
    else t.regex(error?.message ?? '', message);
  }
  // translateGid is checked the same way.
  t.is(libError(t, { translateGid: [{ type: 'map', guest: 1, host: 2 }] })?.key, 'translateGid[0].count');
});

test('library xattrMap: typed rules or upstream\'s language, compiled alike', (t) => {
  const typed = buildDeviceConfig({
    ...LIB,
    xattrMap: [
      { type: 'prefix', scope: 'client', key: 'trusted.', prepend: 'user.virtiofs.' },
      { type: 'unsupported', scope: 'server', key: '', prepend: 'security.' },
      { type: 'map', key: 'a.', prepend: 'b.' },
    ],
  });
  const text = buildDeviceConfig({ ...LIB, xattrMap: ':prefix:client:trusted.:user.virtiofs.: :unsupported:server::security.: :map:a.:b.:' });
  t.deepEqual(typed.xattrMap, text.xattrMap);
  t.is(typed.xattrMap?.length, 5);
  t.true(typed.xattr, 'xattrMap implies xattr');
  // Names may hold the separators of the rule language.
  t.deepEqual(buildDeviceConfig({ ...LIB, xattrMap: [{ type: 'ok', scope: 'all', key: 'a:b/c', prepend: '' }] }).xattrMap?.[0].key, 'a:b/c');
  t.is(formatXattrRule({ type: 'ok', scope: 'all', key: 'a:b', prepend: '' }), '/ok/all/a:b//');
});

test('library xattrMap is strict', (t) => {
  const cases: [unknown, string, OptionErrorReason, string | RegExp][] = [
    [5, 'xattrMap', 'invalid-type', /expected an array of rules .* or a string of rules/],
    [[], 'xattrMap', 'invalid-value', "invalid value for 'xattrMap': no rules given"],
    ['', 'xattrMap', 'invalid-value', "invalid value '' for 'xattrMap': no rules given"],
    [':ok:nowhere:::', 'xattrMap', 'invalid-value', /rule 1 \(:ok:nowhere:::\): unknown scope 'nowhere'/],
    [[null], 'xattrMap[0]', 'invalid-type', /expected a rule/],
    [[{ type: 'allow', scope: 'all', key: '', prepend: '' }], 'xattrMap[0].type', 'invalid-value', /expected one of prefix, ok, bad, unsupported or map/],
    [[{ type: 'ok', scope: 'everywhere', key: '', prepend: '' }], 'xattrMap[0].scope', 'invalid-value', /expected one of client, server or all/],
    [[{ type: 'ok', key: '', prepend: '' }], 'xattrMap[0].scope', 'missing', /'xattrMap\[0\].scope' is required/],
    [[{ type: 'map', scope: 'all', key: '', prepend: '' }], 'xattrMap[0].scope', 'unknown-option', /a 'map' rule has key or prepend/],
    [[{ type: 'ok', scope: 'all', key: 5, prepend: '' }], 'xattrMap[0].key', 'invalid-type', /expected a string \(it may be empty\)/],
    [[{ type: 'ok', scope: 'all', key: 'a\0b', prepend: '' }], 'xattrMap[0].key', 'invalid-value', /must not contain NUL/],
    [[{ type: 'map', key: '', prepend: 'x.' }, { type: 'ok', scope: 'all', key: '', prepend: '' }], 'xattrMap[0]', 'invalid-value', "invalid value for 'xattrMap[0]': a map rule must be the last rule"],
    [':ok:all:a\0::', 'xattrMap', 'invalid-value', /must not contain NUL/],
  ];
  for (const [xattrMap, key, reason, message] of cases) {
    const error = libError(t, { xattrMap });
    t.is(error?.key, key, JSON.stringify(xattrMap));
    t.is(error?.reason, reason, JSON.stringify(xattrMap));
    if (typeof message === 'string') t.is(error?.message, message);
    else t.regex(error?.message ?? '', message);
  }
});

test('library posixAcl and securityLabel: booleans that imply xattr, which xattr: false contradicts', (t) => {
  const config = buildDeviceConfig({ ...LIB, posixAcl: true, securityLabel: true });
  t.deepEqual([config.posixAcl, config.securityLabel, config.xattr], [true, true, true]);
  t.deepEqual([buildDeviceConfig(LIB).posixAcl, buildDeviceConfig(LIB).securityLabel], [false, false]);
  t.true(buildDeviceConfig({ ...LIB, posixAcl: true, xattr: true }).xattr);
  t.false(buildDeviceConfig({ ...LIB, posixAcl: false, xattr: false }).xattr);
  for (const key of ['posixAcl', 'securityLabel'] as const) {
    const wrong = libError(t, { [key]: 'yes' });
    t.is(wrong?.message, `invalid value for '${key}': expected a boolean`);
    t.is(wrong?.reason, 'invalid-type');
    const conflict = libError(t, { [key]: true, xattr: false });
    t.is(conflict?.message, `'${key}' needs extended attributes, which 'xattr: false' turns off: leave 'xattr' unset or true`);
    t.is(conflict?.key, 'xattr');
    t.is(conflict?.reason, 'conflict');
  }
  t.is(libError(t, { xattrMap: ':ok:all:::', xattr: false })?.reason, 'conflict');
  // Unset (undefined) is "not given", as for every key.
  t.notThrows(() => checkDeviceOptions({ posixAcl: undefined, translateUid: undefined, xattrMap: undefined }));
});

test('warnings reach a library device\'s onLog before it starts', async (t) => {
  requireNative();
  // The device fails at once (its socket's folder does not exist), after the warnings.
  const { result } = await libraryScenario(`
    const records = [];
    const socketPath = path.join(dir, 'no-such-dir', 'x.sock');
    try {
      await lib.startDevice({ sharedDir: dir, socketPath, xattrMap: ':ok:client:::' }, { onLog: (record) => records.push(record.level + ' ' + record.message) });
    } catch (e) {
      return { reason: e.reason, records };
    }
    return { started: true };
  `);
  t.is(result.reason, 'failed');
  t.regex(result.records[0], /^warn 'xattrMap' has no rule matching every host name/);
});

test('cliCompile warnings name the command-line options', (t) => {
  const { warnings } = cliCompile(checkedArgs([...BASE, '--xattrmap=:ok:client:::']));
  t.regex(warnings[0] ?? '', /^'--xattrmap' has no rule/);
});

test('the CLI refuses unusable translation targets with exit 1 (needs an unprivileged user)', (t) => {
  if (isRoot) {
    // Root can act as anyone: nothing to refuse.
    t.notThrows(() => cliConfig(checkedArgs([...BASE, '--translate-uid=squash-guest:0:123456:10'])));
    return;
  }
  const error = cliError(t, [...BASE, '--translate-uid=squash-guest:0:123456:10']);
  t.regex(error?.message ?? '', /cannot act as/);
  t.is(error?.kind, 'environment');
});

// --- explainPolicy, answered by the device's policy code -------------------------------------------

/** `lib.explainPolicy(options, query)` for each query, in a plain Node process on the built package. */
async function explainEach(options: Partial<DeviceOptions>, queries: unknown[]): Promise<any[]> {
  requireNative();
  const { result } = await libraryScenario(`
    const options = ${JSON.stringify(options)};
    return ${JSON.stringify(queries)}.map((query) => {
      try {
        return lib.explainPolicy(options, query);
      } catch (e) {
        return { thrown: { name: e.name, key: e.key, reason: e.reason, message: e.message } };
      }
    });
  `);
  return result as any[];
}

async function explainOne(options: Partial<DeviceOptions>, query: PolicyQuery): Promise<any> {
  return (await explainEach(options, [query]))[0];
}

const OPTIONS: Partial<DeviceOptions> = {
  translateUid: ['map:1000:101000:1000', 'squash-guest:0:65534:1', 'forbid-guest:5000:10'],
  translateGid: [{ type: 'host', host: 100, guest: 7, count: 1 }],
  xattrMap: ':prefix:all:trusted.:user.virtiofs.: :bad:all:user.virtiofs.:trusted.: :unsupported:client:security.:: :ok:all:::',
};

test('explainPolicy: uids there and back, with the rule as written', async (t) => {
  const [mapped, squashed, forbidden, fromHost, uncovered, gid] = await explainEach(OPTIONS, [
    { guestUid: 1005 },
    { guestUid: 0 },
    { guestUid: 5009 },
    { hostUid: 101999 },
    { guestUid: 4000 },
    { hostGid: 100 },
  ]);
  t.deepEqual(mapped, {
    kind: 'uid',
    from: 'guest',
    id: 1005,
    result: 101005,
    rule: { option: 'translateUid', index: 0, text: 'map:1000:101000:1000' },
    back: { id: 1005, rule: { option: 'translateUid', index: 0, text: 'map:1000:101000:1000' } },
    roundTrip: true,
    summary:
      'guest uid 1005 acts as host uid 101005 (translateUid rule 0 (map:1000:101000:1000)); host uid 101005 shows in the guest as uid 1005 (translateUid rule 0 (map:1000:101000:1000)), the id it started as',
  });
  t.like(squashed, { result: 65534, rule: { option: 'translateUid', index: 1, text: 'squash-guest:0:65534:1' }, back: { id: 65534, rule: null }, roundTrip: false });
  t.regex(squashed.summary, /host uid 65534 shows in the guest as uid 65534 \(no translateUid rule covers it\), not 0$/);
  t.like(forbidden, { result: null, back: null, roundTrip: false, rule: { option: 'translateUid', index: 2, text: 'forbid-guest:5000:10' } });
  t.regex(forbidden.summary, /^guest uid 5009 is refused by translateUid rule 2 \(forbid-guest:5000:10\): requests acting as it, or setting it, fail with EPERM$/);
  t.like(fromHost, { from: 'host', result: 1999, back: { id: 101999 }, roundTrip: true });
  t.like(uncovered, { result: 4000, rule: null, back: { id: 4000, rule: null }, roundTrip: true });
  // One-way rules: host gid 100 shows as 7, but the guest's 7 is host 7.
  t.like(gid, { kind: 'gid', result: 7, rule: { option: 'translateGid', index: 0, text: 'host:100:7:1' }, back: { id: 7, rule: null }, roundTrip: false });
});

test('explainPolicy: xattr names there and back', async (t) => {
  const [prefixed, denied, unsupported, hidden, security, plain] = await explainEach(OPTIONS, [
    { guestXattr: 'trusted.overlay.opaque' },
    { guestXattr: 'user.virtiofs.x' },
    { guestXattr: 'security.selinux' },
    { hostXattr: 'trusted.hidden' },
    { hostXattr: 'security.selinux' },
    { guestXattr: 'user.a' },
  ]);
  const rule1 = { option: 'xattrMap', index: 0, text: 'rule 1 (:prefix:all:trusted.:user.virtiofs.:)' };
  t.deepEqual(prefixed, {
    kind: 'xattr',
    from: 'guest',
    name: 'trusted.overlay.opaque',
    outcome: 'renamed',
    result: 'user.virtiofs.trusted.overlay.opaque',
    rule: rule1,
    back: { outcome: 'renamed', name: 'trusted.overlay.opaque', rule: rule1 },
    roundTrip: true,
    summary:
      'guest name trusted.overlay.opaque is stored on the host as user.virtiofs.trusted.overlay.opaque (xattrMap rule 1 (:prefix:all:trusted.:user.virtiofs.:)); host name user.virtiofs.trusted.overlay.opaque is listed to the guest as trusted.overlay.opaque (xattrMap rule 1 (:prefix:all:trusted.:user.virtiofs.:)), the name it started as',
  });
  t.like(denied, { outcome: 'denied', result: null, back: null, rule: { index: 1, text: 'rule 2 (:bad:all:user.virtiofs.:trusted.:)' } });
  t.regex(denied.summary, /refused with EPERM \(ENODATA when read\) by xattrMap rule 2/);
  t.like(unsupported, { outcome: 'unsupported', result: null, rule: { index: 2 } });
  t.like(hidden, { outcome: 'hidden', result: null, rule: { index: 1 } });
  t.regex(hidden.summary, /^host name trusted.hidden is hidden from the guest's listings by xattrMap rule 2/);
  // Rule 3 is for guest names only: the host's security. names are listed, but the guest cannot use them.
  t.like(security, { outcome: 'unchanged', result: 'security.selinux', rule: { index: 3 }, back: { outcome: 'unsupported', name: null, rule: { index: 2 } }, roundTrip: false });
  t.like(plain, { outcome: 'unchanged', result: 'user.a', roundTrip: true, rule: { index: 3, text: 'rule 4 (:ok:all:::)' } });
});

test('explainPolicy: added catch-alls, map expansions, no map, no xattr', async (t) => {
  const [added] = await explainEach({ xattrMap: [{ type: 'ok', scope: 'all', key: 'user.', prepend: 'user.' }] }, [{ guestXattr: 'trusted.x' }]);
  t.like(added, { outcome: 'denied', rule: { option: 'xattrMap', index: null, text: 'the catch-all :bad:all::: added after the last rule' } });
  // A map rule's expansion is reported as the map rule.
  t.like(await explainOne({ xattrMap: ':map::user.virtiofs.:' }, { hostXattr: 'user.plain' }), { outcome: 'hidden', rule: { index: 0, text: 'rule 1 (:map::user.virtiofs.:)' } });
  // Without a map names pass; without xattr at all nothing is served.
  t.like(await explainOne({ xattr: true }, { guestXattr: 'user.a' }), { outcome: 'unchanged', result: 'user.a', rule: null, roundTrip: true });
  t.like(await explainOne({}, { guestXattr: 'user.a' }), { outcome: 'not-served', result: null, rule: null });
  t.like(await explainOne({ posixAcl: true }, { guestXattr: 'system.posix_acl_access' }), { outcome: 'unchanged' });
  // Without posixAcl the ACL names are refused and hidden, after the map for host names.
  const [refusedAcl, hiddenAcl] = await explainEach({ xattr: true }, [{ guestXattr: 'system.posix_acl_access' }, { hostXattr: 'system.posix_acl_default' }]);
  t.like(refusedAcl, { outcome: 'unsupported', result: null, rule: null });
  t.is(refusedAcl.summary, 'guest name system.posix_acl_access is refused with EOPNOTSUPP because posixAcl is off (the guest kernel would not apply POSIX ACLs, so their names are refused and not listed)');
  t.like(hiddenAcl, { outcome: 'hidden', result: null, rule: null });
  const mapped = await explainOne({ xattrMap: ':map::user.virtiofs.:' }, { hostXattr: 'user.virtiofs.system.posix_acl_access' });
  t.like(mapped, { outcome: 'hidden', rule: { index: 0 } });
  t.regex(mapped.summary, /hidden from the guest's listings after xattrMap rule 1 \(:map::user.virtiofs.:\), because posixAcl is off/);
});

test('explainPolicy checks options and queries as strictly as startDevice', async (t) => {
  const refusals = await explainEach({}, [{}, { guestUid: 1, hostUid: 2 }, { guestUser: 1 }, { guestUid: -1 }, { hostGid: 2 ** 32 }, { guestXattr: '' }, { hostXattr: 5 }, null]);
  t.deepEqual(
    refusals.map((answer) => [answer.thrown?.name, answer.thrown?.key, answer.thrown?.reason]),
    [
      ['OptionError', 'query', 'missing'],
      ['OptionError', 'query', 'conflict'],
      ['OptionError', 'query.guestUser', 'unknown-option'],
      ['OptionError', 'query.guestUid', 'out-of-range'],
      ['OptionError', 'query.hostGid', 'out-of-range'],
      ['OptionError', 'query.guestXattr', 'invalid-value'],
      ['OptionError', 'query.hostXattr', 'invalid-type'],
      ['OptionError', 'query', 'invalid-type'],
    ],
  );
  const badOptions: [Partial<DeviceOptions>, string][] = [
    [{ translateUid: ['map:1:2'] }, 'translateUid[0]'],
    [{ readOnly: true } as never, 'readOnly'],
    [{ translateUid: ['map:0:0:10', 'guest:5:0:1'] }, 'translateUid[1]'],
    [{ xattrMap: ':ok:all:::', xattr: false }, 'xattr'],
  ];
  for (const [options, key] of badOptions) t.is((await explainOne(options, { guestUid: 1 })).thrown?.key, key);
});

test('the library loads the addon only when explainPolicy is called', (t) => {
  requireNative();
  const probe = `
    const lib = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
    const loaded = () => Object.keys(require.cache).filter((file) => file.endsWith('.node'));
    const before = loaded();
    lib.explainPolicy({ translateUid: ['map:0:100:10'] }, { guestUid: 3 });
    console.log(JSON.stringify({ before, after: loaded() }));
  `;
  const run = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', timeout: 30_000 });
  t.is(run.status, 0, run.stderr);
  const { before, after } = JSON.parse(run.stdout) as { before: string[]; after: string[] };
  t.deepEqual(before, []);
  t.is(after.length, 1);
  t.regex(after[0], /virtiofsd\.linux-[a-z0-9]+-[a-z]+\.node$/);
});

test('the built CLI accepts the policy options and reports errors with the right exit status', (t) => {
  ensureBuilt();
  const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 30_000 });
  const overlap = run([...BASE, '--translate-uid=guest:1000:2000:10', '--translate-uid=map:1005:3000:10']);
  t.is(overlap.status, 1);
  t.is(overlap.stderr, "virtiofsd: '--translate-uid' rules 'guest:1000:2000:10' and 'map:1005:3000:10' overlap: both translate guest uids 1005-1009\nFor more information, try '--help'.\n");
  const syntax = run([...BASE, '--xattrmap=:ok:all:::  :bad:nowhere:::']);
  t.is(syntax.status, 2);
  t.true(syntax.stderr.startsWith("virtiofsd: invalid value ':ok:all:::  :bad:nowhere:::' for '--xattrmap': rule 2 (:bad:nowhere:::): unknown scope 'nowhere'"), syntax.stderr);
  t.is(run(['--translate-uid=map:1:2:3', '--posix-acl', '--print-capabilities']).status, 0);
});
