// Boots a Linux guest under QEMU (TCG) against a virtio-fs daemon and runs a shell script in it.
// Reusable by every guest test: end-to-end, conformance suites, benchmarks.
//
//   const paths = await provision();
//   const run = await runGuest({ daemon: { kind: 'ours' }, sharedDir, script });
//   run.output  // what the script printed (stdout and stderr), run.status its exit status
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpioArchive, type CpioEntry } from './cpio.ts';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Paths {
  qemu: string;
  vmlinux: string;
  initramfs: string;
  reference: string;
  /** A QEMU that can migrate vhost-user-fs (QEMU 10; the system QEMU 7.2 cannot). */
  qemuMigration?: string;
}

/** Which daemon serves the share. `argv` is a full command; the socket and shared-dir options are appended. */
export type DaemonSpec =
  | { kind: 'reference'; extraArgs?: string[] }
  | { kind: 'ours'; extraArgs?: string[] }
  | { argv: string[] };

export interface RunGuestOptions {
  daemon: DaemonSpec;
  sharedDir: string;
  /** Shell script (busybox sh) run as root in the guest with the share mounted on /mnt as its cwd. */
  script: string;
  /** Extra files for the guest, e.g. { name: 'test/data.bin', data }; they land under / in the guest. */
  files?: CpioEntry[];
  numRequestQueues?: number;
  /** Guest vCPUs; default 2. */
  vcpus?: number;
  /** Whole run: daemon start, boot, script, power off. Default 120 s. */
  timeoutMs?: number;
  /** Mount tag the guest sees (QEMU's `tag=`; daemons are not given `--tag`, see below). */
  tag?: string;
  /** Guest RAM in MiB; default 1024. */
  memoryMiB?: number;
  /** Extra guest kernel command-line parameters, e.g. ['lsm=selinux']; each one word. */
  kernelArgs?: string[];
}

export interface DaemonExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** False when it was still running after QEMU quit and had to be killed. */
  exitedOnItsOwn: boolean;
}

export interface GuestRun {
  output: string;
  status: number;
  daemonExit: DaemonExit;
  daemonStderr: string;
  /** Whole serial console (kernel messages and the report), for diagnostics. */
  console: string;
  durationMs: number;
}

export class GuestError extends Error {
  constructor(
    message: string,
    readonly console: string,
    readonly daemonStderr: string,
  ) {
    super(`${message}\n--- guest console ---\n${console.slice(-8000)}\n--- daemon stderr ---\n${daemonStderr.slice(-8000)}`);
    this.name = 'GuestError';
  }
}

let provisioned: Promise<Paths> | undefined;

/** Runs scripts/provision.sh once per process; its last stdout line is the JSON of paths. */
export function provision(): Promise<Paths> {
  provisioned ??= runProvision();
  return provisioned;
}

async function runProvision(): Promise<Paths> {
  const child = spawn('bash', [path.join(repoRoot, 'scripts', 'provision.sh')], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) {
    throw new Error(`scripts/provision.sh failed (exit ${code}); guest tests need it:\n${stderr.slice(-4000)}`);
  }
  const last = stdout.trim().split('\n').pop() ?? '';
  let parsed: Partial<Paths>;
  try {
    parsed = JSON.parse(last) as Partial<Paths>;
  } catch {
    throw new Error(`scripts/provision.sh printed no JSON paths line; got: ${JSON.stringify(last)}`);
  }
  for (const key of ['qemu', 'vmlinux', 'initramfs', 'reference'] as const) {
    if (typeof parsed[key] !== 'string' || parsed[key] === '') {
      throw new Error(`scripts/provision.sh output lacks "${key}": ${last}`);
    }
  }
  return parsed as Paths;
}

/** Command line of our daemon: the built CLI, run by this Node. */
export function oursArgv(): string[] {
  return [process.execPath, path.join(repoRoot, 'dist', 'cli.js')];
}

