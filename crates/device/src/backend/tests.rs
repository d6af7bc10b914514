use std::fs::File;
use std::io::Read;
use std::os::fd::FromRawFd;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtiofsd_fuse::io::{ReplyWriter, RequestReader};
use vm_memory::{Address, Bytes, GuestAddress};

use super::*;

const QUEUE_SIZE: u16 = 16;

/// Replies with the request bytes upper-cased, so a test can tell the reply came from it.
struct UpperEcho;

impl RequestHandler for UpperEcho {
    fn handle<R: RequestReader, W: ReplyWriter>(&self, r: &mut R, mut w: W) -> io::Result<usize> {
        let mut buf = vec![0u8; r.available_bytes()];
        r.read_exact(&mut buf)?;
        buf.make_ascii_uppercase();
        w.write_all(&buf)?;
        Ok(w.bytes_written())
    }
}

/// Fails every request.
struct Reject;

impl RequestHandler for Reject {
    fn handle<R: RequestReader, W: ReplyWriter>(&self, _r: &mut R, _w: W) -> io::Result<usize> {
        Err(io::Error::other("rejected"))
    }
}

/// Claims more reply bytes than the chain has room for.
struct Liar;

impl RequestHandler for Liar {
    fn handle<R: RequestReader, W: ReplyWriter>(&self, _r: &mut R, _w: W) -> io::Result<usize> {
        Ok(1 << 20)
    }
}

fn guest_memory() -> GuestMem {
    GuestMemoryAtomic::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap())
}

fn eventfd() -> File {
    // SAFETY: plain eventfd creation with valid flags.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd failed: {}", io::Error::last_os_error());
    // SAFETY: `fd` is freshly created and owned by nobody else.
    unsafe { File::from_raw_fd(fd) }
}

fn signalled(call: &mut File) -> bool {
    let mut buf = [0u8; 8];
    call.read(&mut buf).is_ok()
}

struct Fixture {
    mem: GuestMem,
    vring: Vring,
    call: File,
    used: GuestAddress,
    avail: GuestAddress,
}

/// A vring on a mock driver queue with one chain per request: `requests[i]` goes in a readable
/// descriptor at 0x1000 + i * 0x100, and a 16-byte writable descriptor at 0x4000 + i * 0x100
/// takes the reply. `None` makes the writable descriptor point outside guest memory.
fn fixture(requests: &[Option<&[u8]>], event_idx: bool) -> Fixture {
    let mem = guest_memory();
    let m = mem.memory();
    let queue = MockSplitQueue::new(&*m, QUEUE_SIZE);
    let mut descs = Vec::new();
    for (i, req) in requests.iter().enumerate() {
        let i16 = i as u16;
        let read_at = 0x1000 + i as u64 * 0x100;
        let reply_at = match req {
            Some(bytes) => {
                m.write_slice(bytes, GuestAddress(read_at)).unwrap();
                0x4000 + i as u64 * 0x100
            }
            None => 0x20_0000,
        };
        let len = req.map_or(4, |b| b.len() as u32);
        descs.push(RawDescriptor::from(Descriptor::new(
            read_at,
            len,
            VRING_DESC_F_NEXT as u16,
            2 * i16 + 1,
        )));
        descs.push(RawDescriptor::from(Descriptor::new(
            reply_at,
            16,
            VRING_DESC_F_WRITE as u16,
            0,
        )));
    }
    queue.add_desc_chains(&descs, 0).unwrap();

    let vring = <Vring as VringT<GuestMem>>::new(mem.clone(), QUEUE_SIZE).unwrap();
    vring.set_queue_size(QUEUE_SIZE);
    vring
        .set_queue_info(
            queue.desc_table_addr().0,
            queue.avail_addr().0,
            queue.used_addr().0,
        )
        .unwrap();
    vring.set_queue_event_idx(event_idx);
    vring.set_queue_ready(true);
    vring.set_enabled(true);
    let call = eventfd();
    vring.set_call(Some(call.try_clone().unwrap()));
    let used = queue.used_addr();
    let avail = queue.avail_addr();
    drop(m);
    Fixture {
        mem,
        vring,
        call,
        used,
        avail,
    }
}

