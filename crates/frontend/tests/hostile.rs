//! Hostile input against both daemons. Each case gets a fresh daemon (some kill the connection),
//! and its observed result must match what docs/conformance.md documents for that daemon:
//! the reply (or dropped chain, or disconnect), then the daemon state afterwards: "alive" (it
//! answers a follow-up GETATTR on the root, with the same number of open fds as before) or
//! "exit0" (it exited cleanly with status 0). A hang, a panic or any other exit status fails.
//! Every case also checks that the directory next to the share is untouched.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{Daemon, Kind};
use virtiofsd_frontend::fuse::{op, InHeader, Writer, ROOT_ID};
use virtiofsd_frontend::ops::{read_args, write_args};
use virtiofsd_frontend::virtq::{VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use virtiofsd_frontend::{Buf, Outcome, RawDesc, Request, Session, Ticket};

/// What a case gets: the session, and a file opened read-write (node, fh).
struct Ctx<'a> {
    s: &'a mut Session,
    log: std::path::PathBuf,
    node: u64,
    fh: u64,
}

const WAIT: Duration = Duration::from_secs(3);
const REPLY_CAP: u32 = 4096;

fn header(s: &mut Session, opcode: u32, nodeid: u64, len: u32) -> (u64, [u8; 40]) {
    let unique = s.next_unique();
    let (uid, gid, pid) = s.creds;
    (
        unique,
        InHeader {
            len,
            opcode,
            unique,
            nodeid,
            uid,
            gid,
            pid,
        }
        .encode(),
    )
}

/// Writes `req` bytes and a reply area into fresh guest memory; returns (req, reply) addresses.
fn place(s: &mut Session, req: &[u8]) -> (u64, u64) {
    let r = s.mem_mut().alloc(req.len().max(1) as u64, 64).unwrap();
    s.mem().write(r, req).unwrap();
    let reply = s.mem_mut().alloc(u64::from(REPLY_CAP), 64).unwrap();
    (r, reply)
}

/// A request with a lying header length, or arbitrary args, in an ordinary chain.
fn send(c: &mut Ctx<'_>, opcode: u32, nodeid: u64, args: &[u8], len: Option<u32>) -> Outcome {
    let slot = c.s.alloc_slot(8192, REPLY_CAP).unwrap();
    let t =
        c.s.submit_with(1, slot, &Request::new(opcode, nodeid, args), len)
            .unwrap();
    wait(c, &t)
}

/// A GETATTR request whose chain is described by raw descriptors; `descs(req, reply, idx)`.
fn raw_chain(
    c: &mut Ctx<'_>,
    n: usize,
    descs: impl Fn(u64, u64, &[u16]) -> Vec<RawDesc>,
) -> Outcome {
    let (unique, h) = header(c.s, op::GETATTR, ROOT_ID, 56);
    let mut req = h.to_vec();
    req.extend_from_slice(&[0u8; 16]);
    let (ra, rep) = place(c.s, &req);
    let idx = c.s.queue(1).unwrap().reserve(n).unwrap();
    let list: Vec<(u16, RawDesc)> = idx.iter().copied().zip(descs(ra, rep, &idx)).collect();
    let head = idx[0];
    c.s.submit_raw(1, &list, head, idx).unwrap();
    let t = Ticket::raw(1, head, unique, op::GETATTR, rep, REPLY_CAP);
    wait(c, &t)
}

fn indirect(c: &mut Ctx<'_>, table: impl Fn(u64, u64) -> Vec<RawDesc>) -> Outcome {
    let (unique, h) = header(c.s, op::GETATTR, ROOT_ID, 56);
    let mut req = h.to_vec();
    req.extend_from_slice(&[0u8; 16]);
    let (ra, rep) = place(c.s, &req);
    let head = c.s.submit_indirect_raw(1, &table(ra, rep)).unwrap();
    let t = Ticket::raw(1, head, unique, op::GETATTR, rep, REPLY_CAP);
    wait(c, &t)
}

