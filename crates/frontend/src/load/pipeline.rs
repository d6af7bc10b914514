//! Workloads that keep several operations in flight: each of `depth` slots carries one operation
//! at a time, an operation being one or more requests in a row, and slot `i` always submits on
//! request queue `1 + i % queues`, so the depth is spread evenly over the queues.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{lookup_path, Clock, Params, Rng, Stats, Workload, META_FILES};
use crate::error::{Error, Result};
use crate::fuse::{op, AttrOut, EntryOut, Reader, Writer};
use crate::session::{Request, Session, Slot, Ticket};
use crate::virtq::Buf;

/// One request of an operation.
pub(super) struct Step {
    opcode: u32,
    nodeid: u64,
    args: Vec<u8>,
    payload: Option<Buf>,
    reply_data: Option<Buf>,
}

impl Step {
    fn new(opcode: u32, nodeid: u64, args: Vec<u8>) -> Self {
        Step {
            opcode,
            nodeid,
            args,
            payload: None,
            reply_data: None,
        }
    }
}

pub(super) enum Next {
    /// The operation goes on with another request on the same slot.
    Then(Step),
    /// The operation is complete; it moved this many data bytes.
    Done(u64),
}

pub(super) trait Driver {
    /// The first request of a new operation on `slot`.
    fn start(&mut self, slot: usize) -> Step;
    /// The successful reply to the request `slot` had in flight; `body` is empty for replies
    /// whose data went to a buffer of the driver's own.
    fn reply(&mut self, slot: usize, opcode: u32, used_len: u32, body: &[u8]) -> Result<Next>;
}

struct InFlight {
    slot: usize,
    ticket: Ticket,
    copy_body: bool,
}

/// Latencies of the measured operations, their data bytes and the measured time.
pub(super) struct Measured {
    lat_us: Vec<f64>,
    bytes: u64,
    elapsed: Duration,
}

impl Measured {
    fn stats(mut self, w: Workload) -> Stats {
        Stats::from(w, &mut self.lat_us, self.bytes, self.elapsed)
    }
}

/// How long to wait for any completion before kicking the queues again: a kick that raced with
/// the backend starting to poll a queue would otherwise stall the run until the deadline.
const REKICK: Duration = Duration::from_millis(500);

pub(super) fn pipeline(s: &mut Session, p: &Params, d: &mut dyn Driver) -> Result<Measured> {
    let depth = p.depth.max(1);
    let nq = s.request_queues();
    let per_queue = depth.div_ceil(nq);
    // A request takes at most three descriptors (request, reply header, data).
    if per_queue * 3 > usize::from(s.queue(1)?.size()) {
        return Err(Error::Unsupported(format!(
            "depth {depth} over {nq} queue(s) is too deep for the queue size"
        )));
    }
    let mut slots = Vec::with_capacity(depth);
    for _ in 0..depth {
        slots.push(s.alloc_slot(256, 256)?);
    }
    let mut inflight: HashMap<(usize, u16), InFlight> = HashMap::new();
    let mut started = vec![Instant::now(); depth];
    for (i, &slot) in slots.iter().enumerate() {
        let step = d.start(i);
        started[i] = Instant::now();
        submit(s, &mut inflight, 1 + i % nq, slot, i, &step)?;
    }
    let mut clock = Clock::new(p);
    let mut lat = Vec::new();
    let mut bytes = 0u64;
    let mut stopping = false;
    let mut waited = Duration::ZERO;
    while !inflight.is_empty() {
        let (q, used) = match s.wait_any(REKICK) {
            Ok(c) => c,
            Err(Error::Timeout { .. }) if waited + REKICK < s.timeout => {
                waited += REKICK;
                for q in 1..=nq {
                    s.kick(q)?;
                }
                continue;
            }
            Err(Error::Timeout { .. }) => {
                return Err(Error::Timeout {
                    queue: usize::MAX,
                    waited_ms: (waited + REKICK).as_millis(),
                })
            }
            Err(e) => return Err(e),
        };
        waited = Duration::ZERO;
        let f = inflight.remove(&(q, used.id)).ok_or_else(|| {
            Error::BadReply(format!(
                "completion for unknown head {} on queue {q}",
                used.id
            ))
        })?;
        let reply = s.decode(&f.ticket, used, f.copy_body)?;
        if reply.header.error != 0 {
            return Err(Error::Fuse {
                opcode: f.ticket.opcode,
                errno: -reply.header.error,
            });
        }
        let i = f.slot;
        let step = match d.reply(i, f.ticket.opcode, reply.used_len, &reply.body)? {
            Next::Then(step) => step,
            Next::Done(moved) => {
                let us = started[i].elapsed().as_secs_f64() * 1e6;
                if clock.measuring() && !stopping {
                    lat.push(us);
                    bytes += moved;
                }
                stopping = stopping || clock.done(lat.len() as u64);
                if stopping {
                    continue;
                }
                started[i] = Instant::now();
                d.start(i)
            }
        };
        submit(s, &mut inflight, 1 + i % nq, slots[i], i, &step)?;
    }
    Ok(Measured {
        lat_us: lat,
        bytes,
        elapsed: clock.elapsed(),
    })
}

fn submit(
    s: &mut Session,
    inflight: &mut HashMap<(usize, u16), InFlight>,
    q: usize,
    slot: Slot,
    i: usize,
    step: &Step,
) -> Result<()> {
    let mut req = Request::new(step.opcode, step.nodeid, &step.args);
    req.payload = step.payload;
    req.reply_data = step.reply_data;
    let ticket = s.submit(q, slot, &req)?;
    let copy_body = step.reply_data.is_none();
    inflight.insert(
        (q, ticket.head),
        InFlight {
            slot: i,
            ticket,
            copy_body,
        },
    );
    Ok(())
}

