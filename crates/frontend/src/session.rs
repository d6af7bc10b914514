//! A connected vhost-user-fs frontend: control-plane setup, request submission and completion.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{Error, Result};
use crate::fuse::{InHeader, OutHeader, IN_HEADER_LEN, OUT_HEADER_LEN};
use crate::memory::{GuestMemory, DEFAULT_MEM_SIZE};
use crate::virtq::{Buf, Layout, RawDesc, Used, VirtQueue};

pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// Index of the high-priority queue (FORGET, BATCH_FORGET, INTERRUPT).
pub const HIPRIO: usize = 0;

/// How to set up the device.
#[derive(Clone, Debug)]
pub struct Options {
    /// Guest memory size in bytes (a multiple of 4096).
    pub mem_size: u64,
    /// Request queues wanted (clamped to what the backend offers).
    pub request_queues: usize,
    /// Descriptors per queue (a power of two).
    pub queue_size: u16,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX if offered.
    pub event_idx: bool,
    /// Deadline for one completion.
    pub timeout: Duration,
    /// Largest request and reply (payload included) the synchronous helpers handle.
    pub scratch_size: u32,
    /// Protocol features to acknowledge besides MQ and REPLY_ACK when the backend offers them
    /// (LOG_SHMFD and DEVICE_STATE for the migration helpers).
    pub protocol_features: VhostUserProtocolFeatures,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mem_size: DEFAULT_MEM_SIZE,
            request_queues: 1,
            queue_size: 256,
            event_idx: false,
            timeout: Duration::from_secs(5),
            scratch_size: (1 << 20) + 4096,
            protocol_features: VhostUserProtocolFeatures::empty(),
        }
    }
}

/// A request area and a reply area in guest memory, reusable once its request completed.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub req: u64,
    pub req_cap: u32,
    pub reply: u64,
    pub reply_cap: u32,
}

/// A FUSE request to submit.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub opcode: u32,
    pub nodeid: u64,
    /// Argument bytes following the header (copied into the slot's request area).
    pub args: &'a [u8],
    /// An extra readable buffer already in guest memory (WRITE payload).
    pub payload: Option<Buf>,
    /// An extra writable buffer in guest memory that receives the reply body (READ data);
    /// the reply header then goes to a 16-byte writable buffer at the slot's reply area.
    pub reply_data: Option<Buf>,
    /// Whether the daemon sends a reply at all (not for FORGET and BATCH_FORGET).
    pub expects_reply: bool,
    /// Build the chain as one indirect descriptor.
    pub indirect: bool,
}

impl<'a> Request<'a> {
    pub fn new(opcode: u32, nodeid: u64, args: &'a [u8]) -> Self {
        Request {
            opcode,
            nodeid,
            args,
            payload: None,
            reply_data: None,
            expects_reply: true,
            indirect: false,
        }
    }
}

/// A submitted request, to be matched with its completion.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    pub queue: usize,
    pub head: u16,
    pub unique: u64,
    pub opcode: u32,
    slot: Slot,
    reply_data: Option<Buf>,
}

impl Ticket {
    /// A ticket for a chain built by hand (`submit_raw`) whose reply header goes to `reply`.
    pub fn raw(
        queue: usize,
        head: u16,
        unique: u64,
        opcode: u32,
        reply: u64,
        reply_cap: u32,
    ) -> Self {
        let slot = Slot {
            req: 0,
            req_cap: 0,
            reply,
            reply_cap,
        };
        Ticket {
            queue,
            head,
            unique,
            opcode,
            slot,
            reply_data: None,
        }
    }
}

/// A decoded FUSE reply.
#[derive(Clone, Debug)]
pub struct Reply {
    pub header: OutHeader,
    /// Bytes the device said it wrote (the used element's length).
    pub used_len: u32,
    /// The body after the header, copied out of guest memory unless left there (`body_in_place`).
    pub body: Vec<u8>,
}

/// What came back for a request, for tests that accept several outcomes.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A well-formed FUSE reply (possibly an error reply).
    Reply(Reply),
    /// The chain was returned with fewer bytes than a reply header (dropped request).
    Returned { used_len: u32 },
    /// The device used the chain but what it wrote is not a valid reply to this request.
    Invalid(String),
    /// The backend hung up.
    Disconnected,
    /// No completion within the deadline.
    Timeout,
}

struct Queue {
    vq: VirtQueue,
    kick: EventFd,
    call: EventFd,
}