impl Fixture {
    /// Used ring entries as (head index, length).
    fn used_entries(&self) -> Vec<(u32, u32)> {
        let m = self.mem.memory();
        let idx: u16 = m.read_obj(self.used.unchecked_add(2)).unwrap();
        (0..u64::from(idx))
            .map(|i| {
                let at = self.used.unchecked_add(4 + i * 8);
                let id: u32 = m.read_obj(at).unwrap();
                let len: u32 = m.read_obj(at.unchecked_add(4)).unwrap();
                (id, len)
            })
            .collect()
    }

    /// Publishes `heads` after the current avail index, as a guest would (or a hostile one).
    fn publish(&self, heads: &[u16]) {
        let m = self.mem.memory();
        let mut idx: u16 = m.read_obj(self.avail.unchecked_add(2)).unwrap();
        for &h in heads {
            let slot = u64::from(idx % QUEUE_SIZE);
            m.write_obj(h, self.avail.unchecked_add(4 + 2 * slot))
                .unwrap();
            idx = idx.wrapping_add(1);
        }
        m.write_obj(idx, self.avail.unchecked_add(2)).unwrap();
    }

    fn set_avail_idx(&self, idx: u16) {
        self.mem
            .memory()
            .write_obj(idx, self.avail.unchecked_add(2))
            .unwrap();
    }

    fn reply(&self, i: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.mem
            .memory()
            .read_slice(&mut out, GuestAddress(0x4000 + i * 0x100))
            .unwrap();
        out
    }
}

fn backend<H: RequestHandler + 'static>(
    h: H,
    mem: &GuestMem,
    pool: usize,
) -> VhostUserFsBackend<H> {
    let config = DeviceConfig {
        thread_pool_size: pool,
        queue_size: QUEUE_SIZE,
        max_request_queues: 1,
        ..DeviceConfig::default()
    };
    VhostUserFsBackend::new(Arc::new(h), &config, mem.clone()).unwrap()
}

/// How many interrupts the device raised since the last look (an eventfd counts its writes).
fn interrupts(call: &mut File) -> u64 {
    let mut buf = [0u8; 8];
    match call.read(&mut buf) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}

#[test]
fn answers_on_the_queue_thread_share_interrupts() {
    let requests: Vec<&[u8]> = vec![b"x"; 8];
    let requests: Vec<Option<&[u8]>> = requests.into_iter().map(Some).collect();
    let mut fx = fixture(&requests, false);
    let be = backend(UpperEcho, &fx.mem, 0);
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(fx.used_entries().len(), 8);
    // One interrupt for the burst (fewer than SIGNAL_BATCH answers), not one per answer.
    assert_eq!(interrupts(&mut fx.call), 1);
    // Nothing new, no interrupt.
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(interrupts(&mut fx.call), 0);
}

#[test]
fn queues_are_dealt_to_threads_and_events_mapped_to_their_queue() {
    let fx = fixture(&[Some(b"q3")], false);
    let config = DeviceConfig {
        max_request_queues: 3,
        queue_threads: 1,
        queue_size: QUEUE_SIZE,
        ..DeviceConfig::default()
    };
    let be = VhostUserFsBackend::new(Arc::new(UpperEcho), &config, fx.mem.clone()).unwrap();
    assert_eq!(be.queue_threads(), 1);
    assert_eq!(be.queues_per_thread(), vec![0b1111]);
    // The thread's fourth vring is queue 3.
    let idle = fixture(&[], false);
    let vrings = [
        idle.vring.clone(),
        idle.vring.clone(),
        idle.vring.clone(),
        fx.vring.clone(),
    ];
    be.handle_event(3, EventSet::IN, &vrings, 0).unwrap();
    assert_eq!(fx.used_entries(), vec![(0, 2)]);
    let counts: Vec<u64> = be.stats().snapshot().iter().map(|q| q.completed).collect();
    assert_eq!(counts, vec![0, 0, 0, 1]);
    assert!(be.handle_event(4, EventSet::IN, &vrings, 0).is_err());
    assert!(be.handle_event(0, EventSet::IN, &vrings, 1).is_err());
}

#[test]
fn a_thread_with_several_queues_serves_each_in_turns() {
    let requests: Vec<Option<&[u8]>> = vec![Some(b"y"); 8];
    let fx = fixture(&requests, false);
    let config = DeviceConfig {
        max_request_queues: 2,
        queue_threads: 1,
        queue_size: QUEUE_SIZE,
        ..DeviceConfig::default()
    };
    let be = VhostUserFsBackend::with_fair_share(Arc::new(UpperEcho), &config, fx.mem.clone(), 3)
        .unwrap();
    let mut kick = eventfd();
    fx.vring.set_kick(Some(kick.try_clone().unwrap()));
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(fx.used_entries().len(), 3);
    // The queue kicked itself so the thread comes back to it after the other queue.
    assert!(signalled(&mut kick));
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(fx.used_entries().len(), 6);
    assert!(signalled(&mut kick));
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(fx.used_entries().len(), 8);
    // The last turn found the ring empty: no kick of its own.
    assert!(!signalled(&mut kick));
}

