// Starting and stopping many devices together, for orchestration tools.
import { DeviceOptions } from './config';
import { OptionError } from './errors';
import { DEFAULT_STOP_TIMEOUT_MS, Device, ExitStatus, StartOptions, startDevice } from './device';

export class DeviceGroup {
  private readonly members = new Map<string, Device>();
  private readonly start: StartOptions;

  constructor(start: StartOptions = {}) {
    this.start = start;
  }

  /** Running and finished devices by name. */
  get devices(): ReadonlyMap<string, Device> {
    return this.members;
  }

  /** Starts one device under a unique name. */
  async add(name: string, options: DeviceOptions): Promise<Device> {
    if (this.members.has(name)) throw new OptionError(`a device named '${name}' is already in this group`);
    const device = await startDevice(options, this.start);
    this.members.set(name, device);
    return device;
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
    return new Map(names.map((name) => [name, this.members.get(name) as Device]));
  }

  /** Stops one device and forgets it. */
  async remove(name: string, timeoutMs: number = DEFAULT_STOP_TIMEOUT_MS): Promise<ExitStatus | null> {
    const device = this.members.get(name);
    if (device === undefined) return null;
    this.members.delete(name);
    return device.stop(timeoutMs);
  }

  /** Stops every device concurrently; resolves with each exit status by name. */
  async stopAll(timeoutMs: number = DEFAULT_STOP_TIMEOUT_MS): Promise<Map<string, ExitStatus>> {
    const names = [...this.members.keys()];
    const statuses = await Promise.all(names.map((name) => this.remove(name, timeoutMs)));
    return new Map(names.map((name, index) => [name, statuses[index] as ExitStatus]));
  }
}
