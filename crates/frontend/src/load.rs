//! Workloads of the `virtiofsd-load` benchmark client.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::fuse::{op, Reader, ROOT_ID};
use crate::session::{Request, Session, Slot, Ticket};
use crate::virtq::Buf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Lookup,
    Create,
    Readdirplus,
    Randread,
    Randwrite,
    Seqread,
    Seqwrite,
}

impl Workload {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "lookup" => Workload::Lookup,
            "create" => Workload::Create,
            "readdirplus" => Workload::Readdirplus,
            "randread" => Workload::Randread,
            "randwrite" => Workload::Randwrite,
            "seqread" => Workload::Seqread,
            "seqwrite" => Workload::Seqwrite,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Lookup => "lookup",
            Workload::Create => "create",
            Workload::Readdirplus => "readdirplus",
            Workload::Randread => "randread",
            Workload::Randwrite => "randwrite",
            Workload::Seqread => "seqread",
            Workload::Seqwrite => "seqwrite",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Params {
    pub workload: Workload,
    pub depth: usize,
    pub seconds: f64,
    pub max_ops: Option<u64>,
    /// Measurement-free time before counting starts.
    pub warmup: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub workload: &'static str,
    pub ops: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Stats {
    fn from(workload: Workload, lat_us: &mut [f64], bytes: u64, elapsed: Duration) -> Self {
        lat_us.sort_by(|a, b| a.total_cmp(b));
        Stats {
            workload: workload.name(),
            ops: lat_us.len() as u64,
            bytes,
            seconds: elapsed.as_secs_f64(),
            p50_us: percentile(lat_us, 50.0),
            p99_us: percentile(lat_us, 99.0),
        }
    }

    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// MiB (2^20 bytes) per second.
    pub fn mb_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / 1048576.0 / self.seconds
        } else {
            0.0
        }
    }

    pub fn json(&self) -> String {
        format!(
            "{{\"workload\":\"{}\",\"ops\":{},\"bytes\":{},\"seconds\":{:.3},\"opsPerSec\":{:.1},\"mbPerSec\":{:.1},\"latencyUs\":{{\"p50\":{:.1},\"p99\":{:.1}}}}}",
            self.workload,
            self.ops,
            self.bytes,
            self.seconds,
            self.ops_per_sec(),
            self.mb_per_sec(),
            self.p50_us,
            self.p99_us
        )
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ops in {:.2} s = {:.1} ops/s, {:.1} MiB/s, latency p50 {:.1} us, p99 {:.1} us",
            self.workload,
            self.ops,
            self.seconds,
            self.ops_per_sec(),
            self.mb_per_sec(),
            self.p50_us,
            self.p99_us
        )
    }
}

/// Nearest-rank percentile of sorted samples (0 when there are none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Small deterministic PRNG (xorshift64*) so runs are repeatable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Decides when the warm-up and the measured run end.
struct Clock {
    start: Instant,
    warm_until: Instant,
    measured_from: Option<Instant>,
    seconds: f64,
    max_ops: Option<u64>,
}

impl Clock {
    fn new(p: &Params) -> Self {
        let now = Instant::now();
        Clock {
            start: now,
            warm_until: now + p.warmup,
            measured_from: None,
            seconds: p.seconds,
            max_ops: p.max_ops,
        }
    }

    /// Whether an op completed now is measured; starts the measured window on the first one.
    fn measuring(&mut self) -> bool {
        if self.measured_from.is_some() {
            return true;
        }
        if Instant::now() >= self.warm_until {
            self.measured_from = Some(Instant::now());
            return true;
        }
        false
    }

    fn done(&self, ops: u64) -> bool {
        if self.max_ops.is_some_and(|m| ops >= m) {
            return true;
        }
        match self.measured_from {
            Some(t) => t.elapsed().as_secs_f64() >= self.seconds,
            None => {
                self.start.elapsed().as_secs_f64()
                    >= self.seconds + self.warm_until.duration_since(self.start).as_secs_f64()
            }
        }
    }

    fn elapsed(&self) -> Duration {
        self.measured_from.map_or(Duration::ZERO, |t| t.elapsed())
    }
}

fn lookup_path(s: &mut Session, path: &[&[u8]]) -> Result<u64> {
    let mut node = ROOT_ID;
    for name in path {
        node = s.lookup(node, name)?.nodeid;
    }
    Ok(node)
}

