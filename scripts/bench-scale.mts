// The "scale" section of `npm run bench`: what an idle device costs and how soon it listens.
//
// Both daemons are started exactly as a management tool would start them: from their command line,
// with their default sandbox and seccomp (no --sandbox/--seccomp options), one socket path and one
// shared directory per device. Nothing here depends on how a daemon is built inside: a device is
// the process that was started plus all its descendants, found from the ppid links in /proc/*/stat.
//
// - Memory: N devices of one daemon run side by side, nobody connects to them (a connection makes a
//   vhost-user daemon serve it, and both exit when it closes). Once every socket exists and the
//   process trees have stopped changing, `Pss:` and `Rss:` of /proc/<pid>/smaps_rollup are summed over
//   every process of every device and divided by N.
// - Every process starts with the same small environment (DAEMON_ENV), as from a service manager.
// - Readiness: separate single starts, timed from just before spawn() until a connect() to the socket
//   path succeeds (attempted every millisecond). Two floor rows time Node itself the same way.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { oursArgv } from '../__test__/guest/harness.ts';

type Kind = 'ours' | 'reference';

export interface ScaleOptions {
  /** Device counts of the memory measurement, e.g. [1, 50]. */
  devices: number[];
  /** Single starts per daemon for the readiness median. */
  starts: number;
}

/** Targets of the scale section (issue 9, item 1). */
export const SCALE_TARGETS = { pssRatio: 1.25, listenDifferenceMs: 60 } as const;

/**
 * The environment every process here starts with: what a service manager passes (libvirt gives
 * its helpers PATH, HOME and the locale, not the caller's environment). Node reads some variables
 * at start-up (NODE_EXTRA_CA_CERTS alone parses a whole certificate bundle, about 50 ms here),
 * which would time the calling shell rather than the daemons.
 */
const DAEMON_ENV: NodeJS.ProcessEnv = {
  PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: process.env.HOME ?? '/',
  LC_ALL: 'C',
};

const START_TIMEOUT_MS = 60_000;
const SETTLE_MS = 1_000;
const OUTPUT_TAIL = 4_000;

export function parseScaleOptions(devices: string | undefined, starts: string | undefined): ScaleOptions {
  const counts = (devices ?? '1,50').split(',').map((s) => Number(s.trim()));
  if (counts.length === 0 || !counts.every((n) => Number.isSafeInteger(n) && n >= 1 && n <= 1000)) {
    throw new RangeError(`--scale-devices must be a comma-separated list of integers in [1, 1000], got ${devices}`);
  }
  const n = Number(starts ?? '10');
  if (!Number.isSafeInteger(n) || n < 1 || n > 1000) throw new RangeError(`--scale-starts must be an integer in [1, 1000], got ${starts}`);
  return { devices: [...new Set(counts)], starts: n };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// --- process trees -------------------------------------------------------------------------------

interface ProcInfo {
  ppid: number;
  state: string;
  /** Start time in clock ticks since boot: tells a pid from a later process that reuses it. */
  start: string;
}

async function readStat(pid: number): Promise<ProcInfo | undefined> {
  const text = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  // Fields after the command name, which may itself hold spaces and parentheses.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: rest[0]!, ppid: Number(rest[1]), start: rest[19]! };
}

/** Every process on the machine, by pid. */
async function processTable(): Promise<Map<number, ProcInfo>> {
  const table = new Map<number, ProcInfo>();
  const entries = await fs.readdir('/proc');
  await Promise.all(
    entries
      .filter((name) => /^\d+$/.test(name))
      .map(async (name) => {
        const info = await readStat(Number(name));
        if (info) table.set(Number(name), info);
      }),
  );
  return table;
}

/** The live processes of root's tree, with their depth below root. */
function descendants(root: number, table: Map<number, ProcInfo>): Array<[number, number]> {
  const children = new Map<number, number[]>();
  for (const [pid, info] of table) {
    const list = children.get(info.ppid);
    if (list) list.push(pid);
    else children.set(info.ppid, [pid]);
  }
  const tree: Array<[number, number]> = [];
  const queue: Array<[number, number]> = [[root, 0]];
  while (queue.length > 0) {
    const [pid, depth] = queue.shift()!;
    if (!table.has(pid) || table.get(pid)!.state === 'Z') continue;
    tree.push([pid, depth]);
    for (const kid of children.get(pid) ?? []) queue.push([kid, depth + 1]);
  }
  return tree;
}

// --- devices -------------------------------------------------------------------------------------

interface Device {
  kind: Kind | 'node';
  child: ChildProcess;
  socket: string;
  /** Every process ever seen in the device's tree; all are stopped at the end. */
  seen: Map<number, { start: string; depth: number }>;
  output: () => string;
  spawnError: () => Error | undefined;
}

/** Devices not stopped yet: killed on any way out of the benchmark, errors and signals included. */
const live = new Set<Device>();

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function startDevice(kind: Device['kind'], argv: string[], socket: string): Device {
  const [cmd, ...args] = argv as [string, ...string[]];
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: DAEMON_ENV });
  let output = '';
  const keep = (c: Buffer): void => void (output = (output + c.toString()).slice(-OUTPUT_TAIL));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let error: Error | undefined;
  child.once('error', (err) => (error = err));
  const device: Device = { kind, child, socket, seen: new Map(), output: () => output, spawnError: () => error };
  if (child.pid !== undefined) device.seen.set(child.pid, { start: '', depth: 0 });
  live.add(device);
  return device;
}

