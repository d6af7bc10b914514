//! The Node.js binding. It exposes three primitives that the hand-written TypeScript layer wraps
//! into its public API; users never see these raw types.
//!
//! Each device runs in its own OS process forked from here, so device threads, sandboxing and
//! crashes never touch the embedding Node process.

#![deny(clippy::all)]

mod process;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use virtiofsd_daemon::config::DaemonConfig;

#[napi(object)]
pub struct SpawnedDevice {
    pub pid: i32,
    /// The parent's end of the control socketpair; wrap it in a `net.Socket`.
    pub control_fd: i32,
}

#[napi(object)]
pub struct DeviceStatus {
    pub exited: bool,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

fn to_napi(err: impl std::fmt::Display) -> Error {
    Error::new(Status::GenericFailure, err.to_string())
}

/// Validates `config_json` and forks a device process that serves it.
#[napi]
pub fn spawn_device(config_json: String) -> Result<SpawnedDevice> {
    let config = DaemonConfig::from_json(&config_json).map_err(to_napi)?;
    let spawned =
        process::spawn(config).map_err(|e| to_napi(format!("cannot start device process: {e}")))?;
    Ok(SpawnedDevice {
        pid: spawned.pid,
        control_fd: spawned.control_fd,
    })
}

/// Non-blocking: reports whether the device process has exited, and how.
#[napi]
pub fn reap_device(pid: i32) -> Result<DeviceStatus> {
    let status = process::reap(pid).map_err(to_napi)?;
    Ok(match status {
        process::Status::Running => DeviceStatus {
            exited: false,
            code: None,
            signal: None,
        },
        process::Status::Exited(code) => DeviceStatus {
            exited: true,
            code: Some(code),
            signal: None,
        },
        process::Status::Signaled(sig) => DeviceStatus {
            exited: true,
            code: None,
            signal: Some(sig),
        },
    })
}

/// Sends a signal to a device process through its pidfd.
#[napi]
pub fn signal_device(pid: i32, signal: i32) -> Result<()> {
    process::signal(pid, signal).map_err(to_napi)
}
