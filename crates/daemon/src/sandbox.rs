//! Maps the configuration onto `virtiofsd-sandbox`.

use virtiofsd_sandbox::{caps, IdRange, Mode, Options, SandboxError, Sandboxed};

use crate::config::{DaemonConfig, InodeFileHandles, SandboxMode};

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
pub fn enter(config: &DaemonConfig, on_exit: &dyn Fn()) -> Result<Sandboxed, SandboxError> {
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
    };
    virtiofsd_sandbox::enter(&opts, on_exit)
}

/// Keeps only the capabilities serving needs (adjusted by `--modcaps`).
pub fn restrict_capabilities(config: &DaemonConfig) -> Result<(), SandboxError> {
    let file_handles = config.inode_file_handles != InodeFileHandles::Never;
    let keep = caps::modified_set(file_handles, &config.modcaps.add, &config.modcaps.drop)?;
    caps::restrict(keep)
}
