//! Capability sets of a device process, trimmed with raw `capset` and `PR_CAPBSET_DROP`.

use std::io;

use crate::SandboxError;

/// Capability names (lower case, without `cap_`) by number, as in `linux/capability.h`.
pub const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// Capability number of `name` (`chown`, `CAP_CHOWN` and `cap_chown` all work).
pub fn number(name: &str) -> Result<u32, SandboxError> {
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| i as u32)
        .ok_or_else(|| SandboxError::UnknownCapability(name.to_owned()))
}

/// What a device needs to serve files on behalf of any guest user.
pub fn default_set(file_handles: bool) -> u64 {
    let mut set = 0u64;
    for name in [
        "chown",
        "dac_override",
        "fowner",
        "fsetid",
        "setgid",
        "setuid",
        "mknod",
        "setfcap",
    ] {
        set |= 1 << number(name).unwrap_or(0);
    }
    if file_handles {
        // open_by_handle_at requires it.
        set |= 1 << 2;
    }
    set
}

/// The default set changed by `--modcaps` additions and removals.
pub fn modified_set(
    file_handles: bool,
    add: &[String],
    drop: &[String],
) -> Result<u64, SandboxError> {
    let mut set = default_set(file_handles);
    for name in add {
        set |= 1 << number(name)?;
    }
    for name in drop {
        set &= !(1 << number(name)?);
    }
    Ok(set)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

fn capget() -> io::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data words, as version 3 requires.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

fn capset(effective: u64, permitted: u64) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: 0,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: header and two data words, as version 3 requires.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's effective capability set.
pub fn effective() -> io::Result<u64> {
    let d = capget()?;
    Ok(d[0].effective as u64 | (d[1].effective as u64) << 32)
}

/// The names of the capabilities in `set` (numbers beyond [`NAMES`] as `cap_<number>`).
pub fn names(set: u64) -> Vec<String> {
    (0..64)
        .filter(|cap| set & (1u64 << cap) != 0)
        .map(|cap| match NAMES.get(cap) {
            Some(name) => (*name).to_owned(),
            None => format!("cap_{cap}"),
        })
        .collect()
}

fn permitted() -> io::Result<u64> {
    let d = capget()?;
    Ok(d[0].permitted as u64 | (d[1].permitted as u64) << 32)
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

/// Keeps only `keep` (intersected with what the process has) in the effective and permitted
/// sets, empties the inheritable and ambient sets, and drops everything else from the bounding
/// set. Applies to the calling thread: call it before starting threads.
pub fn restrict(keep: u64) -> Result<(), SandboxError> {
    let have = permitted().map_err(|e| SandboxError::Sys("capget", e))?;
    // SAFETY: plain prctl on this thread.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // Dropping from the bounding set needs CAP_SETPCAP; a process without it holds nothing it
    // could pass on anyway, and no_new_privs (set with seccomp) stops it from gaining more.
    if have & (1 << 8) != 0 {
        for cap in 0..=last_cap().min(63) {
            if keep & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: plain prctl; EINVAL for numbers the kernel does not know is ignored below.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(SandboxError::Sys("PR_CAPBSET_DROP", e));
                }
            }
        }
    }
    let set = keep & have;
    capset(set, set).map_err(|e| SandboxError::Sys("capset", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(number("chown").unwrap(), 0);
        assert_eq!(number("CAP_SYS_ADMIN").unwrap(), 21);
        assert_eq!(number("cap_setfcap").unwrap(), 31);
        assert_eq!(number("checkpoint_restore").unwrap(), 40);
        assert!(number("sys_everything").is_err());
    }

    #[test]
    fn sets_name_their_members() {
        assert_eq!(
            names(1 | 1 << 21 | 1 << 63),
            ["chown", "sys_admin", "cap_63"]
        );
        assert!(names(0).is_empty());
    }

    #[test]
    fn default_and_modified_sets() {
        let base = default_set(false);
        assert_eq!(base, 0b1000_1000_0000_0000_0000_0000_1101_1011);
        assert_eq!(default_set(true), base | 1 << 2);
        let m = modified_set(false, &["sys_admin".into()], &["mknod".into()]).unwrap();
        assert_eq!(m, (base | 1 << 21) & !(1 << 27));
        assert!(modified_set(false, &["bogus".into()], &[]).is_err());
    }

    #[test]
    fn restrict_in_a_child_process() {
        // Run in a forked child so the test process keeps its capabilities.
        // SAFETY: the child only makes system calls and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let keep = default_set(false);
            let ok = restrict(keep).is_ok() && permitted().map(|p| p & !keep == 0).unwrap_or(false);
            // SAFETY: ends the child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
