// One run of the load tool: against a fresh daemon (sampled from /proc meanwhile), or native.
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sleep, type Kind } from './common.mts';
import { sample, startDaemon, stopDaemon, type Daemon, type Sample } from './daemon.mts';
import { resetFixtures } from './fixtures.mts';

export interface ToolResult {
  workload: string;
  ops: number;
  bytes: number;
  seconds: number;
  opsPerSec: number;
  mbPerSec: number;
  latencyUs: { p50: number; p99: number };
  queues?: number;
  files?: number;
  filesPerSec?: number;
}

/** One run's figures; the process columns are NaN for the native runs (no device process). */
export interface RunResult {
  opsPerSec: number;
  mbPerSec: number;
  /** Files stat'ed per second (walk only, NaN otherwise). */
  filesPerSec: number;
  p50Us: number;
  p99Us: number;
  cpuUsPerOp: number;
  peakRssMiB: number;
  privateMiB: number;
  fds: number;
}

export const METRICS = ['opsPerSec', 'mbPerSec', 'filesPerSec', 'p50Us', 'p99Us', 'cpuUsPerOp', 'peakRssMiB', 'privateMiB', 'fds'] as const;
export type Metric = (typeof METRICS)[number];

export function parseToolOutput(stdout: string): ToolResult {
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
  // The tool rounds its rates to a tenth, too coarse for a walk (a few per second).
  if (parsed.seconds > 0) parsed.opsPerSec = parsed.ops / parsed.seconds;
  return parsed;
}

interface Spawned {
  exit: Promise<number | null>;
  error: Promise<Error>;
  stdout: () => string;
  stderr: () => string;
}

function spawnTool(tool: string, args: string[]): Spawned {
  const child = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  return {
    exit: new Promise((resolve) => child.once('close', (code) => resolve(code))),
    error: new Promise((resolve) => child.once('error', resolve)),
    stdout: () => stdout,
    stderr: () => stderr,
  };
}

/** What to run: the tool's workload and depth, and for a daemon its options and request queues. */
export interface RunSpec {
  name: string;
  tool: string;
  depth: number;
  queues: number;
  daemonArgs: string[];
}

export async function runNative(spec: RunSpec, tool: string, share: string, seconds: number): Promise<RunResult> {
  await resetFixtures(share);
  const t = spawnTool(tool, ['native', '--dir', share, '--workload', spec.tool, '--depth', String(spec.depth), '--seconds', String(seconds), '--json']);
  const failed = await Promise.race([t.error, t.exit.then(() => undefined)]);
  if (failed) throw new Error(`cannot run the load tool ${tool}: ${failed.message}`);
  const code = await t.exit;
  if (code !== 0) throw new Error(`load tool failed (exit ${code}) on ${spec.name}, native:\n${t.stderr().slice(-4000)}`);
  const r = parseToolOutput(t.stdout());
  return {
    opsPerSec: r.opsPerSec,
    mbPerSec: r.mbPerSec,
    filesPerSec: r.filesPerSec ?? NaN,
    p50Us: r.latencyUs.p50,
    p99Us: r.latencyUs.p99,
    cpuUsPerOp: NaN,
    peakRssMiB: NaN,
    privateMiB: NaN,
    fds: NaN,
  };
}

export async function runDaemon(spec: RunSpec, kind: Kind, tool: string, reference: string, share: string, seconds: number): Promise<RunResult> {
  await resetFixtures(share);
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-bench-'));
  const socket = path.join(work, 'vfs.sock');
  let daemon: Daemon | undefined;
  try {
    daemon = await startDaemon(kind, reference, socket, share, spec.daemonArgs);
    const before = await sample(daemon.devicePid);
    if (!before) throw new Error(`the ${kind} device process vanished before the load started`);
    const args = ['bench', '--socket', socket, '--workload', spec.tool, '--depth', String(spec.depth), '--queues', String(spec.queues), '--seconds', String(seconds), '--json'];
    const t = spawnTool(tool, args);

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
    let liveFds = before.fds;
    let done = false;
    void t.exit.then(() => (done = true));
    void t.error.then(() => (done = true));
    while (!done) {
      const s = await sample(daemon.devicePid);
      if (!s) break;
      if (!first && s.at - started >= warmupMs) first = s;
      last = s;
      // Descriptors from a reading while the tool surely still runs: the readings that race with
      // the device's exit find some of them closed already.
      if (s.at - started < endMs - 100) liveFds = s.fds;
      peakPrivate = Math.max(peakPrivate, s.privateKiB);
      const late = Date.now() - started > endMs - 500;
      await Promise.race([sleep(late ? 10 : 100), t.exit]);
    }
    const failed = await Promise.race([t.error, sleep(0).then(() => undefined)]);
    if (failed) throw new Error(`cannot run the load tool ${tool}: ${failed.message}`);
    const code = await t.exit;
    if (code !== 0) {
      throw new Error(`load tool failed (exit ${code}) on ${spec.name} against ${kind}:\n${t.stderr().slice(-4000)}\n--- daemon ---\n${daemon.output().slice(-4000)}`);
    }
    const result = parseToolOutput(t.stdout());
    if (result.queues !== undefined && result.queues !== spec.queues) {
      throw new Error(`the ${kind} daemon offered ${result.queues} request queue(s) where ${spec.queues} were asked for (GET_QUEUE_NUM); the run is not counted`);
    }
    const from = first && last.at - first.at >= 200 ? first : before;
    if (last.at - from.at < 200) throw new Error(`too few /proc readings of the ${kind} device process during ${spec.name} (run longer with --seconds)`);
    const cpuPerSecond = (last.cpuSeconds - from.cpuSeconds) / ((last.at - from.at) / 1000);
    return {
      opsPerSec: result.opsPerSec,
      mbPerSec: result.mbPerSec,
      filesPerSec: result.filesPerSec ?? NaN,
      p50Us: result.latencyUs.p50,
      p99Us: result.latencyUs.p99,
      cpuUsPerOp: (cpuPerSecond * 1e6) / result.opsPerSec,
      peakRssMiB: last.hwmKiB / 1024,
      privateMiB: peakPrivate / 1024,
      fds: liveFds,
    };
  } finally {
    if (daemon) await stopDaemon(daemon);
    await fs.rm(work, { recursive: true, force: true });
  }
}