pub struct Session {
    frontend: Frontend,
    sock: UnixStream,
    mem: GuestMemory,
    queues: Vec<Queue>,
    unique: u64,
    features: u64,
    protocol_features: u64,
    backend_queues: u64,
    stray: Vec<(usize, Used)>,
    scratch: Slot,
    pub timeout: Duration,
    /// uid, gid and pid put in request headers.
    pub creds: (u32, u32, u32),
}

fn vhost<T>(what: &'static str, r: vhost::Result<T>) -> Result<T> {
    r.map_err(|e| Error::Vhost(what, e))
}

impl Session {
    /// Connects to a listening vhost-user-fs socket and brings the device up.
    pub fn connect(path: impl AsRef<Path>, opts: &Options) -> Result<Self> {
        let sock = UnixStream::connect(path.as_ref())
            .map_err(|e| Error::Io("connect to the vhost-user socket", e))?;
        Self::from_stream(sock, opts)
    }

    /// Connects, retrying until the socket accepts or `wait` has passed.
    pub fn connect_retry(path: impl AsRef<Path>, opts: &Options, wait: Duration) -> Result<Self> {
        let start = Instant::now();
        loop {
            match UnixStream::connect(path.as_ref()) {
                Ok(s) => return Self::from_stream(s, opts),
                Err(e) if start.elapsed() >= wait => {
                    return Err(Error::Io("connect to the vhost-user socket", e))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn from_stream(sock: UnixStream, opts: &Options) -> Result<Self> {
        let watch = sock.try_clone().map_err(|e| Error::Io("dup socket", e))?;
        let mut frontend = Frontend::from_stream(sock, 2);
        vhost("SET_OWNER", frontend.set_owner())?;
        let offered = vhost("GET_FEATURES", frontend.get_features())?;
        if offered & VIRTIO_F_VERSION_1 == 0 {
            return Err(Error::Unsupported(format!(
                "no VIRTIO_F_VERSION_1 in {offered:#x}"
            )));
        }
        let mut wanted =
            VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES | VIRTIO_RING_F_INDIRECT_DESC;
        if opts.event_idx {
            wanted |= VIRTIO_RING_F_EVENT_IDX;
        }
        let features = offered & wanted;
        if features & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
            return Err(Error::Unsupported(
                "no VHOST_USER_F_PROTOCOL_FEATURES".into(),
            ));
        }
        vhost("SET_FEATURES", frontend.set_features(features))?;
        let proto = vhost("GET_PROTOCOL_FEATURES", frontend.get_protocol_features())?;
        let acked = proto
            & (VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK
                | opts.protocol_features);
        vhost(
            "SET_PROTOCOL_FEATURES",
            frontend.set_protocol_features(acked),
        )?;
        let backend_queues = if acked.contains(VhostUserProtocolFeatures::MQ) {
            vhost("GET_QUEUE_NUM", frontend.get_queue_num())?
        } else {
            2
        };
        if backend_queues < 2 {
            return Err(Error::Unsupported(format!(
                "{backend_queues} queues; need hiprio + 1"
            )));
        }
        let nreq = opts.request_queues.clamp(1, backend_queues as usize - 1);

        let mut mem = GuestMemory::new(opts.mem_size)?;
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: mem.size(),
            userspace_addr: mem.host_base(),
            mmap_offset: 0,
            mmap_handle: mem.raw_fd(),
        };
        vhost("SET_MEM_TABLE", frontend.set_mem_table(&[region]))?;

        let event_idx = features & VIRTIO_RING_F_EVENT_IDX != 0;
        let mut queues = Vec::new();
        for i in 0..=nreq {
            let layout = Layout::alloc(&mut mem, opts.queue_size)?;
            let kick = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Io("eventfd", e))?;
            let call = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Io("eventfd", e))?;
            let base = mem.host_base();
            let cfg = VringConfigData {
                queue_max_size: opts.queue_size,
                queue_size: opts.queue_size,
                flags: 0,
                desc_table_addr: base + layout.desc,
                used_ring_addr: base + layout.used,
                avail_ring_addr: base + layout.avail,
                log_addr: None,
            };
            vhost("SET_VRING_NUM", frontend.set_vring_num(i, opts.queue_size))?;
            vhost("SET_VRING_ADDR", frontend.set_vring_addr(i, &cfg))?;
            vhost("SET_VRING_BASE", frontend.set_vring_base(i, 0))?;
            vhost("SET_VRING_CALL", frontend.set_vring_call(i, &call))?;
            vhost("SET_VRING_KICK", frontend.set_vring_kick(i, &kick))?;
            vhost("SET_VRING_ENABLE", frontend.set_vring_enable(i, true))?;
            queues.push(Queue {
                vq: VirtQueue::new(layout, event_idx),
                kick,
                call,
            });
        }
        let scratch = Self::alloc_slot_in(&mut mem, opts.scratch_size, opts.scratch_size)?;
        // SAFETY: these calls only read the calling process's ids.
        let creds = unsafe { (libc::geteuid(), libc::getegid(), libc::getpid() as u32) };
        Ok(Session {
            frontend,
            sock: watch,
            mem,
            queues,
            unique: 0,
            features,
            protocol_features: acked.bits(),
            backend_queues,
            stray: Vec::new(),
            scratch,
            timeout: opts.timeout,
            creds,
        })
    }

