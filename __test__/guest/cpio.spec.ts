// The archive writer checked against GNU cpio, and the guest report parser.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { cpioArchive } from './cpio.ts';
import { parseReport } from './harness.ts';

test('cpioArchive output is read back by cpio with names, modes and contents intact', async (t) => {
  const archive = cpioArchive([
    { name: 'test', mode: 0o755 },
    { name: 'test/run.sh', data: 'echo hi\n', mode: 0o755 },
    { name: 'test/odd', data: Buffer.from([0, 1, 2]), mode: 0o600 },
  ]);
  t.is(archive.length % 4, 0);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'cpio-spec-'));
  try {
    const result = spawnSync('cpio', ['-id', '--quiet', '--no-absolute-filenames'], { cwd: dir, input: archive });
    t.is(result.status, 0, `cpio (needed: run scripts/provision.sh) failed: ${result.error?.message ?? result.stderr}`);
    t.is(await fs.readFile(path.join(dir, 'test/run.sh'), 'utf8'), 'echo hi\n');
    t.deepEqual([...(await fs.readFile(path.join(dir, 'test/odd')))], [0, 1, 2]);
    t.is((await fs.stat(path.join(dir, 'test/run.sh'))).mode & 0o777, 0o755);
    t.is((await fs.stat(path.join(dir, 'test/odd'))).mode & 0o777, 0o600);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('cpioArchive rejects absolute or empty names', (t) => {
  t.throws(() => cpioArchive([{ name: '/etc/passwd', data: '' }]), { message: /relative/ });
  t.throws(() => cpioArchive([{ name: '' }]), { message: /relative/ });
});

test('parseReport extracts output and status, and rejects truncated reports', (t) => {
  const report = 'noise\n=== GUEST OUTPUT BEGIN ===\na: 1\r\nb: 2\n=== GUEST OUTPUT END ===\n=== GUEST STATUS 3 ===\n';
  t.deepEqual(parseReport(report), { output: 'a: 1\nb: 2\n', status: 3 });
  t.is(parseReport('=== GUEST OUTPUT BEGIN ===\na: 1\n'), undefined);
  t.is(parseReport('=== GUEST OUTPUT BEGIN ===\n=== GUEST OUTPUT END ===\n'), undefined);
});
