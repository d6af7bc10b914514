//! Device state transfer for live migration (VHOST_USER_PROTOCOL_F_DEVICE_STATE).
//!
//! The frontend hands the backend one end of a pipe with SET_DEVICE_STATE_FD. On the source
//! (`SAVE`), once the queues stopped, a thread asks the [`RequestHandler`] for its state, writes
//! it into the pipe and closes it; on the destination (`LOAD`) a thread reads the pipe to end of
//! file into memory. Neither blocks the vhost-user request loop, whatever the frontend does with
//! its end. CHECK_DEVICE_STATE then waits (a bounded time) for that thread and reports its
//! outcome; on the destination it is also where the bytes are handed to the handler.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use vhost::vhost_user::message::{VhostTransferStateDirection, VhostTransferStatePhase};

use crate::RequestHandler;

/// The largest device state a destination accepts. The stream comes from the frontend, which
/// may be hostile: a longer one is refused instead of buffered.
pub const MAX_STATE_BYTES: usize = 64 << 20;

/// How long CHECK_DEVICE_STATE waits for the transfer thread. The frontend checks only after it
/// read the whole state (source) or closed its end (destination), so the thread is finishing.
const CHECK_WAIT: Duration = Duration::from_secs(10);

/// Why a state transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Only the `STOPPED` phase exists; anything else is a frontend bug.
    #[error("state transfer in phase {0:?} is not supported")]
    Phase(VhostTransferStatePhase),
    /// The device was built without migration support.
    #[error("this device does not migrate")]
    Unsupported,
    /// CHECK_DEVICE_STATE without a SET_DEVICE_STATE_FD before it.
    #[error("no state transfer was started")]
    NotStarted,
    /// The thread of an earlier transfer still waits for the frontend's end of its pipe.
    #[error("an earlier state transfer is still running")]
    Busy,
    /// The transfer thread could not be started.
    #[error("cannot start the state transfer thread")]
    Spawn(#[source] io::Error),
    /// The thread did not finish in time (the frontend did not read or close its end).
    #[error("the state transfer did not finish within {0:?}")]
    Timeout(Duration),
    /// The thread ended without a result.
    #[error("the state transfer thread ended abnormally")]
    Panicked,
    /// The handler could not produce its state.
    #[error("cannot save the device state")]
    Save(#[source] io::Error),
    /// Writing the state into the frontend's descriptor failed.
    #[error("cannot send the device state")]
    Write(#[source] io::Error),
    /// Reading the state from the frontend's descriptor failed.
    #[error("cannot receive the device state")]
    Read(#[source] io::Error),
    /// The frontend sent more than [`MAX_STATE_BYTES`].
    #[error("the device state is larger than {MAX_STATE_BYTES} bytes")]
    TooLarge,
    /// The handler refused the state it was given.
    #[error("cannot load the device state")]
    Load(#[source] io::Error),
}

impl From<StateError> for io::Error {
    fn from(e: StateError) -> Self {
        let kind = match &e {
            StateError::Unsupported | StateError::Phase(_) => io::ErrorKind::Unsupported,
            StateError::TooLarge | StateError::Load(_) => io::ErrorKind::InvalidData,
            StateError::Timeout(_) => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// What a transfer thread reports: nothing for a save, the received bytes for a load.
type Outcome = Result<Option<Vec<u8>>, StateError>;

/// The one state transfer a device may have going.
pub(crate) struct StateTransfer {
    enabled: bool,
    running: Mutex<Option<Receiver<Outcome>>>,
    /// Set while a transfer thread lives, so a frontend cannot pile up threads (each holding a
    /// state) by starting transfers it never reads or closes.
    live: Arc<AtomicBool>,
    wait: Duration,
}

/// Marks the transfer thread gone however it ends.
struct Live(Arc<AtomicBool>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl StateTransfer {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            running: Mutex::new(None),
            live: Arc::new(AtomicBool::new(false)),
            wait: CHECK_WAIT,
        }
    }

    /// Whether DEVICE_STATE is offered.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// SET_DEVICE_STATE_FD: starts saving into, or loading from, `file`. Refused while the
    /// thread of an earlier transfer lives (it ends once the frontend reads to the end or closes
    /// its end of that pipe); an outcome nobody checked is forgotten.
    pub(crate) fn start<H: RequestHandler + 'static>(
        &self,
        handler: &Arc<H>,
        direction: VhostTransferStateDirection,
        phase: VhostTransferStatePhase,
        file: File,
    ) -> Result<(), StateError> {
        if !self.enabled {
            return Err(StateError::Unsupported);
        }
        if phase != VhostTransferStatePhase::STOPPED {
            return Err(StateError::Phase(phase));
        }
        if self.live.swap(true, Ordering::AcqRel) {
            return Err(StateError::Busy);
        }
        let live = Live(Arc::clone(&self.live));
        let (tx, rx) = mpsc::sync_channel(1);
        let handler = Arc::clone(handler);
        let spawned = match direction {
            VhostTransferStateDirection::SAVE => thread::Builder::new()
                .name("fs-state-save".into())
                .spawn(move || {
                    let outcome = save(&*handler, file).map(|()| None);
                    // Gone before the outcome is: whoever checked may start the next one.
                    drop(live);
                    let _ = tx.send(outcome);
                }),
            VhostTransferStateDirection::LOAD => thread::Builder::new()
                .name("fs-state-load".into())
                .spawn(move || {
                    let outcome = read_bounded(file, MAX_STATE_BYTES).map(Some);
                    drop(live);
                    let _ = tx.send(outcome);
                }),
        };
        // A thread that did not start dropped its `Live` with the closure.
        spawned.map_err(StateError::Spawn)?;
        *self.lock() = Some(rx);
        Ok(())
    }

    /// CHECK_DEVICE_STATE: the outcome of the last transfer; for a load, the handler is given
    /// the received state here.
    pub(crate) fn check<H: RequestHandler>(&self, handler: &H) -> Result<(), StateError> {
        let rx = self.lock().take().ok_or(StateError::NotStarted)?;
        let outcome = match rx.recv_timeout(self.wait) {
            Ok(outcome) => outcome,
            Err(RecvTimeoutError::Timeout) => return Err(StateError::Timeout(self.wait)),
            Err(RecvTimeoutError::Disconnected) => return Err(StateError::Panicked),
        };
        match outcome? {
            None => Ok(()),
            Some(state) => handler.load_state(&state).map_err(StateError::Load),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Receiver<Outcome>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }
}

/// Writes the handler's state into `file` and closes it (by dropping it), so the frontend sees
/// end of file. On failure nothing more is written: the frontend's CHECK reports the error.
fn save<H: RequestHandler>(handler: &H, file: File) -> Result<(), StateError> {
    let state = handler.save_state().map_err(StateError::Save)?;
    write_all(file, &state).map_err(StateError::Write)
}

/// `write_all` that also waits on a non-blocking descriptor (the frontend chose its flags).
fn write_all(mut file: File, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(&file, libc::POLLOUT)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads `file` to end of file, refusing more than `limit` bytes.
fn read_bounded(mut file: File, limit: usize) -> Result<Vec<u8>, StateError> {
    let mut state = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(state),
            Ok(n) => {
                if state.len() + n > limit {
                    return Err(StateError::TooLarge);
                }
                state.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(&file, libc::POLLIN).map_err(StateError::Read)?
            }
            Err(e) => return Err(StateError::Read(e)),
        }
    }
}

/// Waits until `file` is ready for `events` (or hung up, which the next read or write reports).
fn wait_for(file: &File, events: libc::c_short) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid pollfd for the duration of the call and `file` keeps its
        // descriptor open.
        let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests;
