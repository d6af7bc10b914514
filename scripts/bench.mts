// `npm run bench`: daemon-only benchmark. The load generator `virtiofsd-load` (crates/frontend) is
// the vhost-user frontend: no guest, no QEMU, so the numbers are the daemons' own. Each workload runs
// against this daemon and the reference (upstream virtiofsd) alternately, a fresh daemon per run,
// while the device process's CPU time, memory and descriptors are sampled from /proc.
// Progress goes to stderr; medians per workload (and ratio ours/reference) go to stdout.
// The section named "scale" (scripts/bench-scale.mts) measures idle devices instead: memory per
// device and time to a listening socket, both daemons with their default sandbox and seccomp.
//
//   npm run bench [-- --filter REGEX] [--rounds N] [--seconds S] [--json] [--no-build] [--load-tool PATH]
//                 [--scale-devices N,M] [--scale-starts K]
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { oursArgv, provision, repoRoot } from '../__test__/guest/harness.ts';
import { parseScaleOptions, runScale, scaleTable, type ScaleOptions, type ScaleReport } from './bench-scale.mts';

type Kind = 'ours' | 'reference';
const KINDS: readonly Kind[] = ['ours', 'reference'];
// Both daemons run the same way: the reference would otherwise add a namespace sandbox and a
// seccomp filter (which this daemon does not implement; their cost is not measurable here anyway).
const DAEMON_ARGS = ['--sandbox=none', '--seccomp=none'];

interface Workload {
  name: string;
  /** `--workload` of the load tool. */
  tool: string;
  args: string[];
  /** The headline number: operations or megabytes per second. */
  metric: 'opsPerSec' | 'mbPerSec';
  /** Options both daemons get on top of DAEMON_ARGS. */
  daemonArgs?: string[];
}

// Eight uid and gid rules that cover neither the load tool's ids (root) nor the fixtures' owners:
// every request and every attribute reply is looked up in the tables and comes out unchanged, so
// the workload is the plain one plus the cost of the lookups alone.
const TRANSLATION_ARGS = Array.from({ length: 8 }, (_, i) => {
  const first = 100_000 + i * 10_000;
  return [`--translate-uid=map:${first}:${first + 1_000_000}:1000`, `--translate-gid=map:${first}:${first + 1_000_000}:1000`];
}).flat();

const WORKLOADS: readonly Workload[] = [
  { name: 'lookup', tool: 'lookup', args: [], metric: 'opsPerSec' },
  { name: 'create', tool: 'create', args: [], metric: 'opsPerSec' },
  { name: 'readdirplus', tool: 'readdirplus', args: [], metric: 'opsPerSec' },
  { name: 'randread-d1', tool: 'randread', args: ['--depth', '1'], metric: 'opsPerSec' },
  { name: 'randread-d32', tool: 'randread', args: ['--depth', '32'], metric: 'opsPerSec' },
  { name: 'randwrite-d1', tool: 'randwrite', args: ['--depth', '1'], metric: 'opsPerSec' },
  { name: 'randwrite-d32', tool: 'randwrite', args: ['--depth', '32'], metric: 'opsPerSec' },
  { name: 'seqread', tool: 'seqread', args: [], metric: 'mbPerSec' },
  { name: 'seqwrite', tool: 'seqwrite', args: [], metric: 'mbPerSec' },
  // Against the plain rows above: what --translate-uid/--translate-gid cost per request.
  { name: 'lookup-translated', tool: 'lookup', args: [], metric: 'opsPerSec', daemonArgs: TRANSLATION_ARGS },
  { name: 'readdirplus-translated', tool: 'readdirplus', args: [], metric: 'opsPerSec', daemonArgs: TRANSLATION_ARGS },
];

const META_FILES = 1000;
const DIR10K_FILES = 10_000;
const DATA_MIB = 256;

class UsageError extends Error {}

