//! Whether this device can open file handles, decided once before it serves.
//!
//! Making a handle (`name_to_handle_at`) needs no privilege, opening one (`open_by_handle_at`)
//! needs `CAP_DAC_READ_SEARCH` in the initial user namespace, which an unprivileged device, a
//! device in a user-namespace sandbox and one started with `--modcaps=-dac_read_search` lack.
//! Inodes held as handles that can never be opened again would fail every request on them, so
//! the device finds out first, on its shared directory: `prefer` then holds every inode as
//! `never` does (said once, at info level: it is the default, and an unprivileged device is an
//! ordinary set-up), and `mandatory` refuses to start. Where the filesystem alone makes no
//! handles, `prefer` keeps falling back one inode at a time, since other mounts in the share
//! may make them.

use std::fmt;
use std::io;
use std::os::fd::AsFd;

use virtiofsd_fuse::filesystem::ROOT_ID;

use crate::config::{FileHandleMode, MigrationMode};
use crate::fs::PassthroughFs;
use crate::oslib;

/// Why this device cannot open file handles.
#[derive(Debug)]
pub struct CannotOpen {
    /// What was tried.
    step: &'static str,
    error: io::Error,
}

/// What the kernel's `EPERM` means here.
const NEEDS_CAPABILITY: &str = "opening file handles needs CAP_DAC_READ_SEARCH in the initial \
                                user namespace";

impl fmt::Display for CannotOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.step)
    }
}

impl std::error::Error for CannotOpen {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl CannotOpen {
    fn refused_permission(&self) -> bool {
        self.error.raw_os_error() == Some(libc::EPERM)
    }

    /// The reason and the system's error, as one line.
    fn describe(&self) -> String {
        let mut line = format!("{self}: {}", self.error);
        if self.refused_permission() {
            line.push_str(&format!(" ({NEEDS_CAPABILITY})"));
        }
        line
    }
}

/// Why a device whose inode file handles are mandatory cannot start.
#[derive(Debug)]
pub enum HandleProbeError {
    /// The device cannot open file handles.
    CannotOpen(CannotOpen),
    /// The shared directory's filesystem makes no file handles.
    NoRootHandle(io::Error),
}

impl fmt::Display for HandleProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleProbeError::CannotOpen(why) => {
                f.write_str("inode file handles are mandatory, but this device cannot open them")?;
                if why.refused_permission() {
                    write!(f, " ({NEEDS_CAPABILITY})")?;
                }
                Ok(())
            }
            HandleProbeError::NoRootHandle(_) => f.write_str(
                "inode file handles are mandatory, but the shared directory's filesystem makes \
                 none",
            ),
        }
    }
}

impl std::error::Error for HandleProbeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandleProbeError::CannotOpen(e) => Some(e),
            HandleProbeError::NoRootHandle(e) => Some(e),
        }
    }
}

/// What trying handles on the shared directory showed.
#[derive(Debug)]
pub(crate) enum Trial {
    /// The shared directory's own handle opened again.
    Opened,
    /// The shared directory's filesystem makes no handles, but the kernel would let this device
    /// open handles (of other filesystems mounted in the share).
    NoRootHandle(io::Error),
    /// This device cannot open handles.
    Refused(CannotOpen),
}

/// What the device does with a [`Trial`]'s outcome.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Hold inodes as configured.
    Keep,
    /// `prefer`, unable to open handles: hold inodes as with `never`.
    FallBack(CannotOpen),
    /// This device cannot open handles and its mode is not `prefer`; it still runs (a `never`
    /// device that may be a file-handle migration destination), but must not try.
    Record(CannotOpen),
    /// `mandatory` cannot be served.
    Fail(HandleProbeError),
}

/// The decision for `mode` after `trial`.
pub(crate) fn decide(mode: FileHandleMode, trial: Trial) -> Decision {
    match (mode, trial) {
        (_, Trial::Opened) => Decision::Keep,
        (FileHandleMode::Mandatory, Trial::NoRootHandle(e)) => {
            Decision::Fail(HandleProbeError::NoRootHandle(e))
        }
        (_, Trial::NoRootHandle(_)) => Decision::Keep,
        (FileHandleMode::Mandatory, Trial::Refused(why)) => {
            Decision::Fail(HandleProbeError::CannotOpen(why))
        }
        (FileHandleMode::Prefer, Trial::Refused(why)) => Decision::FallBack(why),
        (FileHandleMode::Never, Trial::Refused(why)) => Decision::Record(why),
    }
}

