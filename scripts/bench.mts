// `npm run bench`: daemon-only benchmark. The load generator `virtiofsd-load` (crates/frontend) is
// the vhost-user frontend: no guest, no QEMU, so the numbers are the daemons' own. Each workload runs
// against this daemon and the reference (upstream virtiofsd), a fresh daemon per run, in rotating
// order, and natively (the same system calls on the host directory, by the load tool itself), while
// the device process's CPU time, memory and descriptors are sampled from /proc. Modes (scripts/bench/
// modes.mts) choose the daemons' options and request queues; each mode is a table of its own.
// Sections by name: "scale" (scripts/bench-scale.mts: idle devices' memory and time to listen) and
// "inodes" (scripts/bench/inodes.mts: a million inodes held by each daemon).
// Progress goes to stderr; results to stdout.
//
//   npm run bench [-- --mode M,…] [--filter REGEX] [--rounds N] [--seconds S] [--json] [--no-build]
//                 [--load-tool PATH] [--scale-devices N,M] [--scale-starts K] [--inodes-files N] [--inodes-dir PATH]
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { provision } from '../__test__/guest/harness.ts';
import { parseScaleOptions, runScale, scaleTable, type ScaleOptions, type ScaleReport } from './bench-scale.mts';
import { ensureDaemonBuilt, ensureLoadTool } from './bench/build.mts';
import { errorText, log, UsageError } from './bench/common.mts';
import { makeFixtures } from './bench/fixtures.mts';
import { defaultInodesDir, inodesTable, runInodes, type InodesOptions, type InodesReport } from './bench/inodes.mts';
import { failuresOf, MODES, runMode, type Env, type Mode, type ModeReport } from './bench/modes.mts';
import { multiqueueTable, pairTable } from './bench/report.mts';