/// Waits for a completion; gives up early once the daemon's log shows a panicked thread.
fn wait(c: &mut Ctx<'_>, t: &Ticket) -> Outcome {
    let start = Instant::now();
    loop {
        let o = c.s.outcome(t, Duration::from_millis(200)).unwrap();
        if !matches!(o, Outcome::Timeout) || start.elapsed() >= WAIT {
            return o;
        }
        // Each 200 ms slice is too short for `outcome`'s own re-kick: kick here, in case the
        // first kick raced with the backend starting the queue (a spurious kick only makes the
        // device look at the ring again, so a daemon that really hangs still shows).
        if start.elapsed() >= Duration::from_millis(500) {
            let _ = c.s.kick(t.queue);
        }
        if fs::read_to_string(&c.log)
            .unwrap_or_default()
            .contains("panicked")
        {
            std::thread::sleep(Duration::from_millis(300));
            return c.s.outcome(t, Duration::from_millis(10)).unwrap();
        }
    }
}

fn rd(addr: u64, len: u32, next: Option<u16>) -> RawDesc {
    RawDesc {
        addr,
        len,
        flags: if next.is_some() { VIRTQ_DESC_F_NEXT } else { 0 },
        next: next.unwrap_or(0),
    }
}

fn wr(addr: u64, len: u32, next: Option<u16>) -> RawDesc {
    let mut d = rd(addr, len, next);
    d.flags |= VIRTQ_DESC_F_WRITE;
    d
}

fn name_args(name: &[u8], nul: bool) -> Vec<u8> {
    let mut v = name.to_vec();
    if nul {
        v.push(0);
    }
    v
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Reply(r) if r.header.error == 0 => "ok".into(),
        Outcome::Reply(r) => errno_name(-r.header.error),
        Outcome::Returned { .. } => "dropped".into(),
        Outcome::Invalid(m) => format!("invalid reply ({m})"),
        Outcome::Disconnected => "disconnect".into(),
        Outcome::Timeout => "no reply".into(),
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EINVAL => "EINVAL",
        libc::EIO => "EIO",
        libc::ENOSYS => "ENOSYS",
        libc::ENOENT => "ENOENT",
        libc::EPERM => "EPERM",
        libc::EFAULT => "EFAULT",
        libc::ENOMEM => "ENOMEM",
        libc::EBADF => "EBADF",
        libc::EEXIST => "EEXIST",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::E2BIG => "E2BIG",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOBUFS => "ENOBUFS",
        libc::EACCES => "EACCES",
        _ => return format!("errno {e}"),
    }
    .into()
}

