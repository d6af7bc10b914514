use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use vhost_user_backend::VhostUserBackend;
use virtiofsd_fuse::io::{ReplyWriter, RequestReader};
use virtiofsd_fuse::{FileSystem, Server};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use virtiofsd_fuse::abi::{Opcode, FUSE_ASYNC_READ, FUSE_INIT_EXT, FUSE_MAX_PAGES};
use virtiofsd_fuse::testing::{call, init_request, parse_reply, request};

use super::*;
use crate::{DeviceConfig, VhostUserFsBackend};

/// (read end, write end)
fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

/// A handler whose whole state is a byte string.
#[derive(Default)]
struct Blob {
    state: Mutex<Vec<u8>>,
    loaded: AtomicBool,
}

impl RequestHandler for Blob {
    fn handle<R: RequestReader, W: ReplyWriter>(&self, _r: &mut R, _w: W) -> io::Result<usize> {
        Ok(0)
    }

    fn save_state(&self) -> io::Result<Vec<u8>> {
        Ok(self.state.lock().unwrap().clone())
    }

    fn load_state(&self, state: &[u8]) -> io::Result<()> {
        if state.starts_with(b"bad") {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        *self.state.lock().unwrap() = state.to_vec();
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }
}

fn blob(state: &[u8]) -> Arc<Blob> {
    Arc::new(Blob {
        state: Mutex::new(state.to_vec()),
        loaded: AtomicBool::new(false),
    })
}

use VhostTransferStateDirection::{LOAD, SAVE};
use VhostTransferStatePhase::STOPPED;

#[test]
fn large_state_round_trip_does_not_block_the_caller() {
    // More than a pipe holds: `start` must return before anyone reads.
    let state: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let source = blob(&state);
    let save = StateTransfer::new(true);
    let (mut from_source, to_frontend) = pipe();
    save.start(&source, SAVE, STOPPED, to_frontend).unwrap();

    let dest = blob(b"");
    let load = StateTransfer::new(true);
    let (from_frontend, mut to_dest) = pipe();
    load.start(&dest, LOAD, STOPPED, from_frontend).unwrap();

    // The frontend's part: copy to end of file, then check both sides.
    let mut carried = Vec::new();
    from_source.read_to_end(&mut carried).unwrap();
    save.check(&*source).unwrap();
    to_dest.write_all(&carried).unwrap();
    drop(to_dest);
    load.check(&*dest).unwrap();
    assert!(dest.loaded.load(Ordering::Acquire));
    assert_eq!(*dest.state.lock().unwrap(), state);
}

#[test]
fn refused_state_fails_the_check() {
    let dest = blob(b"");
    let load = StateTransfer::new(true);
    let (from_frontend, mut to_dest) = pipe();
    load.start(&dest, LOAD, STOPPED, from_frontend).unwrap();
    to_dest.write_all(b"bad state").unwrap();
    drop(to_dest);
    let err = load.check(&*dest).unwrap_err();
    assert!(matches!(err, StateError::Load(_)), "{err}");
    assert!(!dest.loaded.load(Ordering::Acquire));
    // The outcome is reported once.
    assert!(matches!(load.check(&*dest), Err(StateError::NotStarted)));
}

#[test]
fn oversized_state_is_refused() {
    let dest = blob(b"");
    let load = StateTransfer::new(true);
    let (from_frontend, mut to_dest) = pipe();
    load.start(&dest, LOAD, STOPPED, from_frontend).unwrap();
    let writer = thread::spawn(move || {
        let chunk = vec![7u8; 1 << 20];
        // Stops with EPIPE once the device gave up reading.
        for _ in 0..=(MAX_STATE_BYTES >> 20) {
            if to_dest.write_all(&chunk).is_err() {
                return false;
            }
        }
        true
    });
    let err = load.check(&*dest).unwrap_err();
    assert!(matches!(err, StateError::TooLarge), "{err}");
    assert!(!writer.join().unwrap(), "the device read past its limit");
    assert!(!dest.loaded.load(Ordering::Acquire));
}

#[test]
fn a_frontend_that_never_reads_cannot_wedge_the_check_or_pile_up_threads() {
    let source = blob(&vec![1u8; 1 << 20]);
    let save = StateTransfer::new(true).with_wait(Duration::from_millis(100));
    let (kept, to_frontend) = pipe();
    save.start(&source, SAVE, STOPPED, to_frontend).unwrap();
    assert!(matches!(save.check(&*source), Err(StateError::Timeout(_))));
    // The thread still waits on the full pipe: another transfer is refused...
    let (_r, w) = pipe();
    assert!(matches!(
        save.start(&source, SAVE, STOPPED, w),
        Err(StateError::Busy)
    ));
    // ...until the frontend closes its end, which ends the thread.
    drop(kept);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (mut r, w) = pipe();
        match save.start(&source, SAVE, STOPPED, w) {
            Ok(()) => {
                let mut carried = Vec::new();
                r.read_to_end(&mut carried).unwrap();
                assert_eq!(carried.len(), 1 << 20);
                save.check(&*source).unwrap();
                break;
            }
            Err(StateError::Busy) if std::time::Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn transfers_need_support_a_start_and_the_stopped_phase() {
    let h = blob(b"");
    let (r, _w) = pipe();
    let off = StateTransfer::new(false);
    assert!(!off.enabled());
    assert!(matches!(
        off.start(&h, SAVE, STOPPED, r),
        Err(StateError::Unsupported)
    ));
    let on = StateTransfer::new(true);
    assert!(matches!(on.check(&*h), Err(StateError::NotStarted)));
}

/// A filesystem with one number for a state.
#[derive(Default)]
struct Counter {
    value: Mutex<Option<(u64, Vec<u8>)>>,
}

impl FileSystem for Counter {
    fn save_state(&self) -> io::Result<Vec<u8>> {
        Ok(b"42".to_vec())
    }

    fn load_state(&self, negotiated: u64, state: &[u8]) -> io::Result<()> {
        *self.value.lock().unwrap() = Some((negotiated, state.to_vec()));
        Ok(())
    }
}

fn fs_backend(migration: bool) -> (Arc<Server<Counter>>, VhostUserFsBackend<Server<Counter>>) {
    let server = Arc::new(Server::new(Counter::default()));
    let config = DeviceConfig {
        migration,
        ..DeviceConfig::default()
    };
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = VhostUserFsBackend::new(Arc::clone(&server), &config, mem).unwrap();
    (server, backend)
}

/// Runs a source's SAVE into a destination's LOAD the way a frontend does; returns the
/// destination's check.
fn migrate(
    source: &VhostUserFsBackend<Server<Counter>>,
    dest: &VhostUserFsBackend<Server<Counter>>,
    tamper: impl FnOnce(&mut Vec<u8>),
) -> io::Result<()> {
    let (mut from_source, to_frontend) = pipe();
    assert!(source
        .set_device_state_fd(SAVE, STOPPED, to_frontend)
        .unwrap()
        .is_none());
    let mut carried = Vec::new();
    from_source.read_to_end(&mut carried).unwrap();
    source.check_device_state().unwrap();
    tamper(&mut carried);
    let (from_frontend, mut to_dest) = pipe();
    dest.set_device_state_fd(LOAD, STOPPED, from_frontend)
        .unwrap();
    to_dest.write_all(&carried).unwrap();
    drop(to_dest);
    dest.check_device_state()
}

#[test]
fn fuse_session_migrates_between_two_backends() {
    let (source_server, source) = fs_backend(true);
    let (dest_server, dest) = fs_backend(true);
    // A source whose guest never mounted moves nothing into the filesystem.
    migrate(&source, &dest, |_| ()).unwrap();
    assert!(dest_server.fs().value.lock().unwrap().is_none());

    let offered = FUSE_ASYNC_READ | FUSE_INIT_EXT | FUSE_MAX_PAGES;
    call(&source_server, init_request(1, offered), 4096).unwrap();
    let negotiated = source_server.negotiated_flags();
    assert_ne!(negotiated, 0);
    let (dest_server, dest) = fs_backend(true);
    migrate(&source, &dest, |_| ()).unwrap();
    assert_eq!(
        *dest_server.fs().value.lock().unwrap(),
        Some((negotiated, b"42".to_vec()))
    );
    assert_eq!(dest_server.negotiated_flags(), negotiated);
    // The destination serves without an INIT of its own: an ordinary request reaches the
    // filesystem (whose mock answers ENOSYS) instead of the EIO of a session not started.
    let reply = call(
        &dest_server,
        request(Opcode::Getattr as u32, 3, 1, &[&[0u8; 16]]),
        4096,
    )
    .unwrap();
    let (header, _) = parse_reply(&reply).unwrap();
    assert_eq!(header.error, -libc::ENOSYS);
    assert!(source
        .protocol_features()
        .contains(VhostUserProtocolFeatures::DEVICE_STATE));
}

#[test]
fn truncated_or_garbage_streams_are_refused_by_the_destination() {
    let (_, source) = fs_backend(true);
    let (dest_server, dest) = fs_backend(true);
    let err = migrate(&source, &dest, |s| s.truncate(s.len() - 1)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    let err = migrate(&source, &dest, |s| *s = b"garbage".repeat(10)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(migrate(&source, &dest, Vec::clear).is_err());
    assert_eq!(dest_server.negotiated_flags(), 0);
}

#[test]
fn device_state_is_offered_only_with_migration() {
    let (_, backend) = fs_backend(false);
    let proto = backend.protocol_features();
    assert!(!proto.contains(VhostUserProtocolFeatures::DEVICE_STATE));
    assert!(proto.contains(VhostUserProtocolFeatures::LOG_SHMFD));
    let (_, w) = pipe();
    let err = backend.set_device_state_fd(SAVE, STOPPED, w).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
}

use vhost::vhost_user::message::VhostUserProtocolFeatures;
