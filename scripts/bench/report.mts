// The markdown tables of the modes.
import { cellText, num, pair, ratio } from './common.mts';
import type { CellReport, ModeReport, WorkloadReport } from './modes.mts';

const unitOf = (w: WorkloadReport): string => (w.workload.startsWith('walk') ? 'walks/s' : w.metric === 'opsPerSec' ? 'ops/s' : 'MiB/s');

const headline = (w: WorkloadReport, c: CellReport | undefined): number | undefined => c?.medians?.[w.metric];

function throughput(w: WorkloadReport, ours: CellReport | undefined, reference: CellReport | undefined): string {
  const main = `${pair(headline(w, ours), headline(w, reference))} ${unitOf(w)}`;
  if (!w.workload.startsWith('walk')) return main;
  return `${main}; ${pair(ours?.medians?.filesPerSec, reference?.medians?.filesPerSec)} files/s`;
}

function nativeCell(w: WorkloadReport): string {
  const n = w.cells.native;
  if (n?.error) return 'FAILED';
  const v = headline(w, n);
  if (v === undefined) return '–';
  const files = w.workload.startsWith('walk') ? `, ${num(n?.medians?.filesPerSec)} files/s` : '';
  return `${num(v)} ${unitOf(w)}${files}`;
}

function geomean(xs: number[]): number {
  return Math.exp(xs.reduce((s, x) => s + Math.log(x), 0) / xs.length);
}

function failureRows(report: ModeReport, columns: number): string[] {
  const pad = ' |'.repeat(columns - 2);
  return report.workloads.flatMap((w) =>
    Object.entries(w.cells)
      .filter(([, c]) => c.error)
      .map(([id, c]) => `| ${w.workload} | FAILED (${id}): ${cellText(c.error!)} |${pad}`),
  );
}

/**
 * A two-daemon mode: cells `ours / reference (ratio)`, the native figure and both daemons'
 * fractions of it; against `base` (the unsandboxed table of the same run) a column of each
 * daemon's throughput in this mode over its own unsandboxed one.
 */
export function pairTable(report: ModeReport, rounds: number, seconds: number, base?: ModeReport): string {
  const compare = report.mode !== 'unsandboxed';
  const head = ['workload', 'throughput', 'p50 µs', 'p99 µs', 'CPU µs/op', 'peak RSS MiB', 'private MiB', 'fds', 'native', 'ours/native', 'reference/native', ...(compare ? [`${report.mode}/unsandboxed (ours / reference)`] : [])];
  const lines = [
    `Daemon-only benchmark, mode ${report.mode}: ${report.title}. Median of ${rounds} run(s) of ${seconds} s each. Cells: ours / reference (ratio ours/reference).`,
    'Throughput: higher is better. Latency, CPU per operation, memory, descriptors: lower is better. native: the same system calls made directly on the host directory by the load tool.',
    '',
    `| ${head.join(' | ')} |`,
    `| ${head.map(() => '---').join(' | ')} |`,
  ];
  const oursRatios: number[] = [];
  const refRatios: number[] = [];
  for (const w of report.workloads) {
    const ours = w.cells.ours;
    const ref = w.cells.reference;
    const native = headline(w, w.cells.native);
    const cells = [
      throughput(w, ours, ref),
      ...(['p50Us', 'p99Us', 'cpuUsPerOp', 'peakRssMiB', 'privateMiB', 'fds'] as const).map((m) => pair(ours?.medians?.[m], ref?.medians?.[m])),
      nativeCell(w),
      ratio(headline(w, ours), native),
      ratio(headline(w, ref), native),
    ];
    if (compare) {
      const b = base?.workloads.find((x) => x.workload === w.workload);
      const o = headline(w, ours);
      const r = headline(w, ref);
      const bo = b && headline(b, b.cells.ours);
      const br = b && headline(b, b.cells.reference);
      cells.push(`${ratio(o, bo)} / ${ratio(r, br)}`);
      if (o !== undefined && bo !== undefined && o > 0 && bo > 0) oursRatios.push(o / bo);
      if (r !== undefined && br !== undefined && r > 0 && br > 0) refRatios.push(r / br);
    }
    lines.push(`| ${w.workload} | ${cells.join(' | ')} |`);
  }
  lines.push(...failureRows(report, head.length));
  if (compare) {
    lines.push('');
    if (!base) {
      lines.push(`Each daemon's ${report.mode} rows against its unsandboxed rows: run the unsandboxed mode in the same invocation (--mode unsandboxed,${report.mode}).`);
    } else {
      const g = (xs: number[]): string => (xs.length ? `${geomean(xs).toFixed(2)} (geometric mean of ${xs.length} workload(s))` : '–');
      lines.push(`Throughput against the unsandboxed table of this run: ours ${report.mode}/unsandboxed ${g(oursRatios)}, reference ${report.mode}/unsandboxed ${g(refRatios)}.`);
    }
  }
  return lines.join('\n') + '\n';
}

/** The multiqueue mode: a row per daemon and queue count, and the native row (D threads). */
export function multiqueueTable(report: ModeReport, rounds: number, seconds: number): string {
  const head = ['workload', 'daemon, request queues', 'throughput', 'p50 µs', 'p99 µs', 'CPU µs/op', 'fds', '/reference', '/native'];
  const lines = [
    `Daemon-only benchmark, mode multiqueue: ${report.title}. Median of ${rounds} run(s) of ${seconds} s each.`,
    'Throughput: higher is better; /reference and /native: throughput over the reference on one queue and over the native row (the same system calls on the host, one thread per request in flight).',
    '',
    `| ${head.join(' | ')} |`,
    `| ${head.map(() => '---').join(' | ')} |`,
  ];
  for (const w of report.workloads) {
    const ref = headline(w, w.cells.reference);
    const native = headline(w, w.cells.native);
    for (const [id, c] of Object.entries(w.cells)) {
      const label = id === 'native' ? `native, ${/d(\d+)$/.exec(w.workload)?.[1] ?? 1} threads` : id === 'reference' ? 'reference, 1' : `ours, ${id.slice('ours-q'.length)}`;
      if (c.error) {
        lines.push(`| ${w.workload} | ${label} | FAILED: ${cellText(c.error)} |${' |'.repeat(head.length - 3)}`);
        continue;
      }
      const m = c.medians;
      const v = m?.[w.metric];
      lines.push(`| ${w.workload} | ${label} | ${num(v)} ${unitOf(w)} | ${num(m?.p50Us)} | ${num(m?.p99Us)} | ${num(m?.cpuUsPerOp)} | ${num(m?.fds)} | ${ratio(v, ref)} | ${ratio(v, native)} |`);
    }
  }
  return lines.join('\n') + '\n';
}