interface Options {
  modes: Mode[];
  modeGiven: boolean;
  filter: RegExp;
  filterGiven: boolean;
  rounds: number;
  seconds: number;
  json: boolean;
  build: boolean;
  loadTool?: string;
  scale: ScaleOptions;
  inodes: InodesOptions;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      mode: { type: 'string' },
      filter: { type: 'string' },
      rounds: { type: 'string' },
      seconds: { type: 'string' },
      json: { type: 'boolean', default: false },
      'no-build': { type: 'boolean', default: false },
      'load-tool': { type: 'string' },
      'scale-devices': { type: 'string' },
      'scale-starts': { type: 'string' },
      'inodes-files': { type: 'string' },
      'inodes-dir': { type: 'string' },
    },
    strict: true,
  });
  const names = (values.mode ?? MODES.map((m) => m.name).join(',')).split(',').map((s) => s.trim());
  const modes: Mode[] = [];
  for (const name of names) {
    const mode = MODES.find((m) => m.name === name);
    if (!mode) throw new UsageError(`--mode: unknown mode '${name}' (modes: ${MODES.map((m) => m.name).join(', ')})`);
    if (!modes.includes(mode)) modes.push(mode);
  }
  // The unsandboxed table is what the other modes are read against: it goes first.
  modes.sort((a, b) => MODES.indexOf(a) - MODES.indexOf(b));
  let filter: RegExp;
  try {
    filter = new RegExp(values.filter ?? '');
  } catch (err) {
    throw new UsageError(`--filter is not a valid regular expression: ${(err as Error).message}`);
  }
  const rounds = Number(values.rounds ?? '3');
  if (!Number.isSafeInteger(rounds) || rounds < 1) throw new UsageError(`--rounds must be a positive integer, got ${values.rounds}`);
  const seconds = Number(values.seconds ?? '3');
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 3600) throw new UsageError(`--seconds must be a number in (0, 3600], got ${values.seconds}`);
  let scale: ScaleOptions;
  try {
    scale = parseScaleOptions(values['scale-devices'], values['scale-starts']);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const files = Number(values['inodes-files'] ?? '1000000');
  if (!Number.isSafeInteger(files) || files < 1 || files > 100_000_000) throw new UsageError(`--inodes-files must be an integer in [1, 100000000], got ${values['inodes-files']}`);
  return {
    modes,
    modeGiven: values.mode !== undefined,
    filter,
    filterGiven: values.filter !== undefined,
    rounds,
    seconds,
    json: values.json ?? false,
    build: !(values['no-build'] ?? false),
    ...(values['load-tool'] !== undefined ? { loadTool: path.resolve(values['load-tool']) } : {}),
    scale,
    inodes: { files, dir: path.resolve(values['inodes-dir'] ?? defaultInodesDir(files)) },
  };
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const plan = opts.modes.map((mode) => ({ mode, workloads: mode.workloads.filter((w) => opts.filter.test(w.name)) })).filter((p) => p.workloads.length > 0);
  // Sections run in the full default run, or when a --filter names them; --mode alone asks for modes.
  const sections = opts.filterGiven || !opts.modeGiven;
  const scaleSelected = sections && opts.filter.test('scale');
  const inodesSelected = sections && opts.filter.test('inodes');
  if (plan.length === 0 && !scaleSelected && !inodesSelected) {
    const all = [...new Set(opts.modes.flatMap((m) => m.workloads.map((w) => w.name)))];
    throw new UsageError(`--filter ${opts.filter.source} matches no workload of the modes ${opts.modes.map((m) => m.name).join(', ')} (${all.join(', ')}) nor the sections "scale" and "inodes"`);
  }
  // The load tool first: it is the likelier one to be missing, and the cheaper check.
  const tool = plan.length > 0 || inodesSelected ? await ensureLoadTool(opts.loadTool, opts.build) : '';
  await ensureDaemonBuilt(opts.build);
  log('provisioning the reference daemon');
  const { reference } = await provision();

  const share = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-bench-share-'));
  const failures: { mode: string; workload: string; config: string; error: string }[] = [];
  try {
    if (plan.length > 0) {
      log(`creating fixtures in ${share}`);
      await makeFixtures(share, tool);
    }
    const env: Env = { tool, reference, share, rounds: opts.rounds, seconds: opts.seconds, native: new Map() };
    const reports: ModeReport[] = [];
    for (const { mode, workloads } of plan) {
      const report = await runMode(mode, workloads, env);
      reports.push(report);
      for (const f of failuresOf(report)) {
        // A native failure is reported once, by the mode that measured it.
        if (!failures.some((g) => g.config === 'native' && f.config === 'native' && g.workload === f.workload)) failures.push(f);
      }
    }
    let scale: ScaleReport | undefined;
    if (scaleSelected) {
      try {
        scale = await runScale(opts.scale, reference, log);
      } catch (err) {
        log(`scale FAILED: ${errorText(err)}`);
        failures.push({ mode: 'scale', workload: 'scale', config: '', error: errorText(err) });
      }
    }
    let inodes: InodesReport | undefined;
    if (inodesSelected) {
      try {
        inodes = await runInodes(opts.inodes, tool, reference);
        for (const row of inodes.rows) if (row.error) failures.push({ mode: 'inodes', workload: 'inodes', config: row.kind, error: row.error });
      } catch (err) {
        log(`inodes FAILED: ${errorText(err)}`);
        failures.push({ mode: 'inodes', workload: 'inodes', config: '', error: errorText(err) });
      }
    }
    if (opts.json) {
      const modes = Object.fromEntries(reports.map((r) => [r.mode, { title: r.title, configs: MODES.find((m) => m.name === r.mode)!.configs, workloads: r.workloads }]));
      process.stdout.write(JSON.stringify({ rounds: opts.rounds, seconds: opts.seconds, modes, failures, ...(scale ? { scale } : {}), ...(inodes ? { inodes } : {}) }, null, 2) + '\n');
    } else {
      const tables: string[] = [];
      const base = reports.find((r) => r.mode === 'unsandboxed');
      for (const r of reports) tables.push(r.mode === 'multiqueue' ? multiqueueTable(r, opts.rounds, opts.seconds) : pairTable(r, opts.rounds, opts.seconds, base));
      if (scaleSelected) tables.push(scale ? scaleTable(scale) : `Scale FAILED: ${failures.find((f) => f.mode === 'scale')?.error ?? ''}\n`);
      if (inodes) tables.push(inodesTable(inodes));
      else if (inodesSelected) tables.push(`Inodes FAILED: ${failures.find((f) => f.mode === 'inodes')?.error ?? ''}\n`);
      process.stdout.write(tables.join('\n'));
    }
    if (failures.length > 0) process.exitCode = 1;
  } finally {
    await fs.rm(share, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  if (err instanceof UsageError || (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
    process.stderr.write(`bench: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`bench: ${errorText(err)}\n`);
  process.exit(1);
});