/// Runs one case on a fresh daemon and returns "<outcome>; <alive|exit0>".
fn run(kind: Kind, case: fn(&mut Ctx<'_>) -> Outcome, init: bool) -> String {
    let mut d = Daemon::start(kind);
    fs::write(d.share.join("hello"), b"hello world").unwrap();
    fs::write(d.share.join("target"), b"target").unwrap();
    fs::create_dir(d.share.join("sub")).unwrap();
    let mut s = d.connect();
    let (node, fh) = if init {
        s.init().unwrap();
        let node = s.lookup(ROOT_ID, b"target").unwrap().nodeid;
        (node, s.open(node, libc::O_RDWR as u32).unwrap().fh)
    } else {
        (0, 0)
    };
    let fds_before = d.fd_count();
    let outcome = case(&mut Ctx {
        s: &mut s,
        log: d.dir.join("daemon.log"),
        node,
        fh,
    });
    let what = describe(&outcome);
    let state = if matches!(outcome, Outcome::Timeout) {
        // The queue is stuck; all that can be checked is that the process leaves cleanly.
        let panicked = d.log().contains("panicked");
        drop(s);
        let st = d.wait_exit(WAIT);
        let code = st.code().map_or("by signal".into(), |c| c.to_string());
        if panicked {
            format!("worker panicked, exit {code}")
        } else {
            format!("stuck, exit {code}")
        }
    } else if matches!(outcome, Outcome::Disconnected) || s.peer_gone() {
        drop(s);
        let st = d.wait_exit(WAIT);
        assert!(
            st.success(),
            "{kind:?}: daemon exited with {st} after '{what}'; log:\n{}",
            d.log()
        );
        "exit0".to_string()
    } else {
        // A daemon that refuses requests until (re-)INIT must accept one and then answer.
        let mut reinit = false;
        if !init || s.getattr(ROOT_ID).is_err() {
            s.init()
                .unwrap_or_else(|e| panic!("{kind:?}: INIT after '{what}' failed: {e}"));
            reinit = init;
        }
        common::assert_answers(&mut s, kind);
        // Closing happens on worker threads; give the count a moment to settle.
        let start = Instant::now();
        while init
            && !reinit
            && d.fd_count() != fds_before
            && start.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Before INIT there is no comparable baseline: INIT itself opens the root.
        let delta = if init && !reinit {
            d.fd_count() as i64 - fds_before as i64
        } else {
            0
        };
        let handles_gone = init && !reinit && s.release(node, fh).is_err();
        drop(s);
        let st = d.wait_exit(WAIT);
        assert!(st.success(), "{kind:?}: exit status {st} after disconnect");
        if reinit {
            "alive after re-INIT".to_string()
        } else if handles_gone {
            "alive, open handles dropped".to_string()
        } else if delta == 0 {
            "alive".to_string()
        } else {
            format!("alive, fds {delta:+}")
        }
    };
    d.assert_outside_untouched();
    assert_eq!(
        fs::read(d.share.join("hello")).unwrap(),
        b"hello world",
        "{kind:?}: hello modified"
    );
    format!("{what}; {state}")
}

macro_rules! case {
    ($name:ident, init = $init:expr, ours = $ours:expr, reference = $refr:expr, $body:expr) => {
        mod $name {
            use super::*;
            fn body(c: &mut Ctx<'_>) -> Outcome {
                #[allow(clippy::redundant_closure_call)]
                ($body)(c)
            }
            #[test]
            fn ours() {
                assert_eq!(run(Kind::Ours, body, $init), $ours);
            }
            #[test]
            fn reference() {
                assert_eq!(run(Kind::Reference, body, $init), $refr);
            }
        }
    };
}

case!(
    truncated_header,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| {
        let (unique, h) = header(c.s, op::GETATTR, ROOT_ID, 56);
        let (ra, rep) = place(c.s, &h[..20]);
        let head =
            c.s.submit_bufs(
                1,
                &[Buf::readable(ra, 20), Buf::writable(rep, REPLY_CAP)],
                false,
            )
            .unwrap();
        wait(
            c,
            &Ticket::raw(1, head, unique, op::GETATTR, rep, REPLY_CAP),
        )
    }
);

case!(
    length_too_big,
    init = true,
    ours = "EINVAL; alive",
    reference = "ok; alive",
    |c: &mut Ctx<'_>| { send(c, op::GETATTR, ROOT_ID, &[0; 16], Some(56 + 100)) }
);

case!(
    length_smaller_than_header,
    init = true,
    ours = "EINVAL; alive",
    reference = "ok; alive",
    |c: &mut Ctx<'_>| { send(c, op::GETATTR, ROOT_ID, &[0; 16], Some(20)) }
);

case!(
    length_cuts_name,
    init = true,
    ours = "EINVAL; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| { send(c, op::LOOKUP, ROOT_ID, b"hello\0", Some(40 + 2)) }
);

case!(
    name_with_slash,
    init = true,
    ours = "EINVAL; alive",
    reference = "ENOENT; alive",
    |c: &mut Ctx<'_>| {
        let mut w = Writer::default();
        w.u32(libc::S_IFDIR | 0o755).u32(0).name(b"../outside/pwn");
        send(c, op::MKDIR, ROOT_ID, &w.take(), None)
    }
);

case!(
    lookup_slash_path,
    init = true,
    ours = "EINVAL; alive",
    reference = "ENOENT; alive",
    |c: &mut Ctx<'_>| {
        send(
            c,
            op::LOOKUP,
            ROOT_ID,
            &name_args(b"../outside/secret", true),
            None,
        )
    }
);

case!(
    mkdir_dotdot,
    init = true,
    ours = "EINVAL; alive",
    reference = "EEXIST; alive",
    |c: &mut Ctx<'_>| {
        let mut w = Writer::default();
        w.u32(libc::S_IFDIR | 0o755).u32(0).name(b"..");
        send(c, op::MKDIR, ROOT_ID, &w.take(), None)
    }
);

case!(
    lookup_dotdot_of_root,
    init = true,
    ours = "EINVAL; alive",
    reference = "ok; alive",
    |c: &mut Ctx<'_>| { send(c, op::LOOKUP, ROOT_ID, &name_args(b"..", true), None) }
);

