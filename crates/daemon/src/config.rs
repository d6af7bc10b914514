//! The JSON contract between the TypeScript configuration layer and a device process.
//!
//! Unknown fields are rejected rather than ignored, so an option the TypeScript side believes it
//! set can never be silently dropped by the Rust side.

use std::path::PathBuf;

use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;

pub mod schema;
#[cfg(test)]
mod schema_tests;

use schema::{
    CAPABILITY_NAMES, MAX_QUEUE_SIZE, MAX_REQUEST_QUEUES, MAX_RLIMIT_NOFILE, MAX_TAG_BYTES,
    MAX_THREAD_POOL_SIZE, MIN_QUEUE_SIZE, MIN_REQUEST_QUEUES,
};

/// What a device process is told to be. Every field, its wire type and its limits are described
/// in [`schema`], from which the TypeScript types and limits are generated.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DaemonConfig {
    pub shared_dir: PathBuf,
    pub socket: SocketConfig,
    pub tag: Option<String>,
    pub num_request_queues: usize,
    pub queue_size: u16,
    pub thread_pool_size: usize,
    pub cache: CacheMode,
    pub readonly: bool,
    pub readdirplus: bool,
    pub writeback: bool,
    pub allow_direct_io: bool,
    pub allow_mmap: bool,
    pub announce_submounts: bool,
    pub killpriv_v2: bool,
    pub xattr: bool,
    pub inode_file_handles: InodeFileHandles,
    pub preserve_noatime: bool,
    pub posix_locks: bool,
    pub flock: bool,
    pub rlimit_nofile: Option<u64>,
    pub log_level: LogLevel,
    /// Per-target levels that override `log_level` for targets starting with `target` (the
    /// directives of `RUST_LOG`, compiled by the TypeScript layer); the longest match wins.
    pub log_targets: Vec<LogTarget>,
    /// Without a supervising process, log to the system log (`/dev/log`) instead of stderr.
    pub syslog: bool,
    pub sandbox: SandboxMode,
    pub seccomp: SeccompMode,
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
    pub modcaps: Modcaps,
}

/// One `target=level` logging directive.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize))]
#[serde(deny_unknown_fields)]
pub struct LogTarget {
    pub target: String,
    pub level: LogLevel,
}

/// One user-namespace ID range (`--uid-map`/`--gid-map`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize))]
#[serde(deny_unknown_fields)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// `--modcaps`: capabilities (lower-case names without `cap_`) added to or dropped from the
/// default set of a root device process.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize))]
#[serde(deny_unknown_fields)]
pub struct Modcaps {
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize))]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum SocketConfig {
    /// Bind a new listening socket at `path`, optionally owned by group `group`.
    Path {
        path: PathBuf,
        group: Option<String>,
    },
    /// Adopt an already listening socket inherited as file descriptor `fd`.
    Fd { fd: i32 },
}

/// A unit-variant enum carried as a lower-case string, with the list of its wire names
/// (`VALUES`, in declaration order), so the schema and the generated TypeScript cannot list a
/// value serde does not accept or miss one it does.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
        #[cfg_attr(test, derive(Serialize))]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant,)+
        }

        impl $name {
            /// Every wire name, in declaration order.
            pub const VALUES: &'static [&'static str] = &[$($wire,)+];

            /// The wire name of this value.
            pub fn wire_name(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }
    };
}

wire_enum! {
    /// How much the guest may cache (`--cache`).
    CacheMode {
        Auto = "auto",
        Always = "always",
        Never = "never",
        Metadata = "metadata",
    }
}

wire_enum! {
    /// Whether inodes are held as file handles instead of `O_PATH` descriptors.
    InodeFileHandles {
        Never = "never",
        Prefer = "prefer",
        Mandatory = "mandatory",
    }
}

wire_enum! {
    /// The most detailed log records to emit; declared in upstream's `--log-level` order.
    LogLevel {
        Error = "error",
        Warn = "warn",
        Info = "info",
        Debug = "debug",
        Trace = "trace",
        Off = "off",
    }
}