/** The device's current process tree (and remembers it for stopping). */
function treeOf(device: Device, table: Map<number, ProcInfo>): number[] {
  const pid = device.child.pid;
  if (pid === undefined || exited(device.child)) return [];
  const tree = descendants(pid, table);
  for (const [p, depth] of tree) device.seen.set(p, { start: table.get(p)!.start, depth });
  return tree.map(([p]) => p);
}

function failure(device: Device, what: string): Error {
  const spawnError = device.spawnError();
  if (spawnError) return new Error(`cannot start the ${device.kind} daemon: ${spawnError.message}`);
  return new Error(`the ${device.kind} daemon ${what}:\n${device.output()}`);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

interface Left {
  pid: number;
  depth: number;
  /** Dead, not reaped yet by its parent. */
  zombie: boolean;
}

/** What is left of the devices' processes, including zombies that their parents have not reaped. */
async function leftOf(devices: Device[]): Promise<Left[]> {
  const table = await processTable();
  const out: Left[] = [];
  for (const d of devices) {
    treeOf(d, table); // children forked since the last look
    for (const [pid, { start, depth }] of d.seen) {
      if (pid === d.child.pid) {
        // The started process is ours to reap: until then its pid cannot be reused.
        if (!exited(d.child)) out.push({ pid, depth, zombie: table.get(pid)?.state === 'Z' });
        continue;
      }
      const info = table.get(pid);
      if (info && info.start === start) out.push({ pid, depth, zombie: info.state === 'Z' });
    }
  }
  return out;
}

/**
 * SIGTERM to every process of every device, SIGKILL to what is left after a grace period. Deepest
 * processes first, so that their parents reap them rather than leaving orphans to init.
 */
async function stopDevices(devices: Iterable<Device>): Promise<void> {
  const list = [...devices];
  if (list.length === 0) return;
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    const targets = (await leftOf(list)).filter((p) => !p.zombie);
    if (targets.length === 0) break;
    for (const depth of [...new Set(targets.map((p) => p.depth))].sort((a, b) => b - a)) {
      for (const p of targets) if (p.depth === depth) signal(p.pid, sig);
      const until = Date.now() + 1_000;
      while (Date.now() < until && (await leftOf(list)).some((p) => p.depth === depth)) await sleep(10);
    }
    const deadline = Date.now() + (sig === 'SIGTERM' ? 3_000 : 5_000);
    while (Date.now() < deadline && (await leftOf(list)).some((p) => !p.zombie || p.depth === 0)) await sleep(20);
  }
  const survivors = (await leftOf(list)).filter((p) => !p.zombie);
  for (const d of list) live.delete(d);
  if (survivors.length > 0) throw new Error(`processes survived SIGKILL: ${survivors.map((p) => p.pid).join(', ')}`);
}

/** Last resort on exit or a signal: SIGKILL everything still tracked, synchronously. */
function killLiveSync(): void {
  for (const d of live) for (const pid of d.seen.keys()) signal(pid, 'SIGKILL');
  live.clear();
}

