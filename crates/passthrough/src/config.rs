//! How the shared directory is exposed: caching policy and optional behaviours.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use virtiofsd_policy::XattrMap;

use crate::consts::{FOPEN_CACHE_DIR, FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE};

/// How long the guest may cache metadata and whether it may cache file data (`--cache`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CachePolicy {
    /// Short timeouts; the page cache is kept only while a file is unchanged (the default).
    #[default]
    Auto,
    /// Long timeouts and data kept across opens: the host must not change files behind the guest.
    Always,
    /// No metadata caching and direct I/O for file data.
    Never,
    /// Long metadata timeouts but direct I/O for file data.
    Metadata,
}

/// A cache policy name other than `auto`, `always`, `never` or `metadata`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownCachePolicy(pub String);

impl fmt::Display for UnknownCachePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown cache policy {:?} (expected auto, always, never or metadata)",
            self.0
        )
    }
}

impl std::error::Error for UnknownCachePolicy {}

impl FromStr for CachePolicy {
    type Err = UnknownCachePolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(CachePolicy::Auto),
            "always" => Ok(CachePolicy::Always),
            "never" => Ok(CachePolicy::Never),
            "metadata" => Ok(CachePolicy::Metadata),
            other => Err(UnknownCachePolicy(other.to_string())),
        }
    }
}

impl fmt::Display for CachePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CachePolicy::Auto => "auto",
            CachePolicy::Always => "always",
            CachePolicy::Never => "never",
            CachePolicy::Metadata => "metadata",
        })
    }
}

/// Long enough to mean "until the guest forgets it"; the value upstream virtiofsd uses.
const LONG_TIMEOUT: Duration = Duration::from_secs(86400);

impl CachePolicy {
    /// Entry and attribute timeout handed to the guest.
    pub fn timeout(self) -> Duration {
        match self {
            CachePolicy::Never => Duration::ZERO,
            CachePolicy::Auto => Duration::from_secs(1),
            CachePolicy::Always | CachePolicy::Metadata => LONG_TIMEOUT,
        }
    }

    /// `FOPEN_*` flags for an opened file (`is_dir == false`) or directory.
    pub fn open_options(self, is_dir: bool) -> u32 {
        match (self, is_dir) {
            // Directories never get direct I/O: their pages are the kernel's readdir cache.
            (CachePolicy::Never, false) | (CachePolicy::Metadata, false) => FOPEN_DIRECT_IO,
            (CachePolicy::Never, true) | (CachePolicy::Auto, _) => 0,
            (CachePolicy::Always, false) => FOPEN_KEEP_CACHE,
            (CachePolicy::Always, true) | (CachePolicy::Metadata, true) => {
                FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR
            }
        }
    }
}

/// How inodes are kept between LOOKUP and FORGET (`--inode-file-handles`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileHandleMode {
    /// An `O_PATH` descriptor per inode: one host fd for every inode the guest knows.
    Never,
    /// A file handle (`name_to_handle_at`) per inode where the host filesystem can make one,
    /// an `O_PATH` descriptor elsewhere (the default, as upstream virtiofsd since 1.13.3): the
    /// descriptors held then stay within the budget however many inodes the guest looks up. A
    /// device that cannot open handles at all holds every inode as with `Never`
    /// ([`crate::PassthroughFs::probe_file_handles`]).
    #[default]
    Prefer,
    /// File handles only; lookups on filesystems that cannot make them fail, and a device that
    /// cannot open handles does not start.
    Mandatory,
}

/// A file handle mode name other than `never`, `prefer` or `mandatory`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFileHandleMode(pub String);

impl fmt::Display for UnknownFileHandleMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown inode file handle mode {:?} (expected never, prefer or mandatory)",
            self.0
        )
    }
}

impl std::error::Error for UnknownFileHandleMode {}

impl FromStr for FileHandleMode {
    type Err = UnknownFileHandleMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(FileHandleMode::Never),
            "prefer" => Ok(FileHandleMode::Prefer),
            "mandatory" => Ok(FileHandleMode::Mandatory),
            other => Err(UnknownFileHandleMode(other.to_string())),
        }
    }
}

/// How the source describes each inode to the destination of a migration
/// (`--migration-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MigrationMode {
    /// Send each inode's path relative to the shared directory; the destination looks it up
    /// again from its own root (the default, as upstream virtiofsd).
    #[default]
    FindPaths,
    /// Send each inode's file handle; the destination opens it with `open_by_handle_at`, which
    /// needs `CAP_DAC_READ_SEARCH` and the same host filesystem on both sides.
    FileHandles,
}

/// A migration mode name other than `find-paths` or `file-handles`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownMigrationMode(pub String);

