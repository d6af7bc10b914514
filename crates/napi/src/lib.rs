//! The Node.js binding. Node 20 cannot replace its own process image, and a device started from
//! the command line must be the process its caller started (libvirt and kata signal that pid),
//! so the command line hands its compiled configuration to [`exec_device`], which never returns
//! on success. Devices started by the library are plain child processes of the device executable
//! and need nothing from here. [`explain_policy`] answers the library's `explainPolicy` with the
//! device's own policy code.

#![deny(clippy::all)]

mod exec;
mod explain;

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Replaces this process with the device executable. `argv[0]` is the name `ps` shows; the
/// configuration is passed on a sealed memfd announced as `--config-fd=N` right after it.
/// `keepFds` are inherited descriptors the device needs (a listening socket); every other
/// descriptor of this process is close-on-exec already. Returns only with an error.
#[napi]
pub fn exec_device(
    executable: String,
    argv: Vec<String>,
    env: Vec<String>,
    config_json: String,
    keep_fds: Vec<i32>,
) -> Result<()> {
    let err = exec::exec_device(&executable, &argv, &env, &config_json, &keep_fds);
    Err(Error::new(Status::GenericFailure, err.to_string()))
}

/// What the device's id translation and extended-attribute rules do with one id or name.
/// `tablesJson` holds the compiled `translateUid`, `translateGid` and `xattrMap` of a device
/// configuration; `queryJson` is `{"kind":"uid"|"gid","from":"guest"|"host","id":N}` or
/// `{"kind":"xattr","from":"guest"|"host","name":"..."}`. The answer is JSON: the result on the
/// other side, the index of the compiled rule that decided, and the way back.
#[napi]
pub fn explain_policy(tables_json: String, query_json: String) -> Result<String> {
    explain::explain_json(&tables_json, &query_json)
        .map_err(|e| Error::new(Status::InvalidArg, e.to_string()))
}