    fn alloc_slot_in(mem: &mut GuestMemory, req_cap: u32, reply_cap: u32) -> Result<Slot> {
        let req = mem.alloc(u64::from(req_cap), 64)?;
        let reply = mem.alloc(u64::from(reply_cap), 64)?;
        Ok(Slot {
            req,
            req_cap,
            reply,
            reply_cap,
        })
    }

    /// Reserves a request/reply area for asynchronous requests.
    pub fn alloc_slot(&mut self, req_cap: u32, reply_cap: u32) -> Result<Slot> {
        Self::alloc_slot_in(&mut self.mem, req_cap, reply_cap)
    }

    pub fn mem(&self) -> &GuestMemory {
        &self.mem
    }

    pub fn mem_mut(&mut self) -> &mut GuestMemory {
        &mut self.mem
    }

    /// Negotiated virtio feature bits.
    pub fn features(&self) -> u64 {
        self.features
    }

    pub fn protocol_features(&self) -> u64 {
        self.protocol_features
    }

    /// Queues the backend reported with GET_QUEUE_NUM.
    pub fn backend_queues(&self) -> u64 {
        self.backend_queues
    }

    /// Request queues set up (queue indices 1..=n).
    pub fn request_queues(&self) -> usize {
        self.queues.len() - 1
    }

    /// The vhost-user control connection, for messages this type does not wrap.
    pub fn frontend(&mut self) -> &mut Frontend {
        &mut self.frontend
    }

    pub fn queue(&mut self, q: usize) -> Result<&mut VirtQueue> {
        self.queues
            .get_mut(q)
            .map(|x| &mut x.vq)
            .ok_or(Error::NoSuchQueue(q))
    }

    pub fn next_unique(&mut self) -> u64 {
        self.unique += 2;
        self.unique
    }

    pub fn kick(&self, q: usize) -> Result<()> {
        let queue = self.queues.get(q).ok_or(Error::NoSuchQueue(q))?;
        queue.kick.write(1).map_err(|e| Error::Io("kick", e))
    }

    /// Adds a direct chain of `bufs` to queue `q` and kicks.
    pub fn submit_bufs(&mut self, q: usize, bufs: &[Buf], indirect: bool) -> Result<u16> {
        let queue = self.queues.get_mut(q).ok_or(Error::NoSuchQueue(q))?;
        let head = if indirect {
            queue.vq.add_indirect(&self.mem, bufs)
        } else {
            queue.vq.add_chain(&self.mem, bufs)
        }
        .map_err(|e| match e {
            Error::QueueFull { .. } => Error::QueueFull { queue: q },
            e => e,
        })?;
        self.kick(q)?;
        Ok(head)
    }

    /// Writes arbitrary descriptors at `descs[i].0` and publishes `head`, for hostile input.
    /// The slots in `owned` (from `queue(q)?.reserve`) are freed when the head completes.
    pub fn submit_raw(
        &mut self,
        q: usize,
        descs: &[(u16, RawDesc)],
        head: u16,
        owned: Vec<u16>,
    ) -> Result<()> {
        let queue = self.queues.get_mut(q).ok_or(Error::NoSuchQueue(q))?;
        for (idx, d) in descs {
            queue.vq.write_desc(&self.mem, *idx, *d)?;
        }
        queue.vq.publish(&self.mem, head, owned)?;
        self.kick(q)
    }

    /// Publishes one INDIRECT descriptor whose table is exactly `table` (possibly hostile).
    pub fn submit_indirect_raw(&mut self, q: usize, table: &[RawDesc]) -> Result<u16> {
        let queue = self.queues.get_mut(q).ok_or(Error::NoSuchQueue(q))?;
        let head = queue.vq.add_indirect_raw(&self.mem, table)?;
        self.kick(q)?;
        Ok(head)
    }

