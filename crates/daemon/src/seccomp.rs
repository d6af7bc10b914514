//! Maps the configuration onto `virtiofsd-seccomp`.

use virtiofsd_seccomp::SeccompAction;

use crate::config::{DaemonConfig, SeccompMode};

/// Installs the filter on the calling thread before any other thread is started, so every
/// thread inherits it. `open_by_handle_at` is allowed only to a device that opens file handles:
/// `--inode-file-handles=prefer|mandatory`, or `--migration-mode=file-handles` (a destination
/// reopens the inodes it receives by handle).
pub fn install(config: &DaemonConfig) -> Result<(), virtiofsd_seccomp::Error> {
    let action = match config.seccomp {
        SeccompMode::Kill => SeccompAction::Kill,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Trap => SeccompAction::Trap,
        SeccompMode::None => SeccompAction::None,
    };
    virtiofsd_seccomp::install(action, config.opens_file_handles())
}
