// Public library API.
export { startDevice, Device, DEFAULT_START_TIMEOUT_MS, DEFAULT_STOP_TIMEOUT_MS } from './device';
export type { DeviceEvents, ExitStatus, LogRecord, StartOptions } from './device';
export { DeviceGroup } from './group';
export { buildDeviceConfig } from './config';
export type { DeviceConfig, DeviceOptions, SocketConfig } from './config';
export { DeviceError, NotSupportedError, OptionError } from './errors';
export type { DeviceErrorReason, OptionErrorKind } from './errors';
export { CAPABILITIES } from './help';
export type { CachePolicy, LogLevel } from './validate';
