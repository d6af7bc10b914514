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
    pub max_request_queues: usize,
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
    /// How a source device represents its inodes in the migration state it sends.
    pub migration_mode: MigrationMode,
    /// What a destination device does with inodes it cannot restore.
    pub migration_on_error: MigrationOnError,
    /// With `find-paths`: the source attaches each inode's file handle, and the destination
    /// checks it opened the same inode.
    pub migration_verify_handles: bool,
    /// With `find-paths`: the source checks each path again at switch-over.
    pub migration_confirm_paths: bool,
    /// Keep listening after the frontend disconnects and serve the next one with a fresh FUSE
    /// session, instead of exiting.
    pub reconnect: bool,
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
    /// How the source represents inodes in the migration state (`--migration-mode`).
    MigrationMode {
        FindPaths = "find-paths",
        FileHandles = "file-handles",
    }
}

wire_enum! {
    /// What the destination does with inodes it cannot restore (`--migration-on-error`).
    MigrationOnError {
        Abort = "abort",
        GuestError = "guest-error",
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
        if !(MIN_REQUEST_QUEUES..=MAX_REQUEST_QUEUES).contains(&self.max_request_queues) {
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
        if self.migration_mode == MigrationMode::FileHandles {
            // As upstream: file handles already name the very inodes, so neither check adds
            // anything.
            for (set, field) in [
                (self.migration_verify_handles, "migrationVerifyHandles"),
                (self.migration_confirm_paths, "migrationConfirmPaths"),
            ] {
                if set {
                    return invalid(format!(
                        "{field} only applies to migrationMode find-paths (file handles make it unnecessary)"
                    ));
                }
            }
        }
        // `prefer` without the capability holds inodes as `never` does; only what must open
        // handles is refused.
        if self.requires_file_handles() && self.modcaps.drop.iter().any(|c| c == "dac_read_search")
        {
            return invalid(
                "modcaps cannot drop dac_read_search when the device must open file handles \
                 (inodeFileHandles mandatory, or migrationMode file-handles)"
                    .into(),
            );
        }
        self.check_translation(who, IdKind::Uid)?;
        self.check_translation(who, IdKind::Gid)?;
        if self.posix_acl {
            if let Some(map) = &self.xattr_map {
                for name in [
                    virtiofsd_policy::acl::ACCESS,
                    virtiofsd_policy::acl::DEFAULT,
                ] {
                    // The host kernel applies an ACL only under its own name: a renamed one
                    // would be stored and shown, but never inherited nor kept in step with the
                    // mode.
                    let unchanged = matches!(map.to_host(name),
                        virtiofsd_policy::GuestName::Host(host) if host.as_ref() == name);
                    if !unchanged {
                        let index = map.guest_rule(name);
                        let rule = &map.rules()[index];
                        let scope = match (rule.client, rule.server) {
                            (true, true) => "all",
                            (true, false) => "client",
                            _ => "server",
                        };
                        return invalid(format!(
                            "posixAcl cannot work: rule {} of the compiled xattr map ({:?} {scope}, key {:?}, prepend {:?}) refuses or renames {}, and the host kernel applies an ACL only under its own name",
                            index + 1,
                            rule.kind,
                            rule.key,
                            rule.prepend,
                            String::from_utf8_lossy(name)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the device means to open file handles, which takes CAP_DAC_READ_SEARCH (a root
    /// device keeps it): to hold inodes (`inodeFileHandles`), or to restore the inodes of a
    /// file-handle migration state. Whether it can is found at start-up
    /// (`PassthroughFs::probe_file_handles`). A
    /// destination cannot know the source's mode before the state arrives, so the same mode on
    /// both sides (the usual single command line) keeps the capability where it is needed.
    pub fn opens_file_handles(&self) -> bool {
        self.inode_file_handles != InodeFileHandles::Never
            || self.migration_mode == MigrationMode::FileHandles
    }

    /// Whether the device cannot do its work without opening file handles: `prefer` falls back
    /// to descriptors when it cannot open them (the device finds out at start-up), `mandatory`
    /// and a file-handle migration cannot.
    pub fn requires_file_handles(&self) -> bool {
        self.inode_file_handles == InodeFileHandles::Mandatory
            || self.migration_mode == MigrationMode::FileHandles
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
mod tests;
