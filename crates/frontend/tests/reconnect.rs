//! `--reconnect`: the device outlives its frontend and serves the next one on the same socket
//! with a fresh FUSE session; without it the device exits 0 when its frontend leaves.

mod common;

use std::fs;
use std::time::Duration;

use common::{Daemon, Kind};
use virtiofsd_frontend::fuse::ROOT_ID;

#[test]
fn the_next_frontend_gets_a_fresh_session_ours() {
    let mut d = Daemon::start_with(Kind::Ours, None, &["--reconnect"]);
    fs::write(d.share.join("f"), b"first").unwrap();
    let mut s = d.session();
    let e = s.lookup(ROOT_ID, b"f").unwrap();
    let fh = s.open(e.nodeid, libc::O_RDWR as u32).unwrap().fh;
    assert_eq!(s.read(e.nodeid, fh, 0, 16).unwrap(), b"first");
    drop(s);

    for round in 0..2 {
        // A frontend that leaves in the middle of the setup ends only its session too.
        drop(d.connect());
        let mut s = d.connect();
        // INIT again, in a new session: the old one ended with its frontend.
        s.init().unwrap_or_else(|e| {
            panic!(
                "round {round}: INIT of the new session: {e}; log:\n{}",
                d.log()
            )
        });
        // Nothing of the old session survived: its handle and inode are unknown.
        assert!(
            s.read(e.nodeid, fh, 0, 16).is_err(),
            "round {round}: the old session's handle still reads"
        );
        let again = s.lookup(ROOT_ID, b"f").unwrap();
        let fh2 = s.open(again.nodeid, libc::O_RDONLY as u32).unwrap().fh;
        assert_eq!(s.read(again.nodeid, fh2, 0, 16).unwrap(), b"first");
        drop(s);
        assert!(
            d.try_status().is_none(),
            "round {round}: the device exited after a disconnect; log:\n{}",
            d.log()
        );
    }
}

#[test]
fn without_reconnect_a_disconnect_ends_the_device_ours() {
    let mut d = Daemon::start(Kind::Ours);
    let mut s = d.session();
    s.getattr(ROOT_ID).unwrap();
    drop(s);
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}; log:\n{}", d.log());
}