// --- memory --------------------------------------------------------------------------------------

export interface MemoryResult {
  devices: number;
  pssMiBPerDevice: number;
  rssMiBPerDevice: number;
  processesPerDevice: number;
  /** From the first spawn until every socket existed. */
  allListeningMs: number;
}

async function rollup(pid: number): Promise<{ pssKiB: number; rssKiB: number }> {
  const text = await fs.readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  const pss = /^Pss:\s+(\d+) kB/m.exec(text)?.[1];
  const rss = /^Rss:\s+(\d+) kB/m.exec(text)?.[1];
  if (pss === undefined || rss === undefined) throw new Error(`cannot parse /proc/${pid}/smaps_rollup`);
  return { pssKiB: Number(pss), rssKiB: Number(rss) };
}

async function isSocket(file: string): Promise<boolean> {
  return (await fs.stat(file).catch(() => undefined))?.isSocket() ?? false;
}

async function measureMemory(kind: Kind, argv: string[], n: number, work: string, log: (msg: string) => void): Promise<MemoryResult> {
  const devices: Device[] = [];
  try {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const dir = path.join(work, `${kind}-${n}-${i}`);
      const share = path.join(dir, 'share');
      await fs.mkdir(share, { recursive: true });
      const socket = path.join(dir, 'vfs.sock');
      devices.push(startDevice(kind, [...argv, `--socket-path=${socket}`, `--shared-dir=${share}`], socket));
    }
    // Every device listens (its socket exists: nobody connects, so no device starts serving).
    const pending = new Set(devices);
    while (pending.size > 0) {
      for (const d of pending) {
        if (exited(d.child) || d.spawnError()) throw failure(d, `exited (code ${d.child.exitCode}, signal ${d.child.signalCode}) before creating its socket`);
        if (await isSocket(d.socket)) pending.delete(d);
      }
      if (performance.now() - t0 > START_TIMEOUT_MS) throw failure([...pending][0]!, `did not create its socket within ${START_TIMEOUT_MS / 1000} s`);
      if (pending.size > 0) await sleep(5);
    }
    const allListeningMs = performance.now() - t0;
    // Then the trees settle (a sandbox forks after the socket exists): the same processes twice in a row.
    let previous = '';
    let trees: number[][] = [];
    for (let tries = 0; ; tries++) {
      await sleep(tries === 0 ? SETTLE_MS : 250);
      const table = await processTable();
      trees = devices.map((d) => treeOf(d, table));
      const key = trees.map((t) => [...t].sort((a, b) => a - b).join(',')).join(';');
      if (key === previous) break;
      previous = key;
      if (tries > 40) throw new Error(`the ${kind} devices' process trees kept changing for 10 s`);
    }
    for (const [i, d] of devices.entries()) {
      if (exited(d.child) || trees[i]!.length === 0) throw failure(d, 'exited while idle');
    }
    let pssKiB = 0;
    let rssKiB = 0;
    let processes = 0;
    for (const tree of trees) {
      for (const pid of tree) {
        const r = await rollup(pid);
        pssKiB += r.pssKiB;
        rssKiB += r.rssKiB;
        processes++;
      }
    }
    const result: MemoryResult = {
      devices: n,
      pssMiBPerDevice: pssKiB / 1024 / n,
      rssMiBPerDevice: rssKiB / 1024 / n,
      processesPerDevice: processes / n,
      allListeningMs,
    };
    log(
      `scale memory ${kind} x${n}: ${result.pssMiBPerDevice.toFixed(2)} MiB PSS, ${result.rssMiBPerDevice.toFixed(2)} MiB RSS, ` +
        `${result.processesPerDevice} processes per device; all listening after ${Math.round(allListeningMs)} ms`,
    );
    return result;
  } finally {
    await stopDevices(devices);
  }
}

// --- readiness -----------------------------------------------------------------------------------

/** One connect() attempt; closes at once when it succeeds. */
function connects(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = net.connect(socket);
    conn.once('connect', () => {
      conn.destroy();
      resolve(true);
    });
    conn.once('error', () => {
      conn.destroy();
      resolve(false);
    });
  });
}

