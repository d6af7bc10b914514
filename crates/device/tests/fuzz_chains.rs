//! Property-based fuzzing of descriptor chain splitting: random descriptor tables (direct and
//! indirect, looping, overlapping, out of bounds, across a hole in guest memory) walked by
//! virtio-queue's own chain iterator and fed to `split_chain`. Properties: no panic; a chain is
//! either rejected or split into a reader whose bytes are exactly the readable descriptors'
//! guest memory in order, and a writer that takes exactly the writable room and no more.
//!
//! Deterministic (seeded xorshift). `FUZZ_SECS` or `FUZZ_ITERS`, and `FUZZ_SEED`, select the
//! run; the default is a short run for `cargo test`.

use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT};
use virtiofsd_device::split_chain;
use virtiofsd_fuse::io::{ReplyWriter, RequestReader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const QUEUE_SIZE: u16 = 16;
/// Region 1: [0, 64 KiB); hole: [64 KiB, 128 KiB); region 2: [128 KiB, 192 KiB).
const R1: (u64, usize) = (0, 0x10000);
const R2: (u64, usize) = (0x20000, 0x10000);
/// Where random indirect tables live (after the rings of the mock queue).
const TABLES: u64 = 0x2000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn run_budget() -> (Option<u64>, Instant, u64) {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let iters = env("FUZZ_ITERS").map(|v| v.parse().expect("FUZZ_ITERS must be a number"));
    let secs: f64 = env("FUZZ_SECS").map_or(2.0, |v| v.parse().expect("FUZZ_SECS number"));
    let seed = env("FUZZ_SEED").map_or(0xc4a1_75ee, |v| v.parse().expect("FUZZ_SEED number"));
    (
        iters,
        Instant::now() + Duration::from_secs_f64(secs),
        seed | 1,
    )
}

fn addr(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 => rng.below(0x1000),              // the rings themselves
        1..=3 => 0x3000 + rng.below(0xd000), // region 1 data
        4 => R2.0 + rng.below(R2.1 as u64),  // region 2
        5 => 0x10000 - rng.below(0x100),     // straddling the hole
        6 => 0x10000 + rng.below(0x10000),   // inside the hole
        _ => u64::MAX - rng.below(0x1000),   // wrapping
    }
}

fn len(rng: &mut Rng) -> u32 {
    match rng.below(6) {
        0 => 0,
        1..=3 => rng.below(0x800) as u32,
        4 => rng.below(0x20000) as u32,
        _ => u32::MAX - rng.below(16) as u32,
    }
}

fn flags(rng: &mut Rng) -> u16 {
    let mut f = 0u16;
    if rng.below(3) != 0 {
        f |= VRING_DESC_F_NEXT as u16;
    }
    if rng.below(3) == 0 {
        f |= VRING_DESC_F_WRITE as u16;
    }
    if rng.below(8) == 0 {
        f |= VRING_DESC_F_INDIRECT as u16;
    }
    if rng.below(16) == 0 {
        f |= 1 << rng.below(16);
    }
    f
}

fn random_desc(rng: &mut Rng, n: u16) -> Descriptor {
    let mut d = Descriptor::new(
        addr(rng),
        len(rng),
        flags(rng),
        rng.below(u64::from(n) + 2) as u16,
    );
    if d.flags() & VRING_DESC_F_INDIRECT as u16 != 0 && rng.below(2) == 0 {
        // Point indirect descriptors at a plausible table most of the time.
        let entries = 1 + rng.below(8);
        let l = if rng.below(4) == 0 {
            len(rng)
        } else {
            (entries * 16) as u32
        };
        d = Descriptor::new(TABLES + rng.below(4) * 0x100, l, d.flags(), d.next());
    }
    d
}

/// The guest memory bytes a descriptor covers (only called for chains split_chain accepted,
/// so every range must be backed).
fn bytes_of(mem: &GuestMemoryMmap, d: &Descriptor) -> Vec<u8> {
    let mut v = vec![0u8; d.len() as usize];
    mem.read_slice(&mut v, d.addr())
        .unwrap_or_else(|e| panic!("accepted descriptor {d:?} is not backed: {e}"));
    v
}

