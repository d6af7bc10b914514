//! The configuration contract, described once: every field of [`DaemonConfig`](super::DaemonConfig)
//! and its nested types, with its wire name, type, allowed values and limits.
//!
//! [`DaemonConfig::validate_as`](super::DaemonConfig) enforces these constants, and the TypeScript
//! layer's types and limits (`ts/generated/schema.ts`) are rendered from this module by a test,
//! which fails while the checked-in file differs (`UPDATE_SCHEMA=1 cargo test -p virtiofsd-daemon
//! schema` rewrites it). Other tests check that this description matches what serde accepts, so a
//! field, value or limit changed in Rust alone fails the build's tests.

use super::{
    CacheMode, InodeFileHandles, LogLevel, MigrationMode, MigrationOnError, SandboxMode,
    SeccompMode,
};

/// Wire names of `virtiofsd_policy::IdRuleKind`, in declaration order.
pub const ID_RULE_KIND_VALUES: &[&str] = &["range", "squash", "fail"];
/// A host-to-guest table cannot refuse ids: no `fail`.
pub const HOST_ID_RULE_KIND_VALUES: &[&str] = &["range", "squash"];
/// Wire names of `virtiofsd_policy::XattrRuleKind`, in declaration order.
pub const XATTR_RULE_KIND_VALUES: &[&str] = &["prefix", "ok", "bad", "unsupported"];

/// The virtio-fs configuration space has room for a 36-byte tag.
pub const MAX_TAG_BYTES: usize = virtiofsd_device::config_space::TAG_LEN;
pub const MIN_REQUEST_QUEUES: usize = 1;
/// Queue-to-thread masks are 64 bits wide and the hiprio queue takes one bit.
pub const MAX_REQUEST_QUEUES: usize = virtiofsd_device::MAX_REQUEST_QUEUES;
pub const MIN_QUEUE_SIZE: u16 = 1;
/// Upstream's virtqueue size, offered when the library caller names none.
pub const DEFAULT_QUEUE_SIZE: u16 = virtiofsd_device::DEFAULT_QUEUE_SIZE;
/// The largest split virtqueue; sizes must also be powers of two.
pub const MAX_QUEUE_SIZE: u16 = virtiofsd_device::MAX_QUEUE_SIZE;
/// More worker threads than this only add contention: requests are bounded by the queues.
pub const MAX_THREAD_POOL_SIZE: usize = 1024;
/// The largest integer a JavaScript number holds exactly, so the value the TypeScript layer
/// checked is the value the device sets.
pub const MAX_RLIMIT_NOFILE: u64 = (1 << 53) - 1;
/// Descriptors are C `int`s.
pub const MAX_SOCKET_FD: i32 = i32::MAX;
/// User and group IDs are 32 bits wide.
pub const MAX_ID: u32 = u32::MAX;
/// Capability names as the configuration carries them: lower case, without `cap_`, in kernel
/// numbering order.
pub const CAPABILITY_NAMES: &[&str] = &virtiofsd_sandbox::caps::NAMES;

/// A named numeric limit, exported to TypeScript under the same name.
#[derive(Debug)]
pub struct Limit {
    pub name: &'static str,
    pub value: u64,
    pub doc: &'static str,
}

