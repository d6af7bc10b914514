/**
 * Why an option was refused: bad syntax or value (`usage`, the CLI exits 2), valid but not
 * implemented in this version (`unsupported`), or valid but impossible for this process, such as
 * an ID map for a root device (`environment`); the last two exit 1, as upstream's run-time checks.
 */
export type OptionErrorKind = 'usage' | 'unsupported' | 'environment';

/**
 * A command-line or library option problem. The CLI turns it into `virtiofsd: <message>`; the
 * library rejects `startDevice` with it before any process is created.
 */
export class OptionError extends Error {
  readonly kind: OptionErrorKind;

  constructor(message: string, kind: OptionErrorKind = 'usage') {
    super(message);
    this.name = 'OptionError';
    this.kind = kind;
  }
}

/** Refusal of an option we parse and validate but do not implement yet. */
export class NotSupportedError extends OptionError {
  /** The option as the user wrote it, in canonical long form (e.g. `--sandbox=namespace`). */
  readonly option: string;

  constructor(option: string) {
    super(`not supported yet: ${option}`, 'unsupported');
    this.name = 'NotSupportedError';
    this.option = option;
  }
}

/** Where a device failed: creating its process, reporting a fatal error, or exiting unexpectedly. */
export type DeviceErrorReason = 'spawn' | 'failed' | 'exited' | 'timeout' | 'native';

export class DeviceError extends Error {
  readonly reason: DeviceErrorReason;
  /** Exit status when the process ended before becoming ready. */
  readonly exitCode: number | null;
  readonly exitSignal: NodeJS.Signals | null;

  constructor(
    message: string,
    reason: DeviceErrorReason,
    exit: { code: number | null; signal: NodeJS.Signals | null } = { code: null, signal: null },
  ) {
    super(message);
    this.name = 'DeviceError';
    this.reason = reason;
    this.exitCode = exit.code;
    this.exitSignal = exit.signal;
  }
}
