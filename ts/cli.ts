#!/usr/bin/env node
// Command-line entry point, a drop-in for upstream virtiofsd's command line.
//
// Exit status: every refusal (usage error, unsupported option, bad shared directory, failed start)
// exits 1. Upstream's argument parser exits 2 for usage errors, but its own run-time errors exit 1;
// management tools only test for zero, so one failure status keeps scripts and docs simple.
import os from 'node:os';
import { DeviceConfig, cliConfig } from './config';
import { Device, startFromConfig } from './device';
import { DeviceError, OptionError } from './errors';
import { HELP_TEXT, capabilitiesText, versionText } from './help';
import { formatLogLine, levelEnabled } from './log';
import { checkRunnable, parseArgs } from './options';
import { LogLevel } from './validate';

const HINT = "For more information, try '--help'.\n";
const STOP_SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  cwd: string;
}

const defaultIo: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  cwd: process.cwd(),
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

function reportOptionError(error: unknown, io: CliIo): number {
  if (error instanceof OptionError) {
    io.stderr(`virtiofsd: ${error.message}\n${HINT}`);
    return 1;
  }
  throw error;
}

/** Runs the CLI to completion and returns the exit status. */
export async function main(argv: readonly string[], io: CliIo = defaultIo): Promise<number> {
  const early = answerWithoutDevice(argv, io);
  if (early !== null) return early;

  let config: DeviceConfig;
  let threshold: LogLevel;
  try {
    const parsed = parseArgs(argv);
    checkRunnable(parsed);
    config = cliConfig(parsed.options, io.cwd);
    threshold = config.logLevel;
    const log = (level: 'warn' | 'info', message: string): void => {
      if (levelEnabled(level, threshold)) io.stderr(formatLogLine(level, 'virtiofsd', message));
    };
    for (const warning of parsed.warnings) log('warn', warning);
  } catch (error) {
    return reportOptionError(error, io);
  }

  let device: Device | null = null;
  let stopRequested = false;
  const onSignal = (): void => {
    stopRequested = true;
    void device?.stop();
  };
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  try {
    try {
      device = await startFromConfig(config, {
        onLog: (record) => {
          if (levelEnabled(record.level, threshold)) io.stderr(formatLogLine(record.level, record.target, record.message, record.time));
        },
      });
    } catch (error) {
      if (error instanceof DeviceError || error instanceof OptionError) {
        io.stderr(`virtiofsd: ${error.message}\n`);
        return 1;
      }
      throw error;
    }
    if (stopRequested) void device.stop();
    const status = await device.exited;
    if (status.code !== null) return status.code;
    if (status.signal !== null) {
      // Shell convention for "killed by a signal".
      if (!stopRequested) io.stderr(`virtiofsd: device process killed by ${status.signal}\n`);
      return stopRequested ? 1 : 128 + os.constants.signals[status.signal];
    }
    return 1;
  } finally {
    for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`virtiofsd: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    },
  );
}