pub const LIMITS: &[Limit] = &[
    Limit {
        name: "MAX_TAG_BYTES",
        value: MAX_TAG_BYTES as u64,
        doc: "The virtio-fs configuration space has room for a tag of this many UTF-8 bytes.",
    },
    Limit {
        name: "MIN_REQUEST_QUEUES",
        value: MIN_REQUEST_QUEUES as u64,
        doc: "Fewest request queues a device has.",
    },
    Limit {
        name: "MAX_REQUEST_QUEUES",
        value: MAX_REQUEST_QUEUES as u64,
        doc: "Most request queues: one bit each, plus the hiprio queue, in a 64-bit mask.",
    },
    Limit {
        name: "MIN_QUEUE_SIZE",
        value: MIN_QUEUE_SIZE as u64,
        doc: "Smallest virtqueue size.",
    },
    Limit {
        name: "DEFAULT_QUEUE_SIZE",
        value: DEFAULT_QUEUE_SIZE as u64,
        doc: "Upstream's virtqueue size, the default of `queueSize`.",
    },
    Limit {
        name: "MAX_QUEUE_SIZE",
        value: MAX_QUEUE_SIZE as u64,
        doc: "Largest split virtqueue size; sizes must be powers of two.",
    },
    Limit {
        name: "MAX_THREAD_POOL_SIZE",
        value: MAX_THREAD_POOL_SIZE as u64,
        doc: "Most worker threads of the request thread pool (0 serves on the queue threads).",
    },
    Limit {
        name: "MAX_RLIMIT_NOFILE",
        value: MAX_RLIMIT_NOFILE,
        doc: "Largest open-file limit the device accepts (Number.MAX_SAFE_INTEGER).",
    },
    Limit {
        name: "MAX_SOCKET_FD",
        value: MAX_SOCKET_FD as u64,
        doc: "Largest descriptor number of an inherited listening socket.",
    },
    Limit {
        name: "MAX_ID",
        value: MAX_ID as u64,
        doc: "Largest user or group ID (IDs are 32 bits wide).",
    },
];