/// Runs a workload on a session that has already done INIT.
pub fn run(s: &mut Session, p: &Params) -> Result<Stats> {
    match p.workload {
        Workload::Lookup => run_lookup(s, p),
        Workload::Create => run_create(s, p),
        Workload::Readdirplus => run_readdirplus(s, p),
        Workload::Randread | Workload::Randwrite | Workload::Seqread | Workload::Seqwrite => {
            run_io(s, p)
        }
    }
}

fn run_lookup(s: &mut Session, p: &Params) -> Result<Stats> {
    let meta = lookup_path(s, &[b"meta"])?;
    let mut counts: HashMap<u64, u64> = HashMap::new();
    let mut lat = Vec::new();
    let mut clock = Clock::new(p);
    let mut i = 0u64;
    while !clock.done(lat.len() as u64) {
        let name = format!("f{}", i % 1000);
        let t0 = Instant::now();
        let e = s.lookup(meta, name.as_bytes())?;
        s.getattr(e.nodeid)?;
        let us = t0.elapsed().as_secs_f64() * 1e6;
        *counts.entry(e.nodeid).or_default() += 1;
        if clock.measuring() {
            lat.push(us);
        }
        i += 1;
    }
    let elapsed = clock.elapsed();
    counts.insert(meta, counts.get(&meta).copied().unwrap_or(0) + 1);
    s.batch_forget(&counts.into_iter().collect::<Vec<_>>())?;
    Ok(Stats::from(p.workload, &mut lat, 0, elapsed))
}

fn run_create(s: &mut Session, p: &Params) -> Result<Stats> {
    let dir = lookup_path(s, &[b"scratch"])?;
    let mut lat = Vec::new();
    let mut clock = Clock::new(p);
    let mut i = 0u64;
    let flags = (libc::O_CREAT | libc::O_EXCL | libc::O_RDWR) as u32;
    while !clock.done(lat.len() as u64) {
        let name = format!("c{i}");
        let t0 = Instant::now();
        let (e, o) = s.create(dir, name.as_bytes(), flags, libc::S_IFREG | 0o644, 0)?;
        s.release(e.nodeid, o.fh)?;
        s.unlink(dir, name.as_bytes())?;
        let us = t0.elapsed().as_secs_f64() * 1e6;
        // Forgetting is the guest's business after the op, so it is not timed.
        s.forget(e.nodeid, 1)?;
        if clock.measuring() {
            lat.push(us);
        }
        i += 1;
    }
    let elapsed = clock.elapsed();
    s.forget(dir, 1)?;
    Ok(Stats::from(p.workload, &mut lat, 0, elapsed))
}

fn run_readdirplus(s: &mut Session, p: &Params) -> Result<Stats> {
    let dir = lookup_path(s, &[b"dir10k"])?;
    let mut lat = Vec::new();
    let mut clock = Clock::new(p);
    let mut bytes = 0u64;
    while !clock.done(lat.len() as u64) {
        let t0 = Instant::now();
        let o = s.opendir(dir)?;
        let entries = s.list_dir(dir, o.fh, true, 4096)?;
        s.releasedir(dir, o.fh)?;
        let us = t0.elapsed().as_secs_f64() * 1e6;
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for e in &entries {
            if let Some(eo) = e.entry.filter(|eo| eo.nodeid != 0) {
                *counts.entry(eo.nodeid).or_default() += 1;
            }
        }
        s.batch_forget(&counts.into_iter().collect::<Vec<_>>())?;
        if clock.measuring() {
            lat.push(us);
            bytes += entries.len() as u64;
        }
    }
    let elapsed = clock.elapsed();
    s.forget(dir, 1)?;
    // `bytes` stays 0 for metadata workloads; entries counted above only guard against empty listings.
    if bytes == 0 && !lat.is_empty() {
        return Err(Error::BadReply("dir10k listing returned no entries".into()));
    }
    Ok(Stats::from(p.workload, &mut lat, 0, elapsed))
}

struct InFlight {
    ticket: Ticket,
    slot: usize,
    started: Instant,
    len: u32,
}

