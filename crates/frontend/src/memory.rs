//! Guest memory: one memfd mapped shared here and handed to the backend with SET_MEM_TABLE.
//!
//! Guest physical address 0 is the start of the memfd, so a guest address is simply an offset.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use crate::error::{Error, Result};

/// Default guest memory size.
pub const DEFAULT_MEM_SIZE: u64 = 256 << 20;

/// A memfd-backed, shared mapping that plays the role of guest RAM.
pub struct GuestMemory {
    fd: OwnedFd,
    ptr: *mut u8,
    size: u64,
    next: u64,
}

// SAFETY: the mapping is owned by this value and lives until drop; access to it goes through
// bounds-checked copies, and the backend process sharing it is outside Rust's model anyway.
unsafe impl Send for GuestMemory {}

impl GuestMemory {
    /// Creates `size` bytes of zeroed guest memory.
    pub fn new(size: u64) -> Result<Self> {
        if size == 0 || size % 4096 != 0 {
            return Err(Error::Memory(format!(
                "size {size} is not a positive multiple of 4096"
            )));
        }
        let name = c"virtiofsd-frontend-guest";
        // SAFETY: the name is a valid NUL-terminated string; the result is checked.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(Error::Io("memfd_create", std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
            return Err(Error::Io(
                "ftruncate guest memory",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: a new shared mapping of the whole memfd; the result is checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Io(
                "mmap guest memory",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(GuestMemory {
            fd,
            ptr: ptr.cast(),
            size,
            next: 0,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The address of the mapping in this process (what vhost-user calls the user address).
    pub fn host_base(&self) -> u64 {
        self.ptr as u64
    }

    /// Reserves `len` bytes aligned to `align` (a power of two) for the life of this memory.
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<u64> {
        if !align.is_power_of_two() {
            return Err(Error::Memory(format!(
                "alignment {align} is not a power of two"
            )));
        }
        let start = self.next.checked_add(align - 1).map(|v| v & !(align - 1));
        match start.and_then(|s| s.checked_add(len).map(|e| (s, e))) {
            Some((s, e)) if e <= self.size => {
                self.next = e;
                Ok(s)
            }
            _ => Err(Error::Memory(format!(
                "cannot allocate {len} bytes ({} of {} used)",
                self.next, self.size
            ))),
        }
    }

    /// Bytes not yet allocated.
    pub fn remaining(&self) -> u64 {
        self.size - self.next
    }

    fn check(&self, gpa: u64, len: usize) -> Result<usize> {
        match gpa.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(gpa as usize),
            _ => Err(Error::Memory(format!(
                "range {gpa:#x}+{len} is outside guest memory"
            ))),
        }
    }

    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<()> {
        let off = self.check(gpa, data.len())?;
        // SAFETY: the range was checked to be inside the live mapping; `data` cannot overlap it
        // because the mapping is never handed out as a Rust slice.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) };
        Ok(())
    }

    pub fn read(&self, gpa: u64, out: &mut [u8]) -> Result<()> {
        let off = self.check(gpa, out.len())?;
        // SAFETY: as in `write`, the range is inside the mapping and disjoint from `out`.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    pub fn read_vec(&self, gpa: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read(gpa, &mut v)?;
        Ok(v)
    }

    pub fn fill(&self, gpa: u64, len: usize, byte: u8) -> Result<()> {
        let off = self.check(gpa, len)?;
        // SAFETY: the range is inside the mapping.
        unsafe { std::ptr::write_bytes(self.ptr.add(off), byte, len) };
        Ok(())
    }

    pub fn write_u16(&self, gpa: u64, v: u16) -> Result<()> {
        self.write(gpa, &v.to_le_bytes())
    }

    pub fn write_u32(&self, gpa: u64, v: u32) -> Result<()> {
        self.write(gpa, &v.to_le_bytes())
    }

    pub fn read_u32(&self, gpa: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A ring index shared with the backend, accessed atomically.
    pub fn atomic_u16(&self, gpa: u64) -> Result<&AtomicU16> {
        if gpa % 2 != 0 {
            return Err(Error::Memory(format!("ring index at odd address {gpa:#x}")));
        }
        let off = self.check(gpa, 2)?;
        // SAFETY: the address is inside the mapping (which outlives the borrow) and 2-aligned,
        // and AtomicU16 has the layout of u16.
        Ok(unsafe { &*(self.ptr.add(off) as *const AtomicU16) })
    }

    pub fn load_u16(&self, gpa: u64) -> Result<u16> {
        Ok(self.atomic_u16(gpa)?.load(Ordering::Acquire))
    }

    pub fn store_u16(&self, gpa: u64, v: u16) -> Result<()> {
        self.atomic_u16(gpa)?.store(v, Ordering::Release);
        Ok(())
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`; nothing borrows it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.size as usize) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_aligns_and_runs_out() {
        let mut m = GuestMemory::new(8192).unwrap();
        assert_eq!(m.alloc(3, 1).unwrap(), 0);
        assert_eq!(m.alloc(16, 16).unwrap(), 16);
        assert!(m.alloc(8192, 1).is_err());
        assert_eq!(m.remaining(), 8192 - 32);
    }

    #[test]
    fn read_write_are_bounds_checked() {
        let m = GuestMemory::new(4096).unwrap();
        m.write(4090, b"abcdef").unwrap();
        assert_eq!(m.read_vec(4090, 6).unwrap(), b"abcdef");
        assert!(m.write(4091, b"abcdef").is_err());
        assert!(m.read_vec(u64::MAX, 2).is_err());
        assert!(GuestMemory::new(100).is_err());
    }
}
