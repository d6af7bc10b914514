//! Live migration at the protocol level, against our device with its defaults (namespace
//! sandbox, `--seccomp=kill`): the dirty-page log the device writes while it serves, the device
//! state moving from a source to a destination that then serves the guest's inodes and handles
//! without an INIT, and streams a destination must refuse.

mod common;

use std::fs;
use std::time::Duration;

use common::{test_options, Daemon, Kind};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use virtiofsd_frontend::fuse::ROOT_ID;
use virtiofsd_frontend::migration::LOG_PAGE;
use virtiofsd_frontend::{Buf, Options, Session};

fn migrating_options() -> Options {
    Options {
        protocol_features: VhostUserProtocolFeatures::LOG_SHMFD
            | VhostUserProtocolFeatures::DEVICE_STATE,
        ..test_options()
    }
}

fn connect(d: &Daemon) -> Session {
    let s = d.connect_with(&migrating_options());
    let acked = VhostUserProtocolFeatures::from_bits_truncate(s.protocol_features());
    assert!(
        acked.contains(VhostUserProtocolFeatures::LOG_SHMFD),
        "LOG_SHMFD not offered"
    );
    assert!(
        acked.contains(VhostUserProtocolFeatures::DEVICE_STATE),
        "DEVICE_STATE not offered"
    );
    s
}

fn assert_alive(d: &mut Daemon) {
    assert!(
        d.try_status().is_none(),
        "the device died; log:\n{}",
        d.log()
    );
}

#[test]
fn reads_are_logged_page_by_page_ours() {
    let mut d = Daemon::start(Kind::Ours);
    fs::write(d.share.join("f"), vec![0x5a; 20000]).unwrap();
    let mut s = connect(&d);
    s.init().unwrap();
    let e = s.lookup(ROOT_ID, b"f").unwrap();
    let fh = s.open(e.nodeid, libc::O_RDONLY as u32).unwrap().fh;
    let buf = s.mem_mut().alloc(8 * LOG_PAGE, LOG_PAGE).unwrap();
    let log = s.start_dirty_log().unwrap();
    // The device may still be re-enabling notifications after the OPEN reply (with EVENT_IDX
    // that writes the used ring's avail_event), so only the used ring may be dirty yet.
    let used_page = s.queue(1).unwrap().layout().used / LOG_PAGE;
    let early: Vec<u64> = log
        .dirty_pages()
        .unwrap()
        .into_iter()
        .filter(|&p| p != used_page)
        .collect();
    assert_eq!(early, Vec::<u64>::new());

    // 20000 bytes straight into the guest's buffer (the device's preadv): its first five
    // pages, not the three after them.
    let n = s
        .read_into(e.nodeid, fh, 0, Buf::writable(buf, 20000))
        .unwrap();
    assert_eq!(n, 20000);
    assert_eq!(s.mem().read_vec(buf + 19999, 2).unwrap(), [0x5a, 0]);
    let pages = log.dirty_pages().unwrap();
    let first = buf / LOG_PAGE;
    for p in first..first + 5 {
        assert!(
            pages.contains(&p),
            "page {p} of the payload not logged: {pages:?}"
        );
    }
    for p in first + 5..first + 8 {
        assert!(!pages.contains(&p), "untouched page {p} logged: {pages:?}");
    }
    let used = s.queue(1).unwrap().layout().used;
    assert!(
        pages.contains(&(used / LOG_PAGE)),
        "used ring page not logged: {pages:?}"
    );
    let desc = s.queue(1).unwrap().layout().desc;
    assert!(
        !pages.contains(&(desc / LOG_PAGE)) || desc / LOG_PAGE == used / LOG_PAGE,
        "the descriptor table, which the device only reads, is logged: {pages:?}"
    );
    log.clear().unwrap();
    s.getattr(ROOT_ID).unwrap();
    assert!(
        !log.dirty_pages().unwrap().is_empty(),
        "a reply after a clear is not logged"
    );
    assert_alive(&mut d);
}

#[test]
fn a_session_moves_to_a_destination_ours() {
    let mut source = Daemon::start(Kind::Ours);
    fs::write(source.share.join("f"), b"migrated contents").unwrap();
    let mut s = connect(&source);
    s.init().unwrap();
    let e = s.lookup(ROOT_ID, b"f").unwrap();
    let fh = s.open(e.nodeid, libc::O_RDONLY as u32).unwrap().fh;
    let _log = s.start_dirty_log().unwrap();
    s.stop_queues().unwrap();
    let state = s
        .save_device_state()
        .unwrap_or_else(|e| panic!("save failed: {e}; log:\n{}", source.log()));
    assert_eq!(&state[..8], b"VFSDSTAT");
    assert_alive(&mut source);

    let mut dest = Daemon::start_on(Kind::Ours, Some(&source.share));
    let mut t = connect(&dest);
    t.load_device_state(&state)
        .unwrap_or_else(|e| panic!("load failed: {e}; log:\n{}", dest.log()));
    // No INIT: the guest goes on with the inode and handle it had.
    let data = t.read(e.nodeid, fh, 0, 64).unwrap();
    assert_eq!(data, b"migrated contents");
    assert_eq!(t.getattr(e.nodeid).unwrap().attr.size, 17);
    assert_alive(&mut dest);
}

#[test]
fn corrupt_or_oversized_streams_are_refused_ours() {
    let mut d = Daemon::start(Kind::Ours);
    let mut s = connect(&d);
    for bad in [&b""[..], b"VFSDSTAT", &[0xff; 4096][..]] {
        assert!(
            s.load_device_state(bad).is_err(),
            "{} bytes of garbage accepted",
            bad.len()
        );
    }
    // A stream past the limit is refused without being buffered whole.
    let huge = vec![0u8; (64 << 20) + 4096];
    assert!(
        s.load_device_state(&huge).is_err(),
        "an oversized stream accepted"
    );
    assert_alive(&mut d);
    // Nothing was loaded: the device still expects the guest's INIT.
    s.init().unwrap();
    s.getattr(ROOT_ID).unwrap();
    drop(s);
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}; log:\n{}", d.log());
}