fn run_io(s: &mut Session, p: &Params) -> Result<Stats> {
    let (write, random) = match p.workload {
        Workload::Randread => (false, true),
        Workload::Randwrite => (true, true),
        Workload::Seqread => (false, false),
        _ => (true, false),
    };
    let (size, depth): (u32, usize) = if random {
        (4096, p.depth.max(1))
    } else {
        (1 << 20, 1)
    };
    let node = lookup_path(s, &[b"data.bin"])?;
    let file_size = s.getattr(node)?.attr.size;
    if file_size < u64::from(size) {
        return Err(Error::Unsupported(format!(
            "data.bin is {file_size} bytes, need at least {size}"
        )));
    }
    let flags = if write { libc::O_RDWR } else { libc::O_RDONLY } as u32;
    let fh = s.open(node, flags)?.fh;
    if depth > usize::from(s.queue(1)?.size()) / 4 {
        return Err(Error::Unsupported(format!(
            "depth {depth} too large for the queue size"
        )));
    }
    let mut slots: Vec<(Slot, u64)> = Vec::new();
    for _ in 0..depth {
        let slot = s.alloc_slot(256, 256)?;
        let data = s.mem_mut().alloc(u64::from(size), 4096)?;
        s.mem().fill(data, size as usize, 0xa5)?;
        slots.push((slot, data));
    }
    let nq = s.request_queues();
    let blocks = file_size / u64::from(size);
    let mut rng = Rng::new(0x5eed_1234);
    let mut seq = 0u64;
    let mut next_offset = move || {
        let b = if random {
            rng.next_u64() % blocks
        } else {
            let b = seq % blocks;
            seq += 1;
            b
        };
        b * u64::from(size)
    };
    let mut inflight: HashMap<(usize, u16), InFlight> = HashMap::new();
    let submit = |s: &mut Session,
                  inflight: &mut HashMap<(usize, u16), InFlight>,
                  slot_i: usize,
                  n: u64,
                  offset: u64|
     -> Result<()> {
        let (slot, data) = slots[slot_i];
        let q = 1 + (n as usize % nq);
        let args = crate::ops::read_args(fh, offset, size);
        let mut req = Request::new(if write { op::WRITE } else { op::READ }, node, &args);
        if write {
            req.payload = Some(Buf::readable(data, size));
        } else {
            req.reply_data = Some(Buf::writable(data, size));
        }
        let ticket = s.submit(q, slot, &req)?;
        inflight.insert(
            (q, ticket.head),
            InFlight {
                ticket,
                slot: slot_i,
                started: Instant::now(),
                len: size,
            },
        );
        Ok(())
    };
    let mut n = 0u64;
    for i in 0..depth {
        submit(s, &mut inflight, i, n, next_offset())?;
        n += 1;
    }
    let mut clock = Clock::new(p);
    let mut lat = Vec::new();
    let mut bytes = 0u64;
    let mut stopping = false;
    while !inflight.is_empty() {
        let (q, used) = s.wait_any(s.timeout)?;
        let f = inflight.remove(&(q, used.id)).ok_or_else(|| {
            Error::BadReply(format!(
                "completion for unknown head {} on queue {q}",
                used.id
            ))
        })?;
        let us = f.started.elapsed().as_secs_f64() * 1e6;
        let reply = s.decode(&f.ticket, used, write)?;
        if reply.header.error != 0 {
            return Err(Error::Fuse {
                opcode: f.ticket.opcode,
                errno: -reply.header.error,
            });
        }
        let done = if write {
            u64::from(Reader::new(&reply.body).u32()?)
        } else {
            u64::from(used.len) - 16
        };
        if done != u64::from(f.len) {
            return Err(Error::BadReply(format!(
                "short {}: {done} of {} bytes",
                if write { "write" } else { "read" },
                f.len
            )));
        }
        if clock.measuring() && !stopping {
            lat.push(us);
            bytes += done;
        }
        stopping = stopping || clock.done(lat.len() as u64);
        if !stopping {
            submit(s, &mut inflight, f.slot, n, next_offset())?;
            n += 1;
        }
    }
    let elapsed = clock.elapsed();
    s.release(node, fh)?;
    s.forget(node, 1)?;
    Ok(Stats::from(p.workload, &mut lat, bytes, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
        assert_eq!(percentile(&[7.0], 1.0), 7.0);
    }

    #[test]
    fn json_has_the_contracted_shape() {
        let s = Stats {
            workload: "randread",
            ops: 123,
            bytes: 503808,
            seconds: 5.0,
            p50_us: 12.3,
            p99_us: 45.6,
        };
        assert_eq!(
            s.json(),
            "{\"workload\":\"randread\",\"ops\":123,\"bytes\":503808,\"seconds\":5.000,\"opsPerSec\":24.6,\"mbPerSec\":0.1,\"latencyUs\":{\"p50\":12.3,\"p99\":45.6}}"
        );
        assert!(Workload::parse("seqwrite").is_some() && Workload::parse("nope").is_none());
    }
}
