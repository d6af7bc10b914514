//! A split virtqueue (virtio 1.x, section 2.7) laid out in guest memory, driven from the driver side.

use std::sync::atomic::{fence, Ordering};

use crate::error::{Error, Result};
use crate::memory::GuestMemory;

pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;

/// Largest indirect table this frontend builds for well-formed requests.
pub const MAX_INDIRECT: u16 = 32;

/// One buffer of a chain: `writable` buffers are for the device to fill (the reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

impl Buf {
    pub fn readable(addr: u64, len: u32) -> Self {
        Buf {
            addr,
            len,
            writable: false,
        }
    }
    pub fn writable(addr: u64, len: u32) -> Self {
        Buf {
            addr,
            len,
            writable: true,
        }
    }
}

/// A descriptor exactly as it sits in a table, for hostile input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl RawDesc {
    fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// A completion taken from the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub id: u16,
    pub len: u32,
}

/// Guest addresses of a queue's three parts, as SET_VRING_ADDR needs them.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// Room for one indirect table of MAX_INDIRECT entries per descriptor head.
    pub indirect: u64,
}

impl Layout {
    pub fn alloc(mem: &mut GuestMemory, size: u16) -> Result<Self> {
        if size == 0 || !size.is_power_of_two() {
            return Err(Error::Memory(format!(
                "queue size {size} is not a power of two"
            )));
        }
        let n = u64::from(size);
        Ok(Layout {
            size,
            desc: mem.alloc(16 * n, 4096)?,
            avail: mem.alloc(6 + 2 * n, 4096)?,
            used: mem.alloc(6 + 8 * n, 4096)?,
            indirect: mem.alloc(16 * n * u64::from(MAX_INDIRECT), 4096)?,
        })
    }
}

/// Driver-side state of one split virtqueue.
pub struct VirtQueue {
    pub layout: Layout,
    free: Vec<u16>,
    /// Descriptors of each in-flight chain, by head index.
    in_flight: Vec<Option<Vec<u16>>>,
    avail_idx: u16,
    last_used: u16,
    event_idx: bool,
}

impl VirtQueue {
    pub fn new(layout: Layout, event_idx: bool) -> Self {
        VirtQueue {
            free: (0..layout.size).rev().collect(),
            in_flight: vec![None; usize::from(layout.size)],
            avail_idx: 0,
            last_used: 0,
            event_idx,
            layout,
        }
    }

