/**
 * Why an option was refused: bad syntax or value (`usage`, the CLI exits 2), valid but not
 * implemented in this version (`unsupported`), or valid but impossible for this process, such as
 * an ID map for a root device (`environment`); the last two exit 1, as upstream's run-time checks.
 */
export type OptionErrorKind = 'usage' | 'unsupported' | 'environment';

/**
 * What is wrong with the option, for programs: a key no option has, a value of the wrong type,
 * a number outside its limits, a value that is not allowed, a required option missing, options
 * that exclude each other, or an option not implemented yet.
 */
export type OptionErrorReason =
  | 'unknown-option'
  | 'invalid-type'
  | 'out-of-range'
  | 'invalid-value'
  | 'missing'
  | 'conflict'
  | 'not-supported';

/**
 * A command-line or library option problem. The CLI turns it into `virtiofsd: <message>`; the
 * library rejects `startDevice` with it before any process is created.
 */
export class OptionError extends Error {
  readonly kind: OptionErrorKind;
  /** The option concerned, as the caller spelt it: a library key (`threadPoolSize`) or a command-line option (`--thread-pool-size`). */
  readonly key: string | undefined;
  readonly reason: OptionErrorReason;

  constructor(
    message: string,
    kind: OptionErrorKind = 'usage',
    detail: { key?: string; reason?: OptionErrorReason } = {},
  ) {
    super(message);
    this.name = 'OptionError';
    this.kind = kind;
    this.key = detail.key;
    this.reason = detail.reason ?? (kind === 'unsupported' ? 'not-supported' : 'invalid-value');
  }
}

/** Refusal of an option we parse and validate but do not implement yet. */
export class NotSupportedError extends OptionError {
  /** The option as the user wrote it, in canonical long form (e.g. `--sandbox=namespace`). */
  readonly option: string;

  constructor(option: string) {
    super(`not supported yet: ${option}`, 'unsupported', { key: option, reason: 'not-supported' });
    this.name = 'NotSupportedError';
    this.option = option;
  }
}

/**
 * Why a device operation failed, for code to branch on (the message is for people):
 * - `native`: this platform's device executable or addon is missing or cannot be loaded.
 * - `spawn`: the device executable could not be started (or, from the command line, executed).
 * - `failed`: the device reported a fatal error (the message is the device's own); it exits 1.
 * - `exited`: the device ended before it was listening without saying why (see `exitCode`,
 *   `exitSignal`).
 * - `timeout`: the device was not listening within `startTimeoutMs`; it was killed.
 * - `aborted`: the start was cancelled through its `AbortSignal` (or the group stopped it); the
 *   process, if it existed, is gone. The error's `name` is `AbortError` and `cause` is the
 *   signal's reason.
 * - `protocol`: the device broke the control protocol (for example an over-long line) and was
 *   killed.
 * - `misuse`: a library object was used in a way it does not support, such as calling the
 *   `Device` constructor instead of `startDevice`.
 */
export type DeviceErrorReason = 'native' | 'spawn' | 'failed' | 'exited' | 'timeout' | 'aborted' | 'protocol' | 'misuse';

/** What is known about a failed device besides the message. */
export interface DeviceErrorDetails {
  /** Exit code, when the process ended before becoming ready. */
  code?: number | null;
  /** Signal that ended the process, when it ended before becoming ready. */
  signal?: NodeJS.Signals | null;
  /** The underlying error or abort reason. */
  cause?: unknown;
}

/** A device could not be started or failed; `reason` says why. */
export class DeviceError extends Error {
  readonly reason: DeviceErrorReason;
  /** Exit code when the process ended before becoming ready, else `null`. */
  readonly exitCode: number | null;
  /** Signal that ended the process before it became ready, else `null`. */
  readonly exitSignal: NodeJS.Signals | null;

  constructor(message: string, reason: DeviceErrorReason, details: DeviceErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'DeviceError';
    this.reason = reason;
    this.exitCode = details.code ?? null;
    this.exitSignal = details.signal ?? null;
  }
}

/**
 * A start cancelled through its `AbortSignal`: a DeviceError with reason `aborted`, named
 * `AbortError` (with `code` `ABORT_ERR`, as Node's own) so generic cancellation checks see it.
 */
export class DeviceAbortError extends DeviceError {
  readonly code = 'ABORT_ERR';

  constructor(message: string, details: DeviceErrorDetails = {}) {
    super(message, 'aborted', details);
    this.name = 'AbortError';
  }
}
