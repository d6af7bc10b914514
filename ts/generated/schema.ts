// Generated from crates/daemon/src/config/schema.rs, the Rust configuration types: do not edit.
// `cargo test -p virtiofsd-daemon` fails while this file differs from the schema;
// `UPDATE_SCHEMA=1 cargo test -p virtiofsd-daemon schema` rewrites it.

/** The virtio-fs configuration space has room for a tag of this many UTF-8 bytes. */
export const MAX_TAG_BYTES = 36;

/** Fewest request queues a device has. */
export const MIN_REQUEST_QUEUES = 1;

/** Most request queues: one bit each, plus the hiprio queue, in a 64-bit mask. */
export const MAX_REQUEST_QUEUES = 63;

/** Smallest virtqueue size. */
export const MIN_QUEUE_SIZE = 1;

/** Upstream's virtqueue size, the default of `queueSize`. */
export const DEFAULT_QUEUE_SIZE = 1024;

/** Largest split virtqueue size; sizes must be powers of two. */
export const MAX_QUEUE_SIZE = 32768;

/** Most worker threads of the request thread pool (0 serves on the queue threads). */
export const MAX_THREAD_POOL_SIZE = 1024;

/** Largest open-file limit the device accepts (Number.MAX_SAFE_INTEGER). */
export const MAX_RLIMIT_NOFILE = 9007199254740991;

/** Largest descriptor number of an inherited listening socket. */
export const MAX_SOCKET_FD = 2147483647;

/** Largest user or group ID (IDs are 32 bits wide). */
export const MAX_ID = 4294967295;

/** How much the guest may cache. */
export const CACHE_MODES = ['auto', 'always', 'never', 'metadata'] as const;
export type CacheMode = (typeof CACHE_MODES)[number];

/** What a matching extended-attribute rule does: `prefix` adds `prepend` to guest names and strips it from host names, `ok` passes the name, `bad` refuses guest names (EPERM) and hides host names, `unsupported` refuses guest names with EOPNOTSUPP and hides host names. */
export const XATTR_RULE_KINDS = ['prefix', 'ok', 'bad', 'unsupported'] as const;
export type XattrRuleKind = (typeof XATTR_RULE_KINDS)[number];

/** Whether inodes are held as file handles instead of O_PATH descriptors. */
export const INODE_FILE_HANDLE_MODES = ['never', 'prefer', 'mandatory'] as const;
export type InodeFileHandleMode = (typeof INODE_FILE_HANDLE_MODES)[number];