/** Milliseconds from just before spawn until a connect() to the socket succeeds. */
async function timeToListen(kind: Device['kind'], argv: string[], socket: string): Promise<number> {
  const t0 = performance.now();
  const device = startDevice(kind, argv, socket);
  try {
    for (;;) {
      if (await connects(socket)) return performance.now() - t0;
      if (exited(device.child) || device.spawnError()) throw failure(device, `exited (code ${device.child.exitCode}) before listening`);
      if (performance.now() - t0 > START_TIMEOUT_MS) throw failure(device, `did not listen within ${START_TIMEOUT_MS / 1000} s`);
      await sleep(1);
    }
  } finally {
    await stopDevices([device]);
  }
}

/** Milliseconds from just before spawn until the process has exited. */
async function timeToExit(argv: string[]): Promise<number> {
  const t0 = performance.now();
  const [cmd, ...args] = argv as [string, ...string[]];
  const child = spawn(cmd, args, { stdio: 'ignore', env: DAEMON_ENV });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (c) => resolve(c));
  });
  const ms = performance.now() - t0;
  if (code !== 0) throw new Error(`${argv.join(' ')} exited with ${code}`);
  return ms;
}

type StartKind = 'ours' | 'reference' | 'nodeListen' | 'nodeExit';
const START_KINDS: readonly StartKind[] = ['ours', 'reference', 'nodeListen', 'nodeExit'];

export interface ReadinessResult {
  starts: number;
  medianMs: Record<StartKind, number>;
  samplesMs: Record<StartKind, number[]>;
  /** Median of ours minus median of the reference. */
  differenceMs: number;
}

async function measureReadiness(reference: string, starts: number, work: string, log: (msg: string) => void): Promise<ReadinessResult> {
  const samples: Record<StartKind, number[]> = { ours: [], reference: [], nodeListen: [], nodeExit: [] };
  const listenScript = "require('node:net').createServer().listen(process.argv[1])";
  for (let round = 0; round < starts; round++) {
    // Rotate the order, so that what runs just after another start's teardown is not always the same.
    const order = START_KINDS.map((_, i) => START_KINDS[(i + round) % START_KINDS.length]!);
    for (const kind of order) {
      const dir = path.join(work, `ready-${kind}-${round}`);
      const share = path.join(dir, 'share');
      await fs.mkdir(share, { recursive: true });
      const socket = path.join(dir, 'vfs.sock');
      const daemonArgs = [`--socket-path=${socket}`, `--shared-dir=${share}`];
      let ms: number;
      if (kind === 'ours') ms = await timeToListen(kind, [...oursArgv(), ...daemonArgs], socket);
      else if (kind === 'reference') ms = await timeToListen(kind, [reference, ...daemonArgs], socket);
      else if (kind === 'nodeListen') ms = await timeToListen('node', [process.execPath, '-e', listenScript, socket], socket);
      else ms = await timeToExit([process.execPath, '-e', '0']);
      samples[kind].push(ms);
      await fs.rm(dir, { recursive: true, force: true });
    }
    log(`scale readiness ${round + 1}/${starts}: ` + START_KINDS.map((k) => `${k} ${samples[k].at(-1)!.toFixed(1)} ms`).join(', '));
  }
  const medianMs = {} as Record<StartKind, number>;
  for (const k of START_KINDS) medianMs[k] = median(samples[k]);
  return { starts, medianMs, samplesMs: samples, differenceMs: medianMs.ours - medianMs.reference };
}

// --- the section ---------------------------------------------------------------------------------

export interface ScaleReport {
  /** Both daemons ran with their defaults: no --sandbox or --seccomp option was given. */
  daemonArgs: string[];
  memory: Array<{ devices: number; ours: MemoryResult; reference: MemoryResult; pssRatio: number; rssRatio: number }>;
  readiness: ReadinessResult;
  targets: typeof SCALE_TARGETS;
  met: { pss: Record<string, boolean>; listen: boolean };
}

