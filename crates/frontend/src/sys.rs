//! Thin wrappers of the host system calls the native workloads and the tree builder make, all
//! relative to directory descriptors as a file server makes them.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub fn open_path(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path; the result is checked.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0) })?;
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn openat(dir: RawFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; the result is checked.
    let fd = check(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn fstatat(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `st` a valid out-pointer.
    check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

pub fn unlinkat(dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    check(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) }).map(drop)
}

pub fn mknodat(dir: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; a regular file needs no device number.
    check(unsafe { libc::mknodat(dir, name.as_ptr(), mode, 0) }).map(drop)
}

pub fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe {
        libc::pread(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

pub fn pwrite(fd: RawFd, buf: &[u8], offset: u64) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), offset as libc::off_t) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

pub fn write_all(fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: `data` is valid for reads of its length.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// One entry of a getdents64 buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dirent {
    pub name: CString,
    pub typ: u8,
}

/// Parses a buffer filled by getdents64 (`struct linux_dirent64` records).
pub fn parse_dirents64(buf: &[u8]) -> io::Result<Vec<Dirent>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed getdents64 record");
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        // d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name (NUL-terminated).
        let rec = buf.get(at..at + 19).ok_or_else(bad)?;
        let reclen = usize::from(u16::from_ne_bytes([rec[16], rec[17]]));
        let typ = rec[18];
        let whole = buf
            .get(at..at + reclen)
            .filter(|_| reclen > 19)
            .ok_or_else(bad)?;
        let name = CStr::from_bytes_until_nul(&whole[19..]).map_err(|_| bad())?;
        out.push(Dirent {
            name: name.to_owned(),
            typ,
        });
        at += reclen;
    }
    Ok(out)
}

/// Reads a whole directory from its current position with getdents64 into `buf`-sized batches.
pub fn read_dir(fd: RawFd, buf: &mut [u8], mut each: impl FnMut(Dirent)) -> io::Result<()> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(());
        }
        for d in parse_dirents64(&buf[..n as usize])? {
            each(d);
        }
    }
}

pub fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &[u8], typ: u8) -> Vec<u8> {
        let reclen = (19 + name.len() + 1).div_ceil(8) * 8;
        let mut r = vec![0u8; reclen];
        r[..8].copy_from_slice(&7u64.to_ne_bytes());
        r[16..18].copy_from_slice(&(reclen as u16).to_ne_bytes());
        r[18] = typ;
        r[19..19 + name.len()].copy_from_slice(name);
        r
    }

    #[test]
    fn dirents64_parse_and_reject_garbage() {
        let mut buf = record(b".", 4);
        buf.extend(record(b"file-with-a-long-name", 8));
        let v = parse_dirents64(&buf).unwrap();
        assert_eq!(v.len(), 2);
        assert!(is_dot(&v[0].name));
        assert_eq!(v[1].name.to_bytes(), b"file-with-a-long-name");
        assert_eq!(v[1].typ, 8);
        assert!(parse_dirents64(&buf[..buf.len() - 1]).is_err());
        let mut zero = record(b"x", 8);
        zero[16..18].copy_from_slice(&0u16.to_ne_bytes());
        assert!(parse_dirents64(&zero).is_err());
        assert!(parse_dirents64(&[]).unwrap().is_empty());
    }

    #[test]
    fn read_dir_lists_a_real_directory() {
        let dir = std::env::temp_dir().join(format!("virtiofsd-load-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..300 {
            std::fs::write(dir.join(format!("f{i}")), b"").unwrap();
        }
        let fd = open_path(&dir, libc::O_RDONLY | libc::O_DIRECTORY).unwrap();
        let mut names = Vec::new();
        // A small buffer: several getdents64 calls.
        read_dir(fd.as_raw_fd(), &mut [0u8; 512], |d| {
            if !is_dot(&d.name) {
                names.push(d.name)
            }
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names.len(), 300);
    }
}
