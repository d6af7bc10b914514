//! Maps the configuration onto `virtiofsd-seccomp`.

use virtiofsd_seccomp::SeccompAction;

use crate::config::{DaemonConfig, SeccompMode};

/// Installs the filter on the calling thread before any other thread is started, so every
/// thread inherits it. `open_by_handle_at` is allowed only when `file_handles`: to a device that
/// opens file handles (`--inode-file-handles=prefer|mandatory`, or `--migration-mode=file-handles`:
/// a destination reopens the inodes it receives by handle) and found at start-up that it can
/// (`PassthroughFs::opens_file_handles`); one whose `prefer` fell back never calls it.
pub fn install(config: &DaemonConfig, file_handles: bool) -> Result<(), virtiofsd_seccomp::Error> {
    let action = match config.seccomp {
        SeccompMode::Kill => SeccompAction::Kill,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Trap => SeccompAction::Trap,
        SeccompMode::None => SeccompAction::None,
    };
    virtiofsd_seccomp::install(action, file_handles)
}