case!(
    name_without_nul,
    init = true,
    ours = "EINVAL; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| { send(c, op::LOOKUP, ROOT_ID, &name_args(b"hello", false), None) }
);

case!(
    symlink_target_without_nul,
    init = true,
    ours = "EINVAL; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| { send(c, op::SYMLINK, ROOT_ID, b"ln\0../outside", None) }
);

case!(
    unknown_opcode,
    init = true,
    ours = "ENOSYS; alive",
    reference = "ENOSYS; alive",
    |c: &mut Ctx<'_>| { send(c, 9999, ROOT_ID, &[0; 8], None) }
);

case!(
    huge_read,
    init = true,
    ours = "ok; alive",
    reference = "ok; alive",
    |c: &mut Ctx<'_>| {
        let args = read_args(c.fh, 0, u32::MAX);
        send(c, op::READ, c.node, &args, None)
    }
);

case!(
    huge_write_size_field,
    init = true,
    ours = "EINVAL; alive",
    reference = "ok; alive",
    |c: &mut Ctx<'_>| {
        let mut args = write_args(c.fh, 0, 1 << 31);
        args.extend_from_slice(b"XXXX");
        send(c, op::WRITE, c.node, &args, None)
    }
);

case!(
    write_size_exceeds_payload,
    init = true,
    ours = "EINVAL; alive",
    reference = "ok; alive",
    |c: &mut Ctx<'_>| {
        let mut args = write_args(c.fh, 0, 100);
        args.extend_from_slice(b"0123456789");
        send(c, op::WRITE, c.node, &args, None)
    }
);

case!(
    desc_outside_memory,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| {
        let size = c.s.mem().size();
        raw_chain(c, 2, |_, rep, i| {
            vec![rd(size + 4096, 56, Some(i[1])), wr(rep, REPLY_CAP, None)]
        })
    }
);

case!(
    desc_address_wraps,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| {
        raw_chain(c, 2, |_, rep, i| {
            vec![rd(u64::MAX - 8, 56, Some(i[1])), wr(rep, REPLY_CAP, None)]
        })
    }
);

case!(
    reply_desc_straddles_end,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| {
        let size = c.s.mem().size();
        raw_chain(c, 2, |req, _, i| {
            vec![rd(req, 56, Some(i[1])), wr(size - 8, REPLY_CAP, None)]
        })
    }
);

case!(
    reply_buffer_readable_only,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| {
        raw_chain(c, 2, |req, rep, i| {
            vec![rd(req, 56, Some(i[1])), rd(rep, REPLY_CAP, None)]
        })
    }
);

case!(
    no_reply_buffer,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| { raw_chain(c, 1, |req, _, _| vec![rd(req, 56, None)]) }
);

case!(
    writable_before_readable,
    init = true,
    ours = "dropped; alive",
    reference = "ok; alive",
    |c: &mut Ctx<'_>| {
        raw_chain(c, 2, |req, rep, i| {
            vec![wr(rep, REPLY_CAP, Some(i[1])), rd(req, 56, None)]
        })
    }
);

case!(
    chain_loop,
    init = true,
    ours = "dropped; alive",
    reference = "ok; alive",
    |c: &mut Ctx<'_>| {
        raw_chain(c, 2, |req, rep, i| {
            vec![rd(req, 56, Some(i[1])), wr(rep, REPLY_CAP, Some(i[0]))]
        })
    }
);

case!(
    chain_self_loop,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| { raw_chain(c, 1, |req, _, i| vec![rd(req, 56, Some(i[0]))]) }
);

case!(
    next_out_of_range,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| { raw_chain(c, 1, |req, _, _| vec![rd(req, 56, Some(1000))]) }
);

case!(
    indirect_longer_than_queue,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| {
        // The queue has 16 entries; the chain has 24 (header split into 1-byte pieces, then reply).
        indirect(c, |req, rep| {
            let mut t: Vec<RawDesc> = (0..23)
                .map(|i| rd(req + i, 1, Some(i as u16 + 1)))
                .collect();
            t.push(wr(rep, REPLY_CAP, None));
            t
        })
    }
);

case!(
    indirect_table_outside_memory,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| {
        let size = c.s.mem().size();
        raw_chain(c, 1, |_, _, _| {
            vec![RawDesc {
                addr: size - 16,
                len: 64,
                flags: VIRTQ_DESC_F_INDIRECT,
                next: 0,
            }]
        })
    }
);