#[test]
fn processes_chains_in_queue_thread() {
    let mut fx = fixture(&[Some(b"hello"), Some(b"fuse req")], false);
    let be = backend(UpperEcho, &fx.mem, 0);
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(fx.used_entries(), vec![(0, 5), (2, 8)]);
    assert_eq!(fx.reply(0, 5), b"HELLO");
    assert_eq!(fx.reply(1, 8), b"FUSE REQ");
    assert!(signalled(&mut fx.call), "guest was not interrupted");
    // Nothing new: no further used entries, no further interrupt.
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(fx.used_entries().len(), 2);
    assert!(!signalled(&mut fx.call));
}

#[test]
fn bad_chain_is_returned_with_zero_length() {
    let fx = fixture(&[Some(b"ok"), None, Some(b"after")], false);
    let be = backend(UpperEcho, &fx.mem, 0);
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(fx.used_entries(), vec![(0, 2), (2, 0), (4, 5)]);
    assert_eq!(fx.reply(2, 5), b"AFTER");
}

#[test]
fn rejected_request_is_returned_with_zero_length() {
    let fx = fixture(&[Some(b"x"), Some(b"y")], false);
    let be = backend(Reject, &fx.mem, 0);
    be.process_queue(&fx.vring, 0).unwrap();
    assert_eq!(fx.used_entries(), vec![(0, 0), (2, 0)]);
}

#[test]
fn used_length_is_capped_at_reply_room() {
    let fx = fixture(&[Some(b"x")], false);
    let be = backend(Liar, &fx.mem, 0);
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(fx.used_entries(), vec![(0, 16)]);
}

#[test]
fn event_idx_queue_is_drained_and_signalled() {
    let mut fx = fixture(&[Some(b"a"), Some(b"bb"), Some(b"ccc")], true);
    let be = backend(UpperEcho, &fx.mem, 0);
    be.set_event_idx(true);
    assert!(be.event_idx());
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(fx.used_entries(), vec![(0, 1), (2, 2), (4, 3)]);
    assert!(signalled(&mut fx.call));
    // With EVENT_IDX the device publishes how far it has read in avail_event (after the used
    // ring), which is how the driver knows when to kick again.
    let m = fx.mem.memory();
    let avail_event: u16 = m
        .read_obj(fx.used.unchecked_add(4 + 8 * u64::from(QUEUE_SIZE)))
        .unwrap();
    assert_eq!(avail_event, 3);
}

#[test]
fn thread_pool_completes_every_chain() {
    let reqs: Vec<Vec<u8>> = (0..8).map(|i| format!("req{i}").into_bytes()).collect();
    let reqs: Vec<Option<&[u8]>> = reqs.iter().map(|r| Some(&r[..])).collect();
    let mut fx = fixture(&reqs, false);
    let be = backend(UpperEcho, &fx.mem, 3);
    be.process_queue(&fx.vring, 1).unwrap();
    // Dropping the backend drains and joins the pool.
    drop(be);
    let mut used = fx.used_entries();
    used.sort_unstable();
    let expected: Vec<(u32, u32)> = (0..8).map(|i| (2 * i, 4)).collect();
    assert_eq!(used, expected);
    for i in 0..8u64 {
        assert_eq!(fx.reply(i, 4), format!("REQ{i}").into_bytes());
    }
    assert!(signalled(&mut fx.call));
}