fn one(rng: &mut Rng, mem: &GuestMemoryMmap) -> Result<(), String> {
    let q = MockSplitQueue::new(mem, QUEUE_SIZE);
    for i in 0..QUEUE_SIZE {
        let d = random_desc(rng, QUEUE_SIZE);
        q.desc_table().store(i, RawDescriptor::from(d)).unwrap();
    }
    // Random indirect tables (16-byte little-endian descriptors).
    for t in 0..4u64 {
        for e in 0..16u64 {
            let d = random_desc(rng, 16);
            let raw = RawDescriptor::from(d);
            mem.write_obj(raw, GuestAddress(TABLES + t * 0x100 + e * 16))
                .unwrap();
        }
    }
    // Random payload bytes so reader content can be compared.
    let fill: Vec<u8> = (0..0x400).map(|_| rng.next() as u8).collect();
    mem.write_slice(&fill, GuestAddress(0x3000 + rng.below(0xc000)))
        .unwrap();

    let head = rng.below(u64::from(QUEUE_SIZE) + 2) as u16;
    q.avail().ring().ref_at(0).unwrap().store(u16::to_le(head));
    q.avail().idx().store(u16::to_le(1));
    let mut queue: Queue = q.create_queue().unwrap();
    let Some(chain) = queue.iter(mem).map_err(|e| e.to_string())?.next() else {
        return Ok(());
    };
    let descs: Vec<Descriptor> = chain.clone().collect();
    let (mut reader, mut writer) = match split_chain(mem, chain) {
        Ok(parts) => parts,
        Err(_) => return Ok(()),
    };
    let readable: Vec<&Descriptor> = descs.iter().filter(|d| !d.is_write_only()).collect();
    let writable: Vec<&Descriptor> = descs.iter().filter(|d| d.is_write_only()).collect();
    let want: Vec<u8> = readable.iter().flat_map(|d| bytes_of(mem, d)).collect();
    let room: usize = writable.iter().map(|d| d.len() as usize).sum();
    if reader.available_bytes() != want.len() {
        return Err(format!(
            "reader has {} bytes, readable descriptors {}",
            reader.available_bytes(),
            want.len()
        ));
    }
    if writer.available_bytes() != room {
        return Err(format!(
            "writer room {} vs {room}",
            writer.available_bytes()
        ));
    }
    let mut got = vec![0u8; want.len()];
    reader
        .read_exact(&mut got)
        .map_err(|e| format!("read_exact: {e}"))?;
    if got != want {
        return Err("reader bytes differ from the readable descriptors' memory".into());
    }
    if reader.read_exact(&mut [0u8; 1]).is_ok() {
        return Err("reader gave a byte past its end".into());
    }
    // Cap the write so a chain of several huge descriptors stays cheap.
    let n = room.min(0x20000);
    let pattern: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    writer
        .write_all(&pattern)
        .map_err(|e| format!("write_all: {e}"))?;
    if writer.bytes_written() != n || writer.available_bytes() != room - n {
        return Err("writer accounting is off".into());
    }
    if n == room && writer.write_all(&[1]).is_ok() {
        return Err("writer accepted a byte past its room".into());
    }
    Ok(())
}

#[test]
fn fuzz_random_descriptor_tables() {
    let (iters, until, seed) = run_budget();
    let mem: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(R1.0), R1.1), (GuestAddress(R2.0), R2.1)])
            .unwrap();
    let mut rng = Rng(seed);
    let mut done = 0u64;
    while iters.map_or(Instant::now() < until, |n| done < n) {
        let state = rng.0;
        if let Err(e) = one(&mut rng, &mem) {
            panic!("iteration {done} (rng state {state:#x}, seed {seed}): {e}");
        }
        done += 1;
    }
    eprintln!("fuzz_chains: {done} chains");
    assert!(done > 100, "only {done} iterations ran");
}

/// The generator must produce chains split_chain accepts, or the fuzzing proves little.
#[test]
fn generator_reaches_accepted_chains() {
    let mem: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(R1.0), R1.1), (GuestAddress(R2.0), R2.1)])
            .unwrap();
    let mut rng = Rng(99);
    let mut accepted = 0;
    for _ in 0..3000 {
        let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
        for i in 0..QUEUE_SIZE {
            let d = random_desc(&mut rng, QUEUE_SIZE);
            q.desc_table().store(i, RawDescriptor::from(d)).unwrap();
        }
        q.avail().ring().ref_at(0).unwrap().store(0);
        q.avail().idx().store(1);
        let mut queue: Queue = q.create_queue().unwrap();
        if let Some(chain) = queue.iter(&mem).unwrap().next() {
            accepted += usize::from(split_chain(&mem, chain).is_ok());
        }
    }
    assert!(
        accepted > 30,
        "only {accepted} of 3000 random chains were accepted"
    );
}
