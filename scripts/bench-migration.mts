// Migration benchmark: live migration of one TCG guest between two QEMU 10 processes on this
// host, each with its own daemon over the same shared directory, served by this daemon and by the
// reference (upstream virtiofsd), alternately. The guest runs scripts/guest/migration-loop.sh (small
// appends, writes and reads over a dozen files) throughout; QEMU's
// query-migrate gives the downtime (guest paused: the last RAM pages plus the daemons' state
// transfer) and the total time. Both daemons run with their defaults (sandbox and seccomp on).
// Progress goes to stderr, the table (medians, ratio ours/reference; below 1: ours faster) to stdout.
//
// With --files N the guest first creates N empty files (and so keeps N inodes looked up), which the
// daemons' state must carry: the downtime then shows what the state transfer costs each daemon.
//
//   node --import @oxc-node/core/register scripts/bench-migration.mts [--rounds N] [--json] [--memory-mib N] [--files N]
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { provision, repoRoot, type MigrationResult } from '../__test__/guest/harness.ts';
import { checkSeq, MigrationPair, readScript, seqCount, until } from '../__test__/guest/migration.ts';
import { helper, removeHelper } from '../__test__/guest/suite.ts';
import type { CpioEntry } from '../__test__/guest/cpio.ts';

type Kind = 'ours' | 'reference';
const KINDS: readonly Kind[] = ['ours', 'reference'];
const METRICS = ['downtimeMs', 'totalTimeMs', 'setupTimeMs'] as const;
type Metric = (typeof METRICS)[number];

class UsageError extends Error {}
const log = (msg: string): void => void process.stderr.write(`bench:migration: ${msg}\n`);

function positiveInt(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function once(kind: Kind, memoryMiB: number, script: string, files: CpioEntry[]): Promise<MigrationResult> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-benchmig-'));
  const pair = await MigrationPair.start({ source: { kind }, sharedDir: dir, script, memoryMiB, files });
  try {
    await until('the loop to run', async () => ((await seqCount(dir)) >= 30 ? true : undefined), 600_000, pair.source);
    const result = await pair.migrate();
    if (result.status !== 'completed') {
      throw new Error(`migration ${result.status} with ${kind}: ${result.errorDesc ?? ''}\n${pair.dest?.daemonStderr().slice(-2000) ?? ''}`);
    }
    const at = await seqCount(dir);
    await until('the loop to go on on the destination', async () => ((await seqCount(dir)) >= at + 10 ? true : undefined), 120_000, pair.dest);
    await fs.writeFile(path.join(dir, 'stop'), '');
    const run = await pair.dest!.wait(60_000);
    const seq = await checkSeq(dir);
    if (run.status !== 0 || seq.fault) throw new Error(`guest failed after the move with ${kind}: ${run.output.slice(-2000)} ${seq.fault ?? ''}`);
    return result;
  } finally {
    await pair.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { rounds: { type: 'string' }, json: { type: 'boolean', default: false }, 'memory-mib': { type: 'string' }, files: { type: 'string' } },
    strict: true,
  });
  const rounds = positiveInt('rounds', values.rounds, 5);
  const memoryMiB = positiveInt('memory-mib', values['memory-mib'], 512);
  const manyFiles = values.files === '0' ? 0 : positiveInt('files', values.files, 0);
  await fs.access(path.join(repoRoot, 'dist', 'cli.js')).catch(() => {
    throw new UsageError('our daemon is not built: dist/cli.js is missing (run `npm run build`)');
  });
  log('provisioning QEMU 10, guest kernel and reference daemon');
  await provision();
  const loop = await readScript('migration-loop.sh', repoRoot);
  const script = manyFiles ? `mkdir many && /test/cx mkfiles many ${manyFiles} >/dev/null || exit 1\n${loop}` : loop;
  const files: CpioEntry[] = manyFiles ? [{ name: 'test/cx', data: (await helper()).data, mode: 0o755 }] : [];
  const samples: Record<Kind, MigrationResult[]> = { ours: [], reference: [] };
  for (let round = 1; round <= rounds; round++) {
    for (const kind of round % 2 ? KINDS : [...KINDS].reverse()) {
      const r = await once(kind, memoryMiB, script, files);
      log(`round ${round}/${rounds}: ${kind}: downtime ${r.downtimeMs} ms, total ${r.totalTimeMs} ms, setup ${r.setupTimeMs} ms`);
      samples[kind].push(r);
    }
  }
  const rows = METRICS.map((metric: Metric) => {
    const ours = median(samples.ours.map((s) => s[metric] ?? NaN));
    const reference = median(samples.reference.map((s) => s[metric] ?? NaN));
    return { metric, ours, reference, ratio: ours / reference };
  });
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' }).trim();
  } catch {}
  if (values.json) {
    const raw = Object.fromEntries(KINDS.map((k) => [k, samples[k].map(({ raw: _raw, ...rest }) => rest)]));
    process.stdout.write(JSON.stringify({ commit, rounds, memoryMiB, files: manyFiles, unit: 'ms', rows, samples: raw }, null, 2) + '\n');
    return;
  }
  const names: Record<Metric, string> = { downtimeMs: 'downtime', totalTimeMs: 'total time', setupTimeMs: 'setup' };
  process.stdout.write(
    [
      `Live migration of a ${memoryMiB} MiB TCG guest looping over files${manyFiles ? `, ${manyFiles} more files looked up` : ''} (QEMU 10, unix socket, one host), median of ${rounds} round(s), ms; commit ${commit}; ratio = ours / reference (below 1: ours faster)`,
      '',
      '| metric | ours (ms) | reference (ms) | ratio |',
      '| --- | ---: | ---: | ---: |',
      ...rows.map((r) => `| ${names[r.metric]} | ${r.ours} | ${r.reference} | ${r.ratio.toFixed(2)} |`),
    ].join('\n') + '\n',
  );
}

main()
  .finally(() => removeHelper())
  .catch((err: unknown) => {
  if (err instanceof UsageError || (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
    process.stderr.write(`bench:migration: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`bench:migration: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
