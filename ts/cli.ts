#!/usr/bin/env node
// Command-line entry point, a drop-in for upstream virtiofsd's command line.
//
// TypeScript parses, validates and compiles the options, then this process becomes the device
// executable (execve through the addon): the pid that the caller started and signals is the
// device itself, and no Node runtime stays resident beside it.
//
// Exit status: usage errors (unknown options, bad values) exit 2, as upstream's argument parser;
// refusals at run time (bad shared directory, unsupported option, failed start) exit 1.
import { DeviceConfig, cliCompile, deviceLabels } from './config';
import { DeviceError, OptionError } from './errors';
import { HELP_TEXT, capabilitiesText, versionText } from './help';
import { formatLogLine, levelEnabled } from './log';
import { execDevice } from './native';
import { checkRunnable, parseArgs } from './options';

const HINT = "For more information, try '--help'.\n";
/** Upstream's status for a command line it cannot parse. */
export const USAGE_EXIT_STATUS = 2;

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  cwd: string;
  env: NodeJS.ProcessEnv;
}

const defaultIo: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  cwd: process.cwd(),
  env: process.env,
};

/** Parses argv and answers `--help`/`--version`/`--print-capabilities`; null means "run a device". */
export function answerWithoutDevice(argv: readonly string[], io: CliIo = defaultIo): number | null {
  try {
    const parsed = parseArgs(argv);
    const { options } = parsed;
    if (options.help) {
      io.stdout(HELP_TEXT);
      return 0;
    }
    if (options.version) {
      io.stdout(versionText());
      return 0;
    }
    if (options.printCapabilities) {
      io.stdout(capabilitiesText());
      return 0;
    }
    return null;
  } catch (error) {
    return reportOptionError(error, io);
  }
}

/**
 * A command line that does not parse exits 2; one that parses but cannot run here (a missing
 * shared directory, an option this version refuses) exits 1, as upstream's checks after parsing.
 */
function reportOptionError(error: unknown, io: CliIo, stage: 'parse' | 'run' = 'parse'): number {
  if (error instanceof OptionError) {
    io.stderr(`virtiofsd: ${error.message}\n${HINT}`);
    return error.kind === 'usage' && stage === 'parse' ? USAGE_EXIT_STATUS : 1;
  }
  throw error;
}

/** Parses and compiles argv into the device configuration, or returns the exit status. */
export function compileCommandLine(argv: readonly string[], io: CliIo = defaultIo): DeviceConfig | number {
  const early = answerWithoutDevice(argv, io);
  if (early !== null) return early;
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs(argv);
    checkRunnable(parsed);
  } catch (error) {
    return reportOptionError(error, io);
  }
  try {
    const { config, warnings } = cliCompile(parsed.options, io.cwd, io.env);
    const warn = (message: string): void => {
      if (levelEnabled('warn', config.logLevel)) io.stderr(formatLogLine('warn', 'virtiofsd', message));
    };
    for (const warning of [...parsed.warnings, ...warnings]) warn(warning);
    return config;
  } catch (error) {
    return reportOptionError(error, io, 'run');
  }
}

/** Runs the command line: returns an exit status, or never returns once the device runs. */
export function main(argv: readonly string[], io: CliIo = defaultIo): number {
  const config = compileCommandLine(argv, io);
  if (typeof config === 'number') return config;
  try {
    execDevice({
      labels: deviceLabels(config),
      configJson: JSON.stringify(config),
      keepFds: config.socket.kind === 'fd' ? [config.socket.fd] : [],
    });
  } catch (error) {
    if (error instanceof DeviceError) {
      io.stderr(`virtiofsd: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`virtiofsd: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  }
}
