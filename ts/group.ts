// Starting, supervising and stopping many devices together, for orchestration tools.
import { EventEmitter } from 'node:events';
import { DeviceOptions } from './config';
import { DeviceAbortError, DeviceError, OptionError } from './errors';
import { DEFAULT_STOP_TIMEOUT_MS, Device, DeviceEvents, ExitStatus, StartOptions, startDevice } from './device';

/**
 * When a device of the group exits with an error (`device.exitedWithError`: a non-zero exit
 * code, or a signal that `stop()`/`kill()` did not send), it is started again with the same
 * options after a delay that doubles with each consecutive attempt. A clean exit (code 0, as
 * after the VM disconnects) is never restarted.
 */
export interface RestartPolicy {
  /** Delay before the first restart. Default 500 ms. */
  initialDelayMs?: number;
  /** The doubling delay stops growing here. Default 30 s. */
  maxDelayMs?: number;
  /** Consecutive restarts before the group gives up on a device (`Infinity` never does). Default 5. */
  maxRestarts?: number;
  /** A device that ran this long since its last (re)start counts as healthy again: attempts restart from 1. Default 60 s. */
  resetAfterMs?: number;
}

/** The policy of `restart: true`; fields left out of a policy object take these values. */
export const DEFAULT_RESTART_POLICY: Readonly<Required<RestartPolicy>> = Object.freeze({
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  maxRestarts: 5,
  resetAfterMs: 60_000,
});

/** Settings of a DeviceGroup, for all of its devices. */
export interface DeviceGroupOptions {
  /** Start timeout for every device (see `StartOptions.startTimeoutMs`). */
  startTimeoutMs?: number;
  /** Restart devices that exit with an error: `true` for the defaults, or a policy. Off by default. */
  restart?: boolean | RestartPolicy;
  /** Aborting it stops every device of the group, as `stopAll()`. */
  signal?: AbortSignal;
}

/** Settings of one `DeviceGroup.add`. */
export interface AddOptions {
  /** Cancels this device's start and, later, stops it (and any pending restart of it). */
  signal?: AbortSignal;
}

/** The group is about to restart a device that exited with an error. */
export interface RestartingEvent {
  name: string;
  /** 1 for the first restart after a healthy run, then 2, 3, ... */
  attempt: number;
  /** How long the group waits before starting it again. */
  delayMs: number;
  /** How the previous process ended. */
  status: ExitStatus;
  /** Why the previous attempt failed to start, when it did not get as far as listening. */
  error: DeviceError | null;
}

/** A device was restarted and listens again; `device` is its new process. */
export interface RestartedEvent {
  name: string;
  attempt: number;
  device: Device;
}

/** The group stopped restarting a device: `maxRestarts` consecutive restarts failed. */
export interface GaveUpEvent {
  name: string;
  restarts: number;
  status: ExitStatus;
}

type Forwarded<Events> = { [Event in keyof Events]: Events[Event] extends unknown[] ? [name: string, ...Events[Event]] : never };

/** Events of a DeviceGroup: every Device event with the device's name first, and the restart events. */
export interface DeviceGroupEvents extends Forwarded<DeviceEvents> {
  restarting: [event: RestartingEvent];
  restarted: [event: RestartedEvent];
  gaveUp: [event: GaveUpEvent];
}

const FORWARDED_EVENTS = ['listening', 'connected', 'disconnected', 'error', 'exit', 'log'] as const satisfies readonly (keyof DeviceEvents)[];

/** One name of the group, through all the processes that serve it. */
interface Member {
  readonly name: string;
  readonly options: DeviceOptions;
  /** The newest process, from the moment it exists (possibly still starting, possibly exited). */
  device: Device | null;
  /** The newest process that got as far as listening. */
  listening: Device | null;
  /** Aborted when the member is removed: cancels a start in progress and a pending restart. */
  readonly cancel: AbortController;
  /** Consecutive restarts since the last healthy run. */
  restarts: number;
  restartTimer: NodeJS.Timeout | null;
  /** Ends the wait for a restart early (when the member is removed). */
  endRestartWait: (() => void) | null;
  /** Settles when the current start, restart wait or restart attempt is over, whatever its outcome. */
  pending: Promise<unknown>;
  readonly detachSignal: () => void;
}

function nonNegativeNumber(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const key = `restart.${name}`;
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new OptionError(`invalid value for '${key}': expected a number`, 'usage', { key, reason: 'invalid-type' });
  }
  if (value < 0) throw new OptionError(`invalid value for '${key}': must be at least 0`, 'usage', { key, reason: 'out-of-range' });
  return value;
}