impl fmt::Display for UnknownMigrationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown migration mode {:?} (expected find-paths or file-handles)",
            self.0
        )
    }
}

impl std::error::Error for UnknownMigrationMode {}

impl FromStr for MigrationMode {
    type Err = UnknownMigrationMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "find-paths" => Ok(MigrationMode::FindPaths),
            "file-handles" => Ok(MigrationMode::FileHandles),
            other => Err(UnknownMigrationMode(other.to_string())),
        }
    }
}

impl fmt::Display for MigrationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MigrationMode::FindPaths => "find-paths",
            MigrationMode::FileHandles => "file-handles",
        })
    }
}

/// What the destination of a migration does with an inode it cannot find again
/// (`--migration-on-error`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MigrationOnError {
    /// Fail the whole load: the migration fails and the source goes on serving (the default).
    #[default]
    Abort,
    /// Keep the inode's id but mark it broken: every later request on it answers `EIO`.
    GuestError,
}

/// A migration error policy name other than `abort` or `guest-error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownMigrationOnError(pub String);

impl fmt::Display for UnknownMigrationOnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown migration error policy {:?} (expected abort or guest-error)",
            self.0
        )
    }
}

impl std::error::Error for UnknownMigrationOnError {}

impl FromStr for MigrationOnError {
    type Err = UnknownMigrationOnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "abort" => Ok(MigrationOnError::Abort),
            "guest-error" => Ok(MigrationOnError::GuestError),
            other => Err(UnknownMigrationOnError(other.to_string())),
        }
    }
}

impl fmt::Display for MigrationOnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MigrationOnError::Abort => "abort",
            MigrationOnError::GuestError => "guest-error",
        })
    }
}

/// Everything that shapes a [`crate::PassthroughFs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The host directory to share; the guest can never reach outside it.
    pub root_dir: PathBuf,
    pub cache: CachePolicy,
    /// Refuse every modification with `EROFS`.
    pub readonly: bool,
    /// Ask for the guest's writeback cache (`FUSE_WRITEBACK_CACHE`).
    pub writeback: bool,
    /// Offer READDIRPLUS to the guest.
    pub readdirplus: bool,
    /// Honour the guest's `O_DIRECT` on the host; otherwise it is stripped.
    pub allow_direct_io: bool,
    /// Let the guest mmap files opened with direct I/O (`FUSE_DIRECT_IO_ALLOW_MMAP`).
    pub allow_mmap: bool,
    /// Mark host mount points as submounts so the guest gives them their own `st_dev`.
    pub announce_submounts: bool,
    /// Ask the guest to send setuid/setgid-clearing requests (`FUSE_HANDLE_KILLPRIV_V2`).
    pub killpriv_v2: bool,
    /// Serve extended attributes; without it every xattr request answers `ENOSYS`, which makes
    /// the guest stop asking (as upstream virtiofsd without `--xattr`). `xattr_map`,
    /// `posix_acl` and `security_label` each imply it: [`crate::PassthroughFs::new`] turns it on
    /// when any of them is set (each needs xattrs served to mean anything to the guest), and
    /// [`crate::PassthroughFs::config`] shows the value in force.
    pub xattr: bool,
    /// `--xattrmap`: how guest xattr names become host names and back. `None` passes every
    /// name unchanged.
    pub xattr_map: Option<XattrMap>,
    /// `--posix-acl`: let the guest kernel enforce POSIX ACLs (`FUSE_POSIX_ACL`, with
    /// `FUSE_DONT_MASK` and `FUSE_SETXATTR_EXT`; INIT fails with `EPROTO` without them). New
    /// inodes then follow a local filesystem: the guest's umask is ignored where the parent
    /// directory has a default ACL (which the host kernel applies instead). Without it the ACL
    /// names answer `EOPNOTSUPP` and are not listed, so the guest never believes it has ACLs
    /// that its kernel does not apply.
    pub posix_acl: bool,
    /// `--security-label`: ask for the guest's security context on create-type requests
    /// (`FUSE_SECURITY_CTX`; INIT fails with `EPROTO` without it) and store it on each new inode
    /// before the guest sees the inode; a new inode that cannot be labelled is removed again.
    pub security_label: bool,
    /// How inodes are held on the host. [`crate::PassthroughFs::probe_file_handles`] may turn
    /// `Prefer` into `Never`; [`crate::PassthroughFs::config`] shows the mode in force.
    pub inode_file_handles: FileHandleMode,
    /// Honour the guest's `O_NOATIME`; otherwise it is stripped.
    pub preserve_noatime: bool,
    /// Serve POSIX record locks (GETLK/SETLK/SETLKW); otherwise they answer `ENOSYS`.
    pub posix_locks: bool,
    /// Serve BSD flock(2) locks; otherwise they answer `ENOSYS`.
    pub flock: bool,
    /// How many host descriptors the guest may make the daemon hold (open handles, inode
    /// descriptors, lock descriptions); past it, operations that need one more get `ENFILE`.
    pub fd_budget: usize,
    /// `--migration-mode`: how inodes are described in the migration state.
    pub migration_mode: MigrationMode,
    /// `--migration-on-error`: what the destination does with an inode it cannot restore.
    pub migration_on_error: MigrationOnError,
    /// `--migration-verify-handles`: with `find-paths`, also send a file handle per inode and
    /// make the destination check that the path it found leads to the same inode.
    pub migration_verify_handles: bool,
    /// `--migration-confirm-paths`: with `find-paths`, open each path again at save time and
    /// check that it leads to the inode the source holds.
    pub migration_confirm_paths: bool,
}

