// One device process, seen from Node: start it, follow its control events, stop it.
import { ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { DeviceConfig, DeviceOptions, buildDeviceConfig, configWarnings, deviceLabels } from './config';
import { DeviceError } from './errors';
import { deviceEnvironment, nativeArtifacts } from './native';
import { escapeLogText } from './log';
import { DeviceMessage, LineSplitter, LineTooLongError, ProtocolError, STOP_COMMAND, parseDeviceMessage } from './protocol';
import { LogLevel } from './validate';

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LogRecord {
  level: Exclude<LogLevel, 'off'>;
  target: string;
  message: string;
  time: Date;
}

export interface DeviceEvents {
  log: [record: LogRecord];
  connected: [];
  disconnected: [];
  exit: [status: ExitStatus];
}

export interface StartOptions {
  /** Give up (and kill the process) if it is not listening after this long. Default 10 s. */
  startTimeoutMs?: number;
  /**
   * Receives every log record from the moment the process exists. Listeners added after
   * `startDevice` resolves miss what the device logged while starting, and a frontend that
   * connects at once can make the device log (and even exit) before then.
   */
  onLog?: (record: LogRecord) => void;
}

export const DEFAULT_START_TIMEOUT_MS = 10_000;
export const DEFAULT_STOP_TIMEOUT_MS = 5_000;
/** Descriptors of a library-started device: configuration in, control channel both ways. */
const CONFIG_FD = 3;
const CONTROL_FD = 4;
const SOCKET_FD = 5;
/** How long after the exit the last control lines may still arrive. */
const EXIT_DRAIN_MS = 500;

function describeExit(status: ExitStatus): string {
  return status.signal !== null ? `killed by ${status.signal}` : `exit status ${String(status.code)}`;
}

/** A running (or finished) device process. Create with `startDevice`. */
export class Device extends EventEmitter<DeviceEvents> {
  readonly pid: number;
  readonly config: Readonly<DeviceConfig>;
  /** Resolves once the process has exited; never rejects. */
  readonly exited: Promise<ExitStatus>;

  private readonly child: ChildProcess;
  private readonly control: net.Socket;
  private readonly lines = new LineSplitter();
  private readonly stderrLines = new LineSplitter();
  private resolveExit!: (status: ExitStatus) => void;
  private status: ExitStatus | null = null;
  private listeningOn: string | null = null;
  private isConnected = false;
  private fatal: string | null = null;
  private controlBroken = false;
  private readyWaiter: { resolve: () => void; reject: (error: DeviceError) => void } | null = null;
  private exitTimer: NodeJS.Timeout | null = null;
  private referenced = true;

  /** @internal use `startDevice` */
  constructor(child: ChildProcess, config: DeviceConfig) {
    super();
    this.child = child;
    this.config = Object.freeze({ ...config });
    this.pid = child.pid ?? -1;
    this.exited = new Promise((resolve) => {
      this.resolveExit = resolve;
    });
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

  /** Exit status, once the process has exited. */
  get exitStatus(): ExitStatus | null {
    return this.status;
  }

  /** The fatal error the device reported, if any. */
  get failure(): string | null {
    return this.fatal;
  }

  /** @internal resolves when listening, rejects when the device fails first. */
  waitListening(timeoutMs: number): Promise<void> {
    if (this.listeningOn !== null) return Promise.resolve();
    if (this.status !== null) return Promise.reject(this.startFailure(this.status));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readyWaiter = null;
        this.kill('SIGKILL');
        reject(new DeviceError(`device did not start listening within ${timeoutMs} ms`, 'timeout'));
      }, timeoutMs);
      this.readyWaiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
    });
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

  /** Sends a signal to the device process; a no-op once it has exited. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.status !== null) return;
    // Node reaps its children itself, so the pid cannot have been reused before 'exit'.
    this.child.kill(signal);
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
        this.listeningOn = message.socket;
        this.readyWaiter?.resolve();
        this.readyWaiter = null;
        break;
      case 'connected':
        this.isConnected = true;
        this.emit('connected');
        break;
      case 'disconnected':
        this.isConnected = false;
        this.emit('disconnected');
        break;
      case 'log':
        this.emitRecord(message.level, message.target, message.message);
        break;
      case 'error': {
        const text = escapeLogText(message.message);
        this.fatal = text;
        if (this.readyWaiter !== null) {
          this.readyWaiter.reject(new DeviceError(text, 'failed'));
          this.readyWaiter = null;
        } else {
          this.emitLog('error', text);
        }
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
    this.kill('SIGKILL');
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
 * socket. Rejects with OptionError for bad options and DeviceError when the device fails to start.
 */
export async function startDevice(options: DeviceOptions, start: StartOptions = {}): Promise<Device> {
  return startFromConfig(buildDeviceConfig(options), start);
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

/** @internal starts a device from an already validated config. */
export async function startFromConfig(config: DeviceConfig, start: StartOptions = {}): Promise<Device> {
  const warn = (message: string): void => start.onLog?.({ level: 'warn', target: 'virtiofsd', message, time: new Date() });
  for (const warning of configWarnings(config)) warn(warning);
  const child = spawnDevice(config);
  if (child.pid === undefined) {
    const failure = await new Promise<Error>((resolve) => child.once('error', resolve));
    throw new DeviceError(`cannot start the device executable: ${failure.message}`, 'spawn');
  }
  const device = new Device(child, config);
  if (start.onLog) device.on('log', start.onLog);
  await device.waitListening(start.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
  return device;
}
