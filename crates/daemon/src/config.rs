//! The JSON contract between the TypeScript configuration layer and a device process.
//!
//! Unknown fields are rejected rather than ignored, so an option the TypeScript side believes it
//! set can never be silently dropped by the Rust side.

use std::path::PathBuf;

use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;
use virtiofsd_policy::{IdMapping, IdRule, XattrMap};

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
    /// Offer POSIX ACLs; with id translation, the ids inside ACL values are translated too.
    pub posix_acl: bool,
    /// Store the security label the guest sends with a new file.
    pub security_label: bool,
    /// Extended-attribute name rules (`--xattrmap`, compiled); `None` passes names unchanged.
    #[cfg_attr(test, serde(serialize_with = "wire::xattr_map"))]
    pub xattr_map: Option<XattrMap>,
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
    /// `--translate-uid`, compiled; host ids are ids as the device sees them.
    #[cfg_attr(test, serde(serialize_with = "wire::id_mapping"))]
    pub translate_uid: IdMapping,
    /// `--translate-gid`, compiled.
    #[cfg_attr(test, serde(serialize_with = "wire::id_mapping"))]
    pub translate_gid: IdMapping,
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

/// Who the device process runs as, for the checks that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub euid: u32,
    pub egid: u32,
    /// The ids under which a user namespace shows ids it does not map
    /// (`/proc/sys/kernel/overflowuid`, `overflowgid`).
    pub overflow_uid: u32,
    pub overflow_gid: u32,
}

/// The kernel's default overflow id (`nobody`).
pub const DEFAULT_OVERFLOW_ID: u32 = 65534;