interface Options {
  filter: RegExp;
  rounds: number;
  seconds: number;
  json: boolean;
  build: boolean;
  loadTool?: string;
  scale: ScaleOptions;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      filter: { type: 'string' },
      rounds: { type: 'string' },
      seconds: { type: 'string' },
      json: { type: 'boolean', default: false },
      'no-build': { type: 'boolean', default: false },
      'load-tool': { type: 'string' },
      'scale-devices': { type: 'string' },
      'scale-starts': { type: 'string' },
    },
    strict: true,
  });
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
  return {
    filter,
    rounds,
    seconds,
    json: values.json ?? false,
    build: !(values['no-build'] ?? false),
    ...(values['load-tool'] !== undefined ? { loadTool: path.resolve(values['load-tool']) } : {}),
    scale,
  };
}

const log = (msg: string): void => void process.stderr.write(`bench: ${msg}\n`);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// --- building ------------------------------------------------------------------------------------

function run(cmd: string, args: string[]): void {
  log(`$ ${cmd} ${args.join(' ')}`);
  // The build's own output is progress: keep stdout clean for the results.
  const result = spawnSync(cmd, args, { cwd: repoRoot, stdio: ['ignore', process.stderr, process.stderr] });
  if (result.error) throw new Error(`cannot run ${cmd}: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${result.status})`);
}

async function newestMtime(dir: string, test: (name: string) => boolean): Promise<number> {
  let newest = 0;
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    if (!entry.isFile() || !test(entry.name)) continue;
    const st = await fs.stat(path.join(entry.parentPath ?? entry.path, entry.name));
    newest = Math.max(newest, st.mtimeMs);
  }
  return newest;
}

async function mtimeOf(file: string): Promise<number> {
  return (await fs.stat(file).catch(() => undefined))?.mtimeMs ?? 0;
}

/** `npm run build` when dist/ or the native addon is older than its sources (or missing). */
async function ensureDaemonBuilt(build: boolean): Promise<void> {
  const cli = path.join(repoRoot, 'dist', 'cli.js');
  const addon = path.join(repoRoot, 'npm', 'linux-x64-gnu', 'virtiofsd');
  const tsNewest = await newestMtime(path.join(repoRoot, 'ts'), (n) => n.endsWith('.ts'));
  let rustNewest = 0;
  for (const crate of ['fuse', 'passthrough', 'device', 'daemon', 'napi']) {
    rustNewest = Math.max(rustNewest, await newestMtime(path.join(repoRoot, 'crates', crate), (n) => n.endsWith('.rs') || n === 'Cargo.toml'));
  }
  const stale = (await mtimeOf(cli)) < tsNewest || (await mtimeOf(addon)) < rustNewest;
  if (!stale) return;
  if (!build) {
    if ((await mtimeOf(cli)) === 0 || (await mtimeOf(addon)) === 0) throw new Error('our daemon is not built and --no-build was given (run `npm run build`)');
    log('warning: dist/ or the native addon is older than its sources; benchmarking them anyway (--no-build)');
    return;
  }
  run('npm', ['run', 'build']);
}

async function ensureLoadTool(opts: Options): Promise<string> {
  if (opts.loadTool) {
    await fs.access(opts.loadTool, fs.constants.X_OK).catch(() => {
      throw new Error(`--load-tool ${opts.loadTool} is not an executable file`);
    });
    return opts.loadTool;
  }
  const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(repoRoot, process.env.CARGO_TARGET_DIR) : path.join(repoRoot, 'target');
  const tool = path.join(targetDir, 'release', 'virtiofsd-load');
  if (opts.build) {
    await fs.access(path.join(repoRoot, 'crates', 'frontend', 'Cargo.toml')).catch(() => {
      throw new Error('the load generator crate (crates/frontend, binary virtiofsd-load) does not exist yet; `npm run bench` needs it');
    });
    run('cargo', ['build', '--release', '-p', 'virtiofsd-frontend']);
  }
  await fs.access(tool, fs.constants.X_OK).catch(() => {
    throw new Error(`load generator ${tool} is missing (cargo build --release -p virtiofsd-frontend)`);
  });
  return tool;
}

