//! Workloads of the `virtiofsd-load` benchmark client.

mod pipeline;
mod walk;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::fuse::ROOT_ID;
use crate::session::Session;

pub use walk::{lookup_tree, TreeLookups};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Lookup,
    Getattr,
    Create,
    Readdirplus,
    Randread,
    Randwrite,
    Seqread,
    Seqwrite,
    Walk,
}

impl Workload {
    pub const ALL: [Workload; 9] = [
        Workload::Lookup,
        Workload::Getattr,
        Workload::Create,
        Workload::Readdirplus,
        Workload::Randread,
        Workload::Randwrite,
        Workload::Seqread,
        Workload::Seqwrite,
        Workload::Walk,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Lookup => "lookup",
            Workload::Getattr => "getattr",
            Workload::Create => "create",
            Workload::Readdirplus => "readdirplus",
            Workload::Randread => "randread",
            Workload::Randwrite => "randwrite",
            Workload::Seqread => "seqread",
            Workload::Seqwrite => "seqwrite",
            Workload::Walk => "walk",
        }
    }

    /// Whether more than one operation can be in flight (`--depth` above 1).
    pub fn pipelined(self) -> bool {
        matches!(
            self,
            Workload::Lookup | Workload::Getattr | Workload::Randread | Workload::Randwrite
        )
    }
}

/// Files of the `meta/` fixture that the lookup and getattr workloads cycle through.
pub const META_FILES: u64 = 1000;

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
    /// Request queues the operations were spread over (absent for the native runs).
    pub queues: Option<usize>,
    /// Files stat'ed by the measured operations (the walk only).
    pub files: Option<u64>,
}

impl Stats {
    pub fn from(workload: Workload, lat_us: &mut [f64], bytes: u64, elapsed: Duration) -> Self {
        lat_us.sort_by(|a, b| a.total_cmp(b));
        Stats {
            workload: workload.name(),
            ops: lat_us.len() as u64,
            bytes,
            seconds: elapsed.as_secs_f64(),
            p50_us: percentile(lat_us, 50.0),
            p99_us: percentile(lat_us, 99.0),
            queues: None,
            files: None,
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
        let mut out = format!(
            "{{\"workload\":\"{}\",\"ops\":{},\"bytes\":{},\"seconds\":{:.3},\"opsPerSec\":{:.1},\"mbPerSec\":{:.1},\"latencyUs\":{{\"p50\":{:.1},\"p99\":{:.1}}}",
            self.workload,
            self.ops,
            self.bytes,
            self.seconds,
            self.ops_per_sec(),
            self.mb_per_sec(),
            self.p50_us,
            self.p99_us
        );
        if let Some(q) = self.queues {
            out.push_str(&format!(",\"queues\":{q}"));
        }
        if let Some(f) = self.files {
            let per_sec = if self.seconds > 0.0 {
                f as f64 / self.seconds
            } else {
                0.0
            };
            out.push_str(&format!(",\"files\":{f},\"filesPerSec\":{per_sec:.1}"));
        }
        out.push('}');
        out
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
        )?;
        if let Some(files) = self.files {
            write!(f, ", {files} files stat'ed")?;
        }
        Ok(())
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
    if p.depth > 1 && !p.workload.pipelined() {
        return Err(Error::Unsupported(format!(
            "--depth {} with {}: this workload runs one operation at a time",
            p.depth,
            p.workload.name()
        )));
    }
    let mut stats = match p.workload {
        Workload::Lookup | Workload::Getattr => pipeline::run_meta(s, p),
        Workload::Create => run_create(s, p),
        Workload::Readdirplus => run_readdirplus(s, p),
        Workload::Randread | Workload::Randwrite | Workload::Seqread | Workload::Seqwrite => {
            pipeline::run_io(s, p)
        }
        Workload::Walk => walk::run(s, p),
    }?;
    stats.queues = Some(s.request_queues());
    Ok(stats)
}

fn run_create(s: &mut Session, p: &Params) -> Result<Stats> {
    let dir = lookup_path(s, &[b"scratch"])?;
    let mut lat = Vec::new();
    let mut clock = Clock::new(p);
    let mut i = 0u64;
    let flags = (libc::O_CREAT | libc::O_EXCL | libc::O_RDWR) as u32;
    while !clock.done(lat.len() as u64) {
        // The pid keeps two tools on one fixture (parallel tests) apart.
        let name = format!("c{}-{i}", std::process::id());
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
    let mut listed = 0u64;
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
            listed += entries.len() as u64;
        }
    }
    let elapsed = clock.elapsed();
    s.forget(dir, 1)?;
    if listed == 0 && !lat.is_empty() {
        return Err(Error::BadReply("dir10k listing returned no entries".into()));
    }
    Ok(Stats::from(p.workload, &mut lat, 0, elapsed))
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
        let mut s = Stats {
            workload: "randread",
            ops: 123,
            bytes: 503808,
            seconds: 5.0,
            p50_us: 12.3,
            p99_us: 45.6,
            queues: None,
            files: None,
        };
        assert_eq!(
            s.json(),
            "{\"workload\":\"randread\",\"ops\":123,\"bytes\":503808,\"seconds\":5.000,\"opsPerSec\":24.6,\"mbPerSec\":0.1,\"latencyUs\":{\"p50\":12.3,\"p99\":45.6}}"
        );
        s.queues = Some(2);
        s.files = Some(1000);
        assert!(s
            .json()
            .ends_with("\"p99\":45.6},\"queues\":2,\"files\":1000,\"filesPerSec\":200.0}"));
    }

    #[test]
    fn workload_names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(Workload::parse(w.name()), Some(w));
        }
        assert_eq!(Workload::parse("nope"), None);
        assert!(Workload::Getattr.pipelined() && !Workload::Walk.pipelined());
    }
}