function restartPolicy(restart: DeviceGroupOptions['restart']): Required<RestartPolicy> | null {
  if (restart === undefined || restart === false) return null;
  if (restart === true) return DEFAULT_RESTART_POLICY;
  const defaults = DEFAULT_RESTART_POLICY;
  return {
    initialDelayMs: nonNegativeNumber('initialDelayMs', restart.initialDelayMs, defaults.initialDelayMs),
    maxDelayMs: nonNegativeNumber('maxDelayMs', restart.maxDelayMs, defaults.maxDelayMs),
    maxRestarts: nonNegativeNumber('maxRestarts', restart.maxRestarts, defaults.maxRestarts),
    resetAfterMs: nonNegativeNumber('resetAfterMs', restart.resetAfterMs, defaults.resetAfterMs),
  };
}

/** The exit status an error reports, for restart events of starts that failed. */
function statusOf(error: DeviceError, device: Device | null): ExitStatus {
  return device?.exitStatus ?? { code: error.exitCode, signal: error.exitSignal };
}

/**
 * Devices by unique name: start them, follow their events in one place, restart failed ones if
 * asked, and stop them all. A name is taken from the moment `add` is called until `remove`.
 */
export class DeviceGroup extends EventEmitter<DeviceGroupEvents> {
  private readonly members = new Map<string, Member>();
  /** Removals in progress by name, so a concurrent remove or stopAll waits for them too. */
  private readonly removals = new Map<string, Promise<ExitStatus | null>>();
  private readonly startTimeoutMs: number | undefined;
  private readonly policy: Required<RestartPolicy> | null;
  private readonly signal: AbortSignal | undefined;

  constructor(options: DeviceGroupOptions = {}) {
    super();
    this.startTimeoutMs = options.startTimeoutMs;
    this.policy = restartPolicy(options.restart);
    this.signal = options.signal;
    this.signal?.addEventListener('abort', () => void this.stopAll(), { once: true });
  }

  /**
   * The newest process of every device that got as far as listening, by name (running, or
   * exited and perhaps waiting for a restart).
   */
  get devices(): ReadonlyMap<string, Device> {
    const devices = new Map<string, Device>();
    for (const member of this.members.values()) {
      if (member.listening !== null) devices.set(member.name, member.listening);
    }
    return devices;
  }

  /**
   * Starts one device under a name not in use; resolves once it listens. A second `add` of a
   * name that is starting or running rejects with OptionError at once. A failed start frees the
   * name again.
   */
  async add(name: string, options: DeviceOptions, add: AddOptions = {}): Promise<Device> {
    if (this.members.has(name)) {
      throw new OptionError(`a device named '${name}' is already in this group`, 'usage', { key: 'name', reason: 'conflict' });
    }
    if (this.signal?.aborted) throw new DeviceAbortError('the device group was aborted', { cause: this.signal.reason });
    const cancel = new AbortController();
    const forwardAbort = (): void => cancel.abort(add.signal?.reason);
    add.signal?.addEventListener('abort', forwardAbort, { once: true });
    if (add.signal?.aborted) forwardAbort();
    // The name is taken before the first await: a concurrent add of it sees it.
    const member: Member = {
      name,
      options,
      device: null,
      listening: null,
      cancel,
      restarts: 0,
      restartTimer: null,
      endRestartWait: null,
      pending: Promise.resolve(),
      detachSignal: () => add.signal?.removeEventListener('abort', forwardAbort),
    };
    this.members.set(name, member);
    const start = this.launch(member);
    member.pending = start.catch(() => undefined);
    try {
      return await start;
    } catch (error) {
      this.forget(member);
      throw error;
    }
  }