impl PassthroughFs {
    /// Finds out whether this device can open file handles, and holds inodes accordingly from
    /// now on (`prefer` becomes `never` when it cannot; [`PassthroughFs::config`] shows the
    /// mode in force). Only a device configured to open handles (an inode mode other than
    /// `never`, or `--migration-mode=file-handles`) tries anything. Call it once, before
    /// serving, in the process that serves, after its sandbox and capabilities are in place
    /// and before a seccomp filter that may forbid `open_by_handle_at`.
    pub fn probe_file_handles(&mut self) -> Result<(), HandleProbeError> {
        if self.cfg.inode_file_handles == FileHandleMode::Never
            && self.cfg.migration_mode != MigrationMode::FileHandles
        {
            return Ok(());
        }
        let trial = self.try_root_handle();
        match decide(self.cfg.inode_file_handles, trial) {
            Decision::Keep => Ok(()),
            Decision::FallBack(why) => {
                let why = why.describe();
                log::info!(
                    "inode file handles: this device cannot open them, so inodes are held as \
                     O_PATH descriptors, as with --inode-file-handles=never: {why}"
                );
                self.cfg.inode_file_handles = FileHandleMode::Never;
                self.cannot_open_handles = Some(why);
                Ok(())
            }
            Decision::Record(why) => {
                let why = why.describe();
                log::debug!("file handles: this device cannot open them ({why})");
                self.cannot_open_handles = Some(why);
                Ok(())
            }
            Decision::Fail(e) => Err(e),
        }
    }

    /// Makes a handle of the shared directory and opens it again; when its filesystem makes no
    /// handles, asks the kernel whether this device may open any.
    fn try_root_handle(&self) -> Trial {
        let refused = |step, error| Trial::Refused(CannotOpen { step, error });
        let root = match self.inodes.get(ROOT_ID) {
            Ok(root) => root,
            Err(e) => return refused("the shared directory's inode is missing", e),
        };
        let root_fd = match root.fd() {
            Ok(fd) => fd,
            Err(e) => return refused("cannot reach the shared directory", e),
        };
        // open_by_handle_at takes a real descriptor on the mount, not an O_PATH one.
        let mount = match oslib::openat(
            self.proc_self_fd.as_fd(),
            &Self::proc_name(root_fd.as_fd()),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        ) {
            Ok(fd) => fd,
            Err(e) => return refused("cannot open the shared directory to try file handles", e),
        };
        match oslib::name_to_handle(root_fd.as_fd()) {
            Ok((handle, _)) => {
                match oslib::open_by_handle(mount.as_fd(), &handle, libc::O_PATH | libc::O_NOFOLLOW)
                {
                    Ok(_) => Trial::Opened,
                    Err(e) => refused(
                        "open_by_handle_at refused the shared directory's own handle",
                        e,
                    ),
                }
            }
            Err(no_handle) => match oslib::may_open_handles(mount.as_fd()) {
                Ok(()) => Trial::NoRootHandle(no_handle),
                Err(e) => refused("open_by_handle_at refused this device", e),
            },
        }
    }

    /// Why this device cannot open file handles, when [`PassthroughFs::probe_file_handles`]
    /// found it cannot.
    pub fn cannot_open_handles(&self) -> Option<&str> {
        self.cannot_open_handles.as_deref()
    }