impl LogLevel {
    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

wire_enum! {
    /// How the device process is confined.
    SandboxMode {
        Namespace = "namespace",
        Chroot = "chroot",
        None = "none",
    }
}

wire_enum! {
    /// What the seccomp filter does on a system call outside the allow list.
    SeccompMode {
        None = "none",
        Kill = "kill",
        Log = "log",
        Trap = "trap",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid device configuration: {0}")]
    Json(serde_json::Error),
    #[error("invalid device configuration: {0}")]
    Invalid(String),
}

/// Why `uidMap`/`gidMap` are refused outside an unprivileged namespace sandbox.
pub const UID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE: &str =
    "--uid-map/--gid-map can only be used by an unprivileged user with --sandbox=namespace";

impl DaemonConfig {
    /// Parses and checks a configuration; the checks repeat the TypeScript layer's on purpose,
    /// because the library API can be driven by any caller.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let config: DaemonConfig = serde_json::from_str(json).map_err(ConfigError::Json)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // SAFETY: geteuid has no preconditions.
        self.validate_as(unsafe { libc::geteuid() })
    }

    /// The checks, for a process running with effective UID `euid`. Every limit is a constant
    /// of [`schema`], which the TypeScript layer is generated from.
    fn validate_as(&self, euid: u32) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if !self.shared_dir.is_absolute() {
            return invalid("sharedDir must be an absolute path".into());
        }
        if let Some(tag) = &self.tag {
            if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
                return invalid(format!("tag must be 1 to {MAX_TAG_BYTES} bytes long"));
            }
            if tag.contains('\0') {
                return invalid("tag must not contain NUL characters".into());
            }
        }
        if !(MIN_REQUEST_QUEUES..=MAX_REQUEST_QUEUES).contains(&self.num_request_queues) {
            return invalid(format!(
                "numRequestQueues must be between {MIN_REQUEST_QUEUES} and {MAX_REQUEST_QUEUES}"
            ));
        }
        if !(MIN_QUEUE_SIZE..=MAX_QUEUE_SIZE).contains(&self.queue_size)
            || !self.queue_size.is_power_of_two()
        {
            return invalid(format!(
                "queueSize must be a power of two between {MIN_QUEUE_SIZE} and {MAX_QUEUE_SIZE}"
            ));
        }
        if self.thread_pool_size > MAX_THREAD_POOL_SIZE {
            return invalid(format!(
                "threadPoolSize must be at most {MAX_THREAD_POOL_SIZE}"
            ));
        }
        if self.rlimit_nofile.is_some_and(|n| n > MAX_RLIMIT_NOFILE) {
            return invalid(format!("rlimitNofile must be at most {MAX_RLIMIT_NOFILE}"));
        }
        match &self.socket {
            SocketConfig::Path { path, .. } if path.as_os_str().is_empty() => {
                return invalid("socket path must not be empty".into())
            }
            SocketConfig::Path {
                group: Some(group), ..
            } if group.is_empty() => return invalid("socket group must not be empty".into()),
            SocketConfig::Fd { fd } if *fd < 0 => {
                return invalid("socket fd must not be negative".into())
            }
            _ => {}
        }
        // The wire carries canonical names only (lower case, no `cap_`): the TypeScript layer
        // normalises what the user wrote.
        for name in self.modcaps.add.iter().chain(&self.modcaps.drop) {
            if !CAPABILITY_NAMES.contains(&name.as_str()) {
                return invalid(format!("unknown capability {name:?}"));
            }
        }
        for range in self.uid_map.iter().chain(&self.gid_map) {
            if range.count == 0
                || range.inside.checked_add(range.count - 1).is_none()
                || range.outside.checked_add(range.count - 1).is_none()
            {
                return invalid("ID map ranges must be non-empty and within 32 bits".into());
            }
        }
        // Ranges are set up only for the user namespace an unprivileged namespace sandbox
        // creates: anywhere else they would be silently ignored (root's device runs in the
        // initial user namespace, all IDs mapped).
        let ranges = !self.uid_map.is_empty() || !self.gid_map.is_empty();
        if ranges && (euid == 0 || self.sandbox != SandboxMode::Namespace) {
            return invalid(UID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "sharedDir": "/srv/share",
            "socket": { "kind": "path", "path": "/run/vfs.sock", "group": null },
            "tag": null,
            "numRequestQueues": 1,
            "queueSize": 1024,
            "threadPoolSize": 0,
            "cache": "auto",
            "readonly": false,
            "readdirplus": true,
            "writeback": false,
            "allowDirectIo": false,
            "allowMmap": false,
            "announceSubmounts": true,
            "killprivV2": false,
            "xattr": false,
            "inodeFileHandles": "never",
            "preserveNoatime": false,
            "posixLocks": true,
            "flock": true,
            "rlimitNofile": null,
            "logLevel": "info",
            "logTargets": [],
            "syslog": false,
            "sandbox": "none",
            "seccomp": "none",
            "uidMap": [],
            "gidMap": [],
            "modcaps": { "add": [], "drop": [] }
        })
    }

    #[test]
    fn parses_the_typescript_contract() {
        let config = DaemonConfig::from_json(&sample().to_string()).unwrap();
        assert_eq!(config.shared_dir, PathBuf::from("/srv/share"));
        assert_eq!(
            config.socket,
            SocketConfig::Path {
                path: "/run/vfs.sock".into(),
                group: None
            }
        );
        assert_eq!(config.cache, CacheMode::Auto);
        assert_eq!(config.log_level, LogLevel::Info);
    }

    #[test]
    fn parses_fd_socket() {
        let mut v = sample();
        v["socket"] = serde_json::json!({ "kind": "fd", "fd": 7 });
        let config = DaemonConfig::from_json(&v.to_string()).unwrap();
        assert_eq!(config.socket, SocketConfig::Fd { fd: 7 });
    }

    #[test]
    fn rejects_unknown_fields() {
        let mut v = sample();
        v["posixAcl"] = serde_json::json!(true);
        let err = DaemonConfig::from_json(&v.to_string()).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `posixAcl`"),
            "{err}"
        );
    }

    #[test]
    fn id_maps_need_an_unprivileged_namespace_sandbox() {
        let range = serde_json::json!([{ "inside": 0, "outside": 300000, "count": 65536 }]);
        for field in ["uidMap", "gidMap"] {
            let mut v = sample();
            v["sandbox"] = serde_json::json!("namespace");
            v[field] = range.clone();
            let config: DaemonConfig = serde_json::from_value(v.clone()).unwrap();
            assert!(config.validate_as(1000).is_ok(), "{field} as a user");
            let err = config.validate_as(0).unwrap_err().to_string();
            assert!(
                err.contains(UID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE),
                "{field} as root: {err}"
            );
            for sandbox in ["chroot", "none"] {
                v["sandbox"] = serde_json::json!(sandbox);
                let config: DaemonConfig = serde_json::from_value(v.clone()).unwrap();
                for euid in [0, 1000] {
                    let err = config.validate_as(euid).unwrap_err().to_string();
                    assert!(
                        err.contains(UID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE),
                        "{field} with --sandbox={sandbox} as {euid}: {err}"
                    );
                }
            }
        }
        // Through the public entry point, with this process's real identity.
        let mut v = sample();
        v["uidMap"] = range;
        assert!(DaemonConfig::from_json(&v.to_string()).is_err());
    }

    #[test]
    fn parses_sandbox_options() {
        let mut v = sample();
        v["sandbox"] = serde_json::json!("namespace");
        v["seccomp"] = serde_json::json!("kill");
        v["uidMap"] = serde_json::json!([{ "inside": 0, "outside": 100000, "count": 65536 }]);
        v["modcaps"] = serde_json::json!({ "add": ["sys_admin"], "drop": ["mknod"] });
        // ID ranges are for an unprivileged device only, whoever runs the tests.
        let config: DaemonConfig = serde_json::from_value(v).unwrap();
        config.validate_as(1000).unwrap();
        assert_eq!(config.sandbox, SandboxMode::Namespace);
        assert_eq!(config.seccomp, SeccompMode::Kill);
        assert_eq!(config.uid_map[0].count, 65536);
        assert_eq!(config.modcaps.drop, vec!["mknod".to_string()]);
    }

    #[test]
    fn rejects_bad_values() {
        for (field, value) in [
            ("sharedDir", serde_json::json!("relative/dir")),
            ("tag", serde_json::json!("x".repeat(37))),
            ("tag", serde_json::json!("")),
            ("numRequestQueues", serde_json::json!(0)),
            ("queueSize", serde_json::json!(1000)),
            ("cache", serde_json::json!("sometimes")),
            ("inodeFileHandles", serde_json::json!("fallback")),
            ("sandbox", serde_json::json!("jail")),
            ("seccomp", serde_json::json!("allow")),
            (
                "modcaps",
                serde_json::json!({ "add": ["sys_everything"], "drop": [] }),
            ),
            ("modcaps", serde_json::json!({ "add": [] })),
            (
                "uidMap",
                serde_json::json!([{ "inside": 0, "outside": 0, "count": 0 }]),
            ),
            (
                "gidMap",
                serde_json::json!([{ "inside": 4294967295u32, "outside": 0, "count": 2 }]),
            ),
        ] {
            let mut v = sample();
            v[field] = value;
            assert!(
                DaemonConfig::from_json(&v.to_string()).is_err(),
                "{field} accepted"
            );
        }
    }
}
