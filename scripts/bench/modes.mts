// The workloads and modes of `npm run bench`, and the rounds that measure them.
import { errorText, log, median, num, type Kind } from './common.mts';
import { METRICS, runDaemon, runNative, type Metric, type RunResult, type RunSpec } from './runs.mts';

export interface Workload {
  name: string;
  /** `--workload` of the load tool. */
  tool: string;
  depth: number;
  /** The headline number: operations or megabytes per second. */
  metric: 'opsPerSec' | 'mbPerSec';
  /** Options both daemons get on top of the mode's. */
  daemonArgs?: string[];
  /** Only in the unsandboxed mode (what the row compares is independent of the mode). */
  unsandboxedOnly?: boolean;
}

// Eight uid and gid rules that cover neither the load tool's ids (root) nor the fixtures' owners:
// every request and every attribute reply is looked up in the tables and comes out unchanged, so
// the workload is the plain one plus the cost of the lookups alone.
const TRANSLATION_ARGS = Array.from({ length: 8 }, (_, i) => {
  const first = 100_000 + i * 10_000;
  return [`--translate-uid=map:${first}:${first + 1_000_000}:1000`, `--translate-gid=map:${first}:${first + 1_000_000}:1000`];
}).flat();

const ops = (name: string, tool: string, depth = 1): Workload => ({ name, tool, depth, metric: 'opsPerSec' });

export const WORKLOADS: readonly Workload[] = [
  ops('lookup', 'lookup'),
  ops('getattr', 'getattr'),
  ops('create', 'create'),
  ops('readdirplus', 'readdirplus'),
  ops('randread-d1', 'randread'),
  ops('randread-d32', 'randread', 32),
  ops('randwrite-d1', 'randwrite'),
  ops('randwrite-d32', 'randwrite', 32),
  { name: 'seqread', tool: 'seqread', depth: 1, metric: 'mbPerSec' },
  { name: 'seqwrite', tool: 'seqwrite', depth: 1, metric: 'mbPerSec' },
  ops('walk', 'walk'),
  // Against the plain rows above: what --translate-uid/--translate-gid cost per request.
  { ...ops('lookup-translated', 'lookup'), daemonArgs: TRANSLATION_ARGS, unsandboxedOnly: true },
  { ...ops('readdirplus-translated', 'readdirplus'), daemonArgs: TRANSLATION_ARGS, unsandboxedOnly: true },
];

/** The multiqueue mode's workloads: where more than one request is in flight. */
export const MQ_WORKLOADS: readonly Workload[] = [ops('randread-d32', 'randread', 32), ops('randwrite-d32', 'randwrite', 32), ops('lookup-d32', 'lookup', 32), ops('getattr-d32', 'getattr', 32)];
export const MQ_QUEUES = [1, 2, 4] as const;

const UNSANDBOXED = ['--sandbox=none', '--seccomp=none'];

/** A column of a mode: one daemon with its options and request queues, or the native row. */
export interface Config {
  id: string;
  kind: Kind | 'native';
  queues: number;
  daemonArgs: string[];
}

export interface Mode {
  name: 'unsandboxed' | 'defaults' | 'multiqueue' | 'threadpool';
  title: string;
  workloads: readonly Workload[];
  configs: readonly Config[];
}

const both = (args: string[]): Config[] => [
  { id: 'ours', kind: 'ours', queues: 1, daemonArgs: args },
  { id: 'reference', kind: 'reference', queues: 1, daemonArgs: args },
];

export const MODES: readonly Mode[] = [
  { name: 'unsandboxed', title: 'both daemons with --sandbox=none --seccomp=none', workloads: WORKLOADS, configs: both(UNSANDBOXED) },
  { name: 'defaults', title: 'both daemons with their default sandbox and seccomp filter (no options but the socket and the shared directory)', workloads: WORKLOADS.filter((w) => !w.unsandboxedOnly), configs: both([]) },
  {
    name: 'multiqueue',
    title: `ours on ${MQ_QUEUES.join(', ')} request queues (the depth spread over them), the reference on its one; both with --sandbox=none --seccomp=none`,
    workloads: MQ_WORKLOADS,
    configs: [{ id: 'reference', kind: 'reference', queues: 1, daemonArgs: UNSANDBOXED }, ...MQ_QUEUES.map((q): Config => ({ id: `ours-q${q}`, kind: 'ours', queues: q, daemonArgs: UNSANDBOXED }))],
  },
  { name: 'threadpool', title: 'both daemons with --thread-pool-size=4 (and --sandbox=none --seccomp=none)', workloads: WORKLOADS.filter((w) => !w.unsandboxedOnly), configs: both([...UNSANDBOXED, '--thread-pool-size=4']) },
];