#[test]
fn features_and_protocol_features() {
    let mem = guest_memory();
    let untagged = backend(UpperEcho, &mem, 0);
    let f = untagged.features();
    for bit in [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_RING_F_EVENT_IDX,
    ] {
        assert_ne!(f & (1 << bit), 0, "feature bit {bit} missing");
    }
    assert_ne!(f & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(), 0);
    let p = untagged.protocol_features();
    assert!(p.contains(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK));
    assert!(!p.contains(VhostUserProtocolFeatures::CONFIG));

    let config = DeviceConfig {
        tag: Some("share".into()),
        max_request_queues: 3,
        queue_threads: 3,
        ..DeviceConfig::default()
    };
    let tagged = VhostUserFsBackend::new(Arc::new(UpperEcho), &config, mem).unwrap();
    assert!(tagged
        .protocol_features()
        .contains(VhostUserProtocolFeatures::CONFIG));
    assert_eq!(tagged.num_queues(), 4);
    assert_eq!(tagged.max_queue_size(), 1024);
    assert_eq!(tagged.queues_per_thread(), vec![0b11, 0b100, 0b1000]);
    let space = tagged.get_config(0, CONFIG_LEN as u32);
    assert_eq!(&space[..6], b"share\0");
    assert_eq!(&space[36..], &[3, 0, 0, 0]);
    assert!(tagged.get_config(40, 1).is_empty());
    assert!(tagged.get_config(u32::MAX, 8).is_empty());
}

#[test]
fn handle_event_rejects_unknown_vring_and_event_set() {
    let fx = fixture(&[Some(b"x")], false);
    let be = backend(UpperEcho, &fx.mem, 0);
    // The one thread serves hiprio (its vring 0) and the request queue (its vring 1).
    let vrings = [fx.vring.clone(), fx.vring.clone()];
    assert!(be.handle_event(2, EventSet::IN, &vrings, 0).is_err());
    assert!(be.handle_event(1, EventSet::OUT, &vrings, 0).is_err());
    assert!(be.handle_event(1, EventSet::IN, &vrings, 1).is_err());
    be.handle_event(1, EventSet::IN, &vrings, 0).unwrap();
    assert_eq!(fx.used_entries(), vec![(0, 1)]);
}

/// Holds each request until the test releases it.
struct Gated(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl RequestHandler for Gated {
    fn handle<R: RequestReader, W: ReplyWriter>(&self, r: &mut R, w: W) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap()
            .recv()
            .map_err(|_| io::Error::other("gate closed"))?;
        UpperEcho.handle(r, w)
    }
}

#[test]
fn stop_vring_waits_for_pool_requests() {
    use std::sync::mpsc;
    use std::time::Duration;

    let fx = fixture(&[Some(b"slow")], false);
    let (release, gate) = mpsc::channel();
    let be = Arc::new(backend(Gated(std::sync::Mutex::new(gate)), &fx.mem, 2));
    be.process_queue(&fx.vring, 1).unwrap();
    let (stopped_tx, stopped) = mpsc::channel();
    let be2 = Arc::clone(&be);
    let stopper = std::thread::spawn(move || {
        be2.stop_vring(1).unwrap();
        stopped_tx.send(()).unwrap();
    });
    assert!(
        stopped.recv_timeout(Duration::from_millis(200)).is_err(),
        "stop_vring returned while a request was still running"
    );
    assert!(fx.used_entries().is_empty());
    release.send(()).unwrap();
    stopped
        .recv_timeout(Duration::from_secs(10))
        .expect("stop_vring did not return after the request finished");
    stopper.join().unwrap();
    assert_eq!(fx.used_entries(), vec![(0, 4)]);
    // Other queues have nothing in flight and stop at once.
    be.stop_vring(0).unwrap();
    be.stop_vring(99).unwrap();
}