/** The most detailed log records a device emits. */
export const LOG_LEVELS = ['error', 'warn', 'info', 'debug', 'trace', 'off'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** How the device process is confined. */
export const SANDBOX_MODES = ['namespace', 'chroot', 'none'] as const;
export type SandboxMode = (typeof SANDBOX_MODES)[number];

/** What the seccomp filter does on a system call outside its allow list. */
export const SECCOMP_ACTIONS = ['none', 'kill', 'log', 'trap'] as const;
export type SeccompAction = (typeof SECCOMP_ACTIONS)[number];

/** What a guest-to-host id rule does: `range` maps `first + k` to `target + k`, `squash` maps every covered id to `target`, `fail` refuses the covered ids (EPERM). */
export const ID_RULE_KINDS = ['range', 'squash', 'fail'] as const;
export type IdRuleKind = (typeof ID_RULE_KINDS)[number];

/** What a host-to-guest id rule does (as `IdRuleKind`, without `fail`). */
export const HOST_ID_RULE_KINDS = ['range', 'squash'] as const;
export type HostIdRuleKind = (typeof HOST_ID_RULE_KINDS)[number];

/** Capability names (lower case, without `cap_`) in kernel numbering order. */
export const CAPABILITY_NAMES = [
  'chown',
  'dac_override',
  'dac_read_search',
  'fowner',
  'fsetid',
  'kill',
  'setgid',
  'setuid',
  'setpcap',
  'linux_immutable',
  'net_bind_service',
  'net_broadcast',
  'net_admin',
  'net_raw',
  'ipc_lock',
  'ipc_owner',
  'sys_module',
  'sys_rawio',
  'sys_chroot',
  'sys_ptrace',
  'sys_pacct',
  'sys_admin',
  'sys_boot',
  'sys_nice',
  'sys_resource',
  'sys_time',
  'sys_tty_config',
  'mknod',
  'lease',
  'audit_write',
  'audit_control',
  'setfcap',
  'mac_override',
  'mac_admin',
  'syslog',
  'wake_alarm',
  'block_suspend',
  'audit_read',
  'perfmon',
  'bpf',
  'checkpoint_restore',
] as const;
export type CapabilityName = (typeof CAPABILITY_NAMES)[number];

/** How a source device represents its inodes in the migration state: `find-paths` sends each inode's path below the shared directory, `file-handles` its file handle (source and destination must share the same filesystem, and the destination needs CAP_DAC_READ_SEARCH). */
export const MIGRATION_MODES = ['find-paths', 'file-handles'] as const;
export type MigrationMode = (typeof MIGRATION_MODES)[number];

/** What a destination device does with an inode it cannot restore: `abort` fails the migration, `guest-error` completes it and answers the guest's requests on that inode with an error. */
export const MIGRATION_ON_ERROR_ACTIONS = ['abort', 'guest-error'] as const;
export type MigrationOnError = (typeof MIGRATION_ON_ERROR_ACTIONS)[number];

/** The vhost-user socket: one to bind, or an inherited listening one. */
export type SocketConfig =
  /** Bind a new listening socket at `path`, optionally owned by group `group`. */
  | {
      kind: 'path';
      /** A non-empty path. */
      path: string;
      /** Group name or numeric ID. Non-empty. */
      group: string | null;
    }
  /** Adopt an already listening socket inherited as file descriptor `fd`. */
  | {
      kind: 'fd';
      /** An integer from 0 to 2147483647. */
      fd: number;
    };

/** One compiled extended-attribute rule (`--xattrmap`, `map` rules expanded). A guest name matches a `client` rule that `key` starts; a host name matches a `server` rule that `prepend` starts; the first match decides. */
export interface XattrRule {
  kind: XattrRuleKind;
  /** Applies to names from the guest. */
  client: boolean;
  /** Applies to names from the host. */
  server: boolean;
  /** No NUL. */
  key: string;
  /** No NUL. */
  prepend: string;
}

/** One `target=level` logging directive. */
export interface LogTarget {
  /** Applies to log targets starting with this. */
  target: string;
  level: LogLevel;
}

/** One user-namespace ID range (`--uid-map`/`--gid-map`); `inside + count - 1` and `outside + count - 1` must fit in 32 bits. */
export interface IdRange {
  /** First ID inside the namespace. An integer from 0 to 4294967295. */
  inside: number;
  /** First ID outside it. An integer from 0 to 4294967295. */
  outside: number;
  /** Number of IDs in the range. An integer from 1 to 4294967295. */
  count: number;
}

/** One guest-to-host rule: the guest ids `first ..= first + count - 1` and what they become on the host. `first + count - 1` must fit in 32 bits, and for `range` `target + count - 1` must be below 4294967295 (which is no id); a `fail` rule's target is 0. */
export interface IdRule {
  /** An integer from 0 to 4294967295. */
  first: number;
  /** An integer from 1 to 4294967295. */
  count: number;
  kind: IdRuleKind;
  /** An integer from 0 to 4294967294. */
  target: number;
}

/** One host-to-guest rule: the host ids `first ..= first + count - 1` and what the guest sees instead (targets as in `IdRule`). */
export interface HostIdRule {
  /** An integer from 0 to 4294967295. */
  first: number;
  /** An integer from 1 to 4294967295. */
  count: number;
  kind: HostIdRuleKind;
  /** An integer from 0 to 4294967294. */
  target: number;
}

/** The translation of one id kind (`--translate-uid` or `--translate-gid`, compiled): two independent tables, each sorted by `first` with disjoint ranges; an id no rule covers is the same number on both sides. */
export interface IdMapping {
  guestToHost: IdRule[];
  hostToGuest: HostIdRule[];
}

/** Capabilities added to or dropped from the default set of a root device process. */
export interface Modcaps {
  add: CapabilityName[];
  drop: CapabilityName[];
}

/** The compiled configuration of one device process, as JSON (unknown fields are refused). */
export interface DeviceConfig {
  /** The directory to share. An absolute path. */
  sharedDir: string;
  socket: SocketConfig;
  /** The tag the device reports in its configuration space. 1 to 36 UTF-8 bytes, no NUL. */
  tag: string | null;
  /** The most request queues the device offers; the frontend decides how many it uses. An integer from 1 to 63. */
  maxRequestQueues: number;
  /** The largest virtqueue size offered. An integer from 1 to 32768, a power of two. */
  queueSize: number;
  /** Worker threads for requests; 0 serves them on the queue threads. An integer from 0 to 1024. */
  threadPoolSize: number;
  cache: CacheMode;
  /** Refuse every request that would modify the share. */
  readonly: boolean;
  readdirplus: boolean;
  /** Offer the guest a writeback cache. */
  writeback: boolean;
  /** Honour the guest's O_DIRECT. */
  allowDirectIo: boolean;
  /** Allow shared mmap with cache=never or cache=metadata. */
  allowMmap: boolean;
  /** Report mount points inside the share. */
  announceSubmounts: boolean;
  /** Offer FUSE KILLPRIV_V2. */
  killprivV2: boolean;
  /** Serve extended attributes (the device also does with any of posixAcl, securityLabel and xattrMap). */
  xattr: boolean;
  /** Offer POSIX ACLs (FUSE_POSIX_ACL); the ids inside ACL values are translated. */
  posixAcl: boolean;
  /** Store the security label the guest sends with a new file (FUSE_SECURITY_CTX). */
  securityLabel: boolean;
  /** Extended-attribute name rules, or null to pass every name unchanged. The list is not empty and has a catch-all for each side: a `client` rule with an empty `key` and a `server` rule with an empty `prepend`. */
  xattrMap: XattrRule[] | null;
  /** How looked-up inodes are held. `prefer` (the TypeScript layer's default) holds a file handle where the filesystem makes one and an O_PATH descriptor elsewhere, and descriptors throughout when the device finds at start-up that it cannot open handles (no CAP_DAC_READ_SEARCH in the initial user namespace), where `mandatory` refuses to start. */
  inodeFileHandles: InodeFileHandleMode;
  /** Keep the guest's O_NOATIME. */
  preserveNoatime: boolean;
  /** Serve POSIX record locks. */
  posixLocks: boolean;
  /** Serve BSD flock locks. */
  flock: boolean;
  /** Open-file limit to set; null for the default, 0 to keep the current one. An integer from 0 to 9007199254740991. */
  rlimitNofile: number | null;
  logLevel: LogLevel;
  /** Per-target overrides of `logLevel` (from `RUST_LOG` on the command line); the longest matching target wins. */
  logTargets: LogTarget[];
  /** Without a control channel, log to the system log instead of stderr. */
  syslog: boolean;
  sandbox: SandboxMode;
  seccomp: SeccompAction;
  /** UID ranges of an unprivileged namespace sandbox's user namespace. */
  uidMap: IdRange[];
  /** GID ranges of an unprivileged namespace sandbox's user namespace. */
  gidMap: IdRange[];
  /** UID translation done by the device. Host ids are ids as the device sees them (inside its user namespace, if it has one). */
  translateUid: IdMapping;
  /** GID translation done by the device. */
  translateGid: IdMapping;
  modcaps: Modcaps;
  /** How this device, as a migration source, represents its inodes. */
  migrationMode: MigrationMode;
  /** What this device, as a migration destination, does with an inode it cannot restore. */
  migrationOnError: MigrationOnError;
  /** With `find-paths`: send each inode's file handle too, so the destination checks it opened the same inode (refused with `file-handles`). */
  migrationVerifyHandles: boolean;
  /** With `find-paths`: check each path again at switch-over and correct it from /proc/self/fd (refused with `file-handles`). */
  migrationConfirmPaths: boolean;
  /** Keep listening after the frontend disconnects and serve the next frontend with a fresh FUSE session, instead of exiting. */
  reconnect: boolean;
}
