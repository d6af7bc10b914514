// The platform package of the host, as scripts/build-native.mjs names it.
import path from 'node:path';
import { root } from './build.ts';

export type Platform = 'linux-x64-gnu' | 'linux-x64-musl' | 'linux-arm64-gnu' | 'linux-arm64-musl';

export function hostPlatform(): Platform {
  if (process.platform !== 'linux') throw new Error(`unsupported platform ${process.platform}`);
  if (process.arch !== 'x64' && process.arch !== 'arm64') throw new Error(`unsupported CPU ${process.arch}`);
  const header = process.report.getReport().header as { glibcVersionRuntime?: string };
  return `linux-${process.arch}-${header.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

/** Where `npm run build:native` leaves the host's addon and device executable. */
export function nativeArtifacts(platform: Platform = hostPlatform()): { dir: string; addon: string; executable: string } {
  const dir = path.join(root, 'npm', platform);
  return { dir, addon: path.join(dir, `virtiofsd.${platform}.node`), executable: path.join(dir, 'virtiofsd') };
}
