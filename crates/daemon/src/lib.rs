//! One virtio-fs device process.
//!
//! The TypeScript layer validates options and sends a [`config::DaemonConfig`] as JSON; the native
//! binding forks a process that calls [`run`]. From then on the process is pure Rust: it binds (or
//! adopts) the vhost-user socket, serves exactly one frontend connection, and reports on a control
//! socket ([`control`]) as newline-delimited JSON. It never returns into JavaScript.

pub mod config;
pub mod control;
pub mod logger;
pub mod output;
pub mod socket;
pub mod stats;

mod run;
mod sandbox;
mod seccomp;

pub use run::run;