impl Identity {
    /// This process.
    pub fn current() -> Self {
        let overflow = |file: &str| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(DEFAULT_OVERFLOW_ID)
        };
        Identity {
            // SAFETY: geteuid and getegid have no preconditions.
            euid: unsafe { libc::geteuid() },
            egid: unsafe { libc::getegid() },
            overflow_uid: overflow("/proc/sys/kernel/overflowuid"),
            overflow_gid: overflow("/proc/sys/kernel/overflowgid"),
        }
    }

    /// An ordinary user whose uid and gid are both `id`, with the default overflow ids.
    pub fn user(id: u32) -> Self {
        Identity {
            euid: id,
            egid: id,
            overflow_uid: DEFAULT_OVERFLOW_ID,
            overflow_gid: DEFAULT_OVERFLOW_ID,
        }
    }
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
        self.validate_as(&Identity::current())
    }

    /// The checks, for a process running as `who`. Every limit is a constant of [`schema`],
    /// which the TypeScript layer is generated from.
    fn validate_as(&self, who: &Identity) -> Result<(), ConfigError> {
        let euid = who.euid;
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
        self.check_translation(who, IdKind::Uid)?;
        self.check_translation(who, IdKind::Gid)?;
        if self.posix_acl {
            if let Some(map) = &self.xattr_map {
                for name in [
                    virtiofsd_policy::acl::ACCESS,
                    virtiofsd_policy::acl::DEFAULT,
                ] {
                    if !matches!(map.to_host(name), virtiofsd_policy::GuestName::Host(_)) {
                        return invalid(format!(
                            "posixAcl cannot work: xattrMap rule {} refuses the guest name {}",
                            map.guest_rule(name),
                            String::from_utf8_lossy(name)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The host ids of `kind` the device can act as (create files as, chown to), and why;
    /// `None` when it can act as any.
    pub fn usable_host_ids(&self, who: &Identity, kind: IdKind) -> Option<UsableIds> {
        if who.euid == 0 {
            return None;
        }
        let (own, ranges) = match kind {
            IdKind::Uid => (who.euid, &self.uid_map),
            IdKind::Gid => (who.egid, &self.gid_map),
        };
        let name = kind.name();
        Some(if self.sandbox != SandboxMode::Namespace {
            UsableIds {
                ranges: vec![(own, 1)],
                user_namespace: false,
                why: format!("an unprivileged device without a user namespace acts as its own {name} {own} only"),
            }
        } else if !self.uid_map.is_empty() || !self.gid_map.is_empty() {
            UsableIds {
                ranges: ranges.iter().map(|r| (r.inside, r.count)).collect(),
                user_namespace: true,
                why: format!(
                    "the device's user namespace holds only the {name}s of its {} ranges",
                    kind.map_option()
                ),
            }
        } else {
            UsableIds {
                ranges: vec![(0, 1)],
                user_namespace: true,
                why: format!(
                    "the device's user namespace holds only {name} 0 (your own {name} {own} seen from inside)"
                ),
            }
        })
    }

    /// Refuses translation rules that cannot work for this device: guest ids sent to host ids it
    /// cannot act as, and host-to-guest rules over ids it never sees.
    fn check_translation(&self, who: &Identity, kind: IdKind) -> Result<(), ConfigError> {
        let (mapping, field, overflow) = match kind {
            IdKind::Uid => (&self.translate_uid, "translateUid", who.overflow_uid),
            IdKind::Gid => (&self.translate_gid, "translateGid", who.overflow_gid),
        };
        let name = kind.name();
        // (u32)-1 is no id: chown(2) reads it as "unchanged", and the dispatcher as forbidden.
        for (table, direction) in [
            (mapping.guest_to_host(), "guest-to-host"),
            (mapping.host_to_guest(), "host-to-guest"),
        ] {
            for (index, rule) in table.rules().iter().enumerate() {
                let last_target = match rule.kind {
                    virtiofsd_policy::IdRuleKind::Range => rule.target.checked_add(rule.count - 1),
                    virtiofsd_policy::IdRuleKind::Squash => Some(rule.target),
                    virtiofsd_policy::IdRuleKind::Fail => continue,
                };
                if last_target == Some(u32::MAX) {
                    return Err(ConfigError::Invalid(format!(
                        "{field}: {direction} rule {index} translates {name}s to {}, which is no \
                         {name}",
                        u32::MAX
                    )));
                }
            }
        }
        let Some(usable) = self.usable_host_ids(who, kind) else {
            return Ok(());
        };
        for (index, rule) in mapping.guest_to_host().rules().iter().enumerate() {
            let targets = match rule.kind {
                virtiofsd_policy::IdRuleKind::Range => (rule.target, rule.count),
                virtiofsd_policy::IdRuleKind::Squash => (rule.target, 1),
                virtiofsd_policy::IdRuleKind::Fail => continue,
            };
            if let Some(id) = usable.first_outside(targets) {
                return Err(ConfigError::Invalid(format!(
                    "{field}: guest-to-host rule {index} sends guest {name}s to host {name} {id}, \
                     which the device cannot act as: {}",
                    usable.why
                )));
            }
        }
        if usable.user_namespace {
            for (index, rule) in mapping.host_to_guest().rules().iter().enumerate() {
                if !usable.meets((rule.first, rule.count)) && !covers(rule, overflow) {
                    return Err(ConfigError::Invalid(format!(
                        "{field}: host-to-guest rule {index} covers host {name}s the device never \
                         sees: {} (others appear as {overflow})",
                        usable.why
                    )));
                }
            }
        }
        Ok(())
    }
}

fn covers(rule: &IdRule, id: u32) -> bool {
    rule.first <= id && id - rule.first < rule.count
}

/// Which id kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Uid,
    Gid,
}

impl IdKind {
    fn name(self) -> &'static str {
        match self {
            IdKind::Uid => "uid",
            IdKind::Gid => "gid",
        }
    }

    fn map_option(self) -> &'static str {
        match self {
            IdKind::Uid => "uidMap",
            IdKind::Gid => "gidMap",
        }
    }
}

/// The host ids a device can use, as `(first, count)` ranges, and why only those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsableIds {
    pub ranges: Vec<(u32, u32)>,
    /// The device runs in a user namespace: host ids outside `ranges` appear as the overflow id.
    pub user_namespace: bool,
    pub why: String,
}

impl UsableIds {
    /// The first id of `(first, count)` outside every usable range.
    fn first_outside(&self, (first, count): (u32, u32)) -> Option<u32> {
        let last = u64::from(first) + u64::from(count) - 1;
        let mut id = u64::from(first);
        while id <= last {
            let inside = self
                .ranges
                .iter()
                .find(|&&(f, c)| u64::from(f) <= id && id < u64::from(f) + u64::from(c));
            match inside {
                // Skip to the end of the range that holds `id`.
                Some(&(f, c)) => id = u64::from(f) + u64::from(c),
                None => return Some(id as u32),
            }
        }
        None
    }

    /// Whether `(first, count)` holds at least one usable id.
    fn meets(&self, (first, count): (u32, u32)) -> bool {
        let last = u64::from(first) + u64::from(count) - 1;
        self.ranges
            .iter()
            .any(|&(f, c)| u64::from(f) <= last && u64::from(first) < u64::from(f) + u64::from(c))
    }
}

/// Serialisers for the policy types, which only deserialise: the schema tests round-trip a
/// configuration through JSON.
#[cfg(test)]
mod wire {
    use serde::{Serialize, Serializer};
    use serde_json::{json, Value};
    use virtiofsd_policy::{IdMapping, IdRule, IdRuleKind, XattrMap, XattrRuleKind};

    fn rules(rules: &[IdRule]) -> Value {
        rules
            .iter()
            .map(|rule| {
                let kind = match rule.kind {
                    IdRuleKind::Range => "range",
                    IdRuleKind::Squash => "squash",
                    IdRuleKind::Fail => "fail",
                };
                json!({ "first": rule.first, "count": rule.count, "kind": kind, "target": rule.target })
            })
            .collect()
    }

    pub fn id_mapping<S: Serializer>(mapping: &IdMapping, s: S) -> Result<S::Ok, S::Error> {
        json!({
            "guestToHost": rules(mapping.guest_to_host().rules()),
            "hostToGuest": rules(mapping.host_to_guest().rules()),
        })
        .serialize(s)
    }

    pub fn xattr_map<S: Serializer>(map: &Option<XattrMap>, s: S) -> Result<S::Ok, S::Error> {
        let Some(map) = map else {
            return s.serialize_none();
        };
        let rules: Value = map
            .rules()
            .iter()
            .map(|rule| {
                let kind = match rule.kind {
                    XattrRuleKind::Prefix => "prefix",
                    XattrRuleKind::Ok => "ok",
                    XattrRuleKind::Bad => "bad",
                    XattrRuleKind::Unsupported => "unsupported",
                };
                json!({
                    "kind": kind, "client": rule.client, "server": rule.server,
                    "key": rule.key, "prepend": rule.prepend,
                })
            })
            .collect();
        rules.serialize(s)
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
            "posixAcl": false,
            "securityLabel": false,
            "xattrMap": null,
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
            "translateUid": { "guestToHost": [], "hostToGuest": [] },
            "translateGid": { "guestToHost": [], "hostToGuest": [] },
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
        v["posixAcls"] = serde_json::json!(true);
        let err = DaemonConfig::from_json(&v.to_string()).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `posixAcls`"),
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
            assert!(
                config.validate_as(&Identity::user(1000)).is_ok(),
                "{field} as a user"
            );
            let err = config
                .validate_as(&Identity::user(0))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(UID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE),
                "{field} as root: {err}"
            );
            for sandbox in ["chroot", "none"] {
                v["sandbox"] = serde_json::json!(sandbox);
                let config: DaemonConfig = serde_json::from_value(v.clone()).unwrap();
                for euid in [0, 1000] {
                    let err = config
                        .validate_as(&Identity::user(euid))
                        .unwrap_err()
                        .to_string();
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
        config.validate_as(&Identity::user(1000)).unwrap();
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

    fn policies() -> serde_json::Value {
        let mut v = sample();
        v["xattr"] = serde_json::json!(true);
        v["posixAcl"] = serde_json::json!(true);
        v["securityLabel"] = serde_json::json!(true);
        v["xattrMap"] = serde_json::json!([
            { "kind": "prefix", "client": true, "server": true, "key": "trusted.", "prepend": "user.virtiofs." },
            { "kind": "bad", "client": true, "server": true, "key": "user.virtiofs.", "prepend": "trusted." },
            { "kind": "ok", "client": true, "server": true, "key": "", "prepend": "" }
        ]);
        v["translateUid"] = serde_json::json!({
            "guestToHost": [
                { "first": 0, "count": 1, "kind": "squash", "target": 65534 },
                { "first": 1000, "count": 1000, "kind": "range", "target": 101000 },
                { "first": 5000, "count": 10, "kind": "fail", "target": 0 }
            ],
            "hostToGuest": [{ "first": 101000, "count": 1000, "kind": "range", "target": 1000 }]
        });
        v["translateGid"] = serde_json::json!({
            "guestToHost": [],
            "hostToGuest": [{ "first": 0, "count": 100, "kind": "squash", "target": 100 }]
        });
        v
    }

    #[test]
    fn parses_the_policies() {
        let config: DaemonConfig = serde_json::from_value(policies()).unwrap();
        config.validate_as(&Identity::user(0)).unwrap();
        assert!(config.posix_acl && config.security_label);
        assert_eq!(config.translate_uid.to_host(1005), Ok(101005));
        assert_eq!(config.translate_uid.to_host(0), Ok(65534));
        assert!(config.translate_uid.to_host(5003).is_err());
        assert_eq!(config.translate_uid.to_guest(101999), 1999);
        assert_eq!(config.translate_gid.to_guest(42), 100);
        assert_eq!(config.translate_gid.to_host(42), Ok(42));
        let map = config.xattr_map.as_ref().unwrap();
        assert_eq!(map.rules().len(), 3);
        assert_eq!(
            map.to_guest(b"user.virtiofs.trusted.x"),
            Some(&b"trusted.x"[..])
        );
        // The defaults: no policy at all.
        let plain: DaemonConfig = serde_json::from_value(sample()).unwrap();
        assert!(plain.translate_uid.is_identity() && plain.translate_gid.is_identity());
        assert_eq!(plain.xattr_map, None);
    }

    #[test]
    fn rejects_bad_policy_tables() {
        for (field, value, why) in [
            (
                "translateUid",
                serde_json::json!({ "guestToHost": [
                    { "first": 10, "count": 5, "kind": "range", "target": 0 },
                    { "first": 12, "count": 1, "kind": "squash", "target": 0 }
                ], "hostToGuest": [] }),
                "overlaps",
            ),
            (
                "translateUid",
                serde_json::json!({ "guestToHost": [
                    { "first": 10, "count": 1, "kind": "range", "target": 0 },
                    { "first": 5, "count": 1, "kind": "range", "target": 0 }
                ], "hostToGuest": [] }),
                "ascending",
            ),
            (
                "translateGid",
                serde_json::json!({ "guestToHost": [], "hostToGuest": [
                    { "first": 1, "count": 1, "kind": "fail", "target": 0 }
                ] }),
                "cannot refuse",
            ),
            (
                "translateGid",
                serde_json::json!({ "guestToHost": [
                    { "first": 4294967295u32, "count": 2, "kind": "range", "target": 0 }
                ], "hostToGuest": [] }),
                "passes the largest id",
            ),
            (
                "translateGid",
                serde_json::json!({ "guestToHost": [
                    { "first": 0, "count": 2, "kind": "range", "target": 4294967295u32 }
                ], "hostToGuest": [] }),
                "passes the largest id",
            ),
            (
                "translateUid",
                serde_json::json!({ "guestToHost": [] }),
                "missing field `hostToGuest`",
            ),
            ("xattrMap", serde_json::json!([]), "empty"),
            (
                "xattrMap",
                serde_json::json!([{ "kind": "ok", "client": true, "server": false, "key": "", "prepend": "" }]),
                "catch-all",
            ),
            (
                "xattrMap",
                serde_json::json!([{ "kind": "ok", "client": true, "server": true, "key": "a\u{0}", "prepend": "" },
                                   { "kind": "ok", "client": true, "server": true, "key": "", "prepend": "" }]),
                "NUL",
            ),
            (
                "xattrMap",
                serde_json::json!([{ "kind": "map", "client": true, "server": true, "key": "", "prepend": "" }]),
                "unknown variant `map`",
            ),
        ] {
            let mut v = sample();
            v[field] = value;
            let err = DaemonConfig::from_json(&v.to_string())
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{field}: {err}");
        }
    }

    #[test]
    fn translation_targets_must_be_ids_the_device_can_act_as() {
        let with_rules = |sandbox: &str,
                          uid_map: serde_json::Value,
                          guest_to_host,
                          host_to_guest| {
            let mut v = sample();
            v["sandbox"] = serde_json::json!(sandbox);
            v["uidMap"] = uid_map;
            v["translateUid"] =
                serde_json::json!({ "guestToHost": guest_to_host, "hostToGuest": host_to_guest });
            serde_json::from_value::<DaemonConfig>(v).unwrap()
        };
        let squash_to = |target: u32| serde_json::json!([{ "first": 0, "count": 100, "kind": "squash", "target": target }]);
        let none = serde_json::json!([]);
        let user = Identity::user(1000);
        // Root acts as anyone.
        with_rules("none", none.clone(), squash_to(2000), none.clone())
            .validate_as(&Identity::user(0))
            .unwrap();
        // Unprivileged without a user namespace: only its own uid.
        with_rules("none", none.clone(), squash_to(1000), none.clone())
            .validate_as(&user)
            .unwrap();
        let err = with_rules("none", none.clone(), squash_to(2000), none.clone())
            .validate_as(&user)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("host uid 2000, which the device cannot act as")
                && err.contains("own uid 1000"),
            "{err}"
        );
        // A user namespace of its own uid only: that is 0 inside.
        with_rules("namespace", none.clone(), squash_to(0), none.clone())
            .validate_as(&user)
            .unwrap();
        let err = with_rules("namespace", none.clone(), squash_to(1000), none.clone())
            .validate_as(&user)
            .unwrap_err()
            .to_string();
        assert!(err.contains("only uid 0 (your own uid 1000"), "{err}");
        // Ranges: every target must be inside one of them.
        let ranges = serde_json::json!([
            { "inside": 0, "outside": 1000, "count": 1 },
            { "inside": 1, "outside": 100000, "count": 65535 }
        ]);
        let range = |first: u32, count: u32, target: u32| serde_json::json!([{ "first": first, "count": count, "kind": "range", "target": target }]);
        with_rules(
            "namespace",
            ranges.clone(),
            range(0, 65536, 0),
            none.clone(),
        )
        .validate_as(&user)
        .unwrap();
        let err = with_rules(
            "namespace",
            ranges.clone(),
            range(0, 10, 65530),
            none.clone(),
        )
        .validate_as(&user)
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("host uid 65536") && err.contains("uidMap ranges"),
            "{err}"
        );
        // Forbidding needs no target.
        let fail = serde_json::json!([{ "first": 0, "count": 10, "kind": "fail", "target": 0 }]);
        with_rules("namespace", ranges.clone(), fail, none.clone())
            .validate_as(&user)
            .unwrap();
        // Host-to-guest rules over ids the namespace never shows can never match...
        let err = with_rules(
            "namespace",
            ranges.clone(),
            none.clone(),
            range(100000, 10, 0),
        )
        .validate_as(&user)
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("host-to-guest rule 0 covers host uids the device never sees"),
            "{err}"
        );
        // ... unless they cover the overflow id, which unmapped owners appear as.
        let overflow =
            serde_json::json!([{ "first": 65534, "count": 1, "kind": "squash", "target": 5 }]);
        with_rules("namespace", none.clone(), none.clone(), overflow)
            .validate_as(&user)
            .unwrap();
        // Without a user namespace every host id can be seen.
        with_rules("none", none.clone(), none.clone(), range(100000, 10, 0))
            .validate_as(&user)
            .unwrap();
    }

    #[test]
    fn no_rule_translates_to_the_id_that_is_none() {
        for (table, rule) in [
            (
                "guestToHost",
                serde_json::json!({ "first": 0, "count": 10, "kind": "squash", "target": 4294967295u32 }),
            ),
            (
                "guestToHost",
                serde_json::json!({ "first": 0, "count": 2, "kind": "range", "target": 4294967294u32 }),
            ),
            (
                "hostToGuest",
                serde_json::json!({ "first": 5, "count": 1, "kind": "range", "target": 4294967295u32 }),
            ),
        ] {
            let mut v = sample();
            v["translateGid"] = serde_json::json!({ "guestToHost": [], "hostToGuest": [] });
            v["translateGid"][table] = serde_json::json!([rule]);
            let config: DaemonConfig = serde_json::from_value(v).unwrap();
            let err = config
                .validate_as(&Identity::user(0))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("translates gids to 4294967295, which is no gid"),
                "{err}"
            );
        }
    }

    #[test]
    fn posix_acls_need_their_names_through_the_xattr_map() {
        let mut v = policies();
        v["xattrMap"] = serde_json::json!([
            { "kind": "bad", "client": true, "server": true, "key": "system.", "prepend": "system." },
            { "kind": "ok", "client": true, "server": true, "key": "", "prepend": "" }
        ]);
        let config: DaemonConfig = serde_json::from_value(v.clone()).unwrap();
        let err = config
            .validate_as(&Identity::user(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("posixAcl cannot work: xattrMap rule 0 refuses the guest name system.posix_acl_access"), "{err}");
        v["posixAcl"] = serde_json::json!(false);
        let config: DaemonConfig = serde_json::from_value(v).unwrap();
        config.validate_as(&Identity::user(0)).unwrap();
    }
}