case!(
    indirect_bad_length,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| {
        let (unique, h) = header(c.s, op::GETATTR, ROOT_ID, 56);
        let mut req = h.to_vec();
        req.extend_from_slice(&[0u8; 16]);
        let (ra, rep) = place(c.s, &req);
        let table = c.s.mem_mut().alloc(64, 16).unwrap();
        let mut w = Writer::default();
        w.u64(ra)
            .u32(56)
            .u16(VIRTQ_DESC_F_NEXT)
            .u16(1)
            .u64(rep)
            .u32(REPLY_CAP)
            .u16(VIRTQ_DESC_F_WRITE)
            .u16(0);
        c.s.mem().write(table, &w.take()).unwrap();
        let idx = c.s.queue(1).unwrap().reserve(1).unwrap();
        let d = RawDesc {
            addr: table,
            len: 31,
            flags: VIRTQ_DESC_F_INDIRECT,
            next: 0,
        };
        c.s.submit_raw(1, &[(idx[0], d)], idx[0], idx.clone())
            .unwrap();
        wait(
            c,
            &Ticket::raw(1, idx[0], unique, op::GETATTR, rep, REPLY_CAP),
        )
    }
);

case!(
    nested_indirect,
    init = true,
    ours = "dropped; alive",
    reference = "no reply; worker panicked, exit 0",
    |c: &mut Ctx<'_>| {
        indirect(c, |req, rep| {
            vec![
                rd(req, 56, Some(1)),
                RawDesc {
                    addr: rep,
                    len: 32,
                    flags: VIRTQ_DESC_F_INDIRECT,
                    next: 0,
                },
            ]
        })
    }
);

case!(
    indirect_loop,
    init = true,
    ours = "dropped; alive",
    reference = "ok; alive",
    |c: &mut Ctx<'_>| {
        indirect(c, |req, rep| {
            vec![rd(req, 56, Some(1)), wr(rep, REPLY_CAP, Some(0))]
        })
    }
);

case!(
    request_before_init,
    init = false,
    ours = "EIO; alive",
    reference = "EBADF; alive",
    |c: &mut Ctx<'_>| { send(c, op::GETATTR, ROOT_ID, &[0; 16], None) }
);

case!(
    request_after_destroy,
    init = true,
    ours = "EIO; alive after re-INIT",
    reference = "EBADF; alive after re-INIT",
    |c: &mut Ctx<'_>| {
        c.s.destroy().unwrap();
        send(c, op::GETATTR, ROOT_ID, &[0; 16], None)
    }
);

case!(
    second_init,
    init = true,
    ours = "ok; alive, open handles dropped",
    reference = "ok; alive, open handles dropped",
    |c: &mut Ctx<'_>| {
        send(
            c,
            op::INIT,
            0,
            &virtiofsd_frontend::ops::init_args(virtiofsd_frontend::ops::INIT_FLAGS),
            None,
        )
    }
);

/// The frontend disappears with requests in flight: the daemon must exit cleanly, promptly.
fn vanish(kind: Kind) {
    let mut d = Daemon::start(kind);
    fs::write(d.share.join("big"), vec![1u8; 4 << 20]).unwrap();
    let mut s = d.connect();
    s.init().unwrap();
    let node = s.lookup(ROOT_ID, b"big").unwrap().nodeid;
    let fh = s.open(node, libc::O_RDONLY as u32).unwrap().fh;
    for i in 0..4u64 {
        let slot = s.alloc_slot(128, 64).unwrap();
        let data = s.mem_mut().alloc(1 << 20, 4096).unwrap();
        let args = read_args(fh, i << 20, 1 << 20);
        let mut req = Request::new(op::READ, node, &args);
        req.reply_data = Some(Buf::writable(data, 1 << 20));
        s.submit(1, slot, &req).unwrap();
    }
    drop(s);
    let st = d.wait_exit(WAIT);
    assert!(
        st.success(),
        "{kind:?}: exit status {st}; log:\n{}",
        d.log()
    );
    d.assert_outside_untouched();
}

#[test]
fn vanish_with_requests_in_flight_ours() {
    vanish(Kind::Ours);
}

#[test]
fn vanish_with_requests_in_flight_reference() {
    vanish(Kind::Reference);
}