  /**
   * Starts all devices concurrently. If any fails, the ones that started are stopped and the
   * first error is thrown, so a group is all-or-nothing.
   */
  async startAll(entries: Record<string, DeviceOptions>): Promise<Map<string, Device>> {
    const names = Object.keys(entries);
    const results = await Promise.allSettled(names.map((name) => this.add(name, entries[name])));
    const failure = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failure !== undefined) {
      await Promise.all(
        names.filter((_, index) => results[index].status === 'fulfilled').map((name) => this.remove(name)),
      );
      throw failure.reason;
    }
    return new Map(names.map((name, index) => [name, (results[index] as PromiseFulfilledResult<Device>).value]));
  }

  /**
   * Stops one device and forgets its name, whatever it is doing: a start in progress is
   * aborted, a pending restart cancelled. Resolves once no process of it is left, with the last
   * exit status (`null` if no process was ever created, or the name is unknown).
   */
  async remove(name: string, timeoutMs: number = DEFAULT_STOP_TIMEOUT_MS): Promise<ExitStatus | null> {
    const member = this.members.get(name);
    if (member === undefined) return (await this.removals.get(name)) ?? null;
    this.forget(member);
    const removal = this.end(member, timeoutMs);
    this.removals.set(name, removal);
    try {
      return await removal;
    } finally {
      if (this.removals.get(name) === removal) this.removals.delete(name);
    }
  }

  /** Cancels whatever `member` is doing and resolves once its newest process has exited. */
  private async end(member: Member, timeoutMs: number): Promise<ExitStatus | null> {
    const name = member.name;
    member.cancel.abort(new DeviceAbortError(`device '${name}' was removed from its group`));
    if (member.restartTimer !== null) clearTimeout(member.restartTimer);
    member.restartTimer = null;
    member.endRestartWait?.();
    // A start in progress ends its process itself once aborted; a running device is stopped.
    await member.pending;
    const device = member.device;
    if (device === null) return null;
    return device.stop(timeoutMs);
  }

  /**
   * Stops every device concurrently, including those starting or waiting for a restart, and
   * resolves once none of their processes is left, with each last exit status by name.
   */
  async stopAll(timeoutMs: number = DEFAULT_STOP_TIMEOUT_MS): Promise<Map<string, ExitStatus>> {
    const names = [...new Set([...this.members.keys(), ...this.removals.keys()])];
    const statuses = await Promise.all(names.map((name) => this.remove(name, timeoutMs)));
    // A name removed and added again meanwhile may still have its old process ending.
    await Promise.all([...this.removals.values()]);
    const result = new Map<string, ExitStatus>();
    names.forEach((name, index) => {
      const status = statuses[index];
      if (status !== null) result.set(name, status);
    });
    return result;
  }

  /** Starts a process for `member`, wired to the group's events and restart policy. */
  private async launch(member: Member): Promise<Device> {
    const start: StartOptions = {
      startTimeoutMs: this.startTimeoutMs,
      signal: member.cancel.signal,
      onSpawn: (device) => {
        member.device = device;
        device.once('listening', () => (member.listening = device));
        this.forwardEvents(member, device);
      },
    };
    return startDevice(member.options, start);
  }

  private forwardEvents(member: Member, device: Device): void {
    for (const event of FORWARDED_EVENTS) {
      device.on(event, (...args: unknown[]) => {
        // Like a Device, the group throws nothing into the event loop for an unheard 'error'.
        if (event === 'error' && this.listenerCount('error') === 0) return;
        (this.emit as (event: string, ...args: unknown[]) => boolean)(event, member.name, ...args);
      });
    }
    const startedAt = Date.now();
    device.once('exit', (status) => this.onExit(member, device, status, startedAt));
  }

  private onExit(member: Member, device: Device, status: ExitStatus, startedAt: number): void {
    // Only a listening device that is still this member's current process is supervised here;
    // a failed start is handled by whoever awaited it (add, or the restart loop).
    if (this.members.get(member.name) !== member || member.cancel.signal.aborted) return;
    if (member.device !== device || member.listening !== device) return;
    if (this.policy === null || device.exitedWithError !== true) return;
    if (Date.now() - startedAt >= this.policy.resetAfterMs) member.restarts = 0;
    this.scheduleRestart(member, status, null);
  }

  private scheduleRestart(member: Member, status: ExitStatus, error: DeviceError | null): void {
    const policy = this.policy as Required<RestartPolicy>;
    if (member.restarts >= policy.maxRestarts) {
      this.emit('gaveUp', { name: member.name, restarts: member.restarts, status });
      return;
    }
    member.restarts += 1;
    const attempt = member.restarts;
    const delayMs = Math.min(policy.initialDelayMs * 2 ** (attempt - 1), policy.maxDelayMs);
    this.emit('restarting', { name: member.name, attempt, delayMs, status, error });
    let wake!: () => void;
    member.pending = new Promise<void>((resolve) => (wake = resolve));
    // remove() clears the timer; the wait must still end for whoever awaits `pending`.
    member.endRestartWait = wake;
    member.restartTimer = setTimeout(() => {
      member.restartTimer = null;
      member.endRestartWait = null;
      member.pending = this.restart(member, attempt).finally(wake);
    }, delayMs);
  }

  private async restart(member: Member, attempt: number): Promise<void> {
    if (member.cancel.signal.aborted) return;
    try {
      const device = await this.launch(member);
      this.emit('restarted', { name: member.name, attempt, device });
    } catch (error) {
      if (member.cancel.signal.aborted) return;
      if (error instanceof DeviceError) this.scheduleRestart(member, statusOf(error, member.device), error);
      else this.emit('gaveUp', { name: member.name, restarts: member.restarts, status: member.device?.exitStatus ?? { code: null, signal: null } });
    }
  }

  private forget(member: Member): void {
    if (this.members.get(member.name) === member) this.members.delete(member.name);
    member.detachSignal();
  }
}