#[test]
fn new_rejects_invalid_config() {
    let mem = guest_memory();
    let config = DeviceConfig {
        max_request_queues: 64,
        ..DeviceConfig::default()
    };
    let err = VhostUserFsBackend::new(Arc::new(UpperEcho), &config, mem)
        .err()
        .expect("64 request queues cannot be mapped to threads");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

/// Requests starting with "wait" may block: they hold until the test releases them. Refused
/// requests are answered "BUSY".
struct Waiter(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl RequestHandler for Waiter {
    fn handle<R: RequestReader, W: ReplyWriter>(&self, r: &mut R, w: W) -> io::Result<usize> {
        if r.available_bytes() >= 4 {
            let mut probe = vec![0u8; r.available_bytes()];
            r.read_exact(&mut probe)?;
            if probe.starts_with(b"wait") {
                self.0
                    .lock()
                    .unwrap()
                    .recv()
                    .map_err(|_| io::Error::other("gate closed"))?;
            }
            let mut again = virtiofsd_fuse::memory::MemoryReader::new(probe);
            return UpperEcho.handle(&mut again, w);
        }
        UpperEcho.handle(r, w)
    }

    fn may_block(&self, request_start: &[u8]) -> bool {
        request_start.starts_with(b"wait")
    }

    fn refuse<R: RequestReader, W: ReplyWriter>(&self, _r: &mut R, mut w: W) -> io::Result<usize> {
        w.write_all(b"BUSY")?;
        Ok(4)
    }
}

fn waiter(
    pool: usize,
    limit: usize,
    mem: &GuestMem,
) -> (VhostUserFsBackend<Waiter>, std::sync::mpsc::Sender<()>) {
    let (release, gate) = std::sync::mpsc::channel();
    let config = DeviceConfig {
        thread_pool_size: pool,
        queue_size: QUEUE_SIZE,
        ..DeviceConfig::default()
    };
    let h = Arc::new(Waiter(std::sync::Mutex::new(gate)));
    let be = VhostUserFsBackend::with_blocking_limit(h, &config, mem.clone(), limit).unwrap();
    (be, release)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn waiting_request_does_not_hold_up_its_queue() {
    for pool in [0, 2] {
        let mut fx = fixture(&[Some(b"wait for it"), Some(b"hello")], false);
        let (be, release) = waiter(pool, 64, &fx.mem);
        be.process_queue(&fx.vring, 1).unwrap();
        wait_until("the quick request", || fx.used_entries() == vec![(2, 5)]);
        assert_eq!(fx.reply(1, 5), b"HELLO");
        assert_eq!(be.waiting_requests(), 1);
        assert!(signalled(&mut fx.call));
        release.send(()).unwrap();
        wait_until("the waiting request", || fx.used_entries().len() == 2);
        assert_eq!(fx.used_entries()[1], (0, 11), "pool size {pool}");
        assert_eq!(fx.reply(0, 11), b"WAIT FOR IT");
        wait_until("the thread to end", || be.waiting_requests() == 0);
        assert!(
            signalled(&mut fx.call),
            "completion did not interrupt the guest"
        );
    }
}

#[test]
fn waiting_requests_beyond_the_limit_are_refused() {
    let fx = fixture(&[Some(b"wait 1"), Some(b"wait 2"), Some(b"ok")], false);
    let (be, release) = waiter(0, 1, &fx.mem);
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(fx.used_entries(), vec![(2, 4), (4, 2)]);
    assert_eq!(fx.reply(1, 4), b"BUSY");
    assert_eq!(fx.reply(2, 2), b"OK");
    release.send(()).unwrap();
    wait_until("the waiting request", || fx.used_entries().len() == 3);
    assert_eq!(fx.used_entries()[2], (0, 6));
    assert_eq!(fx.reply(0, 6), b"WAIT 1");
}

#[test]
fn stopping_a_queue_abandons_its_waiting_requests() {
    let fx = fixture(&[Some(b"wait forever")], false);
    let (be, release) = waiter(2, 64, &fx.mem);
    be.process_queue(&fx.vring, 1).unwrap();
    wait_until("the request to start", || be.waiting_requests() == 1);
    // Must return although the request still waits.
    be.stop_vring(1).unwrap();
    release.send(()).unwrap();
    wait_until("the thread to end", || be.waiting_requests() == 0);
    assert!(
        fx.used_entries().is_empty(),
        "a request that outlived its queue wrote to the used ring"
    );
    assert_eq!(fx.reply(0, 12), [0u8; 12], "the reply reached guest memory");
}

#[test]
fn a_dropped_backend_does_not_wait_for_waiting_requests() {
    let fx = fixture(&[Some(b"wait")], false);
    let (be, release) = waiter(1, 64, &fx.mem);
    be.process_queue(&fx.vring, 1).unwrap();
    wait_until("the request to start", || be.waiting_requests() == 1);
    let (dropped_tx, dropped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(be);
        dropped_tx.send(()).unwrap();
    });
    dropped
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("dropping the backend waited for a blocked request");
    drop(release);
}

// ---- a hostile guest's queue ----

#[test]
fn avail_index_beyond_the_queue_size_breaks_the_queue_without_spinning() {
    let fx = fixture(&[Some(b"one")], false);
    let be = backend(UpperEcho, &fx.mem, 0);
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(fx.used_entries(), vec![(0, 3)]);
    // 1 + QUEUE_SIZE + 1 entries "available": more than the ring holds.
    fx.set_avail_idx(QUEUE_SIZE + 2);
    let start = std::time::Instant::now();
    for _ in 0..1000 {
        be.process_queue(&fx.vring, 1).unwrap();
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    assert!(be.queue_broken(1));
    assert_eq!(fx.used_entries(), vec![(0, 3)], "a broken queue was served");
    // The event path (a kick) keeps the thread alive too.
    assert!(be
        .handle_event(1, EventSet::IN, &[fx.vring.clone(), fx.vring.clone()], 0)
        .is_ok());

    // The frontend resets the ring: GET_VRING_BASE, then SET_VRING_BASE.
    be.stop_vring(1).unwrap();
    assert!(!be.queue_broken(1));
    fx.set_avail_idx(1);
    fx.vring.set_queue_next_avail(1);
    fx.publish(&[2]);
    be.process_queue(&fx.vring, 1).unwrap();
    assert!(!be.queue_broken(1));
    assert_eq!(
        fx.used_entries().len(),
        2,
        "the reset queue was not served again"
    );
}

#[test]
fn a_reconfigured_queue_is_served_again() {
    let fx = fixture(&[Some(b"one"), Some(b"two")], false);
    let be = backend(UpperEcho, &fx.mem, 0);
    be.process_queue(&fx.vring, 1).unwrap();
    fx.set_avail_idx(2 + QUEUE_SIZE + 1);
    be.process_queue(&fx.vring, 1).unwrap();
    assert!(be.queue_broken(1));
    // SET_VRING_BASE alone (a new position) counts as a reset.
    fx.set_avail_idx(2);
    fx.vring.set_queue_next_avail(1);
    be.process_queue(&fx.vring, 1).unwrap();
    assert!(!be.queue_broken(1));
    assert_eq!(fx.used_entries().len(), 3);
}

#[test]
fn head_index_beyond_the_queue_size_breaks_the_queue_not_the_thread() {
    for pool in [0, 2] {
        let fx = fixture(&[Some(b"one")], false);
        let be = backend(UpperEcho, &fx.mem, pool);
        be.process_queue(&fx.vring, 1).unwrap();
        wait_until("the first request", || fx.used_entries().len() == 1);
        fx.publish(&[QUEUE_SIZE + 5]);
        assert!(be
            .handle_event(1, EventSet::IN, &[fx.vring.clone(), fx.vring.clone()], 0)
            .is_ok());
        assert!(be.queue_broken(1), "pool size {pool}");
        assert_eq!(fx.used_entries().len(), 1);
        be.stop_vring(1).unwrap();
        assert!(!be.queue_broken(1));
    }
}

#[test]
fn the_pool_holds_at_most_a_queue_size_of_requests() {
    use std::sync::mpsc;
    let fx = fixture(&[Some(b"getattr")], false);
    let (release, gate) = mpsc::channel();
    let be = backend(Gated(std::sync::Mutex::new(gate)), &fx.mem, 2);
    // The guest republishes the same head as often as the ring lets it, twice over.
    fx.publish(&[0; (QUEUE_SIZE as usize) - 1]);
    be.process_queue(&fx.vring, 1).unwrap();
    assert_eq!(be.pool_requests(1), usize::from(QUEUE_SIZE));
    fx.publish(&[0; QUEUE_SIZE as usize]);
    for _ in 0..8 {
        be.process_queue(&fx.vring, 1).unwrap();
        assert_eq!(be.pool_requests(1), usize::from(QUEUE_SIZE));
    }
    assert!(!be.queue_broken(1));
    // Without a free slot nothing is popped, and nothing is signalled to resume.
    let resume = be.resume_fd(0).expect("a pool has a resume eventfd");
    assert!(!readable(resume));
    release.send(()).unwrap();
    wait_until("a slot to free", || {
        be.pool_requests(1) < usize::from(QUEUE_SIZE)
    });
    wait_until("the resume signal", || readable(resume));
    // The resume event makes the queue thread pop again, up to the limit.
    be.handle_event(
        be.resume_event(),
        EventSet::IN,
        &[fx.vring.clone(), fx.vring.clone()],
        0,
    )
    .unwrap();
    assert_eq!(be.pool_requests(1), usize::from(QUEUE_SIZE));
    assert!(!readable(resume), "the resume event was not consumed");
    for _ in 0..200 {
        let _ = release.send(());
    }
    drop(release);
}

fn readable(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd and the timeout is zero.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLIN != 0
}

#[test]
fn stopping_a_queue_does_not_wait_forever_for_wedged_pool_requests() {
    use std::sync::mpsc;
    let fx = fixture(&[Some(b"wedged")], false);
    let (release, gate) = mpsc::channel();
    let mut be = backend(Gated(std::sync::Mutex::new(gate)), &fx.mem, 1);
    be.stop_wait = std::time::Duration::from_millis(100);
    be.process_queue(&fx.vring, 1).unwrap();
    let start = std::time::Instant::now();
    be.stop_vring(1).unwrap();
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    // When the wedged request finally ends, its completion goes nowhere.
    release.send(()).unwrap();
    wait_until("the request to end", || be.pool_requests(1) == 0);
    assert!(fx.used_entries().is_empty());
}

/// Records the request bytes it executed.
struct Recorder(std::sync::Mutex<Vec<Vec<u8>>>);

impl RequestHandler for Recorder {
    fn handle<R: RequestReader, W: ReplyWriter>(&self, r: &mut R, w: W) -> io::Result<usize> {
        let mut buf = vec![0u8; r.available_bytes()];
        r.read_exact(&mut buf)?;
        self.0.lock().unwrap().push(buf);
        drop(w);
        Ok(0)
    }
}

#[test]
fn the_executed_header_is_the_one_routing_saw() {
    let fx = fixture(&[Some(b"wait! and the rest of the request")], false);
    let m = fx.mem.memory().into_inner();
    let chain = pop_chain(&fx.vring, &m).unwrap().unwrap();
    let header = {
        let (mut reader, _) = split_chain(&*m, chain.clone()).unwrap();
        Header::take(&mut reader)
    };
    assert_eq!(header.bytes(), b"wait! and the rest of the request");
    // The guest rewrites its request after the routing decision.
    m.write_slice(b"fast!", GuestAddress(0x1000)).unwrap();
    let h = Recorder(std::sync::Mutex::new(Vec::new()));
    run_chain(&h, &m, &header, chain);
    assert_eq!(
        h.0.lock().unwrap().as_slice(),
        &[b"wait! and the rest of the request".to_vec()]
    );
}

#[test]
fn prefix_reader_serves_the_copy_then_the_rest() {
    let rest = virtiofsd_fuse::memory::MemoryReader::new(b"world".to_vec());
    let mut r = PrefixReader::new(b"hello ", rest);
    assert_eq!(r.available_bytes(), 11);
    let mut a = [0u8; 4];
    r.read_exact(&mut a).unwrap();
    assert_eq!(&a, b"hell");
    let mut too_big = [0u8; 8];
    assert_eq!(
        r.read_exact(&mut too_big).unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
    let mut b = [0u8; 7];
    r.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"o world");
    assert_eq!(r.available_bytes(), 0);
}

#[test]
fn every_popped_chain_is_counted_on_its_queue_once_completed() {
    for pool in [0, 3] {
        let fx = fixture(&[Some(b"a"), None, Some(b"ccc"), Some(b"dd")], false);
        let be = backend(UpperEcho, &fx.mem, pool);
        let stats = Arc::clone(be.stats());
        be.process_queue(&fx.vring, 1).unwrap();
        wait_until("every completion", || fx.used_entries().len() == 4);
        wait_until("the counts", || stats.snapshot()[1].completed == 4);
        let queues = stats.snapshot();
        assert_eq!(queues.len(), 2);
        assert_eq!(
            (queues[1].started, queues[1].in_flight()),
            (4, 0),
            "pool {pool}"
        );
        assert_eq!(queues[1].buckets.iter().sum::<u64>(), 4);
        assert_eq!(queues[0].started, 0);
    }
}

#[test]
fn a_waiting_request_is_in_flight_until_answered() {
    for pool in [0, 2] {
        let fx = fixture(&[Some(b"wait for it"), Some(b"hello")], false);
        let (be, release) = waiter(pool, 64, &fx.mem);
        be.process_queue(&fx.vring, 1).unwrap();
        wait_until("the quick request", || fx.used_entries().len() == 1);
        wait_until("its count", || be.stats().snapshot()[1].completed == 1);
        let now = be.stats().snapshot();
        assert_eq!((now[1].started, now[1].in_flight()), (2, 1), "pool {pool}");
        release.send(()).unwrap();
        wait_until("the waiting request", || {
            be.stats().snapshot()[1].in_flight() == 0
        });
        assert_eq!(fx.used_entries().len(), 2);
    }
}