async function daemonArgv(spec: DaemonSpec, paths: Paths): Promise<string[]> {
  if ('argv' in spec) return [...spec.argv];
  if (spec.kind === 'reference') return [paths.reference, ...(spec.extraArgs ?? [])];
  const cli = path.join(repoRoot, 'dist', 'cli.js');
  try {
    await fs.access(cli);
  } catch {
    throw new Error(`our daemon is not built: ${path.relative(repoRoot, cli)} is missing (run \`npm run build\`)`);
  }
  return [...oursArgv(), ...(spec.extraArgs ?? [])];
}

function collect(child: ChildProcess): { text: () => string } {
  let text = '';
  child.stdout?.on('data', (chunk: Buffer) => (text += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return { text: () => text };
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function waitForSocket(socket: string, daemon: ChildProcess, deadline: number, log: () => string): Promise<void> {
  for (;;) {
    if (daemon.exitCode !== null || daemon.signalCode !== null) {
      throw new GuestError(`daemon exited (code ${daemon.exitCode}, signal ${daemon.signalCode}) before creating its socket`, '', log());
    }
    const st = await fs.stat(socket).catch(() => undefined);
    if (st?.isSocket()) return;
    if (Date.now() > deadline) throw new GuestError(`daemon did not create ${socket} in time`, '', log());
    await sleep(20);
  }
}

const BEGIN = '=== GUEST OUTPUT BEGIN ===\n';
const END = '=== GUEST OUTPUT END ===\n';
const STATUS = /=== GUEST STATUS (\d+) ===/;

/** Extracts the script's output and status from the report the guest's /init writes. */
export function parseReport(raw: string): { output: string; status: number } | undefined {
  // Serial ttys turn "\n" into "\r\n".
  const report = raw.replace(/\r\n/g, '\n');
  const begin = report.indexOf(BEGIN);
  const end = report.indexOf(END, begin + BEGIN.length);
  if (begin < 0 || end < 0) return undefined;
  const status = STATUS.exec(report.slice(end));
  if (!status) return undefined;
  return { output: report.slice(begin + BEGIN.length, end), status: Number(status[1]) };
}

interface QemuExtras {
  /** QMP monitor socket QEMU listens on. */
  qmpSocket?: string;
  /** `-incoming` value: the guest does not boot but waits for a migration stream. */
  incoming?: string;
  /** Leave out -no-reboot: a guest reboot (or system_reset) restarts the guest instead of ending QEMU. */
  allowReboot?: boolean;
}

function qemuArgs(
  paths: Paths,
  opts: RunGuestOptions,
  socket: string,
  initrd: string,
  reportFile: string,
  extras: QemuExtras = {},
): string[] {
  const mem = opts.memoryMiB ?? 1024;
  const tag = opts.tag ?? 'myfs';
  if (!Number.isInteger(mem) || mem < 128) throw new Error(`memoryMiB must be an integer >= 128, got ${mem}`);
  const queues = opts.numRequestQueues ? `,num-request-queues=${opts.numRequestQueues}` : '';
  const extra = opts.kernelArgs ?? [];
  for (const arg of extra) {
    if (!/^[\x21-\x7e]+$/.test(arg)) throw new Error(`kernel argument must be one printable word: ${JSON.stringify(arg)}`);
  }
  return [
    // One host thread for both vCPUs: with multi-threaded TCG, a vCPU sometimes runs code the
    // other is patching (static keys, via int3) and the guest oopses while booting.
    '-accel', 'tcg,thread=single',
    '-smp', String(opts.vcpus ?? 2),
    '-m', `${mem}M`,
    // vhost-user needs guest RAM the daemon can map: shared memfd.
    '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-numa', 'node,memdev=mem',
    '-nodefaults', '-nographic',
    ...(extras.allowReboot ? [] : ['-no-reboot']),
    ...(extras.qmpSocket ? ['-qmp', `unix:${extras.qmpSocket},server=on,wait=off`] : []),
    ...(extras.incoming ? ['-incoming', extras.incoming] : []),
    '-serial', 'stdio',
    // ttyS1 carries only the report, free of kernel messages.
    '-serial', `file:${reportFile}`,
    '-chardev', `socket,id=vfs,path=${socket}`,
    '-device', `vhost-user-fs-pci,chardev=vfs,tag=${tag},queue-size=1024${queues}`,
    '-kernel', paths.vmlinux,
    '-initrd', initrd,
    // tsc=reliable: no clocksource watchdog, which under emulation on a loaded host may find the
    // TSC unstable and switch clocksources mid-test.
    '-append', [`console=ttyS0 quiet loglevel=3 panic=-1 tsc=reliable vfs_tag=${tag}`, ...extra].join(' '),
  ];
}

/**
 * Starts the daemon on a fresh socket, boots the guest, runs the script, and waits for both to end.
 * The daemon is never given `--tag`: QEMU 7.1-8.0 crash when the backend offers the config protocol
 * feature, and QEMU's own `tag=` is what the guest sees anyway.
 */
export async function runGuest(opts: RunGuestOptions): Promise<GuestRun> {
  const started = Date.now();
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const deadline = started + timeoutMs;
  const tag = opts.tag ?? 'myfs';
  // QEMU option values cannot hold a bare comma, and the kernel command line splits on spaces.
  if (!/^[A-Za-z0-9_.-]{1,36}$/.test(tag)) throw new Error(`invalid mount tag ${JSON.stringify(tag)}`);
  const paths = await provision();
  const argv = await daemonArgv(opts.daemon, paths);
  const sharedDir = path.resolve(opts.sharedDir);
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-guest-'));
  const socket = path.join(work, 'vfs.sock');
  if (Buffer.byteLength(socket) >= 108 || socket.includes(',')) {
    await fs.rm(work, { recursive: true, force: true });
    throw new Error(`socket path unusable (too long for AF_UNIX, or has a comma): ${socket}; set TMPDIR`);
  }
  const reportFile = path.join(work, 'report.txt');
  const initrd = path.join(work, 'initrd.cpio');
  const extra = cpioArchive([
    { name: 'test', mode: 0o755 },
    ...(opts.files ?? []),
    { name: 'test/run.sh', data: opts.script, mode: 0o755 },
  ]);
  await fs.writeFile(initrd, Buffer.concat([await fs.readFile(paths.initramfs), extra]));

  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('daemon argv is empty');
  const daemon = spawn(cmd, [...args, `--socket-path=${socket}`, `--shared-dir=${sharedDir}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const daemonLog = collect(daemon);
  const daemonError = new Promise<Error>((resolve) => daemon.once('error', resolve));
  let qemu: ChildProcess | undefined;
  let consoleText = (): string => '';
  try {
    const spawnFailed = await withTimeout(daemonError, 50);
    if (spawnFailed !== 'timeout') throw new Error(`cannot start daemon ${cmd}: ${spawnFailed.message}`);
    await waitForSocket(socket, daemon, Math.min(deadline, Date.now() + 15_000), daemonLog.text);

    qemu = spawn(paths.qemu, qemuArgs(paths, opts, socket, initrd, reportFile), { stdio: ['ignore', 'pipe', 'pipe'] });
    consoleText = collect(qemu).text;
    const qemuExited = exitOf(qemu);
    // A daemon that dies mid-run leaves the guest blocked on its requests forever; QEMU gets a
    // short grace period to finish on its own (the daemon normally exits as QEMU disconnects).
    const daemonDied = exitOf(daemon).then(async () => {
      if ((await withTimeout(qemuExited, 5_000)) === 'timeout') return 'daemon-died' as const;
      return new Promise<never>(() => {});
    });
    const first = await withTimeout(
      Promise.race([qemuExited, daemonDied]),
      Math.max(0, deadline - Date.now()),
    );
    if (first === 'daemon-died') {
      throw new GuestError(
        `daemon exited (code ${daemon.exitCode}, signal ${daemon.signalCode}) while the guest was running`,
        consoleText(),
        daemonLog.text(),
      );
    }
    const qemuExit = first;
    if (qemuExit === 'timeout') {
      throw new GuestError(`guest run timed out after ${timeoutMs} ms`, consoleText(), daemonLog.text());
    }
    const report = await fs.readFile(reportFile, 'utf8').catch(() => '');
    // The console copy is the fallback should ttyS1 be unavailable.
    const parsed = parseReport(report) ?? parseReport(consoleText());
    if (!parsed) {
      throw new GuestError(
        `guest produced no report (QEMU exit code ${qemuExit.code}, signal ${qemuExit.signal})`,
        consoleText(),
        daemonLog.text(),
      );
    }
    if (qemuExit.code !== 0) {
      throw new GuestError(`QEMU exited with code ${qemuExit.code}, signal ${qemuExit.signal}`, consoleText(), daemonLog.text());
    }

    // Upstream exits by itself once the frontend disconnects; give it a moment, then insist.
    let daemonExit: DaemonExit;
    const ended = await withTimeout(exitOf(daemon), 5_000);
    if (ended === 'timeout') {
      daemon.kill('SIGKILL');
      const killed = await exitOf(daemon);
      daemonExit = { ...killed, exitedOnItsOwn: false };
    } else {
      daemonExit = { ...ended, exitedOnItsOwn: true };
    }
    return {
      output: parsed.output,
      status: parsed.status,
      daemonExit,
      daemonStderr: daemonLog.text(),
      console: consoleText(),
      durationMs: Date.now() - started,
    };
  } finally {
    for (const child of [qemu, daemon]) {
      // A child that never spawned (no pid) has no exit event to wait for.
      if (child && child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exitOf(child);
      }
    }
    await fs.rm(work, { recursive: true, force: true });
  }
}

// --- long-running guests, a QMP monitor, live migration -------------------------------------------

/** A QMP client: commands answered in order, events kept and announced ('event'). */
export class Qmp extends EventEmitter {
  readonly events: { event: string; data?: unknown; timestamp?: unknown }[] = [];
  private buffer = '';
  private readonly waiting: { resolve: (v: unknown) => void; reject: (e: Error) => void; cmd: string }[] = [];
  private closed = false;

  private constructor(private readonly sock: net.Socket) {
    super();
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.onData(chunk));
    const fail = (): void => {
      this.closed = true;
      for (const w of this.waiting.splice(0)) w.reject(new Error(`QMP connection closed before answering ${w.cmd}`));
      this.emit('close');
    };
    sock.on('close', fail);
    sock.on('error', () => undefined);
  }

  /** Connects to QEMU's QMP socket (retrying until it exists) and leaves capabilities negotiation done. */
  static async connect(socket: string, deadline: number): Promise<Qmp> {
    for (;;) {
      const sock = await new Promise<net.Socket | undefined>((resolve) => {
        const s = net.createConnection(socket);
        s.once('connect', () => resolve(s));
        s.once('error', () => resolve(undefined));
      });
      if (sock) {
        const qmp = new Qmp(sock);
        await qmp.greeting();
        await qmp.execute('qmp_capabilities');
        return qmp;
      }
      if (Date.now() > deadline) throw new Error(`QMP socket ${socket} did not accept a connection in time`);
      await sleep(50);
    }
  }

  private greetingSeen?: () => void;
  private greeted = false;
  private greeting(): Promise<void> {
    if (this.greeted) return Promise.resolve();
    return new Promise((resolve) => (this.greetingSeen = resolve));
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as Record<string, unknown>;
      if ('QMP' in msg) {
        this.greeted = true;
        this.greetingSeen?.();
      } else if ('event' in msg) {
        const ev = msg as { event: string; data?: unknown; timestamp?: unknown };
        this.events.push(ev);
        this.emit('event', ev);
      } else if ('return' in msg || 'error' in msg) {
        const w = this.waiting.shift();
        if (!w) continue;
        if ('error' in msg) {
          const err = msg.error as { class?: string; desc?: string };
          w.reject(new QmpError(w.cmd, err.class ?? 'Error', err.desc ?? JSON.stringify(err)));
        } else w.resolve(msg.return);
      }
    }
  }

  /** Runs a QMP command; rejects with QmpError when QEMU answers with an error. */
  execute<T = unknown>(cmd: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`QMP connection closed; cannot run ${cmd}`));
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ resolve: resolve as (v: unknown) => void, reject, cmd });
      this.sock.write(JSON.stringify(args ? { execute: cmd, arguments: args } : { execute: cmd }) + '\n');
    });
  }

  /** A human monitor command through QMP, e.g. 'info migrate'; returns its text. */
  hmp(command: string): Promise<string> {
    return this.execute<string>('human-monitor-command', { 'command-line': command });
  }

  close(): void {
    this.sock.destroy();
  }
}

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

export interface StartGuestOptions extends RunGuestOptions {
  /** QEMU binary; default the system QEMU (paths.qemu). */
  qemu?: string;
  /** `-incoming` value, e.g. 'defer' or 'unix:/path': the guest waits for a migration instead of booting. */
  incoming?: string;
  /** A guest reboot restarts it in the same QEMU (no -no-reboot). */
  allowReboot?: boolean;
  /**
   * Attach this QEMU to the daemon of an earlier guest (one started with `--reconnect`, whose QEMU
   * has ended) instead of starting a daemon: that daemon is neither waited for nor killed here.
   */
  attachTo?: Guest;
}

/** A guest started by startGuest: its daemon and QEMU run until it powers off or stop() is called. */
export interface Guest {
  qmp: Qmp;
  daemon: ChildProcess;
  qemu: ChildProcess;
  /** Folder of this guest's sockets and files (removed by stop()). */
  work: string;
  socket: string;
  daemonStderr(): string;
  console(): string;
  /** The report so far (ttyS1), parsed, or undefined before the script ended. */
  report(): Promise<{ output: string; status: number } | undefined>;
  /**
   * Waits for QEMU to end on its own (the guest powered off) and returns the run as runGuest does.
   * With `daemonStays` the daemon is expected to go on (`--reconnect`): it is not waited for.
   */
  wait(timeoutMs: number, opts?: { daemonStays?: boolean }): Promise<GuestRun>;
  /** Kills QEMU and the daemon (if still running) and removes the work folder. */
  stop(): Promise<void>;
}

/**
 * Starts a daemon and a QEMU with a QMP monitor, and returns at once (the guest boots, or with
 * `incoming` waits for a migration). The script, files, tag and memory must be the same on both ends
 * of a migration, so are the QEMU arguments built from them.
 */
export async function startGuest(opts: StartGuestOptions): Promise<Guest> {
  const started = Date.now();
  const tag = opts.tag ?? 'myfs';
  if (!/^[A-Za-z0-9_.-]{1,36}$/.test(tag)) throw new Error(`invalid mount tag ${JSON.stringify(tag)}`);
  const paths = await provision();
  const argv = await daemonArgv(opts.daemon, paths);
  const sharedDir = path.resolve(opts.sharedDir);
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-vm-'));
  const attached = opts.attachTo;
  const socket = attached?.socket ?? path.join(work, 'vfs.sock');
  const qmpSocket = path.join(work, 'qmp.sock');
  if (Buffer.byteLength(qmpSocket) >= 108 || work.includes(',')) {
    await fs.rm(work, { recursive: true, force: true });
    throw new Error(`socket path unusable (too long for AF_UNIX, or has a comma): ${socket}; set TMPDIR`);
  }
  const reportFile = path.join(work, 'report.txt');
  const initrd = path.join(work, 'initrd.cpio');
  const extra = cpioArchive([
    { name: 'test', mode: 0o755 },
    ...(opts.files ?? []),
    { name: 'test/run.sh', data: opts.script, mode: 0o755 },
  ]);
  await fs.writeFile(initrd, Buffer.concat([await fs.readFile(paths.initramfs), extra]));
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('daemon argv is empty');
  const daemon =
    attached?.daemon ??
    spawn(cmd, [...args, `--socket-path=${socket}`, `--shared-dir=${sharedDir}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  const daemonLog = attached ? { text: attached.daemonStderr } : collect(daemon);
  const daemonError = attached ? new Promise<Error>(() => undefined) : new Promise<Error>((resolve) => daemon.once('error', resolve));
  let qemu: ChildProcess | undefined;
  const kill = async (): Promise<void> => {
    for (const child of attached ? [qemu] : [qemu, daemon]) {
      if (child && child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exitOf(child);
      }
    }
  };
  try {
    const spawnFailed = await withTimeout(daemonError, 50);
    if (spawnFailed !== 'timeout') throw new Error(`cannot start daemon ${cmd}: ${spawnFailed.message}`);
    await waitForSocket(socket, daemon, Date.now() + 15_000, daemonLog.text);
    const qemuArgv = qemuArgs(paths, opts, socket, initrd, reportFile, {
      qmpSocket,
      incoming: opts.incoming,
      allowReboot: opts.allowReboot,
    });
    const q = spawn(opts.qemu ?? paths.qemu, qemuArgv, { stdio: ['ignore', 'pipe', 'pipe'] });
    qemu = q;
    const consoleText = collect(q).text;
    const qemuExited = exitOf(q);
    const qmp = await Promise.race([
      Qmp.connect(qmpSocket, Date.now() + 20_000),
      qemuExited.then((e) => {
        throw new GuestError(`QEMU exited (code ${e.code}, signal ${e.signal}) before its monitor answered`, consoleText(), daemonLog.text());
      }),
    ]);
    const report = async () => {
      const text = await fs.readFile(reportFile, 'utf8').catch(() => '');
      return parseReport(text);
    };
    return {
      qmp,
      daemon,
      qemu: q,
      work,
      socket,
      daemonStderr: daemonLog.text,
      console: consoleText,
      report,
      async wait(timeoutMs: number, waitOpts: { daemonStays?: boolean } = {}): Promise<GuestRun> {
        const ended = await withTimeout(qemuExited, timeoutMs);
        if (ended === 'timeout') throw new GuestError(`guest did not power off within ${timeoutMs} ms`, consoleText(), daemonLog.text());
        const parsed = (await report()) ?? parseReport(consoleText());
        if (!parsed) {
          throw new GuestError(`guest produced no report (QEMU exit code ${ended.code}, signal ${ended.signal})`, consoleText(), daemonLog.text());
        }
        if (ended.code !== 0) throw new GuestError(`QEMU exited with code ${ended.code}, signal ${ended.signal}`, consoleText(), daemonLog.text());
        let daemonExit: DaemonExit;
        const done = waitOpts.daemonStays || attached ? 'stays' : await withTimeout(exitOf(daemon), 5_000);
        if (done === 'stays') {
          daemonExit = { code: daemon.exitCode, signal: daemon.signalCode, exitedOnItsOwn: daemon.exitCode !== null || daemon.signalCode !== null };
        } else if (done === 'timeout') {
          daemon.kill('SIGKILL');
          daemonExit = { ...(await exitOf(daemon)), exitedOnItsOwn: false };
        } else daemonExit = { ...done, exitedOnItsOwn: true };
        return {
          output: parsed.output,
          status: parsed.status,
          daemonExit,
          daemonStderr: daemonLog.text(),
          console: consoleText(),
          durationMs: Date.now() - started,
        };
      },
      async stop(): Promise<void> {
        qmp.close();
        await kill();
        await fs.rm(work, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await kill();
    await fs.rm(work, { recursive: true, force: true });
    throw error;
  }
}

/** What query-migrate says once a migration has ended (times in ms). */
export interface MigrationResult {
  status: string;
  totalTimeMs?: number;
  downtimeMs?: number;
  setupTimeMs?: number;
  errorDesc?: string;
  /** RAM transferred, bytes. */
  ramTransferred?: number;
  raw: Record<string, unknown>;
}

/** Polls query-migrate on the source until the migration completes, fails or is cancelled. */
export async function waitMigration(source: Qmp, timeoutMs: number): Promise<MigrationResult> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await source.execute<Record<string, unknown>>('query-migrate');
    const status = String(info.status ?? 'none');
    if (['completed', 'failed', 'cancelled'].includes(status)) {
      const ram = info.ram as { transferred?: number } | undefined;
      return {
        status,
        totalTimeMs: info['total-time'] as number | undefined,
        downtimeMs: info.downtime as number | undefined,
        setupTimeMs: info['setup-time'] as number | undefined,
        errorDesc: info['error-desc'] as string | undefined,
        ramTransferred: ram?.transferred,
        raw: info,
      };
    }
    if (Date.now() > deadline) throw new Error(`migration still ${status} after ${timeoutMs} ms: ${JSON.stringify(info)}`);
    await sleep(50);
  }
}

/** Starts a migration from `source` to a destination listening on `uri` ('unix:/path'). */
export async function migrate(source: Qmp, uri: string): Promise<void> {
  await source.execute('migrate', { uri });
}
