//! Maps the configuration onto `virtiofsd-seccomp`.

use virtiofsd_seccomp::SeccompAction;

use crate::config::SeccompMode;

/// Installs the filter on the calling thread before any other thread is started, so every
/// thread inherits it.
pub fn install(mode: SeccompMode) -> Result<(), String> {
    let action = match mode {
        SeccompMode::Kill => SeccompAction::Kill,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Trap => SeccompAction::Trap,
        SeccompMode::None => SeccompAction::None,
    };
    virtiofsd_seccomp::install(action).map_err(|e| e.to_string())
}
