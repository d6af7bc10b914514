// One device process, seen from Node: start it, follow its control events, stop it.
import { ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { DeviceConfig, DeviceOptions, compileDevice, configWarnings, deviceLabels } from './config';
import { DeviceAbortError, DeviceError } from './errors';
import { deviceEnvironment, nativeArtifacts } from './native';
import { escapeLogText } from './log';
import { DeviceMessage, LineSplitter, LineTooLongError, ProtocolError, STOP_COMMAND, parseDeviceMessage } from './protocol';
import { LogLevel } from './validate';
import { DEFAULT_STATS_TIMEOUT_MS, DeviceStats, StatsRequests } from './stats';

/** How a device process ended: an exit code, or the signal that killed it (the other is `null`). */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One log record of a device (or of the library about it, with target `virtiofsd`). */
export interface LogRecord {
  level: Exclude<LogLevel, 'off'>;
  /** The Rust module that logged it, as `RUST_LOG` names targets. */
  target: string;
  /** Escaped: control characters appear as `\xNN`, so a record is always one line. */
  message: string;
  /** When the library received it. */
  time: Date;
}

/**
 * Events of a Device (`device.on(name, listener)`), with their listener arguments. A
 * `DeviceGroup` emits the same events with the device's name first.
 */
export interface DeviceEvents {
  /** The device listens on its vhost-user socket (`/path` or `fd:N`); `ready` resolves. */
  listening: [socket: string];
  /**
   * A vhost-user frontend attached; `connection` counts the frontends this device has served,
   * from 1. Only a device started with `reconnect: true` sees more than one.
   */
  connected: [connection: number];
  /**
   * The frontend of `connection` went away. Without `reconnect` the device exits 0 next, as
   * upstream; with `reconnect: true` it keeps listening, and the next frontend brings
   * `connected` with `connection + 1`.
   */
  disconnected: [connection: number];
  /**
   * The device reported a fatal error or broke the control protocol; it exits next. Emitted
   * only while a listener is attached, so a failing device never throws into the event loop.
   */
  error: [error: DeviceError];
  /** The process has exited (after its last control messages were read). */
  exit: [status: ExitStatus];
  /** A log record of the device, already filtered by its log level, text escaped. */
  log: [record: LogRecord];
}

/** How to start one device (the second argument of `startDevice`). */
export interface StartOptions {
  /** Give up (and kill the process) if it is not listening after this long. Default 10 s. */
  startTimeoutMs?: number;
  /**
   * Cancels the start and, once started, stops the device. Aborted before or while starting,
   * `startDevice` rejects with a DeviceError of reason `aborted` (named `AbortError`) after the
   * process, if one was created, is gone. Aborted later, the device is stopped as by `stop()`.
   */
  signal?: AbortSignal;
  /**
   * Receives every log record from the moment the process exists. Listeners added after
   * `startDevice` resolves miss what the device logged while starting, and a frontend that
   * connects at once can make the device log (and even exit) before then.
   */
  onLog?: (record: LogRecord) => void;
  /**
   * Called with the Device as soon as its process exists, before it listens: listeners attached
   * here see every event, `listening` included. `startDevice` still resolves only once it listens.
   */
  onSpawn?: (device: Device) => void;
}

/** How long a device may take to listen before `startDevice` kills it (`startTimeoutMs`). */
export const DEFAULT_START_TIMEOUT_MS = 10_000;
/** How long `stop()` waits for a clean exit before SIGKILL. */
export const DEFAULT_STOP_TIMEOUT_MS = 5_000;
/** Descriptors of a library-started device: configuration in, control channel both ways. */
const CONFIG_FD = 3;
const CONTROL_FD = 4;
const SOCKET_FD = 5;
/** How long after the exit the last control lines may still arrive. */
const EXIT_DRAIN_MS = 500;
/** How long a device that failed to start may take to exit on its own before it is killed. */
const FAILED_START_EXIT_MS = 1_000;
/**
 * Proof of being this module: the Device constructor refuses callers without it, so a Device
 * only ever wraps a process this library started.
 */
const CONSTRUCTION_TOKEN: unique symbol = Symbol('virtiofsd Device construction');

function describeExit(status: ExitStatus): string {
  return status.signal !== null ? `killed by ${status.signal}` : `exit status ${String(status.code)}`;
}

/** Set by Device's static block: the only way to construct a Device from outside the class. */
let constructDevice: (child: ChildProcess, config: DeviceConfig) => Device;

/**
 * Wraps a child process that has the descriptor layout of the device executable (control
 * channel on fd 4). Not part of the package's entry point; the test seam for fake devices.
 * @internal
 */
export function adoptDeviceProcess(child: ChildProcess, config: DeviceConfig): Device {
  return constructDevice(child, config);
}

/** A running (or finished) device process. Created by `startDevice` or `DeviceGroup.add`. */
export class Device extends EventEmitter<DeviceEvents> {
  /** Process id of the device executable. */
  readonly pid: number;
  /** The host directory the device serves (absolute). */
  readonly sharedDir: string;
  /** The virtio-fs tag the device announces, or `null` when the VM monitor names it. */
  readonly tag: string | null;
  /** Resolves once the device listens; rejects with a DeviceError if it fails or is cancelled first. */
  readonly ready: Promise<void>;
  /** Resolves once the process has exited; never rejects. */
  readonly exited: Promise<ExitStatus>;
  /**
   * Whether the device outlives its frontend (`reconnect: true`): a disconnect is then not the
   * end of the device, only `stop()`, a signal or a failure is.
   */
  readonly reconnect: boolean;

  private readonly child: ChildProcess;
  private readonly control: net.Socket;
  private readonly lines = new LineSplitter();
  private readonly stderrLines = new LineSplitter();
  private resolveExit!: (status: ExitStatus) => void;
  private status: ExitStatus | null = null;
  private listeningOn: string | null = null;
  private isConnected = false;
  private connectionCount = 0;
  private fatal: string | null = null;
  private controlBroken = false;
  private readyWaiter: { resolve: () => void; reject: (error: DeviceError) => void } | null = null;
  private exitTimer: NodeJS.Timeout | null = null;
  private referenced = true;
  /** Signals that `kill()` or `stop()` sent: an exit by one of them is not an error. */
  private readonly requestedSignals = new Set<NodeJS.Signals>();
  /** `stats()` calls waiting for their replies. */
  private readonly statsRequests = new StatsRequests();

  static {
    constructDevice = (child, config) => new Device(CONSTRUCTION_TOKEN, child, config);
  }

  private constructor(token: typeof CONSTRUCTION_TOKEN, child: ChildProcess, config: DeviceConfig) {
    if (token !== CONSTRUCTION_TOKEN) {
      throw new DeviceError('a Device is created by startDevice or DeviceGroup.add, not constructed', 'misuse');
    }
    super();
    this.child = child;
    this.sharedDir = config.sharedDir;
    this.tag = config.tag;
    this.reconnect = config.reconnect === true;
    this.pid = child.pid ?? -1;
    this.exited = new Promise((resolve) => {
      this.resolveExit = resolve;
    });
    this.ready = new Promise((resolve, reject) => {
      this.readyWaiter = { resolve, reject };
    });
    // Whoever awaits `ready` still sees the rejection; nobody awaiting it is not a crash.
    this.ready.catch(() => undefined);
    this.control = child.stdio[CONTROL_FD] as net.Socket;
    // Bytes, not strings: the splitter bounds lines in bytes and decodes each complete line once.
    this.control.on('data', (chunk: Buffer) => this.onData(chunk));
    // A broken control socket means the process is gone or going; the exit event tells.
    this.control.on('error', () => undefined);
    // The device writes to stderr only before its logger exists or when something went badly
    // wrong; those lines are shown as error records, bounded like control lines.
    child.stderr?.on('data', (chunk: Buffer) => this.onStderr(chunk));
    // 'close' comes once the control channel and stderr are drained too, so a fatal error the
    // device sent just before exiting is read first. A descriptor kept open by some other
    // process must not hold the exit back for long, though.
    child.on('close', (code, signal) => this.finish({ code, signal }));
    child.on('exit', (code, signal) => {
      this.exitTimer = setTimeout(() => this.finish({ code, signal }), EXIT_DRAIN_MS);
      if (!this.referenced) this.exitTimer.unref();
    });
  }

  /** Where the device listens (`/path` or `fd:N`), once it is listening. */
  get socket(): string | null {
    return this.listeningOn;
  }

  /** Whether a vhost-user frontend is attached right now. */
  get connected(): boolean {
    return this.isConnected;
  }

  /** How many frontends have attached so far (the one attached now included). */
  get connections(): number {
    return this.connectionCount;
  }

  /** Exit status, once the process has exited. */
  get exitStatus(): ExitStatus | null {
    return this.status;
  }

  /** The fatal error the device reported, if any. */
  get failure(): string | null {
    return this.fatal;
  }

  /**
   * Whether the process ended with an error: a non-zero exit code, or a signal that neither
   * `kill()` nor `stop()` sent. `null` while it runs. A `DeviceGroup` restart policy restarts
   * exactly these devices.
   */
  get exitedWithError(): boolean | null {
    const status = this.status;
    if (status === null) return null;
    if (status.signal !== null) return !this.requestedSignals.has(status.signal);
    return status.code !== 0;
  }

  /**
   * Asks the device to stop (it removes its socket and exits 0); after `timeoutMs` it is killed
   * with SIGKILL. Resolves with the exit status.
   */
  async stop(timeoutMs: number = DEFAULT_STOP_TIMEOUT_MS): Promise<ExitStatus> {
    if (this.status !== null) return this.status;
    if (!this.control.destroyed && this.control.writable) {
      this.control.write(STOP_COMMAND, () => undefined);
    }
    const timer = setTimeout(() => this.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The device's statistics now (see `DeviceStats`): request counts, errors, bytes, latency per
   * queue, what it holds, its confinement. Rejects with a DeviceError whose reason is `exited`
   * when the process ends (or has ended) first, `timeout` without a reply within `timeoutMs`,
   * `protocol` once the device broke the control protocol, and `misuse` with 64 calls already
   * waiting.
   */
  stats(timeoutMs: number = DEFAULT_STATS_TIMEOUT_MS): Promise<DeviceStats> {
    if (this.status !== null) {
      return Promise.reject(new DeviceError(`device exited (${describeExit(this.status)})`, 'exited', this.status));
    }
    if (this.controlBroken) return Promise.reject(new DeviceError('the device broke the control protocol', 'protocol'));
    return this.statsRequests.request(
      (line) => {
        if (!this.control.destroyed && this.control.writable) this.control.write(line, () => undefined);
      },
      timeoutMs,
      (why) =>
        why === 'timeout'
          ? new DeviceError(`device ${this.pid} sent no stats within ${timeoutMs} ms`, 'timeout')
          : new DeviceError('too many stats() calls waiting for this device', 'misuse'),
    );
  }

  /** Sends a signal to the device process; a no-op once it has exited. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.status !== null) return;
    this.requestedSignals.add(signal);
    this.signalProcess(signal);
  }

  /**
   * Makes sure the process is gone: SIGKILL now, or after `graceMs` if it may still exit on its
   * own (a device that reported a fatal error is about to). Resolves once it has exited.
   * @internal
   */
  async terminate(graceMs = 0): Promise<ExitStatus> {
    if (this.status !== null) return this.status;
    const timer = setTimeout(() => this.signalProcess('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Fails `ready` with `error` unless the device is already listening. The caller ends the
   * process. @internal
   */
  failStart(error: DeviceError): void {
    this.readyWaiter?.reject(error);
    this.readyWaiter = null;
  }

  /** Lets the Node process exit while this device still runs. */
  unref(): this {
    this.referenced = false;
    this.exitTimer?.unref();
    this.child.unref();
    this.control.unref();
    (this.child.stderr as net.Socket | null)?.unref();
    return this;
  }

  ref(): this {
    this.referenced = true;
    this.exitTimer?.ref();
    this.child.ref();
    this.control.ref();
    (this.child.stderr as net.Socket | null)?.ref();
    return this;
  }

  /**
   * Node reaps its children itself, so the pid cannot have been reused before 'exit'. SIGKILL
   * goes to the device's whole process group (it was spawned as the group's leader): a device
   * killed while its sandbox forks would otherwise leave the new child running, since that child
   * may not have asked for its parent-death signal yet. The kernel lets no fork escape a signal
   * sent to the group.
   */
  private signalProcess(signal: NodeJS.Signals): void {
    if (this.status !== null) return;
    if (signal === 'SIGKILL' && this.pid > 0) {
      try {
        process.kill(-this.pid, signal);
        return;
      } catch {
        // No such group (cannot happen while the leader is unreaped); signal the process itself.
      }
    }
    this.child.kill(signal);
  }

  private onData(chunk: Buffer): void {
    if (this.controlBroken) return;
    let lines: string[];
    try {
      lines = this.lines.push(chunk);
    } catch (error) {
      if (!(error instanceof LineTooLongError)) throw error;
      this.onProtocolViolation(error.message);
      return;
    }
    for (const line of lines) {
      let message: DeviceMessage;
      try {
        message = parseDeviceMessage(line);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        this.emitLog('warn', `ignored bad control message: ${error.message}`);
        continue;
      }
      this.onMessage(message);
    }
  }

  private onStderr(chunk: Buffer): void {
    let lines: string[];
    try {
      lines = this.stderrLines.push(chunk);
    } catch (error) {
      if (!(error instanceof LineTooLongError)) throw error;
      this.child.stderr?.removeAllListeners('data');
      this.child.stderr?.resume();
      this.emitLog('warn', `device stderr ignored from now on: ${error.message}`);
      return;
    }
    for (const line of lines) this.emitLog('error', line);
  }

  private onMessage(message: DeviceMessage): void {
    switch (message.event) {
      case 'listening':
        if (this.listeningOn !== null) break;
        this.listeningOn = message.socket;
        this.readyWaiter?.resolve();
        this.readyWaiter = null;
        this.emit('listening', message.socket);
        break;
      case 'connected':
        // One frontend at a time: a second `connected` before `disconnected` is a confused peer.
        if (this.isConnected) {
          this.emitLog('warn', 'ignored control event connected: a frontend is already attached');
          break;
        }
        this.isConnected = true;
        this.connectionCount += 1;
        this.emit('connected', this.connectionCount);
        break;
      case 'disconnected':
        if (!this.isConnected) {
          this.emitLog('warn', 'ignored control event disconnected: no frontend is attached');
          break;
        }
        this.isConnected = false;
        this.emit('disconnected', this.connectionCount);
        break;
      case 'log':
        this.emitRecord(message.level, message.target, message.message);
        break;
      case 'stats':
        this.statsRequests.settle(message.id, message.stats);
        break;
      case 'error': {
        const text = escapeLogText(message.message);
        this.fatal = text;
        const error = new DeviceError(text, 'failed');
        if (this.readyWaiter !== null) {
          this.readyWaiter.reject(error);
          this.readyWaiter = null;
        } else {
          this.emitLog('error', text);
        }
        this.emitError(error);
        break;
      }
    }
  }

  /** A device that breaks the control protocol this way is killed; others are not affected. */
  private onProtocolViolation(why: string): void {
    this.controlBroken = true;
    this.control.pause();
    const message = `device ${this.pid} killed: ${why}`;
    this.fatal ??= message;
    this.emitLog('error', message);
    const error = new DeviceError(message, 'protocol');
    this.failStart(error);
    this.emitError(error);
    // Not a requested signal: the group's restart policy sees a failed device.
    this.signalProcess('SIGKILL');
  }

  /** 'error' without a listener would throw into the embedder's event loop; the exit tells anyway. */
  private emitError(error: DeviceError): void {
    if (this.listenerCount('error') > 0) this.emit('error', error);
  }

  private emitLog(level: LogRecord['level'], message: string): void {
    this.emitRecord(level, 'virtiofsd', message);
  }

  /** Every log record leaves through here; device-supplied text is escaped on the way out. */
  private emitRecord(level: LogRecord['level'], target: string, message: string): void {
    this.emit('log', { level, target: escapeLogText(target), message: escapeLogText(message), time: new Date() });
  }

  private startFailure(status: ExitStatus): DeviceError {
    const why = this.fatal ?? `device exited before listening (${describeExit(status)})`;
    return new DeviceError(why, this.fatal !== null ? 'failed' : 'exited', status);
  }

  private finish(status: ExitStatus): void {
    if (this.status !== null) return;
    if (this.exitTimer !== null) clearTimeout(this.exitTimer);
    this.status = status;
    this.isConnected = false;
    this.control.destroy();
    this.statsRequests.rejectAll(new DeviceError(`device exited (${describeExit(status)})`, 'exited', status));
    if (this.readyWaiter !== null) {
      this.readyWaiter.reject(this.startFailure(status));
      this.readyWaiter = null;
    }
    this.resolveExit(status);
    this.emit('exit', status);
  }
}

/**
 * Validates `options`, starts a device process and resolves once it listens on its vhost-user
 * socket. Rejects with OptionError for bad options (before any process exists) and DeviceError
 * when the device fails to start, times out or is aborted; a rejected start leaves no process.
 */
export async function startDevice(options: DeviceOptions, start: StartOptions = {}): Promise<Device> {
  if (start.signal?.aborted) throw abortError(start.signal);
  const { config, warnings } = compileDevice(options);
  return startFromConfig(config, start, warnings);
}

function abortError(signal: AbortSignal): DeviceAbortError {
  return new DeviceAbortError('the device start was aborted', { cause: signal.reason });
}

/** Starts the device executable as a child: a fresh program, none of this process's memory. */
function spawnDevice(config: DeviceConfig): ChildProcess {
  const { executable } = nativeArtifacts();
  const inherited = config.socket.kind === 'fd' ? [config.socket.fd] : [];
  const childConfig: DeviceConfig =
    config.socket.kind === 'fd' ? { ...config, socket: { kind: 'fd', fd: SOCKET_FD } } : config;
  const child = spawn(executable, [`--config-fd=${CONFIG_FD}`, `--control-fd=${CONTROL_FD}`, ...deviceLabels(childConfig)], {
    argv0: 'virtiofsd',
    // 0-2, configuration, control channel, then the adopted listening socket if any.
    stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe', ...inherited],
    env: deviceEnvironment(),
    // Its own process group: a terminal's Ctrl-C reaches the embedder, which stops devices in order.
    detached: true,
  });
  const configStream = child.stdio[CONFIG_FD] as net.Socket | null;
  configStream?.on('error', () => undefined);
  configStream?.end(JSON.stringify(childConfig));
  return child;
}

/** @internal starts a device from an already validated config; `warnings` go to `onLog` first. */
export async function startFromConfig(config: DeviceConfig, start: StartOptions = {}, warnings: string[] = configWarnings(config)): Promise<Device> {
  const { signal } = start;
  if (signal?.aborted) throw abortError(signal);
  const warn = (message: string): void => start.onLog?.({ level: 'warn', target: 'virtiofsd', message, time: new Date() });
  for (const warning of warnings) warn(warning);
  const child = spawnDevice(config);
  if (child.pid === undefined) {
    const failure = await new Promise<Error>((resolve) => child.once('error', resolve));
    throw new DeviceError(`cannot start the device executable: ${failure.message}`, 'spawn', { cause: failure });
  }
  const device = constructDevice(child, config);
  if (start.onLog) device.on('log', start.onLog);
  await awaitListening(device, start);
  if (signal !== undefined) {
    // Aborted in the same turn as the device became ready: still a cancelled start.
    if (signal.aborted) {
      await device.stop();
      throw abortError(signal);
    }
    const stopOnAbort = (): void => void device.stop();
    signal.addEventListener('abort', stopOnAbort, { once: true });
    void device.exited.then(() => signal.removeEventListener('abort', stopOnAbort));
  }
  return device;
}

/** Waits for `ready` under the start timeout and signal; on any failure the process is ended first. */
async function awaitListening(device: Device, start: StartOptions): Promise<void> {
  const { signal } = start;
  const timeoutMs = start.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const timer = setTimeout(() => {
    device.failStart(new DeviceError(`device did not start listening within ${timeoutMs} ms`, 'timeout'));
  }, timeoutMs);
  const onAbort = (): void => device.failStart(abortError(signal as AbortSignal));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    start.onSpawn?.(device);
    await device.ready;
  } catch (error) {
    // A device that reported its fatal error exits 1 by itself in a moment; others are killed.
    const reported = error instanceof DeviceError && error.reason === 'failed';
    await device.terminate(reported ? FAILED_START_EXIT_MS : 0);
    throw error;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}
