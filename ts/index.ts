// Public library API: everything a user of the package may name, and nothing else (a test
// compares this list with the built package's exports, CommonJS, ESM and .d.ts).
export { startDevice, Device, DEFAULT_START_TIMEOUT_MS, DEFAULT_STOP_TIMEOUT_MS } from './device';
export type { DeviceEvents, ExitStatus, LogRecord, StartOptions } from './device';
export { DeviceGroup, DEFAULT_RESTART_POLICY } from './group';
export type {
  AddOptions,
  DeviceGroupEvents,
  DeviceGroupOptions,
  GaveUpEvent,
  RestartPolicy,
  RestartedEvent,
  RestartingEvent,
} from './group';
export type { DeviceOptions } from './config';
export { DeviceAbortError, DeviceError, NotSupportedError, OptionError } from './errors';
export type { DeviceErrorDetails, DeviceErrorReason, OptionErrorKind, OptionErrorReason } from './errors';
export { CAPABILITIES } from './help';
export { explainPolicy } from './explain';
export type { IdExplanation, PolicyExplanation, PolicyQuery, PolicyRuleRef, XattrExplanation, XattrOutcome } from './explain';
export type { IdTranslation, IdTranslationType, XattrMapRule, XattrMapScope } from './policy';
export type { DeviceStats, QueueStats } from './stats';
export type { CachePolicy, IdRange, LogLevel, MigrationMode, MigrationOnError, SandboxMode, SeccompAction } from './validate';
