// Several request queues from the command line: QEMU decides how many (num-request-queues), the
// device started with no queue option serves them all, and its per-queue statistics (SIGUSR1)
// show which queues carried the guest's requests. A guest with 4 request queues on 2 vCPUs.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGuest, type Guest } from './guest/harness.ts';

interface QueueStats {
  requests: number;
}

const FILES = 200;

function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

async function until<T>(what: string, guest: Guest, deadline: number, probe: () => T | undefined): Promise<T> {
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what} did not happen in time:\n${guest.console().slice(-3000)}\n${guest.daemonStderr()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The device's statistics line after SIGUSR1 number `n` (counting from 1). */
async function stats(guest: Guest, n: number, deadline: number): Promise<{ queues: QueueStats[] }> {
  guest.daemon.kill('SIGUSR1');
  const line = await until('a statistics line', guest, deadline, () => guest.daemonStderr().split('\n').filter((l) => l.startsWith('{"event":"stats"'))[n - 1]);
  return JSON.parse(line).stats;
}

interface Outcome {
  output: string;
  /** Requests per request queue (the hiprio queue left out). */
  requestQueues: number[];
  daemonStderr: string;
}

/** Boots a guest with `queues` request queues and `vcpus` vCPUs on a device with no queue option. */
async function readOnEveryCpu(queues: number, vcpus: number): Promise<Outcome> {
  const share = tempDir('vfsd-mq-');
  for (let i = 0; i < FILES; i++) fs.writeFileSync(path.join(share, `f${i}`), `file ${i}\n`);
  // One reader pinned to each CPU the guest has: the driver sends a CPU's requests on the queue
  // it mapped to that CPU. Then the guest waits for the host to read the statistics.
  const script = [
    'set -e',
    'cpus=$(nproc)',
    'echo "cpus $cpus"',
    'c=0; while [ $c -lt $cpus ]; do',
    '  taskset -c $c sh -c \'for r in 1 2 3; do for f in f*; do cat "$f" > /dev/null; done; echo 3 > /proc/sys/vm/drop_caches; done\' &',
    '  c=$((c + 1))',
    'done',
    'wait',
    'echo "read ok"',
    'touch read-done',
    'i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done',
  ].join('\n');
  const guest = await startGuest({ daemon: { kind: 'ours' }, sharedDir: share, script, numRequestQueues: queues, vcpus, timeoutMs: 240_000 });
  try {
    const deadline = Date.now() + 200_000;
    await until('the guest reads', guest, deadline, () => (fs.existsSync(path.join(share, 'read-done')) ? true : undefined));
    const { queues: counted } = await stats(guest, 1, deadline);
    fs.writeFileSync(path.join(share, 'go'), '');
    const run = await guest.wait(120_000);
    if (run.status !== 0 || !run.output.includes('read ok')) throw new Error(`guest failed:\n${run.output}\n${run.daemonStderr}`);
    return { output: run.output, requestQueues: counted.slice(1).map((q) => q.requests), daemonStderr: run.daemonStderr };
  } finally {
    await guest.stop();
    fs.rmSync(share, { recursive: true, force: true });
  }
}

test.serial('4 request queues on 4 vCPUs: the device needs no option and every queue carries requests', async (t) => {
  const run = await readOnEveryCpu(4, 4);
  t.log(`requests per request queue: ${run.requestQueues.join(', ')}`);
  t.regex(run.output, /cpus 4/);
  t.is(run.requestQueues.length, 4, `statistics: ${run.requestQueues.join(', ')}`);
  for (const [i, n] of run.requestQueues.entries()) t.true(n > 0, `request queue ${i + 1} carried ${n} requests`);
});

test.serial('4 request queues on 2 vCPUs: the device serves the 4 QEMU sets up; the guest driver uses one per CPU', async (t) => {
  const run = await readOnEveryCpu(4, 2);
  t.log(`requests per request queue: ${run.requestQueues.join(', ')}`);
  t.regex(run.output, /cpus 2/);
  t.false(/invalid parameters|protocol error/.test(run.daemonStderr), run.daemonStderr);
  // Linux's driver uses at most as many request queues as the guest can have CPUs, so the
  // queues past the second stay idle (and are left out of the statistics).
  t.deepEqual(run.requestQueues.map((n) => n > 0), [true, true], `statistics: ${run.requestQueues.join(', ')}`);
});
