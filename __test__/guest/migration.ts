// Live migration of a guest between two QEMUs on this host, each with its own daemon over the same
// shared directory (the QEMU provisioned as qemuMigration: the system QEMU 7.2 cannot migrate
// vhost-user-fs). Used by __test__/migration.spec.ts and scripts/bench-migration.mts.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  migrate,
  provision,
  startGuest,
  waitMigration,
  type DaemonSpec,
  type Guest,
  type MigrationResult,
  type StartGuestOptions,
} from './harness.ts';

export interface PairOptions extends Omit<StartGuestOptions, 'daemon' | 'qemu' | 'incoming'> {
  source: DaemonSpec;
  /** Default: the same as the source. */
  destination?: DaemonSpec;
}

/** A source guest (booting) and, once destination() was called, a destination waiting for it. */
export class MigrationPair {
  dest?: Guest;
  private readonly dir: string;
  readonly uri: string;

  private constructor(
    readonly opts: PairOptions,
    readonly qemu: string,
    readonly source: Guest,
    dir: string,
  ) {
    this.dir = dir;
    this.uri = `unix:${path.join(dir, 'migrate.sock')}`;
  }

  static async start(opts: PairOptions): Promise<MigrationPair> {
    const paths = await provision();
    if (!paths.qemuMigration) throw new Error('scripts/provision.sh gave no qemuMigration (a QEMU able to migrate vhost-user-fs)');
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-mig-'));
    try {
      const source = await startGuest({ ...opts, daemon: opts.source, qemu: paths.qemuMigration });
      return new MigrationPair(opts, paths.qemuMigration, source, dir);
    } catch (error) {
      await fs.rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /** Starts the destination daemon and QEMU (`-incoming unix:...`). */
  async destination(): Promise<Guest> {
    this.dest ??= await startGuest({
      ...this.opts,
      daemon: this.opts.destination ?? this.opts.source,
      qemu: this.qemu,
      incoming: this.uri,
    });
    return this.dest;
  }

  /**
   * Starts the destination if needed, migrates, and waits for the end (completed or failed). The
   * return path is on, so a destination that fails to load the state fails the migration on the
   * source too, which then runs on. `maxBandwidth` (bytes/s) slows the RAM copy down.
   */
  async migrate(o: { timeoutMs?: number; maxBandwidth?: number; started?: () => Promise<void> } = {}): Promise<MigrationResult> {
    const dest = await this.destination();
    const caps = { capabilities: [{ capability: 'return-path', state: true }] };
    await dest.qmp.execute('migrate-set-capabilities', caps);
    await this.source.qmp.execute('migrate-set-capabilities', caps);
    if (o.maxBandwidth) await this.source.qmp.execute('migrate-set-parameters', { 'max-bandwidth': o.maxBandwidth });
    await migrate(this.source.qmp, this.uri);
    await o.started?.();
    return waitMigration(this.source.qmp, o.timeoutMs ?? 120_000);
  }

  async stop(): Promise<void> {
    await Promise.allSettled([this.source.stop(), this.dest?.stop()]);
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until check() gives a value other than undefined. */
export async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, guest?: Guest): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      const tail = guest ? `\n--- console ---\n${guest.console().slice(-4000)}\n--- daemon ---\n${guest.daemonStderr().slice(-4000)}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${tail}`);
    }
    await sleep(100);
  }
}

/** Lines of seq.log written so far. */
export async function seqCount(sharedDir: string): Promise<number> {
  const text = await fs.readFile(path.join(sharedDir, 'seq.log'), 'utf8').catch(() => '');
  return text.split('\n').filter((l) => l !== '').length;
}

/** Checks seq.log is exactly 1..n, in order; returns n or a description of the first fault. */
export async function checkSeq(sharedDir: string): Promise<{ n: number; fault?: string }> {
  const lines = (await fs.readFile(path.join(sharedDir, 'seq.log'), 'utf8')).split('\n');
  if (lines.at(-1) === '') lines.pop();
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== String(i + 1)) return { n: lines.length, fault: `line ${i + 1} is ${JSON.stringify(lines[i])}` };
  }
  return { n: lines.length };
}

export const readScript = (name: string, root: string): Promise<string> => fs.readFile(path.join(root, 'scripts', 'guest', name), 'utf8');
