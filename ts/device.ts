// One device process, seen from Node: start it, follow its control events, stop it.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import { DeviceConfig, DeviceOptions, buildDeviceConfig } from './config';
import { DeviceError } from './errors';
import { NativeBackend, ReapResult, nativeBackend } from './native';
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
  /** Replaces the native binding; for tests and embedding. */
  native?: NativeBackend;
  /**
   * Receives every log record from the moment the process exists. Listeners added after
   * `startDevice` resolves miss what the device logged while starting, and a frontend that
   * connects at once can make the device log (and even exit) before then.
   */
  onLog?: (record: LogRecord) => void;
}

export const DEFAULT_START_TIMEOUT_MS = 10_000;
export const DEFAULT_STOP_TIMEOUT_MS = 5_000;
// Reaping polls with growing delays: exits are usually immediate after EOF, so start short.
const REAP_FIRST_DELAY_MS = 2;
const REAP_MAX_DELAY_MS = 100;

function signalName(signal: number | null): NodeJS.Signals | null {
  if (signal === null) return null;
  const entry = Object.entries(os.constants.signals).find(([, number]) => number === signal);
  return entry === undefined ? null : (entry[0] as NodeJS.Signals);
}

function describeExit(status: ExitStatus): string {
  return status.signal !== null ? `killed by ${status.signal}` : `exit status ${String(status.code)}`;
}

/** A running (or finished) device process. Create with `startDevice`. */
export class Device extends EventEmitter<DeviceEvents> {
  readonly pid: number;
  readonly config: Readonly<DeviceConfig>;
  /** Resolves once the process has exited and been reaped; never rejects. */
  readonly exited: Promise<ExitStatus>;

  private readonly native: NativeBackend;
  private readonly control: net.Socket;
  private readonly lines = new LineSplitter();
  private resolveExit!: (status: ExitStatus) => void;
  private status: ExitStatus | null = null;
  private listeningOn: string | null = null;
  private isConnected = false;
  private fatal: string | null = null;
  private controlBroken = false;
  private reapTimer: NodeJS.Timeout | null = null;
  private referenced = true;
  private readyWaiter: { resolve: () => void; reject: (error: DeviceError) => void } | null = null;

  /** @internal use `startDevice` */
  constructor(native: NativeBackend, config: DeviceConfig, pid: number, controlFd: number) {
    super();
    this.native = native;
    this.config = Object.freeze({ ...config });
    this.pid = pid;
    this.exited = new Promise((resolve) => {
      this.resolveExit = resolve;
    });
    this.control = new net.Socket({ fd: controlFd, readable: true, writable: true });
    // Bytes, not strings: the splitter bounds lines in bytes and decodes each complete line once.
    this.control.on('data', (chunk: Buffer) => this.onData(chunk));
    // EOF or a broken control socket both mean the process is gone or going.
    this.control.on('end', () => this.onControlClosed());
    this.control.on('close', () => this.onControlClosed());
    this.control.on('error', () => this.onControlClosed());
  }

  /** Where the device listens (`/path` or `fd:N`), once it is listening. */
  get socket(): string | null {
    return this.listeningOn;
  }

  /** Whether a vhost-user frontend is attached right now. */
  get connected(): boolean {
    return this.isConnected;
  }

  /** Exit status, once reaped. */
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

  /** Sends a signal to the device process; a no-op once it has been reaped. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.status !== null) return;
    const number = os.constants.signals[signal];
    try {
      this.native.signalDevice(this.pid, number);
    } catch (error) {
      // The process may have exited between our check and the signal; the reaper will tell.
      this.emitLog('debug', `signal ${signal} not delivered: ${(error as Error).message}`);
    }
    // A killed process may not close the control socket promptly if a child inherited it.
    this.scheduleReap(REAP_FIRST_DELAY_MS);
  }

  /** Lets the Node process exit while this device still runs. */
  unref(): this {
    this.referenced = false;
    this.control.unref();
    this.reapTimer?.unref();
    return this;
  }

  ref(): this {
    this.referenced = true;
    this.control.ref();
    this.reapTimer?.ref();
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

  private onControlClosed(): void {
    if (this.status !== null || this.reapTimer !== null) return;
    this.scheduleReap(REAP_FIRST_DELAY_MS);
  }

  private scheduleReap(delay: number): void {
    if (this.status !== null) return;
    if (this.reapTimer !== null) clearTimeout(this.reapTimer);
    this.reapTimer = setTimeout(() => {
      this.reapTimer = null;
      this.tryReap(delay);
    }, delay);
    if (!this.referenced) this.reapTimer.unref();
  }

  private tryReap(lastDelay: number): void {
    let result: ReapResult;
    try {
      result = this.native.reapDevice(this.pid);
    } catch (error) {
      // Nothing left to wait for (e.g. already reaped elsewhere): report an unknown status.
      this.emitLog('warn', `cannot get the exit status of device ${this.pid}: ${(error as Error).message}`);
      this.finish({ code: null, signal: null });
      return;
    }
    if (result.exited) {
      this.finish({ code: result.code, signal: signalName(result.signal) });
      return;
    }
    this.scheduleReap(Math.min(lastDelay * 2, REAP_MAX_DELAY_MS));
  }

  private finish(status: ExitStatus): void {
    this.status = status;
    this.isConnected = false;
    this.control.destroy();
    if (this.readyWaiter !== null) {
      const why = this.fatal ?? `device exited before listening (${describeExit(status)})`;
      this.readyWaiter.reject(new DeviceError(why, this.fatal !== null ? 'failed' : 'exited', status));
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

/** @internal starts a device from an already validated config (the CLI validates before warning). */
export async function startFromConfig(config: DeviceConfig, start: StartOptions = {}): Promise<Device> {
  const warn = (message: string): void => start.onLog?.({ level: 'warn', target: 'virtiofsd', message, time: new Date() });
  if (config.sandbox === 'none') warn('running without a sandbox (--sandbox=none): the daemon is not isolated from the host');
  if (config.seccomp === 'none') warn('running without seccomp (--seccomp=none): every system call is allowed');
  const native = start.native ?? nativeBackend();
  const { pid, controlFd } = native.spawnDevice(JSON.stringify(config));
  const device = new Device(native, config, pid, controlFd);
  if (start.onLog) device.on('log', start.onLog);
  await device.waitListening(start.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
  return device;
}