export async function runScale(opts: ScaleOptions, reference: string, log: (msg: string) => void): Promise<ScaleReport> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-bench-scale-'));
  const onExit = (): void => killLiveSync();
  const onSignal = (sig: NodeJS.Signals): void => {
    killLiveSync();
    void fs.rm(work, { recursive: true, force: true }).finally(() => process.kill(process.pid, sig));
  };
  process.on('exit', onExit);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, onSignal);
  try {
    const memory: ScaleReport['memory'] = [];
    for (const [i, n] of opts.devices.entries()) {
      const order: Kind[] = i % 2 ? ['reference', 'ours'] : ['ours', 'reference'];
      const results = {} as Record<Kind, MemoryResult>;
      for (const kind of order) results[kind] = await measureMemory(kind, kind === 'ours' ? oursArgv() : [reference], n, work, log);
      memory.push({
        devices: n,
        ours: results.ours,
        reference: results.reference,
        pssRatio: results.ours.pssMiBPerDevice / results.reference.pssMiBPerDevice,
        rssRatio: results.ours.rssMiBPerDevice / results.reference.rssMiBPerDevice,
      });
    }
    const readiness = await measureReadiness(reference, opts.starts, work, log);
    const pss: Record<string, boolean> = {};
    for (const m of memory) pss[String(m.devices)] = m.pssRatio <= SCALE_TARGETS.pssRatio;
    return {
      daemonArgs: [],
      memory,
      readiness,
      targets: SCALE_TARGETS,
      met: { pss, listen: readiness.differenceMs <= SCALE_TARGETS.listenDifferenceMs },
    };
  } finally {
    try {
      await stopDevices(live);
    } finally {
      killLiveSync();
      process.off('exit', onExit);
      for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(sig, onSignal);
      await fs.rm(work, { recursive: true, force: true });
    }
  }
}

// --- reporting -----------------------------------------------------------------------------------

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const yes = (ok: boolean): string => (ok ? 'met' : 'NOT met');

export function scaleTable(r: ScaleReport): string {
  const t = r.targets;
  const rows: string[] = [];
  for (const m of r.memory) {
    const per = m.devices === 1 ? '1 device' : `${m.devices} devices`;
    rows.push(`| PSS per device, ${per} (MiB) | ${m.ours.pssMiBPerDevice.toFixed(2)} | ${m.reference.pssMiBPerDevice.toFixed(2)} | ${m.pssRatio.toFixed(2)} | ≤ ${t.pssRatio}x: ${yes(m.pssRatio <= t.pssRatio)} |`);
  }
  for (const m of r.memory) {
    const per = m.devices === 1 ? '1 device' : `${m.devices} devices`;
    rows.push(`| RSS per device, ${per} (MiB) | ${m.ours.rssMiBPerDevice.toFixed(2)} | ${m.reference.rssMiBPerDevice.toFixed(2)} | ${m.rssRatio.toFixed(2)} | |`);
  }
  for (const m of r.memory) {
    const per = m.devices === 1 ? '1 device' : `${m.devices} devices`;
    rows.push(`| processes per device, ${per} | ${num(m.ours.processesPerDevice)} | ${num(m.reference.processesPerDevice)} | ${(m.ours.processesPerDevice / m.reference.processesPerDevice).toFixed(2)} | |`);
  }
  const rd = r.readiness;
  const diff = `${rd.differenceMs >= 0 ? '+' : ''}${rd.differenceMs.toFixed(1)} ms`;
  rows.push(`| time to a listening socket (ms) | ${rd.medianMs.ours.toFixed(1)} | ${rd.medianMs.reference.toFixed(1)} | ${diff} | ≤ +${t.listenDifferenceMs} ms: ${yes(rd.differenceMs <= t.listenDifferenceMs)} |`);
  rows.push(`| floor: \`node -e\` listening on a socket (ms) | ${rd.medianMs.nodeListen.toFixed(1)} | | | |`);
  rows.push(`| floor: \`node -e 0\`, spawn to exit (ms) | ${rd.medianMs.nodeExit.toFixed(1)} | | | |`);
  return [
    `Scale: idle devices started from the command line, default sandbox and seccomp; memory summed over every process of every device (none connected to); time to listen: median of ${rd.starts} single starts.`,
    '',
    '| measure | ours | reference | ours/reference | target |',
    '| --- | ---: | ---: | ---: | --- |',
    ...rows,
  ].join('\n') + '\n';
}

function num(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}
