// The only module that touches the napi binding. It is loaded lazily so that parsing, `--help`,
// `--version` and `--print-capabilities` work even where the native addon is missing.
import { DeviceError } from './errors';

/** What the device process returned from a non-blocking wait. */
export interface ReapResult {
  exited: boolean;
  code: number | null;
  signal: number | null;
}

export interface SpawnResult {
  pid: number;
  /** Our end of the control socketpair. */
  controlFd: number;
}

/** Internal typed view of the binding; swappable in tests. */
export interface NativeBackend {
  spawnDevice(configJson: string): SpawnResult;
  reapDevice(pid: number): ReapResult;
  signalDevice(pid: number, signal: number): void;
}

interface RawBinding {
  spawnDevice?: unknown;
  reapDevice?: unknown;
  signalDevice?: unknown;
}

let cached: NativeBackend | null = null;

function loadBinding(): RawBinding {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('../binding.js') as RawBinding;
  } catch (error) {
    throw new DeviceError(
      `cannot load the native binding (build it with 'npm run build:native'): ${(error as Error).message}`,
      'native',
    );
  }
}

function wrapNativeError(what: string, error: unknown): DeviceError {
  const message = error instanceof Error ? error.message : String(error);
  return new DeviceError(`${what}: ${message}`, what === 'spawn' ? 'spawn' : 'native');
}

/** Returns the native backend, loading it on first use. */
export function nativeBackend(): NativeBackend {
  if (cached !== null) return cached;
  const raw = loadBinding();
  const { spawnDevice, reapDevice, signalDevice } = raw;
  if (typeof spawnDevice !== 'function' || typeof reapDevice !== 'function' || typeof signalDevice !== 'function') {
    throw new DeviceError('the native binding lacks spawnDevice/reapDevice/signalDevice', 'native');
  }
  cached = {
    spawnDevice(configJson) {
      try {
        return spawnDevice(configJson) as SpawnResult;
      } catch (error) {
        throw wrapNativeError('spawn', error);
      }
    },
    reapDevice(pid) {
      try {
        const raw = reapDevice(pid) as { exited: boolean; code?: number | null; signal?: number | null };
        // napi renders Rust `None` as `undefined`; the rest of the code relies on null.
        return { exited: raw.exited === true, code: raw.code ?? null, signal: raw.signal ?? null };
      } catch (error) {
        throw wrapNativeError('reap', error);
      }
    },
    signalDevice(pid, signal) {
      try {
        signalDevice(pid, signal);
      } catch (error) {
        throw wrapNativeError('signal', error);
      }
    },
  };
  return cached;
}
