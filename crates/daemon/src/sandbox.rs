//! Maps the configuration onto `virtiofsd-sandbox`.

use std::os::fd::RawFd;

use virtiofsd_sandbox::{caps, IdRange, Mode, Options, SandboxError, Sandboxed};

use crate::config::{DaemonConfig, SandboxMode};

fn ranges(list: &[crate::config::IdRange]) -> Vec<IdRange> {
    list.iter()
        .map(|r| IdRange {
            inside: r.inside,
            outside: r.outside,
            count: r.count,
        })
        .collect()
}

/// Enters the configured sandbox; see [`virtiofsd_sandbox::enter`] (this may fork).
/// `keep_fds` are the descriptors the device opened itself (control channel, listening socket);
/// every other one is closed.
pub fn enter(
    config: &DaemonConfig,
    keep_fds: &[RawFd],
    on_exit: &dyn Fn(),
) -> Result<Sandboxed, SandboxError> {
    let (uid_map, gid_map) = (ranges(&config.uid_map), ranges(&config.gid_map));
    let opts = Options {
        mode: match config.sandbox {
            SandboxMode::Namespace => Mode::Namespace,
            SandboxMode::Chroot => Mode::Chroot,
            SandboxMode::None => Mode::None,
        },
        shared_dir: &config.shared_dir,
        uid_map: &uid_map,
        gid_map: &gid_map,
        keep_fds,
    };
    virtiofsd_sandbox::enter(&opts, on_exit)
}

/// Keeps only the capabilities serving needs (adjusted by `--modcaps`).
pub fn restrict_capabilities(config: &DaemonConfig) -> Result<(), SandboxError> {
    let file_handles = config.opens_file_handles();
    let keep = caps::modified_set(file_handles, &config.modcaps.add, &config.modcaps.drop)?;
    caps::restrict(keep)
}