// --- fixtures ------------------------------------------------------------------------------------

/** The load tool's fixtures. Built once and reused: only scratch/ is written by workloads (reset per run). */
async function makeFixtures(share: string): Promise<void> {
  await fs.mkdir(path.join(share, 'meta'));
  for (let i = 0; i < META_FILES; i++) await fs.writeFile(path.join(share, 'meta', `f${i}`), `small file ${i}\n`);
  await fs.mkdir(path.join(share, 'dir10k'));
  for (let i = 0; i < DIR10K_FILES; i++) await fs.writeFile(path.join(share, 'dir10k', `f${i}`), '');
  await fs.mkdir(path.join(share, 'scratch'));
  await writeDataFile(share);
}

async function writeDataFile(share: string): Promise<void> {
  // Random bytes: real extents, nothing sparse or trivially compressible.
  const file = await fs.open(path.join(share, 'data.bin'), 'w');
  try {
    for (let i = 0; i < DATA_MIB; i++) await file.write(randomBytes(1 << 20));
  } finally {
    await file.close();
  }
}

async function resetFixtures(share: string): Promise<void> {
  await fs.rm(path.join(share, 'scratch'), { recursive: true, force: true });
  await fs.mkdir(path.join(share, 'scratch'));
  const size = (await fs.stat(path.join(share, 'data.bin')).catch(() => undefined))?.size;
  if (size !== DATA_MIB << 20) await writeDataFile(share);
}

// --- daemons -------------------------------------------------------------------------------------

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function exitOf(child: ChildProcess): Promise<void> {
  if (exited(child)) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

interface Daemon {
  child: ChildProcess;
  /** The process that serves the socket. */
  devicePid: number;
  output: () => string;
}

async function childrenOf(pid: number): Promise<number[]> {
  const tasks = await fs.readdir(`/proc/${pid}/task`).catch(() => []);
  const kids: number[] = [];
  for (const task of tasks) {
    const text = await fs.readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    for (const word of text.split(/\s+/)) if (word) kids.push(Number(word));
  }
  return kids;
}

async function startDaemon(kind: Kind, reference: string, socket: string, share: string, extraArgs: string[]): Promise<Daemon> {
  const argv = kind === 'ours' ? oursArgv() : [reference];
  const [cmd, ...args] = argv as [string, ...string[]];
  const child = spawn(cmd, [...args, ...DAEMON_ARGS, ...extraArgs, `--socket-path=${socket}`, `--shared-dir=${share}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const deadline = Date.now() + 15_000;
  for (;;) {
    const failed = await Promise.race([spawnError, sleep(20).then(() => undefined)]);
    if (failed) throw new Error(`cannot start the ${kind} daemon (${cmd}): ${failed.message}`);
    if (exited(child)) throw new Error(`the ${kind} daemon exited (code ${child.exitCode}) before creating its socket:\n${output.slice(-4000)}`);
    if ((await fs.stat(socket).catch(() => undefined))?.isSocket()) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the ${kind} daemon did not create its socket within 15 s:\n${output.slice(-4000)}`);
    }
  }
  // Both start as the process spawned here (the reference's wrapper and our CLI exec the daemon).
  // A namespace sandbox would fork once more and serve from the child: sample that one then.
  const kids = await childrenOf(child.pid!);
  if (kids.length > 1) {
    child.kill('SIGKILL');
    throw new Error(`expected at most one serving process under the ${kind} daemon (pid ${child.pid}), found ${kids.length}`);
  }
  const devicePid = kids[0] ?? child.pid!;
  return { child, devicePid, output: () => output };
}

// --- /proc sampling ------------------------------------------------------------------------------

const CLK_TCK = (() => {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(out.stdout?.trim());
  if (out.status !== 0 || !Number.isInteger(n) || n <= 0) throw new Error('`getconf CLK_TCK` failed; it is needed to read CPU times from /proc');
  return n;
})();

interface Sample {
  /** Date.now() of the reading. */
  at: number;
  cpuSeconds: number;
  hwmKiB: number;
  privateKiB: number;
  fds: number;
}

