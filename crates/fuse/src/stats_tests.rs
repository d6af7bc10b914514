//! The server's counters against a known request mix.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use crate::abi::{Opcode, ReadIn, WireStruct, WriteIn};
use crate::filesystem::{Context, Entry, FileSystem, Handle, Inode};
use crate::io::{ZeroCopyReader, ZeroCopyWriter};
use crate::stats::RequestCounts;
use crate::testing::*;
use crate::Server;

/// Every name is missing; reads come from /dev/zero and writes go to /dev/null.
struct Sink;

impl FileSystem for Sink {
    fn lookup(&self, _: Context, _: Inode, _: &CStr) -> io::Result<Entry> {
        Err(io::Error::from_raw_os_error(libc::ENOENT))
    }

    fn read(
        &self,
        _: Context,
        _: Inode,
        _: Handle,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        _: u64,
        _: u32,
    ) -> io::Result<usize> {
        w.write_from_file(File::open("/dev/zero")?.as_fd(), size as usize, 0)
    }

    fn write(
        &self,
        _: Context,
        _: Inode,
        _: Handle,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        _: u64,
        _: bool,
        _: u32,
    ) -> io::Result<usize> {
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        r.read_to_file(null.as_fd(), size as usize, 0)
    }
}

const ROOM: usize = 1 << 21;

fn send(server: &Server<Sink>, op: Opcode, unique: u64, args: &[&[u8]]) {
    call(server, request(op as u32, unique, 1, args), ROOM).expect("a reply");
}

fn counts_after(requests: impl FnOnce(&Server<Sink>)) -> RequestCounts {
    let server = Server::new(Sink);
    call(&server, init_request(1, 0), ROOM).expect("INIT reply");
    requests(&server);
    server.stats().snapshot()
}

#[test]
fn lookups_of_missing_names_count_as_enoent() {
    let counts = counts_after(|s| {
        for unique in 0..7 {
            send(s, Opcode::Lookup, 10 + unique, &[b"missing\0"]);
        }
    });
    assert_eq!(counts.requests_of(Opcode::Init), 1);
    assert_eq!(counts.requests_of(Opcode::Lookup), 7);
    assert_eq!(counts.errors_of(Opcode::Lookup), 7);
    assert_eq!(counts.errno_count(libc::ENOENT), 7);
    assert_eq!(counts.errors_of(Opcode::Init), 0);
    assert_eq!(counts.total_requests(), 8);
    assert_eq!(counts.unanswered, 0);
}

#[test]
fn payload_bytes_of_read_and_write_are_summed() {
    let counts = counts_after(|s| {
        let read = ReadIn {
            fh: 3,
            size: 4096,
            ..Default::default()
        };
        for unique in 0..3 {
            send(s, Opcode::Read, 20 + unique, &[read.as_bytes()]);
        }
        let payload = vec![7u8; 1000];
        let write = WriteIn {
            fh: 3,
            size: 1000,
            ..Default::default()
        };
        for unique in 0..5 {
            send(s, Opcode::Write, 30 + unique, &[write.as_bytes(), &payload]);
        }
    });
    assert_eq!(counts.requests_of(Opcode::Read), 3);
    assert_eq!(counts.requests_of(Opcode::Write), 5);
    assert_eq!(counts.bytes_read, 3 * 4096);
    assert_eq!(counts.bytes_written, 5 * 1000);
    assert_eq!(counts.errors.iter().sum::<u64>(), 0);
}

#[test]
fn malformed_unknown_and_unanswerable_requests_are_counted() {
    let counts = counts_after(|s| {
        // An opcode number no kernel sends: ENOSYS under UNKNOWN.
        call(s, request(4000, 40, 1, &[]), ROOM).unwrap();
        // A header whose length disagrees with the request: EINVAL.
        let mut bad = request(Opcode::Getattr as u32, 41, 1, &[&[0u8; 16]]);
        bad[0] = 99;
        call(s, bad, ROOM).unwrap();
        // No room for a reply at all.
        assert!(call(s, request(Opcode::Lookup as u32, 42, 1, &[b"x\0"]), 4).is_err());
    });
    assert_eq!(counts.requests[0], 1);
    assert_eq!(counts.errors[0], 1);
    assert_eq!(counts.errno_count(libc::ENOSYS), 1);
    assert_eq!(counts.errno_count(libc::EINVAL), 1);
    assert_eq!(counts.errors_of(Opcode::Getattr), 1);
    assert_eq!(counts.requests_of(Opcode::Lookup), 1);
    assert_eq!(counts.unanswered, 1);
}
