//! User-namespace ID maps.

use std::io;
use std::process::{Command, ExitStatus};

/// Why the user namespace's ID maps could not be written.
#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    #[error("cannot map the caller's own IDs")]
    Own(#[source] io::Error),
    #[error("cannot run {tool} (install package uidmap)")]
    Spawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    /// The helper refused; its message says which range /etc/subuid or /etc/subgid does not
    /// allow.
    #[error("{tool} failed ({status}): {message}")]
    Refused {
        tool: &'static str,
        status: ExitStatus,
        message: String,
    },
    #[error("the child could not create its namespaces")]
    NoNamespaces,
}

/// One range of IDs: `count` IDs from `inside` in the namespace map to IDs from `outside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// Maps only the caller's own ID to 0, which an unprivileged process may do for itself. Groups
/// must be denied first, or the kernel refuses an unprivileged gid_map.
pub fn map_self(uid: u32, gid: u32) -> io::Result<()> {
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1\n"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1\n"))?;
    Ok(())
}

/// Runs the setuid helpers (package `uidmap`) for process `pid`, which has already entered its
/// user namespace: only they may map ranges from /etc/subuid and /etc/subgid.
pub fn map_with_helpers(
    pid: i32,
    uid_map: &[IdRange],
    gid_map: &[IdRange],
) -> Result<(), IdMapError> {
    for (tool, ranges) in [("newuidmap", uid_map), ("newgidmap", gid_map)] {
        if ranges.is_empty() {
            continue;
        }
        let mut cmd = Command::new(tool);
        cmd.arg(pid.to_string());
        for r in ranges {
            cmd.args([
                r.inside.to_string(),
                r.outside.to_string(),
                r.count.to_string(),
            ]);
        }
        let out = cmd
            .output()
            .map_err(|source| IdMapError::Spawn { tool, source })?;
        if !out.status.success() {
            return Err(IdMapError::Refused {
                tool,
                status: out.status,
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_helper_is_an_error() {
        // A pid that cannot be ours; the helper refuses or is missing, never succeeds.
        let r = map_with_helpers(
            i32::MAX,
            &[IdRange {
                inside: 0,
                outside: 0,
                count: 1,
            }],
            &[],
        );
        match r {
            Err(IdMapError::Spawn { tool, source }) => {
                assert_eq!(tool, "newuidmap");
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            Err(IdMapError::Refused { tool, message, .. }) => {
                assert_eq!(tool, "newuidmap");
                assert!(!message.is_empty());
            }
            other => panic!("unexpected result {other:?}"),
        }
    }

    #[test]
    fn the_chain_names_the_tool_and_its_cause_once() {
        let e = crate::SandboxError::IdMap(IdMapError::Spawn {
            tool: "newuidmap",
            source: io::Error::from_raw_os_error(libc::ENOENT),
        });
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            chain.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        assert_eq!(
            chain,
            "sandbox: cannot set up ID mappings: cannot run newuidmap (install package uidmap): \
             No such file or directory (os error 2)"
        );
    }
}
