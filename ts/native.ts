// Finds this platform's native artifacts: the device executable (the only program that serves a
// device) and the addon (used by the command line to become that executable, and by
// `explainPolicy` to ask the device's policy code). Nothing here runs
// at import time, so parsing, `--help`, `--version` and `--print-capabilities` work where the
// platform package is missing.
import fs from 'node:fs';
import path from 'node:path';
import { DeviceError } from './errors';

/** Platforms with a prebuilt package `@virtiofsd/binding-<platform>`. */
export const SUPPORTED_PLATFORMS = ['linux-x64-gnu', 'linux-x64-musl', 'linux-arm64-gnu', 'linux-arm64-musl'] as const;
export type Platform = (typeof SUPPORTED_PLATFORMS)[number];

const PACKAGE_SCOPE = '@virtiofsd/binding-';
const EXECUTABLE_NAME = 'virtiofsd';

export interface NativeArtifacts {
  platform: Platform;
  /** Folder holding both artifacts: the installed platform package, or `npm/<platform>` in a checkout. */
  dir: string;
  executable: string;
  addon: string;
}

/** The shape of the addon, as generated into binding.d.ts. */
type Binding = typeof import('../binding');

function isMusl(): boolean {
  // The C library this Node runs on is the one the addon must be built for; its loader is mapped
  // into this process. Cheaper than a diagnostic report, and right on hosts with both libcs.
  try {
    return fs.readFileSync('/proc/self/maps', 'utf8').includes('ld-musl-');
  } catch {
    return false;
  }
}

/** `linux-x64-gnu` and friends, or what this machine is when there is no build for it. */
export function platformName(): string {
  if (process.platform !== 'linux') return `${process.platform}-${process.arch}`;
  return `linux-${process.arch}-${isMusl() ? 'musl' : 'gnu'}`;
}

function isSupported(name: string): name is Platform {
  return (SUPPORTED_PLATFORMS as readonly string[]).includes(name);
}

function artifactsIn(dir: string, platform: Platform): NativeArtifacts | null {
  const executable = path.join(dir, EXECUTABLE_NAME);
  const addon = path.join(dir, `virtiofsd.${platform}.node`);
  return fs.existsSync(executable) ? { platform, dir, executable, addon } : null;
}

function installedPackageDir(platform: Platform): string | null {
  try {
    return path.dirname(require.resolve(`${PACKAGE_SCOPE}${platform}/package.json`));
  } catch {
    return null;
  }
}

let cached: NativeArtifacts | null = null;

/** Locates the artifacts for this machine, or explains which platform lacks them. */
export function nativeArtifacts(): NativeArtifacts {
  if (cached !== null) return cached;
  const platform = platformName();
  if (!isSupported(platform)) {
    throw new DeviceError(
      `virtiofsd has no build for ${platform}; supported platforms: ${SUPPORTED_PLATFORMS.join(', ')}`,
      'native',
    );
  }
  const installed = installedPackageDir(platform);
  const found =
    (installed === null ? null : artifactsIn(installed, platform)) ??
    artifactsIn(path.join(__dirname, '..', 'npm', platform), platform);
  if (found === null) {
    throw new DeviceError(
      `the native package for ${platform} is missing: install ${PACKAGE_SCOPE}${platform} ` +
        `(npm installs it with virtiofsd unless optional dependencies are omitted); ` +
        `in a source checkout, run 'npm run build:native'`,
      'native',
    );
  }
  cached = found;
  return found;
}

/** The environment a device gets: only what it uses (PATH, for newuidmap and newgidmap). */
export function deviceEnvironment(): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
}

function loadAddon(artifacts: NativeArtifacts): Binding {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(artifacts.addon) as Binding;
  } catch (error) {
    throw new DeviceError(`cannot load the native addon ${artifacts.addon}: ${(error as Error).message}`, 'native');
  }
}

let addon: Binding | null = null;

/** The addon, loaded on first use only (the library needs it for `explainPolicy` alone). */
export function nativeAddon(): Binding {
  addon ??= loadAddon(nativeArtifacts());
  return addon;
}

export interface ExecRequest {
  /** Shown by `ps` after the program name; checked by the device against the configuration. */
  labels: string[];
  configJson: string;
  /** Inherited descriptors the device needs (a listening socket from `--fd`). */
  keepFds: number[];
}

/** Replaces this process with the device executable; returns only by throwing. */
export function execDevice(request: ExecRequest): never {
  const artifacts = nativeArtifacts();
  const addon = loadAddon(artifacts);
  const env = Object.entries(deviceEnvironment()).map(([key, value]) => `${key}=${value}`);
  try {
    addon.execDevice(artifacts.executable, [EXECUTABLE_NAME, ...request.labels], env, request.configJson, request.keepFds);
  } catch (error) {
    throw new DeviceError((error as Error).message, 'spawn');
  }
  throw new DeviceError('the device executable returned without running', 'spawn');
}