/// The wire type of one field.
#[derive(Debug)]
pub enum FieldType {
    Bool,
    /// An integer in `min..=max`, a power of two when `power_of_two`.
    Integer {
        min: u64,
        max: u64,
        power_of_two: bool,
    },
    /// A string of `min_bytes..=max_bytes` UTF-8 bytes, without NUL when `no_nul`.
    Text {
        min_bytes: usize,
        max_bytes: Option<usize>,
        no_nul: bool,
    },
    /// A non-empty path; `absolute` when it must start at the root.
    Path {
        absolute: bool,
    },
    /// One of a list of strings.
    Enum(&'static EnumSchema),
    /// `null` or a value of the inner type.
    Nullable(&'static FieldType),
    /// An array of values of the inner type.
    List(&'static FieldType),
    /// An object with named fields.
    Object(&'static ObjectSchema),
    /// An object whose `tag` field says which variant's fields it has.
    Tagged(&'static TaggedSchema),
}

#[derive(Debug)]
pub struct Field {
    /// The JSON name (camelCase).
    pub name: &'static str,
    pub ty: FieldType,
    pub doc: &'static str,
}

#[derive(Debug)]
pub struct EnumSchema {
    /// The TypeScript union type's name.
    pub type_name: &'static str,
    /// The TypeScript constant that lists the values.
    pub values_name: &'static str,
    pub doc: &'static str,
    pub values: &'static [&'static str],
}

#[derive(Debug)]
pub struct ObjectSchema {
    pub type_name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
}

#[derive(Debug)]
pub struct TaggedSchema {
    pub type_name: &'static str,
    pub doc: &'static str,
    /// The field that names the variant.
    pub tag: &'static str,
    pub variants: &'static [Variant],
}

#[derive(Debug)]
pub struct Variant {
    pub tag: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
}

pub const CACHE_MODES: EnumSchema = EnumSchema {
    type_name: "CacheMode",
    values_name: "CACHE_MODES",
    doc: "How much the guest may cache.",
    values: CacheMode::VALUES,
};

pub const INODE_FILE_HANDLE_MODES: EnumSchema = EnumSchema {
    type_name: "InodeFileHandleMode",
    values_name: "INODE_FILE_HANDLE_MODES",
    doc: "Whether inodes are held as file handles instead of O_PATH descriptors.",
    values: InodeFileHandles::VALUES,
};

pub const LOG_LEVELS: EnumSchema = EnumSchema {
    type_name: "LogLevel",
    values_name: "LOG_LEVELS",
    doc: "The most detailed log records a device emits.",
    values: LogLevel::VALUES,
};

pub const SANDBOX_MODES: EnumSchema = EnumSchema {
    type_name: "SandboxMode",
    values_name: "SANDBOX_MODES",
    doc: "How the device process is confined.",
    values: SandboxMode::VALUES,
};

pub const SECCOMP_ACTIONS: EnumSchema = EnumSchema {
    type_name: "SeccompAction",
    values_name: "SECCOMP_ACTIONS",
    doc: "What the seccomp filter does on a system call outside its allow list.",
    values: SeccompMode::VALUES,
};

pub const MIGRATION_MODES: EnumSchema = EnumSchema {
    type_name: "MigrationMode",
    values_name: "MIGRATION_MODES",
    doc: "How a source device represents its inodes in the migration state: `find-paths` sends \
          each inode's path below the shared directory, `file-handles` its file handle (source \
          and destination must share the same filesystem, and the destination needs \
          CAP_DAC_READ_SEARCH).",
    values: MigrationMode::VALUES,
};

pub const MIGRATION_ON_ERROR_ACTIONS: EnumSchema = EnumSchema {
    type_name: "MigrationOnError",
    values_name: "MIGRATION_ON_ERROR_ACTIONS",
    doc: "What a destination device does with an inode it cannot restore: `abort` fails the \
          migration, `guest-error` completes it and answers the guest's requests on that inode \
          with an error.",
    values: MigrationOnError::VALUES,
};

pub const CAPABILITIES: EnumSchema = EnumSchema {
    type_name: "CapabilityName",
    values_name: "CAPABILITY_NAMES",
    doc: "Capability names (lower case, without `cap_`) in kernel numbering order.",
    values: CAPABILITY_NAMES,
};

pub const ID_RULE_KINDS: EnumSchema = EnumSchema {
    type_name: "IdRuleKind",
    values_name: "ID_RULE_KINDS",
    doc: "What a guest-to-host id rule does: `range` maps `first + k` to `target + k`, `squash` \
          maps every covered id to `target`, `fail` refuses the covered ids (EPERM).",
    values: ID_RULE_KIND_VALUES,
};

pub const HOST_ID_RULE_KINDS: EnumSchema = EnumSchema {
    type_name: "HostIdRuleKind",
    values_name: "HOST_ID_RULE_KINDS",
    doc: "What a host-to-guest id rule does (as `IdRuleKind`, without `fail`).",
    values: HOST_ID_RULE_KIND_VALUES,
};

pub const XATTR_RULE_KINDS: EnumSchema = EnumSchema {
    type_name: "XattrRuleKind",
    values_name: "XATTR_RULE_KINDS",
    doc:
        "What a matching extended-attribute rule does: `prefix` adds `prepend` to guest names and \
          strips it from host names, `ok` passes the name, `bad` refuses guest names (EPERM) and \
          hides host names, `unsupported` refuses guest names with EOPNOTSUPP and hides host names.",
    values: XATTR_RULE_KIND_VALUES,
};

/// Every enum of the contract, in the order the TypeScript module declares them.
pub const ENUMS: &[&EnumSchema] = &[
    &CACHE_MODES,
    &INODE_FILE_HANDLE_MODES,
    &LOG_LEVELS,
    &SANDBOX_MODES,
    &SECCOMP_ACTIONS,
    &MIGRATION_MODES,
    &MIGRATION_ON_ERROR_ACTIONS,
    &CAPABILITIES,
    &ID_RULE_KINDS,
    &HOST_ID_RULE_KINDS,
    &XATTR_RULE_KINDS,
];

const NON_EMPTY_TEXT: FieldType = FieldType::Text {
    min_bytes: 1,
    max_bytes: None,
    no_nul: false,
};

const ID: FieldType = FieldType::Integer {
    min: 0,
    max: MAX_ID as u64,
    power_of_two: false,
};

pub const LOG_TARGET: ObjectSchema = ObjectSchema {
    type_name: "LogTarget",
    doc: "One `target=level` logging directive.",
    fields: &[
        Field {
            name: "target",
            ty: FieldType::Text {
                min_bytes: 0,
                max_bytes: None,
                no_nul: false,
            },
            doc: "Applies to log targets starting with this.",
        },
        Field {
            name: "level",
            ty: FieldType::Enum(&LOG_LEVELS),
            doc: "",
        },
    ],
};

pub const ID_RANGE: ObjectSchema = ObjectSchema {
    type_name: "IdRange",
    doc: "One user-namespace ID range (`--uid-map`/`--gid-map`); `inside + count - 1` and \
          `outside + count - 1` must fit in 32 bits.",
    fields: &[
        Field {
            name: "inside",
            ty: ID,
            doc: "First ID inside the namespace.",
        },
        Field {
            name: "outside",
            ty: ID,
            doc: "First ID outside it.",
        },
        Field {
            name: "count",
            ty: FieldType::Integer {
                min: 1,
                max: MAX_ID as u64,
                power_of_two: false,
            },
            doc: "Number of IDs in the range.",
        },
    ],
};

pub const MODCAPS: ObjectSchema = ObjectSchema {
    type_name: "Modcaps",
    doc: "Capabilities added to or dropped from the default set of a root device process.",
    fields: &[
        Field {
            name: "add",
            ty: FieldType::List(&FieldType::Enum(&CAPABILITIES)),
            doc: "",
        },
        Field {
            name: "drop",
            ty: FieldType::List(&FieldType::Enum(&CAPABILITIES)),
            doc: "",
        },
    ],
};

const COUNT: FieldType = FieldType::Integer {
    min: 1,
    max: MAX_ID as u64,
    power_of_two: false,
};

/// A name part of an extended-attribute rule: may be empty, never holds NUL.
const NAME_PART: FieldType = FieldType::Text {
    min_bytes: 0,
    max_bytes: None,
    no_nul: true,
};

/// A translation target: any id but 4294967295, which is none (chown(2) reads it as "unchanged").
const TARGET: FieldType = FieldType::Integer {
    min: 0,
    max: MAX_ID as u64 - 1,
    power_of_two: false,
};

pub const ID_RULE: ObjectSchema = ObjectSchema {
    type_name: "IdRule",
    doc: "One guest-to-host rule: the guest ids `first ..= first + count - 1` and what they \
          become on the host. `first + count - 1` must fit in 32 bits, and for `range` \
          `target + count - 1` must be below 4294967295 (which is no id); a `fail` rule's target \
          is 0.",
    fields: &[
        Field {
            name: "first",
            ty: ID,
            doc: "",
        },
        Field {
            name: "count",
            ty: COUNT,
            doc: "",
        },
        Field {
            name: "kind",
            ty: FieldType::Enum(&ID_RULE_KINDS),
            doc: "",
        },
        Field {
            name: "target",
            ty: TARGET,
            doc: "",
        },
    ],
};

pub const HOST_ID_RULE: ObjectSchema = ObjectSchema {
    type_name: "HostIdRule",
    doc: "One host-to-guest rule: the host ids `first ..= first + count - 1` and what the guest \
          sees instead (targets as in `IdRule`).",
    fields: &[
        Field {
            name: "first",
            ty: ID,
            doc: "",
        },
        Field {
            name: "count",
            ty: COUNT,
            doc: "",
        },
        Field {
            name: "kind",
            ty: FieldType::Enum(&HOST_ID_RULE_KINDS),
            doc: "",
        },
        Field {
            name: "target",
            ty: TARGET,
            doc: "",
        },
    ],
};

pub const ID_MAPPING: ObjectSchema = ObjectSchema {
    type_name: "IdMapping",
    doc: "The translation of one id kind (`--translate-uid` or `--translate-gid`, compiled): two \
          independent tables, each sorted by `first` with disjoint ranges; an id no rule covers is \
          the same number on both sides.",
    fields: &[
        Field {
            name: "guestToHost",
            ty: FieldType::List(&FieldType::Object(&ID_RULE)),
            doc: "",
        },
        Field {
            name: "hostToGuest",
            ty: FieldType::List(&FieldType::Object(&HOST_ID_RULE)),
            doc: "",
        },
    ],
};

pub const XATTR_RULE: ObjectSchema = ObjectSchema {
    type_name: "XattrRule",
    doc: "One compiled extended-attribute rule (`--xattrmap`, `map` rules expanded). A guest name \
          matches a `client` rule that `key` starts; a host name matches a `server` rule that \
          `prepend` starts; the first match decides.",
    fields: &[
        Field {
            name: "kind",
            ty: FieldType::Enum(&XATTR_RULE_KINDS),
            doc: "",
        },
        flag("client", "Applies to names from the guest."),
        flag("server", "Applies to names from the host."),
        Field {
            name: "key",
            ty: NAME_PART,
            doc: "",
        },
        Field {
            name: "prepend",
            ty: NAME_PART,
            doc: "",
        },
    ],
};

pub const SOCKET: TaggedSchema = TaggedSchema {
    type_name: "SocketConfig",
    doc: "The vhost-user socket: one to bind, or an inherited listening one.",
    tag: "kind",
    variants: &[
        Variant {
            tag: "path",
            doc: "Bind a new listening socket at `path`, optionally owned by group `group`.",
            fields: &[
                Field {
                    name: "path",
                    ty: FieldType::Path { absolute: false },
                    doc: "",
                },
                Field {
                    name: "group",
                    ty: FieldType::Nullable(&NON_EMPTY_TEXT),
                    doc: "Group name or numeric ID.",
                },
            ],
        },
        Variant {
            tag: "fd",
            doc: "Adopt an already listening socket inherited as file descriptor `fd`.",
            fields: &[Field {
                name: "fd",
                ty: FieldType::Integer {
                    min: 0,
                    max: MAX_SOCKET_FD as u64,
                    power_of_two: false,
                },
                doc: "",
            }],
        },
    ],
};

const fn flag(name: &'static str, doc: &'static str) -> Field {
    Field {
        name,
        ty: FieldType::Bool,
        doc,
    }
}

pub const DEVICE_CONFIG: ObjectSchema = ObjectSchema {
    type_name: "DeviceConfig",
    doc: "The compiled configuration of one device process, as JSON (unknown fields are refused).",
    fields: &[
        Field {
            name: "sharedDir",
            ty: FieldType::Path { absolute: true },
            doc: "The directory to share.",
        },
        Field {
            name: "socket",
            ty: FieldType::Tagged(&SOCKET),
            doc: "",
        },
        Field {
            name: "tag",
            ty: FieldType::Nullable(&FieldType::Text {
                min_bytes: 1,
                max_bytes: Some(MAX_TAG_BYTES),
                no_nul: true,
            }),
            doc: "The tag the device reports in its configuration space.",
        },
        Field {
            name: "maxRequestQueues",
            ty: FieldType::Integer {
                min: MIN_REQUEST_QUEUES as u64,
                max: MAX_REQUEST_QUEUES as u64,
                power_of_two: false,
            },
            doc:
                "The most request queues the device offers; the frontend decides how many it uses.",
        },
        Field {
            name: "queueSize",
            ty: FieldType::Integer {
                min: MIN_QUEUE_SIZE as u64,
                max: MAX_QUEUE_SIZE as u64,
                power_of_two: true,
            },
            doc: "The largest virtqueue size offered.",
        },
        Field {
            name: "threadPoolSize",
            ty: FieldType::Integer {
                min: 0,
                max: MAX_THREAD_POOL_SIZE as u64,
                power_of_two: false,
            },
            doc: "Worker threads for requests; 0 serves them on the queue threads.",
        },
        Field {
            name: "cache",
            ty: FieldType::Enum(&CACHE_MODES),
            doc: "",
        },
        flag(
            "readonly",
            "Refuse every request that would modify the share.",
        ),
        flag("readdirplus", ""),
        flag("writeback", "Offer the guest a writeback cache."),
        flag("allowDirectIo", "Honour the guest's O_DIRECT."),
        flag(
            "allowMmap",
            "Allow shared mmap with cache=never or cache=metadata.",
        ),
        flag("announceSubmounts", "Report mount points inside the share."),
        flag("killprivV2", "Offer FUSE KILLPRIV_V2."),
        flag(
            "xattr",
            "Serve extended attributes (the device also does with any of posixAcl, securityLabel \
             and xattrMap).",
        ),
        flag(
            "posixAcl",
            "Offer POSIX ACLs (FUSE_POSIX_ACL); the ids inside ACL values are translated.",
        ),
        flag(
            "securityLabel",
            "Store the security label the guest sends with a new file (FUSE_SECURITY_CTX).",
        ),
        Field {
            name: "xattrMap",
            ty: FieldType::Nullable(&FieldType::List(&FieldType::Object(&XATTR_RULE))),
            doc: "Extended-attribute name rules, or null to pass every name unchanged. The list \
                  is not empty and has a catch-all for each side: a `client` rule with an empty \
                  `key` and a `server` rule with an empty `prepend`.",
        },
        Field {
            name: "inodeFileHandles",
            ty: FieldType::Enum(&INODE_FILE_HANDLE_MODES),
            doc: "How looked-up inodes are held. `prefer` (the TypeScript layer's default) holds \
                  a file handle where the filesystem makes one and an O_PATH descriptor \
                  elsewhere, and descriptors throughout when the device finds at start-up that \
                  it cannot open handles (no CAP_DAC_READ_SEARCH in the initial user \
                  namespace), where `mandatory` refuses to start.",
        },
        flag("preserveNoatime", "Keep the guest's O_NOATIME."),
        flag("posixLocks", "Serve POSIX record locks."),
        flag("flock", "Serve BSD flock locks."),
        Field {
            name: "rlimitNofile",
            ty: FieldType::Nullable(&FieldType::Integer {
                min: 0,
                max: MAX_RLIMIT_NOFILE,
                power_of_two: false,
            }),
            doc: "Open-file limit to set; null for the default, 0 to keep the current one.",
        },
        Field {
            name: "logLevel",
            ty: FieldType::Enum(&LOG_LEVELS),
            doc: "",
        },
        Field {
            name: "logTargets",
            ty: FieldType::List(&FieldType::Object(&LOG_TARGET)),
            doc: "Per-target overrides of `logLevel` (from `RUST_LOG` on the command line); the \
                  longest matching target wins.",
        },
        flag(
            "syslog",
            "Without a control channel, log to the system log instead of stderr.",
        ),
        Field {
            name: "sandbox",
            ty: FieldType::Enum(&SANDBOX_MODES),
            doc: "",
        },
        Field {
            name: "seccomp",
            ty: FieldType::Enum(&SECCOMP_ACTIONS),
            doc: "",
        },
        Field {
            name: "uidMap",
            ty: FieldType::List(&FieldType::Object(&ID_RANGE)),
            doc: "UID ranges of an unprivileged namespace sandbox's user namespace.",
        },
        Field {
            name: "gidMap",
            ty: FieldType::List(&FieldType::Object(&ID_RANGE)),
            doc: "GID ranges of an unprivileged namespace sandbox's user namespace.",
        },
        Field {
            name: "translateUid",
            ty: FieldType::Object(&ID_MAPPING),
            doc: "UID translation done by the device. Host ids are ids as the device sees them \
                  (inside its user namespace, if it has one).",
        },
        Field {
            name: "translateGid",
            ty: FieldType::Object(&ID_MAPPING),
            doc: "GID translation done by the device.",
        },
        Field {
            name: "modcaps",
            ty: FieldType::Object(&MODCAPS),
            doc: "",
        },
        Field {
            name: "migrationMode",
            ty: FieldType::Enum(&MIGRATION_MODES),
            doc: "How this device, as a migration source, represents its inodes.",
        },
        Field {
            name: "migrationOnError",
            ty: FieldType::Enum(&MIGRATION_ON_ERROR_ACTIONS),
            doc: "What this device, as a migration destination, does with an inode it cannot \
                  restore.",
        },
        flag(
            "migrationVerifyHandles",
            "With `find-paths`: send each inode's file handle too, so the destination checks it \
             opened the same inode (refused with `file-handles`).",
        ),
        flag(
            "migrationConfirmPaths",
            "With `find-paths`: check each path again at switch-over and correct it from \
             /proc/self/fd (refused with `file-handles`).",
        ),
        flag(
            "reconnect",
            "Keep listening after the frontend disconnects and serve the next frontend with a \
             fresh FUSE session, instead of exiting.",
        ),
    ],
};
