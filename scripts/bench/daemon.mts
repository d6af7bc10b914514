// Starting a daemon, finding the process that serves its socket, sampling it from /proc, stopping it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { oursArgv } from '../../__test__/guest/harness.ts';
import { log, sleep, type Kind } from './common.mts';

export function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

export function exitOf(child: ChildProcess): Promise<void> {
  if (exited(child)) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export interface Daemon {
  kind: Kind;
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

/** The end of the chain of only children below `pid`, or an error when a process has several. */
async function leafOf(pid: number, kind: Kind): Promise<number> {
  for (let at = pid; ; ) {
    const kids = await childrenOf(at);
    if (kids.length === 0) return at;
    if (kids.length > 1) throw new Error(`expected one serving process under the ${kind} daemon (pid ${pid}), found ${kids.length} children of ${at}`);
    at = kids[0]!;
  }
}

const SOCKET_TIMEOUT_MS = 15_000;
const SETTLE_READINGS = 4;
const SETTLE_INTERVAL_MS = 25;
const SETTLE_TIMEOUT_MS = 5_000;

/**
 * Starts a daemon with `args` (besides its socket and shared directory) and waits until it
 * listens and its process tree has settled: a sandbox forks, possibly more than once, after the
 * socket exists, and the process to sample is the one that serves, the end of the chain.
 */
export async function startDaemon(kind: Kind, reference: string, socket: string, share: string, args: string[]): Promise<Daemon> {
  const argv = kind === 'ours' ? oursArgv() : [reference];
  const [cmd, ...rest] = argv as [string, ...string[]];
  const child = spawn(cmd, [...rest, ...args, `--socket-path=${socket}`, `--shared-dir=${share}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const deadline = Date.now() + SOCKET_TIMEOUT_MS;
  for (;;) {
    const failed = await Promise.race([spawnError, sleep(20).then(() => undefined)]);
    if (failed) throw new Error(`cannot start the ${kind} daemon (${cmd}): ${failed.message}`);
    if (exited(child)) throw new Error(`the ${kind} daemon exited (code ${child.exitCode}) before creating its socket:\n${output.slice(-4000)}`);
    if ((await fs.stat(socket).catch(() => undefined))?.isSocket()) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the ${kind} daemon did not create its socket within ${SOCKET_TIMEOUT_MS / 1000} s:\n${output.slice(-4000)}`);
    }
  }
  let devicePid = 0;
  try {
    const settleBy = Date.now() + SETTLE_TIMEOUT_MS;
    for (let same = 0; same < SETTLE_READINGS; ) {
      if (exited(child)) throw new Error(`the ${kind} daemon exited (code ${child.exitCode}) after creating its socket:\n${output.slice(-4000)}`);
      const leaf = await leafOf(child.pid!, kind);
      same = leaf === devicePid ? same + 1 : 1;
      devicePid = leaf;
      if (Date.now() > settleBy) throw new Error(`the ${kind} daemon's processes did not settle within ${SETTLE_TIMEOUT_MS / 1000} s`);
      await sleep(SETTLE_INTERVAL_MS);
    }
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return { kind, child, devicePid, output: () => output };
}

/** Both daemons exit by themselves once the frontend disconnects; a stuck one is stopped. */
export async function stopDaemon(daemon: Daemon, graceMs = 5_000): Promise<void> {
  const { child } = daemon;
  if (exited(child)) return;
  if ((await Promise.race([exitOf(child).then(() => true), sleep(graceMs).then(() => false)])) === true) return;
  log(`warning: the ${daemon.kind} daemon did not exit after the load tool disconnected; stopping it`);
  child.kill('SIGTERM');
  if ((await Promise.race([exitOf(child).then(() => true), sleep(2_000).then(() => false)])) === false) child.kill('SIGKILL');
  await exitOf(child);
}

const CLK_TCK = (() => {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(out.stdout?.trim());
  if (out.status !== 0 || !Number.isInteger(n) || n <= 0) throw new Error('`getconf CLK_TCK` failed; it is needed to read CPU times from /proc');
  return n;
})();

export interface Sample {
  /** Date.now() of the reading. */
  at: number;
  cpuSeconds: number;
  rssKiB: number;
  hwmKiB: number;
  privateKiB: number;
  fds: number;
}

/** One reading of the process, or undefined once it is gone. */
export async function sample(pid: number): Promise<Sample | undefined> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself hold spaces and parentheses.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpuSeconds = (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
    const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
    const hwmKiB = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
    const rssKiB = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
    const smaps = await fs.readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
    const privateKiB = [...smaps.matchAll(/^Private_(?:Clean|Dirty):\s+(\d+) kB/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
    const fds = (await fs.readdir(`/proc/${pid}/fd`)).length;
    if (![cpuSeconds, hwmKiB, rssKiB].every(Number.isFinite)) throw new Error(`cannot parse /proc/${pid}/stat or status`);
    return { at: Date.now(), cpuSeconds, rssKiB, hwmKiB, privateKiB, fds };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') return undefined;
    throw err;
  }
}

/** The soft limit of open files of a process (`Max open files` of /proc/<pid>/limits). */
export async function fdLimit(pid: number): Promise<number> {
  const text = await fs.readFile(`/proc/${pid}/limits`, 'utf8').catch(() => '');
  return Number(/^Max open files\s+(\d+)/m.exec(text)?.[1] ?? NaN);
}
