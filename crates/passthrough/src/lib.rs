//! A FUSE filesystem that serves one host directory to a guest, confined to it.
//!
//! [`PassthroughFs`] implements [`virtiofsd_fuse::FileSystem`]; raw syscalls live in [`oslib`].

mod acl;
mod budget;
mod census;
mod config;
mod consts;
mod credentials;
mod fs;
mod gate;
mod handle;
mod handle_probe;
mod inode;
mod label;
mod locks;
mod lookup;
pub mod migration;
mod negotiate;
mod newops;
pub mod oslib;
mod xattr;
mod xattr_names;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_acl;
#[cfg(test)]
mod tests_fh;
#[cfg(test)]
mod tests_gate;
#[cfg(test)]
mod tests_label;
#[cfg(test)]
mod tests_locks;
#[cfg(test)]
mod tests_posix;
#[cfg(test)]
mod tests_xattrmap;

pub use census::Census;
pub use config::{
    CachePolicy, Config, FileHandleMode, MigrationMode, MigrationOnError, UnknownCachePolicy,
    UnknownFileHandleMode, UnknownMigrationMode, UnknownMigrationOnError,
};
pub use fs::PassthroughFs;
pub use handle_probe::{CannotOpen, HandleProbeError};