export type Medians = Record<Metric, number>;

export interface CellReport {
  medians?: Medians;
  runs: RunResult[];
  /** Why this column has no figures (it failed; its other rounds were not run). */
  error?: string;
}

export interface WorkloadReport {
  workload: string;
  metric: Workload['metric'];
  /** By config id, and `native`. */
  cells: Record<string, CellReport>;
}

export interface ModeReport {
  mode: Mode['name'];
  title: string;
  workloads: WorkloadReport[];
}

function medians(runs: RunResult[]): Medians {
  const out = {} as Medians;
  for (const m of METRICS) out[m] = median(runs.map((r) => r[m]));
  return out;
}

export interface Env {
  tool: string;
  reference: string;
  share: string;
  rounds: number;
  seconds: number;
  /** Native cells measured so far, by workload and depth: the host does not change with the mode. */
  native: Map<string, CellReport>;
}

const NATIVE: Config = { id: 'native', kind: 'native', queues: 0, daemonArgs: [] };

export async function runMode(mode: Mode, workloads: readonly Workload[], env: Env): Promise<ModeReport> {
  const report: ModeReport = { mode: mode.name, title: mode.title, workloads: [] };
  for (const w of workloads) {
    const nativeKey = `${w.tool}/${w.depth}`;
    const cached = env.native.get(nativeKey);
    const configs = cached ? mode.configs : [...mode.configs, NATIVE];
    const cells: Record<string, CellReport> = {};
    for (const c of configs) cells[c.id] = { runs: [] };
    for (let round = 1; round <= env.rounds; round++) {
      // Rotate the order every round so that drift on the machine falls on every column.
      const shift = (round - 1) % configs.length;
      const order = [...configs.slice(shift), ...configs.slice(0, shift)];
      for (const c of order) {
        const cell = cells[c.id]!;
        if (cell.error) continue;
        const spec: RunSpec = { name: w.name, tool: w.tool, depth: w.depth, queues: c.queues, daemonArgs: [...c.daemonArgs, ...(w.daemonArgs ?? [])] };
        try {
          const r = c.kind === 'native' ? await runNative(spec, env.tool, env.share, env.seconds) : await runDaemon(spec, c.kind, env.tool, env.reference, env.share, env.seconds);
          cell.runs.push(r);
          const unit = w.metric === 'opsPerSec' ? 'ops/s' : 'MiB/s';
          log(`${mode.name} ${w.name} round ${round}/${env.rounds} ${c.id}: ${num(r[w.metric])} ${unit}, p99 ${num(r.p99Us)} µs${c.kind === 'native' ? '' : `, ${num(r.cpuUsPerOp)} CPU µs/op`}`);
        } catch (err) {
          // One broken column must not cost the others' results; it still fails the benchmark.
          cell.error = errorText(err);
          log(`${mode.name} ${w.name} ${c.id} FAILED: ${cell.error}`);
        }
      }
    }
    for (const cell of Object.values(cells)) if (!cell.error && cell.runs.length > 0) cell.medians = medians(cell.runs);
    if (!cached) env.native.set(nativeKey, cells.native!);
    else cells.native = cached;
    report.workloads.push({ workload: w.name, metric: w.metric, cells });
  }
  return report;
}

/** Every failed column of a mode, for the exit status and the JSON. */
export function failuresOf(report: ModeReport): { mode: string; workload: string; config: string; error: string }[] {
  return report.workloads.flatMap((w) => Object.entries(w.cells).flatMap(([config, cell]) => (cell.error ? [{ mode: report.mode, workload: w.workload, config, error: cell.error }] : [])));
}
