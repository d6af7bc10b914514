//! The policies a device applies where ids and extended-attribute names cross between guest and
//! host. The configuration layer (TypeScript) parses the command line and library options, checks
//! them and compiles them into the tables defined here; this crate only checks the tables again
//! (they arrive over a process boundary) and applies them.
//!
//! - [`idmap`]: `--translate-uid` / `--translate-gid`, two independent directions per id kind.
//! - [`xattrmap`]: `--xattrmap`, first-match rules over name prefixes.
//! - [`acl`]: the ids inside `system.posix_acl_*` values, rewritten with the id maps.

pub mod acl;
pub mod idmap;
pub mod xattrmap;

pub use idmap::{
    Forbidden, IdMapping, IdMappingError, IdPolicy, IdRule, IdRuleKind, IdTable, IdTableError,
};
pub use xattrmap::{GuestName, XattrMap, XattrMapError, XattrRule, XattrRuleKind};
