// The guest harness itself, driven by the reference daemon so it does not depend on ours being built.
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GuestError, provision, runGuest } from './harness.ts';

async function tempShare(t: { teardown: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-harness-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

test.serial('runGuest returns the script output and exit status, and extra files reach the guest', async (t) => {
  const paths = await provision();
  const dir = await tempShare(t);
  await fs.writeFile(path.join(dir, 'host.txt'), 'from host\n');
  const run = await runGuest({
    daemon: { argv: [paths.reference] },
    sharedDir: dir,
    files: [{ name: 'test/data.txt', data: 'extra file\n', mode: 0o644 }],
    script: 'cat host.txt; cat /test/data.txt; pwd; echo made > guest.txt; echo oops >&2; exit 7\n',
  });
  t.is(run.output, 'from host\nextra file\n/mnt\noops\n');
  t.is(run.status, 7);
  t.is(await fs.readFile(path.join(dir, 'guest.txt'), 'utf8'), 'made\n');
  t.deepEqual(run.daemonExit, { code: 0, signal: null, exitedOnItsOwn: true });
  t.regex(run.console, /GUEST STATUS 7/);
  t.log(`minimal guest run: ${run.durationMs} ms`);
});

test.serial('runGuest kills everything and fails with the console when the guest hangs', async (t) => {
  const dir = await tempShare(t);
  const error = await t.throwsAsync(
    runGuest({ daemon: { kind: 'reference' }, sharedDir: dir, script: 'echo stuck; sleep 600\n', timeoutMs: 5_000 }),
    { instanceOf: GuestError, message: /timed out after 5000 ms/ },
  );
  t.regex(error?.console ?? '', /SeaBIOS|Booting/);
});

test.serial('runGuest fails clearly when the daemon cannot start', async (t) => {
  const dir = await tempShare(t);
  await t.throwsAsync(
    runGuest({ daemon: { argv: ['/bin/false'] }, sharedDir: dir, script: 'true\n', timeoutMs: 10_000 }),
    { instanceOf: GuestError, message: /daemon exited .* before creating its socket/ },
  );
});

test.serial('runGuest fails promptly when the daemon dies while the guest runs', async (t) => {
  const paths = await provision();
  const dir = await tempShare(t);
  // The wrapper shell is "the daemon": it runs the reference, kills it after 3 s and exits 9.
  const wrapper = ['sh', '-c', '"$0" "$@" & pid=$!; sleep 3; kill -9 $pid; exit 9', paths.reference];
  const started = Date.now();
  await t.throwsAsync(
    runGuest({ daemon: { argv: wrapper }, sharedDir: dir, script: 'sleep 600\n', timeoutMs: 60_000 }),
    { instanceOf: GuestError, message: /daemon exited \(code 9, signal null\) while the guest was running/ },
  );
  t.true(Date.now() - started < 30_000, 'the run should end soon after the daemon died, not at the timeout');
});

test('runGuest rejects a mount tag QEMU or the kernel command line would mangle', async (t) => {
  await t.throwsAsync(
    runGuest({ daemon: { kind: 'reference' }, sharedDir: os.tmpdir(), script: 'true\n', tag: 'a,b' }),
    { message: /invalid mount tag/ },
  );
});

test.serial('runGuest reports a daemon command that cannot be spawned', async (t) => {
  const dir = await tempShare(t);
  await t.throwsAsync(
    runGuest({ daemon: { argv: ['/nonexistent/daemon'] }, sharedDir: dir, script: 'true\n', timeoutMs: 10_000 }),
    { message: /cannot start daemon \/nonexistent\/daemon: .*ENOENT/ },
  );
});