/** One reading of the process, or undefined once it is gone. */
async function sample(pid: number): Promise<Sample | undefined> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself hold spaces and parentheses.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpuSeconds = (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
    const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
    const hwmKiB = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
    const smaps = await fs.readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
    const privateKiB = [...smaps.matchAll(/^Private_(?:Clean|Dirty):\s+(\d+) kB/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
    const fds = (await fs.readdir(`/proc/${pid}/fd`)).length;
    if (![cpuSeconds, hwmKiB].every(Number.isFinite)) throw new Error(`cannot parse /proc/${pid}/stat or status`);
    return { at: Date.now(), cpuSeconds, hwmKiB, privateKiB, fds };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') return undefined;
    throw err;
  }
}

// --- one run -------------------------------------------------------------------------------------

interface ToolResult {
  workload: string;
  ops: number;
  bytes: number;
  seconds: number;
  opsPerSec: number;
  mbPerSec: number;
  latencyUs: { p50: number; p99: number };
}

interface RunResult {
  opsPerSec: number;
  mbPerSec: number;
  p50Us: number;
  p99Us: number;
  cpuUsPerOp: number;
  peakRssMiB: number;
  privateMiB: number;
  fds: number;
}

function parseToolOutput(stdout: string): ToolResult {
  const line = stdout.trim().split('\n').pop() ?? '';
  let parsed: ToolResult;
  try {
    parsed = JSON.parse(line) as ToolResult;
  } catch {
    throw new Error(`the load tool printed no JSON line; got ${JSON.stringify(line.slice(0, 500))}`);
  }
  for (const key of ['ops', 'bytes', 'seconds', 'opsPerSec', 'mbPerSec'] as const) {
    if (typeof parsed[key] !== 'number' || !Number.isFinite(parsed[key])) throw new Error(`load tool JSON lacks a numeric "${key}": ${line}`);
  }
  if (typeof parsed.latencyUs?.p50 !== 'number' || typeof parsed.latencyUs?.p99 !== 'number') {
    throw new Error(`load tool JSON lacks latencyUs.p50/p99: ${line}`);
  }
  if (parsed.ops <= 0 || parsed.opsPerSec <= 0) throw new Error(`the load tool completed no operations: ${line}`);
  return parsed;
}

async function runOnce(workload: Workload, kind: Kind, tool: string, reference: string, share: string, seconds: number): Promise<RunResult> {
  await resetFixtures(share);
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-bench-'));
  const socket = path.join(work, 'vfs.sock');
  let daemon: Daemon | undefined;
  try {
    daemon = await startDaemon(kind, reference, socket, share, workload.daemonArgs ?? []);
    const before = await sample(daemon.devicePid);
    if (!before) throw new Error(`the ${kind} device process vanished before the load started`);
    const args = ['bench', '--socket', socket, '--workload', workload.tool, ...workload.args, '--seconds', String(seconds), '--json'];
    const loader = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    loader.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    loader.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const loaderError = new Promise<Error>((resolve) => loader.once('error', resolve));
    const loaderExit = new Promise<number | null>((resolve) => loader.once('close', (code) => resolve(code)));

    // The tool warms up (a tenth of the run, at most 0.5 s) before it counts operations, so CPU is
    // measured as a rate from the first reading after the warm-up to the last one and divided by the
    // tool's rate of operations. The daemon exits as soon as the tool disconnects, so the last
    // reading must come as late as possible: every 100 ms, then every 10 ms near the end.
    const started = Date.now();
    const warmupMs = Math.min(seconds / 10, 0.5) * 1000 + 50;
    const endMs = warmupMs + seconds * 1000;
    let first: Sample | undefined;
    let last = before;
    let peakPrivate = before.privateKiB;
    let done = false;
    void loaderExit.then(() => (done = true));
    void loaderError.then(() => (done = true));
    while (!done) {
      const s = await sample(daemon.devicePid);
      if (!s) break;
      if (!first && s.at - started >= warmupMs) first = s;
      last = s;
      peakPrivate = Math.max(peakPrivate, s.privateKiB);
      const late = Date.now() - started > endMs - 500;
      await Promise.race([sleep(late ? 10 : 100), loaderExit]);
    }
    const failed = await Promise.race([loaderError, sleep(0).then(() => undefined)]);
    if (failed) throw new Error(`cannot run the load tool ${tool}: ${failed.message}`);
    const code = await loaderExit;
    if (code !== 0) {
      throw new Error(`load tool failed (exit ${code}) on ${workload.name} against ${kind}:\n${stderr.slice(-4000)}\n--- daemon ---\n${daemon.output().slice(-4000)}`);
    }
    const result = parseToolOutput(stdout);
    const from = first && last.at - first.at >= 200 ? first : before;
    if (last.at - from.at < 200) throw new Error(`too few /proc readings of the ${kind} device process during ${workload.name} (run longer with --seconds)`);
    const cpuPerSecond = (last.cpuSeconds - from.cpuSeconds) / ((last.at - from.at) / 1000);
    return {
      opsPerSec: result.opsPerSec,
      mbPerSec: result.mbPerSec,
      p50Us: result.latencyUs.p50,
      p99Us: result.latencyUs.p99,
      cpuUsPerOp: (cpuPerSecond * 1e6) / result.opsPerSec,
      peakRssMiB: last.hwmKiB / 1024,
      privateMiB: peakPrivate / 1024,
      fds: last.fds,
    };
  } finally {
    if (daemon) {
      // Both daemons exit by themselves once the frontend disconnects; a stuck one is stopped.
      if (!exited(daemon.child) && (await Promise.race([exitOf(daemon.child).then(() => true), sleep(5_000).then(() => false)])) === false) {
        log(`warning: the ${kind} daemon did not exit after the load tool disconnected; stopping it`);
        daemon.child.kill('SIGTERM');
        if ((await Promise.race([exitOf(daemon.child).then(() => true), sleep(2_000).then(() => false)])) === false) daemon.child.kill('SIGKILL');
        await exitOf(daemon.child);
      }
    }
    await fs.rm(work, { recursive: true, force: true });
  }
}

// --- reporting -----------------------------------------------------------------------------------

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const METRICS = ['opsPerSec', 'mbPerSec', 'p50Us', 'p99Us', 'cpuUsPerOp', 'peakRssMiB', 'privateMiB', 'fds'] as const;
type Metric = (typeof METRICS)[number];
type Medians = Record<Metric, number>;

function medians(runs: RunResult[]): Medians {
  const out = {} as Medians;
  for (const m of METRICS) out[m] = median(runs.map((r) => r[m]));
  return out;
}

function num(n: number): string {
  if (Number.isInteger(n)) return n.toString();
  if (n >= 100) return Math.round(n).toString();
  if (n >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

function cell(ours: number, reference: number): string {
  const ratio = reference === 0 ? (ours === 0 ? '1.00' : 'inf') : (ours / reference).toFixed(2);
  return `${num(ours)} / ${num(reference)} (${ratio})`;
}

interface WorkloadReport {
  workload: string;
  metric: Workload['metric'];
  ours: Medians;
  reference: Medians;
  ratio: Record<Metric, number>;
  samples: Record<Kind, RunResult[]>;
}

/** A workload that could not be measured: the table says so and the exit status is 1. */
interface WorkloadFailure {
  workload: string;
  error: string;
}

function table(reports: WorkloadReport[], failures: WorkloadFailure[], opts: Options): string {
  const header = [
    `Daemon-only benchmark (virtiofsd-load), median of ${opts.rounds} run(s) of ${opts.seconds} s each. Cells: ours / reference (ratio ours/reference).`,
    'Throughput: higher is better. Latency, CPU per operation, memory, descriptors: lower is better.',
    '',
    '| workload | throughput | p50 µs | p99 µs | CPU µs/op | peak RSS MiB | private MiB | fds |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  const rows = reports.map((r) => {
    const unit = r.metric === 'opsPerSec' ? 'ops/s' : 'MiB/s';
    const cells = [
      `${cell(r.ours[r.metric], r.reference[r.metric])} ${unit}`,
      ...(['p50Us', 'p99Us', 'cpuUsPerOp', 'peakRssMiB', 'privateMiB', 'fds'] as const).map((m) => cell(r.ours[m], r.reference[m])),
    ];
    return `| ${r.workload} | ${cells.join(' | ')} |`;
  });
  // One table row: the error's lines joined, cut short (the full text went to stderr and --json).
  const failed = failures.map((f) => {
    const text = f.error.split('\n').filter(Boolean).join(' ').slice(0, 160).replace(/\|/g, '\\|');
    return `| ${f.workload} | FAILED: ${text} | | | | | | |`;
  });
  return [...header, ...rows, ...failed].join('\n') + '\n';
}

// --- main ----------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const selected = WORKLOADS.filter((w) => opts.filter.test(w.name));
  const scaleSelected = opts.filter.test('scale');
  if (selected.length === 0 && !scaleSelected) {
    throw new UsageError(`--filter ${opts.filter.source} matches no workload (${WORKLOADS.map((w) => w.name).join(', ')}) nor the section "scale"`);
  }
  // The load tool first: it is the likelier one to be missing, and the cheaper check.
  const tool = selected.length > 0 ? await ensureLoadTool(opts) : '';
  await ensureDaemonBuilt(opts.build);
  log('provisioning the reference daemon');
  const { reference } = await provision();

  const share = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-bench-share-'));
  try {
    if (selected.length > 0) {
      log(`creating fixtures in ${share}`);
      await makeFixtures(share);
    }
    const reports: WorkloadReport[] = [];
    const failures: WorkloadFailure[] = [];
    for (const workload of selected) {
      const samples: Record<Kind, RunResult[]> = { ours: [], reference: [] };
      try {
        for (let round = 1; round <= opts.rounds; round++) {
          // Alternate which daemon goes first so that drift on the machine falls on both.
          const order = round % 2 ? KINDS : [...KINDS].reverse();
          for (const kind of order) {
            const r = await runOnce(workload, kind, tool, reference, share, opts.seconds);
            log(`${workload.name} round ${round}/${opts.rounds} ${kind}: ${num(r[workload.metric])} ${workload.metric === 'opsPerSec' ? 'ops/s' : 'MiB/s'}, p99 ${num(r.p99Us)} µs, ${num(r.cpuUsPerOp)} CPU µs/op`);
            samples[kind].push(r);
          }
        }
      } catch (err) {
        // One broken workload must not cost the others' results; it still fails the benchmark.
        const error = err instanceof Error ? err.message : String(err);
        log(`${workload.name} FAILED: ${error}`);
        failures.push({ workload: workload.name, error });
        continue;
      }
      const ours = medians(samples.ours);
      const ref = medians(samples.reference);
      const ratio = {} as Record<Metric, number>;
      for (const m of METRICS) ratio[m] = ref[m] === 0 ? NaN : ours[m] / ref[m];
      reports.push({ workload: workload.name, metric: workload.metric, ours, reference: ref, ratio, samples });
    }
    let scale: ScaleReport | undefined;
    if (scaleSelected) {
      try {
        scale = await runScale(opts.scale, reference, log);
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        log(`scale FAILED: ${error}`);
        failures.push({ workload: 'scale', error });
      }
    }
    if (opts.json) {
      process.stdout.write(JSON.stringify({ rounds: opts.rounds, seconds: opts.seconds, daemonArgs: DAEMON_ARGS, workloads: reports, failures, ...(scale ? { scale } : {}) }, null, 2) + '\n');
    } else {
      if (selected.length > 0 || !scale) process.stdout.write(table(reports, failures, opts));
      if (scale) process.stdout.write((selected.length > 0 ? '\n' : '') + scaleTable(scale));
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
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
