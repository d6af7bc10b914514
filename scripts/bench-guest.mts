// `npm run bench:guest`: one file-system workload in a TCG guest, served by this daemon and by the
// reference (upstream virtiofsd), alternately, with per-phase wall times measured inside the guest.
// The guest workload is scripts/guest/bench-workload.sh. Progress goes to stderr, the result table
// (medians over rounds, ratio ours/reference; below 1 means this daemon was faster) to stdout.
//
//   npm run bench:guest [-- --rounds N] [--json] [--big-mib N] [--rand-ops N]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { provision, repoRoot, runGuest, type DaemonSpec } from '../__test__/guest/harness.ts';

const TREE_DIRS = 50;
const FILES_PER_DIR = 100;
const TREE_FILES = TREE_DIRS * FILES_PER_DIR;
const PHASES = ['untar', 'find', 'grep', 'rm', 'seqwrite', 'seqread', 'randread', 'randwrite', 'total'] as const;
type Phase = (typeof PHASES)[number];
type Kind = 'ours' | 'reference';
const KINDS: readonly Kind[] = ['ours', 'reference'];
// Both daemons run the same way: the reference would otherwise add a namespace sandbox and a
// seccomp filter, which this daemon does not implement.
const DAEMON_ARGS = ['--sandbox=none', '--seccomp=none'];

class UsageError extends Error {}

interface Options {
  rounds: number;
  json: boolean;
  bigMiB: number;
  randOps: number;
}

function positiveInt(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: 'string' },
      json: { type: 'boolean', default: false },
      'big-mib': { type: 'string' },
      'rand-ops': { type: 'string' },
    },
    strict: true,
  });
  return {
    rounds: positiveInt('rounds', values.rounds, 1),
    json: values.json ?? false,
    bigMiB: positiveInt('big-mib', values['big-mib'], 256),
    randOps: positiveInt('rand-ops', values['rand-ops'], 500),
  };
}

const log = (msg: string): void => void process.stderr.write(`bench:guest: ${msg}\n`);

/** A deterministic source tree: small text files of varied size, every seventh one holding "needle". */
async function makeTreeTar(): Promise<Buffer> {
  const stage = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-bench-tree-'));
  try {
    for (let d = 0; d < TREE_DIRS; d++) {
      const dir = path.join(stage, 'tree', `d${d}`);
      await fs.mkdir(dir, { recursive: true });
      for (let f = 0; f < FILES_PER_DIR; f++) {
        const i = d * FILES_PER_DIR + f;
        const lines = 4 + ((i * 37) % 60);
        let text = '';
        for (let l = 0; l < lines; l++) text += `file ${i} line ${l}: the quick brown fox jumps over the lazy dog\n`;
        if (i % 7 === 0) text += 'needle\n';
        await fs.writeFile(path.join(dir, `f${f}.txt`), text);
      }
    }
    const tar = spawnSync('tar', ['-cf', '-', '-C', stage, 'tree'], { maxBuffer: 256 << 20 });
    if (tar.error) throw new Error(`cannot run tar (needed to build the guest's file tree): ${tar.error.message}`);
    if (tar.status !== 0) throw new Error(`tar failed (exit ${tar.status}): ${tar.stderr.toString()}`);
    return tar.stdout;
  } finally {
    await fs.rm(stage, { recursive: true, force: true });
  }
}

function parsePhases(output: string): Record<Phase, number> {
  const found = new Map<string, number>();
  for (const m of output.matchAll(/^PHASE (\S+) (\d+)$/gm)) found.set(m[1]!, Number(m[2]) / 1e6);
  const result = {} as Record<Phase, number>;
  for (const phase of PHASES) {
    const seconds = found.get(phase);
    if (seconds === undefined) throw new Error(`guest output lacks phase "${phase}":\n${output.slice(-4000)}`);
    result[phase] = seconds;
  }
  return result;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function runOnce(kind: Kind, opts: Options, tarball: Buffer, script: string): Promise<Record<Phase, number>> {
  const share = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-bench-share-'));
  try {
    const daemon: DaemonSpec = { kind, extraArgs: DAEMON_ARGS };
    const vars = `TREE_TAR=/test/tree.tar TREE_FILES=${TREE_FILES} BIG_MIB=${opts.bigMiB} RAND_OPS=${opts.randOps}\n`;
    const run = await runGuest({
      daemon,
      sharedDir: share,
      script: vars + script,
      files: [{ name: 'test/tree.tar', data: tarball, mode: 0o644 }],
      memoryMiB: 1024,
      timeoutMs: 30 * 60_000,
    });
    if (run.status !== 0) throw new Error(`guest workload failed against ${kind} (status ${run.status}):\n${run.output.slice(-4000)}`);
    return parsePhases(run.output);
  } finally {
    await fs.rm(share, { recursive: true, force: true });
  }
}

function fmt(n: number, digits = 2): string {
  return n.toFixed(digits);
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const cli = path.join(repoRoot, 'dist', 'cli.js');
  await fs.access(cli).catch(() => {
    throw new Error(`our daemon is not built: ${path.relative(repoRoot, cli)} is missing (run \`npm run build\`)`);
  });
  const script = await fs.readFile(path.join(repoRoot, 'scripts', 'guest', 'bench-workload.sh'), 'utf8');
  log('provisioning QEMU, guest kernel and reference daemon');
  await provision();
  const tarball = await makeTreeTar();
  const samples: Record<Kind, Record<Phase, number>[]> = { ours: [], reference: [] };
  for (let round = 1; round <= opts.rounds; round++) {
    // Alternate which daemon goes first so that drift on the machine falls on both.
    for (const kind of round % 2 ? KINDS : [...KINDS].reverse()) {
      log(`round ${round}/${opts.rounds}: ${kind}`);
      const phases = await runOnce(kind, opts, tarball, script);
      log(`  ${PHASES.map((p) => `${p} ${fmt(phases[p])}s`).join(', ')}`);
      samples[kind].push(phases);
    }
  }
  const rows = PHASES.map((phase) => {
    const ours = median(samples.ours.map((s) => s[phase]));
    const reference = median(samples.reference.map((s) => s[phase]));
    return { phase, ours, reference, ratio: ours / reference };
  });
  if (opts.json) {
    const workload = { treeFiles: TREE_FILES, bigMiB: opts.bigMiB, randOps: opts.randOps };
    process.stdout.write(JSON.stringify({ rounds: opts.rounds, workload, unit: 'seconds', phases: rows, samples }, null, 2) + '\n');
    return;
  }
  const lines = [
    `Guest workload (TCG, ${TREE_FILES} files, ${opts.bigMiB} MiB file, ${opts.randOps} random 4 KiB reads and writes), median of ${opts.rounds} round(s), seconds; ratio = ours / reference (below 1: ours faster)`,
    '',
    '| phase | ours (s) | reference (s) | ratio |',
    '| --- | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.phase} | ${fmt(r.ours)} | ${fmt(r.reference)} | ${fmt(r.ratio)} |`),
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((err: unknown) => {
  if (err instanceof UsageError || (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
    process.stderr.write(`bench:guest: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`bench:guest: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
