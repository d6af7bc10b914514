//! A migration through the FUSE dispatcher: a session started with INIT on one `Server`, its
//! state saved (the dispatcher's envelope around the filesystem's), loaded into a fresh `Server`
//! over the same directory, which then answers the guest's ids without a new INIT.

use std::fs;
use std::path::PathBuf;

use virtiofsd_fuse::abi::{EntryOut, Opcode, OpenIn, OpenOut, OutHeader, ReadIn, WireStruct};
use virtiofsd_fuse::testing::{init_request, request, TestReader, TestWriter};
use virtiofsd_fuse::Server;
use virtiofsd_passthrough::{Config, PassthroughFs};

struct Share(PathBuf);

impl Drop for Share {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn send(server: &Server<PassthroughFs>, req: Vec<u8>) -> (i32, Vec<u8>) {
    let mut r = TestReader::new(req);
    let (w, out) = TestWriter::new(1 << 16);
    let n = server.handle_message(&mut r, w).expect("a reply");
    let bytes = out.bytes(n);
    let (h, body) = OutHeader::from_prefix(&bytes).expect("reply header");
    (-h.error, body.to_vec())
}

fn server(share: &Share) -> Server<PassthroughFs> {
    Server::new(PassthroughFs::new(Config::new(&share.0)).expect("PassthroughFs"))
}

#[test]
fn a_session_moves_to_a_fresh_server() {
    let share = Share(
        std::env::temp_dir().join(format!("virtiofsd-migration-server-{}", std::process::id())),
    );
    fs::create_dir_all(&share.0).unwrap();
    fs::write(share.0.join("f"), b"moved along").unwrap();

    let src = server(&share);
    let (e, _) = send(&src, init_request(1, u64::from(u32::MAX)));
    assert_eq!(e, 0);
    let (e, body) = send(&src, request(Opcode::Lookup as u32, 2, 1, &[b"f\0"]));
    assert_eq!(e, 0);
    let (entry, _) = EntryOut::from_prefix(&body).unwrap();
    let open = OpenIn {
        flags: libc::O_RDONLY as u32,
        open_flags: 0,
    };
    let (e, body) = send(
        &src,
        request(Opcode::Open as u32, 3, entry.nodeid, &[open.as_bytes()]),
    );
    assert_eq!(e, 0);
    let (opened, _) = OpenOut::from_prefix(&body).unwrap();
    let state = src.save_state().unwrap();

    let dst = server(&share);
    dst.load_state(&state).unwrap();
    let read = ReadIn {
        fh: opened.fh,
        offset: 0,
        size: 100,
        read_flags: 0,
        lock_owner: 0,
        flags: 0,
        padding: 0,
    };
    let (e, body) = send(
        &dst,
        request(Opcode::Read as u32, 4, entry.nodeid, &[read.as_bytes()]),
    );
    assert_eq!(e, 0);
    // The destination served the migrated session's handle without an INIT of its own.
    assert_eq!(body, b"moved along");

    // A corrupted filesystem state (here a lock count far past the bytes present) is refused
    // and leaves the destination fresh: the good state still loads afterwards.
    let mut bad = state.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let fresh = server(&share);
    assert!(fresh.load_state(&bad).is_err());
    fresh.load_state(&state).unwrap();
}
