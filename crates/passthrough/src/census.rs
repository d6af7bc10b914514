//! What a passthrough filesystem holds right now, for statistics. Read on demand (taking the
//! tables' locks briefly), never on the request path.

use std::ffi::CStr;
use std::io;
use std::os::fd::AsFd;

use crate::fs::PassthroughFs;
use crate::oslib;

/// Counts of what the filesystem holds on the guest's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Inodes the guest knows (the root included).
    pub inodes: usize,
    /// Open file and directory handles.
    pub handles: usize,
    /// Host descriptors held for the guest (inode descriptors, handles, lock descriptions),
    /// counted against `fd_budget`.
    pub fds_held: usize,
    /// How many host descriptors the guest may make the daemon hold.
    pub fd_budget: usize,
}

impl PassthroughFs {
    /// The inode, handle and descriptor counts now.
    pub fn census(&self) -> Census {
        Census {
            inodes: self.inodes.len(),
            handles: self.handles.len(),
            fds_held: self.budget.used(),
            fd_budget: self.budget.limit(),
        }
    }

    /// Descriptors open in this process, counted in its `/proc/self/fd` through the handle the
    /// filesystem keeps (the host's `/proc` may be out of reach in a sandbox). The descriptor
    /// opened to list the directory is not counted.
    pub fn open_fds(&self) -> io::Result<usize> {
        let dir = oslib::openat(
            self.proc_self_fd.as_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut count = 0usize;
        loop {
            let n = oslib::getdents64(dir.as_fd(), &mut buf)?;
            if n == 0 {
                return Ok(count.saturating_sub(1));
            }
            count += count_entries(&buf[..n])?;
        }
    }
}

/// Entries other than `.` and `..` in a buffer of `linux_dirent64` records.
fn count_entries(mut buf: &[u8]) -> io::Result<usize> {
    // d_ino (8), d_off (8), d_reclen (2), d_type (1), then the NUL-terminated name.
    const NAME_AT: usize = 19;
    let mut count = 0;
    while !buf.is_empty() {
        let reclen = buf
            .get(16..18)
            .map(|b| usize::from(u16::from_ne_bytes([b[0], b[1]])))
            .filter(|&len| len > NAME_AT && len <= buf.len())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
        let name = CStr::from_bytes_until_nul(&buf[NAME_AT..reclen])
            .map_err(|_| io::Error::from_raw_os_error(libc::EIO))?;
        if !matches!(name.to_bytes(), b"." | b"..") {
            count += 1;
        }
        buf = &buf[reclen..];
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use crate::{Config, PassthroughFs};

    fn fs(root: &std::path::Path) -> PassthroughFs {
        PassthroughFs::new(Config {
            fd_budget: 100,
            ..Config::new(root)
        })
        .unwrap()
    }

    #[test]
    fn open_fds_follows_the_descriptor_table() {
        let dir = std::env::temp_dir();
        let fs = fs(&dir);
        // Other tests open and close descriptors concurrently, hence the margins.
        let extra: Vec<OwnedFd> = (0..200)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        let with = fs.open_fds().unwrap();
        drop(extra);
        let without = fs.open_fds().unwrap();
        assert!(
            with.abs_diff(without + 200) < 50,
            "{with} with 200 more, {without} without"
        );
        let listed = std::fs::read_dir("/proc/self/fd").unwrap().count();
        // read_dir's own descriptor is listed there, as ours is not.
        assert!(listed.abs_diff(without + 1) < 50, "{listed} vs {without}");
    }

    #[test]
    fn census_counts_the_root_and_the_budget() {
        let dir = std::env::temp_dir();
        let census = fs(&dir).census();
        assert_eq!(census.inodes, 1);
        assert_eq!(census.handles, 0);
        assert_eq!(census.fd_budget, 100);
    }
}
