//! Maps the configuration onto `virtiofsd-seccomp`.

use virtiofsd_seccomp::SeccompAction;

use crate::config::{DaemonConfig, InodeFileHandles, SeccompMode};

/// Installs the filter on the calling thread before any other thread is started, so every
/// thread inherits it. `open_by_handle_at` is allowed only with
/// `--inode-file-handles=prefer|mandatory`.
pub fn install(config: &DaemonConfig) -> Result<(), virtiofsd_seccomp::Error> {
    let action = match config.seccomp {
        SeccompMode::Kill => SeccompAction::Kill,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Trap => SeccompAction::Trap,
        SeccompMode::None => SeccompAction::None,
    };
    let file_handles = config.inode_file_handles != InodeFileHandles::Never;
    virtiofsd_seccomp::install(action, file_handles)
}