    /// Submits a FUSE request through `slot`; `len_override` replaces the header's length field.
    pub fn submit_with(
        &mut self,
        q: usize,
        slot: Slot,
        req: &Request<'_>,
        len_override: Option<u32>,
    ) -> Result<Ticket> {
        let unique = self.next_unique();
        let in_len = IN_HEADER_LEN + req.args.len();
        if in_len > slot.req_cap as usize {
            return Err(Error::Memory(format!(
                "request of {in_len} bytes exceeds its slot"
            )));
        }
        let payload_len = req.payload.map_or(0, |b| b.len);
        let total = (in_len as u32)
            .checked_add(payload_len)
            .ok_or_else(|| Error::Memory("request length overflows u32".into()))?;
        let hdr = InHeader {
            len: len_override.unwrap_or(total),
            opcode: req.opcode,
            unique,
            nodeid: req.nodeid,
            uid: self.creds.0,
            gid: self.creds.1,
            pid: self.creds.2,
        };
        self.mem.write(slot.req, &hdr.encode())?;
        self.mem.write(slot.req + IN_HEADER_LEN as u64, req.args)?;
        let mut bufs = vec![Buf::readable(slot.req, in_len as u32)];
        bufs.extend(req.payload);
        if req.expects_reply {
            match req.reply_data {
                Some(d) => {
                    bufs.push(Buf::writable(slot.reply, OUT_HEADER_LEN as u32));
                    bufs.push(d);
                }
                None => bufs.push(Buf::writable(slot.reply, slot.reply_cap)),
            }
        }
        let head = self.submit_bufs(q, &bufs, req.indirect)?;
        Ok(Ticket {
            queue: q,
            head,
            unique,
            opcode: req.opcode,
            slot,
            reply_data: req.reply_data,
        })
    }

    pub fn submit(&mut self, q: usize, slot: Slot, req: &Request<'_>) -> Result<Ticket> {
        self.submit_with(q, slot, req, None)
    }

    fn take_stray(&mut self, q: usize, head: u16) -> Option<Used> {
        let i = self
            .stray
            .iter()
            .position(|(sq, u)| *sq == q && u.id == head)?;
        Some(self.stray.swap_remove(i).1)
    }

    fn pop_any(&mut self) -> Result<Option<(usize, Used)>> {
        if let Some(s) = self.stray.pop() {
            return Ok(Some(s));
        }
        for (i, queue) in self.queues.iter_mut().enumerate() {
            if let Some(u) = queue.vq.pop_used(&self.mem)? {
                return Ok(Some((i, u)));
            }
        }
        Ok(None)
    }

    /// Waits up to `timeout` for any completion on any queue.
    pub fn wait_any(&mut self, timeout: Duration) -> Result<(usize, Used)> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.pop_any()? {
                return Ok(c);
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout {
                    queue: usize::MAX,
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            self.block(left)?;
        }
    }

