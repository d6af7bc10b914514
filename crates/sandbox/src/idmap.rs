//! User-namespace ID maps.

use std::io;
use std::process::Command;

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
pub fn map_with_helpers(pid: i32, uid_map: &[IdRange], gid_map: &[IdRange]) -> Result<(), String> {
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
            .map_err(|e| format!("cannot run {tool} (install package uidmap): {e}"))?;
        if !out.status.success() {
            // Its message says which range /etc/subuid or /etc/subgid does not allow.
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(format!("{tool} failed ({}): {}", out.status, why.trim()));
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
        assert!(r.is_err());
    }
}
