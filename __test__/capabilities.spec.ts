import test from 'ava';
import { spawnSync } from 'node:child_process';
import { CAPABILITIES, capabilitiesText } from '../ts/help.ts';
import { provision } from './guest/harness.ts';
import { cli, ensureBuilt } from './support/build.ts';

test.before(() => ensureBuilt());

// As upstream: pre-copy migration of the device state, and options apart from the program name.
const EXPECTED = { type: 'fs', features: ['migrate-precopy', 'separate-options'] };
const PRINTED = '{\n  "type": "fs",\n  "features": [\n    "migrate-precopy",\n    "separate-options"\n  ]\n}\n';

test('--print-capabilities prints the vhost-user.json capabilities and exits 0', (t) => {
  const result = spawnSync(process.execPath, [cli, '--print-capabilities'], { encoding: 'utf8' });
  t.is(result.status, 0);
  t.is(result.stderr, '');
  t.deepEqual(JSON.parse(result.stdout), EXPECTED);
  // Same layout as upstream: two-space indentation, one feature per line.
  t.is(result.stdout, PRINTED);
});

test('--print-capabilities needs no other option and ignores them', (t) => {
  const result = spawnSync(process.execPath, [cli, '--shared-dir', '/nonexistent', '--print-capabilities'], { encoding: 'utf8' });
  t.is(result.status, 0);
  t.deepEqual(JSON.parse(result.stdout), EXPECTED);
});

test('--print-capabilities still rejects malformed command lines', (t) => {
  const result = spawnSync(process.execPath, [cli, '--print-capabilities', '--bogus'], { encoding: 'utf8' });
  t.is(result.status, 2, 'a usage error, as upstream');
  t.is(result.stdout, '');
});

test('the exported constant is what the command prints', (t) => {
  t.deepEqual(CAPABILITIES, EXPECTED);
  t.is(capabilitiesText(), PRINTED);
});

test('--print-capabilities matches the reference daemon', async (t) => {
  const { reference } = await provision();
  const theirs = spawnSync(reference, ['--print-capabilities'], { encoding: 'utf8' });
  t.is(theirs.status, 0, theirs.stderr);
  const ours = spawnSync(process.execPath, [cli, '--print-capabilities'], { encoding: 'utf8' });
  t.deepEqual(JSON.parse(ours.stdout), JSON.parse(theirs.stdout));
  t.is(ours.stdout, theirs.stdout, 'the same text, byte for byte');
});