    /// Where the rings and tables of this queue are in guest memory.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn size(&self) -> u16 {
        self.layout.size
    }

    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().filter(|c| c.is_some()).count()
    }

    fn desc_addr(&self, idx: u16) -> u64 {
        self.layout.desc + 16 * u64::from(idx)
    }

    /// Takes `n` free descriptor slots for the caller to fill (see `write_desc` and `publish`).
    pub fn reserve(&mut self, n: usize) -> Result<Vec<u16>> {
        if n == 0 || n > self.free.len() {
            return Err(Error::QueueFull { queue: usize::MAX });
        }
        let at = self.free.len() - n;
        Ok(self.free.split_off(at).into_iter().rev().collect())
    }

    /// Writes an arbitrary descriptor into the table at `idx`; any `idx` below the size is allowed.
    pub fn write_desc(&self, mem: &GuestMemory, idx: u16, d: RawDesc) -> Result<()> {
        if idx >= self.layout.size {
            return Err(Error::Memory(format!("descriptor {idx} beyond queue size")));
        }
        mem.write(self.desc_addr(idx), &d.encode())
    }

    /// Makes the chain starting at `head` available; `owned` are the slots to free on completion.
    pub fn publish(&mut self, mem: &GuestMemory, head: u16, owned: Vec<u16>) -> Result<()> {
        let n = self.layout.size;
        let slot = self.layout.avail + 4 + 2 * u64::from(self.avail_idx % n);
        mem.write_u16(slot, head)?;
        if let Some(entry) = self.in_flight.get_mut(usize::from(head)) {
            if let Some(prev) = entry.take() {
                self.free.extend(prev);
            }
            *entry = Some(owned);
        }
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // The ring entry and descriptors must be visible before the index that publishes them.
        fence(Ordering::SeqCst);
        mem.store_u16(self.layout.avail + 2, self.avail_idx)
    }

    /// Adds a well-formed chain of direct descriptors: readable buffers first, then writable ones.
    pub fn add_chain(&mut self, mem: &GuestMemory, bufs: &[Buf]) -> Result<u16> {
        let idx = self.reserve(bufs.len())?;
        for (i, b) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let mut flags = if b.writable { VIRTQ_DESC_F_WRITE } else { 0 };
            let next = if last { 0 } else { idx[i + 1] };
            if !last {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            self.write_desc(
                mem,
                idx[i],
                RawDesc {
                    addr: b.addr,
                    len: b.len,
                    flags,
                    next,
                },
            )?;
        }
        let head = idx[0];
        self.publish(mem, head, idx)?;
        Ok(head)
    }

    /// Adds the chain as one INDIRECT descriptor pointing at a table of `bufs`.
    pub fn add_indirect(&mut self, mem: &GuestMemory, bufs: &[Buf]) -> Result<u16> {
        if bufs.is_empty() || bufs.len() > usize::from(MAX_INDIRECT) {
            return Err(Error::Memory(format!(
                "{} buffers do not fit an indirect table",
                bufs.len()
            )));
        }
        let raw: Vec<RawDesc> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let last = i + 1 == bufs.len();
                let mut flags = if b.writable { VIRTQ_DESC_F_WRITE } else { 0 };
                if !last {
                    flags |= VIRTQ_DESC_F_NEXT;
                }
                RawDesc {
                    addr: b.addr,
                    len: b.len,
                    flags,
                    next: if last { 0 } else { i as u16 + 1 },
                }
            })
            .collect();
        self.add_indirect_raw(mem, &raw)
    }

    /// Adds one INDIRECT descriptor whose table holds exactly `table` (which may be hostile).
    pub fn add_indirect_raw(&mut self, mem: &GuestMemory, table: &[RawDesc]) -> Result<u16> {
        if table.len() > usize::from(MAX_INDIRECT) {
            return Err(Error::Memory("indirect table too long".into()));
        }
        let idx = self.reserve(1)?;
        let head = idx[0];
        let base = self.indirect_table(head);
        for (i, d) in table.iter().enumerate() {
            mem.write(base + 16 * i as u64, &d.encode())?;
        }
        let len = (16 * table.len()) as u32;
        let d = RawDesc {
            addr: base,
            len,
            flags: VIRTQ_DESC_F_INDIRECT,
            next: 0,
        };
        self.write_desc(mem, head, d)?;
        self.publish(mem, head, idx)?;
        Ok(head)
    }

    /// Guest address of the indirect table reserved for descriptor `head`.
    pub fn indirect_table(&self, head: u16) -> u64 {
        self.layout.indirect + 16 * u64::from(MAX_INDIRECT) * u64::from(head)
    }

    /// Takes the next completion from the used ring, if there is one.
    pub fn pop_used(&mut self, mem: &GuestMemory) -> Result<Option<Used>> {
        let used_idx = mem.load_u16(self.layout.used + 2)?;
        if used_idx == self.last_used {
            return Ok(None);
        }
        fence(Ordering::SeqCst);
        let n = self.layout.size;
        let elem = self.layout.used + 4 + 8 * u64::from(self.last_used % n);
        let id = mem.read_u32(elem)?;
        let len = mem.read_u32(elem + 4)?;
        self.last_used = self.last_used.wrapping_add(1);
        if self.event_idx {
            // used_event: ask to be notified as soon as the next element is added.
            mem.store_u16(self.layout.avail + 4 + 2 * u64::from(n), self.last_used)?;
            fence(Ordering::SeqCst);
        }
        let chain = usize::try_from(id)
            .ok()
            .and_then(|i| self.in_flight.get_mut(i))
            .and_then(Option::take)
            .ok_or_else(|| Error::BadReply(format!("used ring returned unknown head {id}")))?;
        self.free.extend(chain);
        Ok(Some(Used { id: id as u16, len }))
    }

    /// Whether the used ring has completions not yet taken.
    pub fn has_used(&self, mem: &GuestMemory) -> Result<bool> {
        Ok(mem.load_u16(self.layout.used + 2)? != self.last_used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_is_linked_and_published() {
        let mut mem = GuestMemory::new(1 << 20).unwrap();
        let layout = Layout::alloc(&mut mem, 8).unwrap();
        let mut q = VirtQueue::new(layout, false);
        let head = q
            .add_chain(&mem, &[Buf::readable(100, 40), Buf::writable(200, 16)])
            .unwrap();
        assert_eq!(mem.load_u16(layout.avail + 2).unwrap(), 1);
        let d0 = mem
            .read_vec(layout.desc + 16 * u64::from(head), 16)
            .unwrap();
        assert_eq!(u64::from_le_bytes(d0[0..8].try_into().unwrap()), 100);
        assert_eq!(u16::from_le_bytes([d0[12], d0[13]]), VIRTQ_DESC_F_NEXT);
        let next = u16::from_le_bytes([d0[14], d0[15]]);
        let d1 = mem
            .read_vec(layout.desc + 16 * u64::from(next), 16)
            .unwrap();
        assert_eq!(u16::from_le_bytes([d1[12], d1[13]]), VIRTQ_DESC_F_WRITE);
        assert_eq!(q.free_descriptors(), 6);

        // Play the device: complete the chain.
        mem.write_u32(layout.used + 4, u32::from(head)).unwrap();
        mem.write_u32(layout.used + 8, 16).unwrap();
        mem.store_u16(layout.used + 2, 1).unwrap();
        assert_eq!(q.pop_used(&mem).unwrap(), Some(Used { id: head, len: 16 }));
        assert_eq!(q.free_descriptors(), 8);
        assert_eq!(q.pop_used(&mem).unwrap(), None);
    }

    #[test]
    fn full_queue_and_unknown_head_are_errors() {
        let mut mem = GuestMemory::new(1 << 20).unwrap();
        let layout = Layout::alloc(&mut mem, 2).unwrap();
        let mut q = VirtQueue::new(layout, false);
        assert!(q.add_chain(&mem, &[Buf::readable(0, 1); 3]).is_err());
        mem.write_u32(layout.used + 4, 1).unwrap();
        mem.store_u16(layout.used + 2, 1).unwrap();
        assert!(q.pop_used(&mem).is_err());
        assert!(Layout::alloc(&mut mem, 3).is_err());
    }
}
