//! The frontend's part of a live migration: a dirty-page log the backend writes
//! (SET_LOG_BASE with LOG_SHMFD) and the device state transfer (SET_DEVICE_STATE_FD and
//! CHECK_DEVICE_STATE with DEVICE_STATE), as QEMU drives them.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use vhost::vhost_user::message::{VhostTransferStateDirection, VhostTransferStatePhase};
use vhost::vhost_user::VhostUserFrontend;
use vhost::{VhostBackend, VhostUserDirtyLogRegion};

use crate::error::{Error, Result};
use crate::session::Session;

/// Bytes of guest memory one log bit stands for (`VHOST_LOG_PAGE`).
pub const LOG_PAGE: u64 = 4096;

/// A dirty-page log shared with the backend: bit `n` set means guest page `n` was written.
pub struct DirtyLog {
    file: File,
    len: u64,
}

impl DirtyLog {
    /// The guest page numbers marked so far, in order.
    pub fn dirty_pages(&self) -> Result<Vec<u64>> {
        let mut bits = vec![0u8; self.len as usize];
        self.file
            .read_exact_at(&mut bits, 0)
            .map_err(|e| Error::Io("read the dirty log", e))?;
        Ok((0..self.len * 8)
            .filter(|&p| bits[(p / 8) as usize] & (1 << (p % 8)) != 0)
            .collect())
    }

    /// Clears every mark, as a migration round that copied the pages does.
    pub fn clear(&self) -> Result<()> {
        self.file
            .write_all_at(&vec![0u8; self.len as usize], 0)
            .map_err(|e| Error::Io("clear the dirty log", e))
    }
}

fn memfd(name: &std::ffi::CStr, len: u64) -> Result<File> {
    // SAFETY: a valid NUL-terminated name and flags; the result is checked.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(Error::Io("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(raw) };
    file.set_len(len)
        .map_err(|e| Error::Io("size the dirty log", e))?;
    Ok(file)
}

/// (read end, write end) of a pipe.
fn pipe() -> Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::Io("pipe2", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

fn vhost<T>(what: &'static str, r: vhost::Result<T>) -> Result<T> {
    r.map_err(|e| Error::Vhost(what, e))
}

impl Session {
    /// Installs a dirty-page log covering all guest memory (needs LOG_SHMFD acknowledged, see
    /// [`crate::Options::protocol_features`]).
    pub fn start_dirty_log(&mut self) -> Result<DirtyLog> {
        let pages = self.mem().size().div_ceil(LOG_PAGE);
        let len = pages.div_ceil(8).next_multiple_of(LOG_PAGE);
        let file = memfd(c"virtiofsd-frontend-log", len)?;
        let region = VhostUserDirtyLogRegion {
            mmap_size: len,
            mmap_offset: 0,
            mmap_handle: file.as_raw_fd(),
        };
        vhost(
            "SET_LOG_BASE",
            self.frontend().set_log_base(0, Some(region)),
        )?;
        Ok(DirtyLog { file, len })
    }

    /// Stops every queue (GET_VRING_BASE), as a frontend does before it saves the device
    /// state; returns each queue's next available index.
    pub fn stop_queues(&mut self) -> Result<Vec<u32>> {
        (0..=self.request_queues())
            .map(|q| vhost("GET_VRING_BASE", self.frontend().get_vring_base(q)))
            .collect()
    }

    /// Source side: asks the backend for its state (SET_DEVICE_STATE_FD, direction SAVE),
    /// reads it to end of file and checks the outcome (CHECK_DEVICE_STATE).
    pub fn save_device_state(&mut self) -> Result<Vec<u8>> {
        let (mut from_backend, to_frontend) = pipe()?;
        let other = vhost(
            "SET_DEVICE_STATE_FD",
            self.frontend().set_device_state_fd(
                VhostTransferStateDirection::SAVE,
                VhostTransferStatePhase::STOPPED,
                OwnedFd::from(to_frontend),
            ),
        )?;
        if let Some(file) = other {
            from_backend = file;
        }
        let mut state = Vec::new();
        from_backend
            .read_to_end(&mut state)
            .map_err(|e| Error::Io("read the device state", e))?;
        vhost("CHECK_DEVICE_STATE", self.frontend().check_device_state())?;
        Ok(state)
    }

    /// Destination side: sends `state` (SET_DEVICE_STATE_FD, direction LOAD), closes the pipe
    /// and asks whether the backend accepted it (CHECK_DEVICE_STATE). A backend that stops
    /// reading (it refused the stream) ends the write early; the check then says why.
    pub fn load_device_state(&mut self, state: &[u8]) -> Result<()> {
        let (from_frontend, mut to_backend) = pipe()?;
        let other = vhost(
            "SET_DEVICE_STATE_FD",
            self.frontend().set_device_state_fd(
                VhostTransferStateDirection::LOAD,
                VhostTransferStatePhase::STOPPED,
                OwnedFd::from(from_frontend),
            ),
        )?;
        if let Some(file) = other {
            to_backend = file;
        }
        // EPIPE when the backend gave up reading; what matters is the check.
        let _ = to_backend.write_all(state);
        drop(to_backend);
        vhost("CHECK_DEVICE_STATE", self.frontend().check_device_state())
    }
}
