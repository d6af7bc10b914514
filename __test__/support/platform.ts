// The platform package of the host, as scripts/build-native.mjs names it.
import path from 'node:path';
import { root } from './build.ts';

export type Platform = 'linux-x64-gnu' | 'linux-x64-musl' | 'linux-arm64-gnu' | 'linux-arm64-musl';

const PLATFORMS: readonly Platform[] = ['linux-x64-gnu', 'linux-x64-musl', 'linux-arm64-gnu', 'linux-arm64-musl'];

/**
 * The host's platform, or VIRTIOFSD_TEST_PLATFORM: the release workflow checks a musl build on a
 * glibc runner with it.
 */
export function hostPlatform(): Platform {
  const forced = process.env.VIRTIOFSD_TEST_PLATFORM;
  if (forced) {
    if (!(PLATFORMS as readonly string[]).includes(forced)) throw new Error(`VIRTIOFSD_TEST_PLATFORM=${forced}: one of ${PLATFORMS.join(', ')}`);
    return forced as Platform;
  }
  if (process.platform !== 'linux') throw new Error(`unsupported platform ${process.platform}`);
  if (process.arch !== 'x64' && process.arch !== 'arm64') throw new Error(`unsupported CPU ${process.arch}`);
  const { header } = process.report.getReport() as { header: { glibcVersionRuntime?: string } };
  return `linux-${process.arch}-${header.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

/** Where `npm run build:native` leaves the host's addon and device executable. */
export function nativeArtifacts(platform: Platform = hostPlatform()): { dir: string; addon: string; executable: string } {
  const dir = path.join(root, 'npm', platform);
  return { dir, addon: path.join(dir, `virtiofsd.${platform}.node`), executable: path.join(dir, 'virtiofsd') };
}