    /// Whether this device opens file handles (so its seccomp filter must allow
    /// `open_by_handle_at`): to hold inodes, or to restore a file-handle migration state, and
    /// unless the probe found it cannot.
    pub fn opens_file_handles(&self) -> bool {
        self.cannot_open_handles.is_none()
            && (self.cfg.inode_file_handles != FileHandleMode::Never
                || self.cfg.migration_mode == MigrationMode::FileHandles)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::config::Config;

    fn eperm() -> CannotOpen {
        CannotOpen {
            step: "open_by_handle_at refused the shared directory's own handle",
            error: io::Error::from_raw_os_error(libc::EPERM),
        }
    }

    fn eopnotsupp() -> io::Error {
        io::Error::from_raw_os_error(libc::EOPNOTSUPP)
    }

    #[test]
    fn prefer_falls_back_only_when_handles_cannot_be_opened() {
        assert!(matches!(
            decide(FileHandleMode::Prefer, Trial::Opened),
            Decision::Keep
        ));
        // Other mounts in the share may make handles; lookups decide per inode.
        assert!(matches!(
            decide(FileHandleMode::Prefer, Trial::NoRootHandle(eopnotsupp())),
            Decision::Keep
        ));
        match decide(FileHandleMode::Prefer, Trial::Refused(eperm())) {
            Decision::FallBack(why) => assert_eq!(
                why.describe(),
                "open_by_handle_at refused the shared directory's own handle: Operation not \
                 permitted (os error 1) (opening file handles needs CAP_DAC_READ_SEARCH in the \
                 initial user namespace)"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mandatory_fails_where_prefer_falls_back() {
        assert!(matches!(
            decide(FileHandleMode::Mandatory, Trial::Opened),
            Decision::Keep
        ));
        match decide(FileHandleMode::Mandatory, Trial::Refused(eperm())) {
            Decision::Fail(e) => {
                let chain = format!("{e}: {}", e.source().unwrap());
                assert_eq!(
                    chain,
                    "inode file handles are mandatory, but this device cannot open them (opening \
                     file handles needs CAP_DAC_READ_SEARCH in the initial user namespace): \
                     open_by_handle_at refused the shared directory's own handle"
                );
            }
            other => panic!("{other:?}"),
        }
        match decide(FileHandleMode::Mandatory, Trial::NoRootHandle(eopnotsupp())) {
            Decision::Fail(e @ HandleProbeError::NoRootHandle(_)) => {
                assert!(e.to_string().contains("makes none"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn never_only_records_the_reason() {
        assert!(matches!(
            decide(FileHandleMode::Never, Trial::Refused(eperm())),
            Decision::Record(_)
        ));
        assert!(matches!(
            decide(FileHandleMode::Never, Trial::Opened),
            Decision::Keep
        ));
    }

    fn fs_with(mode: FileHandleMode, migration: MigrationMode) -> PassthroughFs {
        let mut cfg = Config::new(std::env::temp_dir());
        cfg.inode_file_handles = mode;
        cfg.migration_mode = migration;
        PassthroughFs::new(cfg).unwrap()
    }

    #[test]
    fn a_device_that_opens_no_handles_tries_none() {
        let mut fs = fs_with(FileHandleMode::Never, MigrationMode::FindPaths);
        fs.probe_file_handles().unwrap();
        assert!(fs.cannot_open_handles().is_none());
        assert!(!fs.opens_file_handles());
    }

    /// Whether this process may open handles, the way the kernel answers it.
    fn may_open_here() -> bool {
        let dir = std::fs::File::open(std::env::temp_dir()).unwrap();
        oslib::may_open_handles(dir.as_fd()).is_ok()
    }

    #[test]
    fn the_probe_follows_the_kernel() {
        let mut fs = fs_with(FileHandleMode::Prefer, MigrationMode::FindPaths);
        fs.probe_file_handles().unwrap();
        if may_open_here() {
            assert_eq!(fs.config().inode_file_handles, FileHandleMode::Prefer);
            assert!(fs.opens_file_handles());
        } else {
            assert_eq!(fs.config().inode_file_handles, FileHandleMode::Never);
            assert!(fs
                .cannot_open_handles()
                .unwrap()
                .contains("CAP_DAC_READ_SEARCH"));
            assert!(!fs.opens_file_handles());
        }
    }

    /// Drops CAP_DAC_READ_SEARCH from this thread's effective and permitted sets.
    fn drop_dac_read_search() -> bool {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut header = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: a version 3 header and two data words, as the kernel expects.
        if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
            return false;
        }
        const DAC_READ_SEARCH: u32 = 1 << 2;
        data[0].effective &= !DAC_READ_SEARCH;
        data[0].permitted &= !DAC_READ_SEARCH;
        // SAFETY: as above; the data words were filled by capget.
        unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) == 0 }
    }

    /// Runs `body` in a forked child without CAP_DAC_READ_SEARCH; true when it returned true.
    fn in_child_without_dac_read_search(body: fn() -> bool) -> bool {
        // SAFETY: the child makes system calls, runs `body` and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = drop_dac_read_search() && body();
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    #[test]
    fn without_the_capability_prefer_falls_back_and_mandatory_fails() {
        assert!(in_child_without_dac_read_search(|| {
            let mut prefer = fs_with(FileHandleMode::Prefer, MigrationMode::FindPaths);
            let fell_back = prefer.probe_file_handles().is_ok()
                && prefer.config().inode_file_handles == FileHandleMode::Never
                && prefer
                    .cannot_open_handles()
                    .is_some_and(|why| why.contains("Operation not permitted"))
                && !prefer.opens_file_handles();
            let mut mandatory = fs_with(FileHandleMode::Mandatory, MigrationMode::FindPaths);
            let failed = matches!(
                mandatory.probe_file_handles(),
                Err(HandleProbeError::CannotOpen(_))
            );
            // A never device that may be a file-handle destination remembers why it cannot.
            let mut never = fs_with(FileHandleMode::Never, MigrationMode::FileHandles);
            let recorded = never.probe_file_handles().is_ok()
                && never.cannot_open_handles().is_some()
                && !never.opens_file_handles();
            fell_back && failed && recorded
        }));
    }

    #[test]
    fn a_fallen_back_destination_refuses_a_file_handles_state() {
        crate::tests::require_root();
        assert!(in_child_without_dac_read_search(|| {
            use virtiofsd_fuse::filesystem::{FileSystem, InitOptions};
            let (dir, src) =
                crate::tests::setup_with(|c| c.migration_mode = MigrationMode::FileHandles);
            // Making handles needs no capability: the source can still save them.
            std::fs::write(dir.join("f"), b"abc").unwrap();
            if src.lookup(crate::tests::ROOT, ROOT_ID, c"f").is_err() {
                return false;
            }
            let Ok(state) = src.save_state() else {
                return false;
            };
            let mut cfg = Config::new(&dir.0);
            cfg.migration_mode = MigrationMode::FileHandles;
            let Ok(mut dst) = PassthroughFs::new(cfg) else {
                return false;
            };
            if dst.probe_file_handles().is_err()
                || dst.init(InitOptions { offered: u64::MAX }).is_err()
            {
                return false;
            }
            match dst.load_state(src.session_flags(), &state) {
                Err(e) => {
                    let e = e.to_string();
                    e.contains("which this device cannot open")
                        && e.contains("CAP_DAC_READ_SEARCH")
                        && dst.inodes.len() == 1
                }
                Ok(()) => false,
            }
        }));
    }
}