fn name_args(name: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.name(name);
    w.take()
}

fn getattr_args() -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(0).u32(0).u64(0);
    w.take()
}

/// `lookup`: LOOKUP of `meta/f<i mod 1000>` and GETATTR of the result. `getattr`: GETATTR of
/// the 1000 inodes of `meta/`, looked up once before the run.
struct Meta {
    meta: u64,
    /// Inodes of `meta/f*` for `getattr`; empty for `lookup`.
    known: Vec<u64>,
    next: u64,
    /// Lookups per node id, forgotten at the end as a guest's inode cache would.
    counts: HashMap<u64, u64>,
}

impl Driver for Meta {
    fn start(&mut self, _slot: usize) -> Step {
        let i = self.next % META_FILES;
        self.next += 1;
        if self.known.is_empty() {
            Step::new(op::LOOKUP, self.meta, name_args(format!("f{i}").as_bytes()))
        } else {
            Step::new(op::GETATTR, self.known[i as usize], getattr_args())
        }
    }

    fn reply(&mut self, _slot: usize, opcode: u32, _len: u32, body: &[u8]) -> Result<Next> {
        if opcode == op::LOOKUP {
            let e = EntryOut::decode(&mut Reader::new(body))?;
            *self.counts.entry(e.nodeid).or_default() += 1;
            return Ok(Next::Then(Step::new(op::GETATTR, e.nodeid, getattr_args())));
        }
        AttrOut::decode(&mut Reader::new(body))?;
        Ok(Next::Done(0))
    }
}

pub(super) fn run_meta(s: &mut Session, p: &Params) -> Result<Stats> {
    let meta = lookup_path(s, &[b"meta"])?;
    let mut d = Meta {
        meta,
        known: Vec::new(),
        next: 0,
        counts: HashMap::from([(meta, 1)]),
    };
    if p.workload == Workload::Getattr {
        for i in 0..META_FILES {
            let node = s.lookup(meta, format!("f{i}").as_bytes())?.nodeid;
            *d.counts.entry(node).or_default() += 1;
            d.known.push(node);
        }
    }
    let m = pipeline(s, p, &mut d)?;
    s.batch_forget(&d.counts.into_iter().collect::<Vec<_>>())?;
    Ok(m.stats(p.workload))
}

/// READ or WRITE of `data.bin`: 4 KiB at random offsets, or 1 MiB front to back.
struct Io {
    node: u64,
    fh: u64,
    write: bool,
    size: u32,
    /// A data buffer in guest memory per slot.
    data: Vec<u64>,
    offsets: Offsets,
}

struct Offsets {
    random: bool,
    rng: Rng,
    seq: u64,
    blocks: u64,
    size: u64,
}

impl Offsets {
    fn next(&mut self) -> u64 {
        let b = if self.random {
            self.rng.next_u64() % self.blocks
        } else {
            let b = self.seq % self.blocks;
            self.seq += 1;
            b
        };
        b * self.size
    }
}

impl Driver for Io {
    fn start(&mut self, slot: usize) -> Step {
        let offset = self.offsets.next();
        let args = crate::ops::read_args(self.fh, offset, self.size);
        let data = self.data[slot];
        let mut step = Step::new(
            if self.write { op::WRITE } else { op::READ },
            self.node,
            args,
        );
        if self.write {
            step.payload = Some(Buf::readable(data, self.size));
        } else {
            step.reply_data = Some(Buf::writable(data, self.size));
        }
        step
    }

    fn reply(&mut self, _slot: usize, _opcode: u32, used_len: u32, body: &[u8]) -> Result<Next> {
        let done = if self.write {
            u64::from(Reader::new(body).u32()?)
        } else {
            u64::from(used_len) - 16
        };
        if done != u64::from(self.size) {
            return Err(Error::BadReply(format!(
                "short {}: {done} of {} bytes",
                if self.write { "write" } else { "read" },
                self.size
            )));
        }
        Ok(Next::Done(done))
    }
}

pub(super) fn run_io(s: &mut Session, p: &Params) -> Result<Stats> {
    let (write, random) = match p.workload {
        Workload::Randread => (false, true),
        Workload::Randwrite => (true, true),
        Workload::Seqread => (false, false),
        _ => (true, false),
    };
    let size: u32 = if random { 4096 } else { 1 << 20 };
    let node = lookup_path(s, &[b"data.bin"])?;
    let file_size = s.getattr(node)?.attr.size;
    if file_size < u64::from(size) {
        return Err(Error::Unsupported(format!(
            "data.bin is {file_size} bytes, need at least {size}"
        )));
    }
    let flags = if write { libc::O_RDWR } else { libc::O_RDONLY } as u32;
    let fh = s.open(node, flags)?.fh;
    let mut data = Vec::new();
    for _ in 0..p.depth.max(1) {
        let at = s.mem_mut().alloc(u64::from(size), 4096)?;
        s.mem().fill(at, size as usize, 0xa5)?;
        data.push(at);
    }
    let mut d = Io {
        node,
        fh,
        write,
        size,
        data,
        offsets: Offsets {
            random,
            rng: Rng::new(0x5eed_1234),
            seq: 0,
            blocks: file_size / u64::from(size),
            size: u64::from(size),
        },
    };
    let m = pipeline(s, p, &mut d)?;
    s.release(node, fh)?;
    s.forget(node, 1)?;
    Ok(m.stats(p.workload))
}