    /// Waits for the completion of chain `head` on queue `q`.
    pub fn wait_for(&mut self, q: usize, head: u16, timeout: Duration) -> Result<Used> {
        let start = Instant::now();
        loop {
            if let Some(u) = self.take_stray(q, head) {
                return Ok(u);
            }
            if start.elapsed() >= Duration::from_millis(500) {
                // Re-kick in case the first kick raced with the backend starting the queue;
                // a spurious kick only makes the device look at the ring again.
                self.kick(q)?;
            }
            while let Some(u) = self
                .queues
                .get_mut(q)
                .ok_or(Error::NoSuchQueue(q))?
                .vq
                .pop_used(&self.mem)?
            {
                if u.id == head {
                    return Ok(u);
                }
                self.stray.push((q, u));
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout {
                    queue: q,
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            self.block(left)?;
        }
    }

    /// Sleeps until a call eventfd fires, the socket hangs up, or `left` passes.
    fn block(&mut self, left: Duration) -> Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .queues
            .iter()
            .map(|q| libc::pollfd {
                fd: q.call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        fds.push(libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        });
        // Short slices so a missed notification (no EVENT_IDX kick race) only costs a little.
        let ms = left.as_millis().clamp(1, 100) as libc::c_int;
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(Error::Io("poll", e));
        }
        for (q, pfd) in self.queues.iter().zip(&fds) {
            if pfd.revents & libc::POLLIN != 0 {
                let _ = q.call.read();
            }
        }
        let s = fds.last().expect("socket entry").revents;
        if s != 0 && self.peer_gone() && !self.any_used()? {
            return Err(Error::Disconnected);
        }
        Ok(())
    }

    fn any_used(&self) -> Result<bool> {
        for q in &self.queues {
            if q.vq.has_used(&self.mem)? {
                return Ok(true);
            }
        }
        Ok(!self.stray.is_empty())
    }

    /// Whether the backend closed its end of the control socket.
    pub fn peer_gone(&self) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: peeking at most one byte into a valid local buffer.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n == 0 || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN))
    }

    /// Decodes the reply of a completed ticket (checking header length and unique).
    pub fn decode(&self, t: &Ticket, used: Used, copy_body: bool) -> Result<Reply> {
        if (used.len as usize) < OUT_HEADER_LEN {
            return Err(Error::BadReply(format!(
                "{}: device used {} bytes, less than a reply header",
                crate::fuse::opcode_name(t.opcode),
                used.len
            )));
        }
        let mut hb = [0u8; OUT_HEADER_LEN];
        self.mem.read(t.slot.reply, &mut hb)?;
        let header = OutHeader::decode(&hb)?;
        if header.unique != t.unique {
            return Err(Error::BadReply(format!(
                "unique {} for request {}",
                header.unique, t.unique
            )));
        }
        if header.len != used.len {
            return Err(Error::BadReply(format!(
                "header length {} but {} bytes used",
                header.len, used.len
            )));
        }
        if header.error > 0 || header.error < -4095 {
            return Err(Error::BadReply(format!("error field {}", header.error)));
        }
        let body_len = used.len as usize - OUT_HEADER_LEN;
        let body = if !copy_body {
            Vec::new()
        } else if let Some(d) = t.reply_data {
            if body_len > d.len as usize {
                return Err(Error::BadReply("reply longer than its buffer".into()));
            }
            self.mem.read_vec(d.addr, body_len)?
        } else {
            if body_len + OUT_HEADER_LEN > t.slot.reply_cap as usize {
                return Err(Error::BadReply("reply longer than its buffer".into()));
            }
            self.mem
                .read_vec(t.slot.reply + OUT_HEADER_LEN as u64, body_len)?
        };
        Ok(Reply {
            header,
            used_len: used.len,
            body,
        })
    }

    /// Waits for a ticket and classifies what came back (never fails on a misbehaving device).
    pub fn outcome(&mut self, t: &Ticket, timeout: Duration) -> Result<Outcome> {
        match self.wait_for(t.queue, t.head, timeout) {
            Ok(u) if (u.len as usize) < OUT_HEADER_LEN => Ok(Outcome::Returned { used_len: u.len }),
            Ok(u) => Ok(match self.decode(t, u, true) {
                Ok(r) => Outcome::Reply(r),
                Err(e) => Outcome::Invalid(e.to_string()),
            }),
            Err(Error::Disconnected) => Ok(Outcome::Disconnected),
            Err(Error::Timeout { .. }) => Ok(Outcome::Timeout),
            Err(e) => Err(e),
        }
    }

    /// Sends one request on the first request queue and returns its reply, error replies included.
    pub fn call_raw(&mut self, req: &Request<'_>) -> Result<Reply> {
        self.call_on(1, req)
    }

    pub fn call_on(&mut self, q: usize, req: &Request<'_>) -> Result<Reply> {
        let slot = self.scratch;
        let t = self.submit(q, slot, req)?;
        let used = self.wait_for(q, t.head, self.timeout)?;
        if !req.expects_reply {
            return Ok(Reply {
                header: OutHeader {
                    len: used.len,
                    error: 0,
                    unique: t.unique,
                },
                used_len: used.len,
                body: Vec::new(),
            });
        }
        self.decode(&t, used, true)
    }

    /// Like `call_raw`, but an error reply becomes `Error::Fuse`.
    pub fn call(&mut self, req: &Request<'_>) -> Result<Vec<u8>> {
        let r = self.call_raw(req)?;
        if r.header.error != 0 {
            return Err(Error::Fuse {
                opcode: req.opcode,
                errno: -r.header.error,
            });
        }
        Ok(r.body)
    }

    /// The slot the synchronous helpers use (large enough for 1 MiB payloads).
    pub fn scratch(&self) -> Slot {
        self.scratch
    }
}