impl Config {
    /// The defaults of upstream virtiofsd for `root_dir`.
    pub fn new(root_dir: impl Into<PathBuf>) -> Self {
        Config {
            root_dir: root_dir.into(),
            cache: CachePolicy::Auto,
            readonly: false,
            writeback: false,
            readdirplus: true,
            allow_direct_io: false,
            allow_mmap: false,
            announce_submounts: false,
            killpriv_v2: false,
            xattr: false,
            xattr_map: None,
            posix_acl: false,
            security_label: false,
            inode_file_handles: FileHandleMode::Prefer,
            preserve_noatime: false,
            posix_locks: true,
            flock: true,
            fd_budget: usize::MAX,
            migration_mode: MigrationMode::FindPaths,
            migration_on_error: MigrationOnError::Abort,
            migration_verify_handles: false,
            migration_confirm_paths: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_policy_names() {
        for p in [
            CachePolicy::Auto,
            CachePolicy::Always,
            CachePolicy::Never,
            CachePolicy::Metadata,
        ] {
            assert_eq!(p.to_string().parse::<CachePolicy>(), Ok(p));
        }
        assert_eq!(
            "sometimes".parse::<CachePolicy>(),
            Err(UnknownCachePolicy("sometimes".into()))
        );
    }

    #[test]
    fn parses_file_handle_modes() {
        assert_eq!("never".parse(), Ok(FileHandleMode::Never));
        assert_eq!("prefer".parse(), Ok(FileHandleMode::Prefer));
        assert_eq!("mandatory".parse(), Ok(FileHandleMode::Mandatory));
        assert!("always".parse::<FileHandleMode>().is_err());
        let c = Config::new("/x");
        assert_eq!(c.inode_file_handles, FileHandleMode::Prefer);
        assert_eq!(FileHandleMode::default(), FileHandleMode::Prefer);
        assert!(c.posix_locks && c.flock && !c.xattr && !c.preserve_noatime);
        assert!(c.xattr_map.is_none() && !c.posix_acl && !c.security_label);
    }

    #[test]
    fn parses_migration_options() {
        for m in [MigrationMode::FindPaths, MigrationMode::FileHandles] {
            assert_eq!(m.to_string().parse::<MigrationMode>(), Ok(m));
        }
        for e in [MigrationOnError::Abort, MigrationOnError::GuestError] {
            assert_eq!(e.to_string().parse::<MigrationOnError>(), Ok(e));
        }
        assert!("paths".parse::<MigrationMode>().is_err());
        assert!("ignore".parse::<MigrationOnError>().is_err());
        let c = Config::new("/x");
        assert_eq!(c.migration_mode, MigrationMode::FindPaths);
        assert_eq!(c.migration_on_error, MigrationOnError::Abort);
        assert!(!c.migration_verify_handles && !c.migration_confirm_paths);
    }

    #[test]
    fn timeouts_and_open_options_follow_policy() {
        assert_eq!(CachePolicy::Never.timeout(), Duration::ZERO);
        assert_eq!(CachePolicy::Auto.timeout(), Duration::from_secs(1));
        assert_eq!(CachePolicy::Always.timeout(), LONG_TIMEOUT);
        assert_eq!(CachePolicy::Metadata.timeout(), LONG_TIMEOUT);
        assert_eq!(CachePolicy::Never.open_options(false), FOPEN_DIRECT_IO);
        assert_eq!(CachePolicy::Never.open_options(true), 0);
        assert_eq!(CachePolicy::Auto.open_options(false), 0);
        assert_eq!(CachePolicy::Always.open_options(false), FOPEN_KEEP_CACHE);
        assert_eq!(
            CachePolicy::Always.open_options(true),
            FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR
        );
        assert_eq!(CachePolicy::Metadata.open_options(false), FOPEN_DIRECT_IO);
    }
}
