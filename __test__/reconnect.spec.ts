// Serving across reconnects with a real guest: with --reconnect the device outlives its QEMU, and
// a new QEMU attached to the same socket gets a fresh session its guest mounts and uses. Without
// it, the device ends with its frontend, as upstream's does.
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startGuest } from './guest/harness.ts';

const FIRST = `echo "from the first guest" > first || exit 1
cat first
`;
const SECOND = `cat first || exit 1
echo "from the second guest" > second || exit 1
cat second
ls
`;

async function share(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-reconnect-'));
  await fs.chmod(dir, 0o755);
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

test.serial('--reconnect: QEMU quits, a new QEMU attaches to the same socket and its guest mounts and uses the share', async (t) => {
  const dir = await share(t);
  const daemon = { kind: 'ours' as const, extraArgs: ['--reconnect'] };
  const first = await startGuest({ daemon, sharedDir: dir, script: FIRST });
  t.teardown(() => first.stop());
  const run1 = await first.wait(180_000, { daemonStays: true });
  t.is(run1.status, 0, run1.output);
  t.is(run1.output, 'from the first guest\n');
  t.is(first.daemon.exitCode, null, `the device ended with its first frontend:\n${first.daemonStderr().slice(-3000)}`);

  const second = await startGuest({ daemon, sharedDir: dir, script: SECOND, attachTo: first });
  t.teardown(() => second.stop());
  const run2 = await second.wait(180_000);
  t.is(run2.status, 0, `${run2.output}\n--- daemon ---\n${first.daemonStderr().slice(-3000)}`);
  t.is(run2.output, 'from the first guest\nfrom the second guest\nfirst\nsecond\n');
  t.is(await fs.readFile(path.join(dir, 'second'), 'utf8'), 'from the second guest\n');
  t.is(first.daemon.exitCode, null, 'the device is still listening for a third frontend');
  t.regex(first.daemonStderr(), /waiting for the next vhost-user frontend/);
});

test.serial('without --reconnect the device ends (status 0) when its QEMU quits', async (t) => {
  const dir = await share(t);
  const guest = await startGuest({ daemon: { kind: 'ours' }, sharedDir: dir, script: FIRST });
  t.teardown(() => guest.stop());
  const run = await guest.wait(180_000);
  t.is(run.status, 0, run.output);
  t.deepEqual(run.daemonExit, { code: 0, signal: null, exitedOnItsOwn: true });
});
