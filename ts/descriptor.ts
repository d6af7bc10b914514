#!/usr/bin/env node
// `virtiofsd-descriptor`: prints or installs the vhost-user backend descriptor (QEMU's
// docs/interop/vhost-user.json, "Backend program conventions") that points libvirt and other
// management tools at this package's `virtiofsd`. A separate command, so that `virtiofsd` itself
// keeps exactly upstream's option set.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CAPABILITIES, packageVersion } from './help';

/** Distributions install theirs under this name; one in a directory searched earlier wins. */
export const DESCRIPTOR_NAME = '50-virtiofsd.json';

export interface Descriptor {
  description: string;
  type: 'fs';
  binary: string;
}

export const DESCRIPTOR_HELP = `Print or install the vhost-user backend descriptor (${DESCRIPTOR_NAME}) of this package's virtiofsd.

Usage: virtiofsd-descriptor [--binary <PATH>] [--install <DIR>]

The program must be executable and answer --print-capabilities as a virtio-fs backend.

libvirt reads /usr/share/qemu/vhost-user, then /etc/qemu/vhost-user (and, for a session daemon,
$XDG_CONFIG_HOME/qemu/vhost-user); a file overrides the one of the same name read before it, so
'--install /etc/qemu/vhost-user' takes precedence over a distribution's virtiofsd.

Options:
      --binary <PATH>
          The program the descriptor names [default: this package's virtiofsd command]

      --install <DIR>
          Write DIR/${DESCRIPTOR_NAME} (DIR is created if missing) instead of printing it

  -h, --help
          Print this help and exit
`;

export class DescriptorError extends Error {}

/** This package's `virtiofsd` command: the file npm links the bin to, with symlinks resolved. */
export function defaultBinary(): string {
  return fs.realpathSync(path.join(__dirname, 'cli.js'));
}

export function descriptorFor(binary: string): Descriptor {
  return { description: `virtiofsd ${packageVersion()} (Node.js package) vhost-user-fs`, type: 'fs', binary };
}

/** Refuses a program a VM manager could not run as a virtio-fs backend. */
export function checkBinary(binary: string): void {
  if (!path.isAbsolute(binary)) throw new DescriptorError(`the binary must be an absolute path: ${binary}`);
  try {
    fs.accessSync(binary, fs.constants.X_OK);
  } catch {
    throw new DescriptorError(
      `${binary} is not executable (npm makes the package's bin executable when it installs it); ` +
        "install the package, or name another program with '--binary'",
    );
  }
  let output: string;
  try {
    output = execFileSync(binary, ['--print-capabilities'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  } catch (error) {
    throw new DescriptorError(`${binary} --print-capabilities failed: ${(error as Error).message}`);
  }
  let capabilities: unknown;
  try {
    capabilities = JSON.parse(output);
  } catch {
    throw new DescriptorError(`${binary} --print-capabilities did not print JSON: ${JSON.stringify(output.slice(0, 200))}`);
  }
  if ((capabilities as { type?: unknown } | null)?.type !== CAPABILITIES.type) {
    throw new DescriptorError(`${binary} is not a virtio-fs backend: --print-capabilities said ${output.trim()}`);
  }
}

/** Writes `dir/50-virtiofsd.json` atomically (a reader never sees half a file); returns its path. */
export function installDescriptor(dir: string, descriptor: Descriptor): string {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const target = path.join(dir, DESCRIPTOR_NAME);
  const temporary = path.join(dir, `.${DESCRIPTOR_NAME}.${process.pid}`);
  fs.writeFileSync(temporary, descriptorText(descriptor), { mode: 0o644 });
  fs.renameSync(temporary, target);
  return target;
}

export function descriptorText(descriptor: Descriptor): string {
  return `${JSON.stringify(descriptor, null, 2)}\n`;
}

interface DescriptorArgs {
  binary?: string;
  install?: string;
  help: boolean;
}

function parseDescriptorArgs(argv: readonly string[]): DescriptorArgs {
  const args: DescriptorArgs = { help: false };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      args.help = true;
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq === -1 ? arg : arg.slice(0, eq);
    if (name !== '--binary' && name !== '--install') throw new DescriptorError(`unexpected argument '${arg}'`);
    let optionValue: string;
    if (eq !== -1) {
      optionValue = arg.slice(eq + 1);
    } else {
      if (i + 1 >= argv.length) throw new DescriptorError(`a value is required for '${name}'`);
      i += 1;
      optionValue = argv[i];
    }
    if (optionValue === '') throw new DescriptorError(`'${name}' needs a non-empty value`);
    if (name === '--binary') args.binary = path.resolve(optionValue);
    else args.install = path.resolve(optionValue);
  }
  return args;
}

export function descriptorMain(argv: readonly string[], out: (text: string) => void, err: (text: string) => void): number {
  try {
    const args = parseDescriptorArgs(argv);
    if (args.help) {
      out(DESCRIPTOR_HELP);
      return 0;
    }
    const binary = args.binary ?? defaultBinary();
    // A descriptor naming a program that cannot serve would only fail later, inside libvirt.
    checkBinary(binary);
    const descriptor = descriptorFor(binary);
    out(args.install === undefined ? descriptorText(descriptor) : `${installDescriptor(args.install, descriptor)}\n`);
    return 0;
  } catch (error) {
    if (error instanceof DescriptorError || (error as NodeJS.ErrnoException).code !== undefined) {
      err(`virtiofsd-descriptor: ${(error as Error).message}\n`);
      return 1;
    }
    throw error;
  }
}

if (require.main === module) {
  process.exitCode = descriptorMain(
    process.argv.slice(2),
    (text) => process.stdout.write(text),
    (text) => process.stderr.write(text),
  );
}
