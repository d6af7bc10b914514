use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;

#[test]
fn default_config_is_valid() {
    let config = DeviceConfig::default();
    assert_eq!(config.queue_size, 1024);
    assert_eq!(config.max_request_queues, MAX_REQUEST_QUEUES);
    assert_eq!(config.queue_threads, 0);
    config.validate().unwrap();
}

#[test]
fn config_validation_rejects_bad_values() {
    let with = |f: fn(&mut DeviceConfig)| {
        let mut c = DeviceConfig::default();
        f(&mut c);
        c.validate()
    };
    assert_eq!(with(|c| c.tag = Some("t".repeat(36))), Ok(()));
    assert_eq!(
        with(|c| c.tag = Some("t".repeat(37))),
        Err(ConfigError::TagTooLong(37))
    );
    assert_eq!(
        with(|c| c.tag = Some(String::new())),
        Err(ConfigError::EmptyTag)
    );
    assert_eq!(
        with(|c| c.tag = Some("a\0b".into())),
        Err(ConfigError::TagHasNul)
    );
    assert_eq!(
        with(|c| c.max_request_queues = 0),
        Err(ConfigError::RequestQueues(0))
    );
    assert_eq!(with(|c| c.max_request_queues = MAX_REQUEST_QUEUES), Ok(()));
    assert_eq!(
        with(|c| c.max_request_queues = MAX_REQUEST_QUEUES + 1),
        Err(ConfigError::RequestQueues(MAX_REQUEST_QUEUES + 1))
    );
    assert_eq!(with(|c| c.queue_size = 0), Err(ConfigError::QueueSize(0)));
    assert_eq!(
        with(|c| c.queue_size = 1000),
        Err(ConfigError::QueueSize(1000))
    );
    assert_eq!(with(|c| c.queue_size = 32768), Ok(()));
    assert_eq!(with(|c| c.queue_size = 1), Ok(()));
}

/// Replies with the request bytes upper-cased.
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

#[derive(Default)]
struct Counting {
    connected: AtomicUsize,
    disconnected: AtomicUsize,
}

impl DeviceEvents for Counting {
    fn connected(&self) {
        self.connected.fetch_add(1, Ordering::SeqCst);
    }
    fn disconnected(&self) {
        self.disconnected.fetch_add(1, Ordering::SeqCst);
    }
}

fn socket_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "virtiofsd-device-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `serve` on a fresh socket while `client` talks to it; returns serve's result.
fn with_daemon(
    config: DeviceConfig,
    client: impl FnOnce(&std::path::Path) + Send,
) -> (Result<(), Error>, Counting) {
    with_handler(UpperEcho, config, client)
}

/// Like [`with_daemon`], serving with `handler`.
fn with_handler<H: RequestHandler + 'static>(
    handler: H,
    config: DeviceConfig,
    client: impl FnOnce(&std::path::Path) + Send,
) -> (Result<(), Error>, Counting) {
    let path = socket_path("vhost.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let events = Counting::default();
    let handler = Arc::new(handler);
    let result = thread::scope(|s| {
        let server = s.spawn(|| serve(listener, handler, &config, &events));
        client(&path);
        server.join().expect("serve panicked")
    });
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    (result, events)
}

fn negotiate(frontend: &mut Frontend) -> VhostUserProtocolFeatures {
    let features = frontend.get_features().unwrap();
    frontend.set_features(features).unwrap();
    let proto = frontend.get_protocol_features().unwrap();
    frontend.set_protocol_features(proto).unwrap();
    frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    proto
}

#[test]
fn serve_negotiates_reports_config_and_ends_on_disconnect() {
    let config = DeviceConfig {
        tag: Some("myfs".into()),
        max_request_queues: 2,
        ..DeviceConfig::default()
    };
    let (result, events) = with_daemon(config, |path| {
        let mut frontend = Frontend::connect(path, 3).unwrap();
        let features = frontend.get_features().unwrap();
        assert_ne!(features & (1 << 32), 0, "VIRTIO_F_VERSION_1 missing");
        let proto = negotiate(&mut frontend);
        assert!(proto.contains(VhostUserProtocolFeatures::CONFIG));
        assert!(proto.contains(VhostUserProtocolFeatures::MQ));
        assert_eq!(frontend.get_queue_num().unwrap(), 3);
        let (_, space) = frontend
            .get_config(0, 40, VhostUserConfigFlags::empty(), &[0u8; 40])
            .unwrap();
        assert_eq!(&space[..5], b"myfs\0");
        assert!(space[4..36].iter().all(|&b| b == 0));
        assert_eq!(&space[36..], &[2, 0, 0, 0]);
        drop(frontend);
    });
    result.expect("a frontend disconnect must end serve cleanly");
    assert_eq!(events.connected.load(Ordering::SeqCst), 1);
    assert_eq!(events.disconnected.load(Ordering::SeqCst), 1);
}

#[test]
fn serve_without_tag_hides_config_feature() {
    let (result, _) = with_daemon(DeviceConfig::default(), |path| {
        let mut frontend = Frontend::connect(path, 2).unwrap();
        let proto = negotiate(&mut frontend);
        assert!(!proto.contains(VhostUserProtocolFeatures::CONFIG));
        assert!(proto.contains(VhostUserProtocolFeatures::REPLY_ACK));
    });
    result.unwrap();
}

#[test]
fn serve_reports_protocol_violation_as_error() {
    let (result, events) = with_daemon(DeviceConfig::default(), |path| {
        let mut stream = UnixStream::connect(path).unwrap();
        // A header with an undefined request code (0xffff), version 1 flags, empty body.
        let mut msg = Vec::new();
        msg.extend_from_slice(&0xffffu32.to_le_bytes());
        msg.extend_from_slice(&1u32.to_le_bytes());
        msg.extend_from_slice(&0u32.to_le_bytes());
        stream.write_all(&msg).unwrap();
        // Keep the socket open until the daemon has judged the message.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = [0u8; 1];
        let _ = std::io::Read::read(&mut stream, &mut buf);
    });
    assert!(
        matches!(result, Err(Error::Protocol(_))),
        "expected a protocol error, got {result:?}"
    );
    assert_eq!(events.disconnected.load(Ordering::SeqCst), 1);
}

#[test]
fn serve_rejects_invalid_config_before_accepting() {
    let path = socket_path("never.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let config = DeviceConfig {
        queue_size: 3,
        ..DeviceConfig::default()
    };
    let events = Counting::default();
    let result = serve(listener, Arc::new(UpperEcho), &config, &events);
    assert!(matches!(
        result,
        Err(Error::Config(ConfigError::QueueSize(3)))
    ));
    assert_eq!(events.connected.load(Ordering::SeqCst), 0);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

fn memfd(len: u64) -> File {
    // SAFETY: valid NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(c"guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(
        fd >= 0,
        "memfd_create failed: {}",
        io::Error::last_os_error()
    );
    // SAFETY: `fd` is freshly created and owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len).unwrap();
    file
}

#[test]
fn serve_processes_a_kicked_request_queue() {
    kicked_request_roundtrip(DeviceConfig::default());
}

#[test]
fn serve_processes_a_kicked_request_queue_on_thread_pool() {
    kicked_request_roundtrip(DeviceConfig {
        thread_pool_size: 2,
        ..DeviceConfig::default()
    });
}

fn kicked_request_roundtrip(config: DeviceConfig) {
    let (result, _) = with_daemon(config, ping);
    result.unwrap();
}

/// Connects, sets up request queue 1, sends "ping" and checks the device's "PING"; then
/// disconnects.
fn ping(path: &std::path::Path) {
    const RAM: usize = 0x10000;
    {
        let mut frontend = Frontend::connect(path, 2).unwrap();
        negotiate(&mut frontend);
        frontend.set_owner().unwrap();

        let file = memfd(RAM as u64);
        let ram = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
            GuestAddress(0),
            RAM,
            Some(FileOffset::new(file.try_clone().unwrap(), 0)),
        )])
        .unwrap();
        let host = ram.get_host_address(GuestAddress(0)).unwrap() as u64;
        frontend
            .set_mem_table(&[VhostUserMemoryRegionInfo {
                guest_phys_addr: 0,
                memory_size: RAM as u64,
                userspace_addr: host,
                mmap_offset: 0,
                mmap_handle: file.as_raw_fd(),
            }])
            .unwrap();

        // One request chain on request queue 1: "ping" in, 16 bytes of room out.
        let queue = MockSplitQueue::new(&ram, 16);
        ram.write_slice(b"ping", GuestAddress(0x1000)).unwrap();
        queue
            .add_desc_chains(
                &[
                    RawDescriptor::from(Descriptor::new(0x1000, 4, VRING_DESC_F_NEXT as u16, 1)),
                    RawDescriptor::from(Descriptor::new(0x2000, 16, VRING_DESC_F_WRITE as u16, 0)),
                ],
                0,
            )
            .unwrap();
        frontend.set_vring_num(1, 16).unwrap();
        frontend
            .set_vring_addr(
                1,
                &VringConfigData {
                    queue_max_size: 16,
                    queue_size: 16,
                    flags: 0,
                    desc_table_addr: host + queue.desc_table_addr().raw_value(),
                    used_ring_addr: host + queue.used_addr().raw_value(),
                    avail_ring_addr: host + queue.avail_addr().raw_value(),
                    log_addr: None,
                },
            )
            .unwrap();
        frontend.set_vring_base(1, 0).unwrap();
        let kick = EventFd::new(EFD_NONBLOCK).unwrap();
        let call = EventFd::new(EFD_NONBLOCK).unwrap();
        frontend.set_vring_call(1, &call).unwrap();
        frontend.set_vring_kick(1, &kick).unwrap();
        frontend.set_vring_enable(1, true).unwrap();
        kick.write(1).unwrap();

        let deadline = Instant::now() + Duration::from_secs(10);
        while call.read().is_err() {
            assert!(
                Instant::now() < deadline,
                "the device never signalled the used ring"
            );
            thread::sleep(Duration::from_millis(5));
        }
        let used = queue.used_addr();
        let idx: u16 = ram.read_obj(used.unchecked_add(2)).unwrap();
        let id: u32 = ram.read_obj(used.unchecked_add(4)).unwrap();
        let len: u32 = ram.read_obj(used.unchecked_add(8)).unwrap();
        assert_eq!((idx, id, len), (1, 0, 4));
        let mut reply = [0u8; 4];
        ram.read_slice(&mut reply, GuestAddress(0x2000)).unwrap();
        assert_eq!(&reply, b"PING");
    }
}

/// Counts the sessions it was told ended.
#[derive(Default)]
struct Sessions(AtomicUsize);

impl RequestHandler for Sessions {
    fn handle<R: RequestReader, W: ReplyWriter>(&self, r: &mut R, w: W) -> io::Result<usize> {
        UpperEcho.handle(r, w)
    }

    fn end_session(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn reconnect_serves_one_frontend_after_another() {
    let path = socket_path("vhost.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let fd = listener.as_raw_fd();
    let events = Counting::default();
    let handler = Arc::new(Sessions::default());
    let config = DeviceConfig {
        reconnect: true,
        thread_pool_size: 1,
        ..DeviceConfig::default()
    };
    let result = thread::scope(|s| {
        let server = s.spawn(|| serve(listener, Arc::clone(&handler), &config, &events));
        ping(&path);
        // A frontend that breaks off in the middle of the setup ends only its session too.
        {
            let mut frontend = Frontend::connect(&path, 2).unwrap();
            negotiate(&mut frontend);
        }
        ping(&path);
        let deadline = Instant::now() + Duration::from_secs(10);
        while handler.0.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "sessions did not end");
            thread::sleep(Duration::from_millis(5));
        }
        assert!(!server.is_finished(), "serve returned on a disconnect");
        // The only way out of the loop is a failure to accept.
        // SAFETY: shutting down a listening socket this test owns; it stays open until serve ends.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        server.join().expect("serve panicked")
    });
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    assert!(
        matches!(
            result,
            Err(Error::Daemon(
                DaemonError::Listen(_) | DaemonError::Accept(_)
            ))
        ),
        "{result:?}"
    );
    assert_eq!(events.connected.load(Ordering::SeqCst), 3);
    assert_eq!(events.disconnected.load(Ordering::SeqCst), 3);
    assert_eq!(handler.0.load(Ordering::SeqCst), 3);
}

/// Answers every request with a 16-byte header written through vm-memory and then the whole of
/// `file` read straight into the chain's remaining buffers (as a FUSE READ reply is).
struct ReadFile(File);

impl RequestHandler for ReadFile {
    fn handle<R: RequestReader, W: ReplyWriter>(&self, r: &mut R, mut w: W) -> io::Result<usize> {
        let mut req = vec![0u8; r.available_bytes()];
        r.read_exact(&mut req)?;
        w.write_all(&[0xaa; 16])?;
        let len = self.0.metadata()?.len() as usize;
        use std::os::fd::AsFd;
        let n = w.write_from_file(self.0.as_fd(), len, 0)?;
        Ok(16 + n)
    }
}

/// The pages the log marks, as guest page numbers.
fn logged_pages(log: &File) -> Vec<u64> {
    use std::os::unix::fs::FileExt;
    let mut bits = [0u8; 64];
    log.read_exact_at(&mut bits, 0).unwrap();
    (0..bits.len() as u64 * 8)
        .filter(|&p| bits[(p / 8) as usize] & (1 << (p % 8)) != 0)
        .collect()
}

#[test]
fn dirty_log_marks_the_reply_payload_and_the_used_ring_exactly() {
    const RAM: usize = 0x20000;
    let payload = memfd(0x1001);
    {
        use std::os::unix::fs::FileExt;
        payload.write_all_at(&[0x55; 0x1001], 0).unwrap();
    }
    let (result, _) = with_handler(ReadFile(payload), DeviceConfig::default(), |path| {
        let mut frontend = Frontend::connect(path, 2).unwrap();
        let features = frontend.get_features().unwrap();
        assert_ne!(
            features & VhostUserVirtioFeatures::LOG_ALL.bits(),
            0,
            "VHOST_F_LOG_ALL not offered"
        );
        let proto = negotiate(&mut frontend);
        assert!(proto.contains(VhostUserProtocolFeatures::LOG_SHMFD));
        frontend.set_owner().unwrap();

        let file = memfd(RAM as u64);
        let ram = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
            GuestAddress(0),
            RAM,
            Some(FileOffset::new(file.try_clone().unwrap(), 0)),
        )])
        .unwrap();
        let host = ram.get_host_address(GuestAddress(0)).unwrap() as u64;
        frontend
            .set_mem_table(&[VhostUserMemoryRegionInfo {
                guest_phys_addr: 0,
                memory_size: RAM as u64,
                userspace_addr: host,
                mmap_offset: 0,
                mmap_handle: file.as_raw_fd(),
            }])
            .unwrap();
        let log = memfd(4096);
        frontend
            .set_log_base(
                0,
                Some(vhost::VhostUserDirtyLogRegion {
                    mmap_size: 4096,
                    mmap_offset: 0,
                    mmap_handle: log.as_raw_fd(),
                }),
            )
            .unwrap();

        // The queue's rings sit in pages 0 to 2 (descriptors, avail, used). The request is in
        // page 0x10, the reply header in page 0x11, and 0x1001 bytes of payload land at
        // 0x12800..0x13801: pages 0x12 and 0x13, not 0x14 although the buffer reaches it.
        let queue = MockSplitQueue::new(&ram, 16);
        ram.write_slice(b"read", GuestAddress(0x10000)).unwrap();
        queue
            .add_desc_chains(
                &[
                    RawDescriptor::from(Descriptor::new(0x10000, 4, VRING_DESC_F_NEXT as u16, 1)),
                    RawDescriptor::from(Descriptor::new(
                        0x11000,
                        16,
                        (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
                        2,
                    )),
                    RawDescriptor::from(Descriptor::new(
                        0x12800,
                        0x2000,
                        VRING_DESC_F_WRITE as u16,
                        0,
                    )),
                ],
                0,
            )
            .unwrap();
        let used = queue.used_addr().raw_value();
        assert_eq!(logged_pages(&log), Vec::<u64>::new());
        frontend.set_vring_num(1, 16).unwrap();
        frontend
            .set_vring_addr(
                1,
                &VringConfigData {
                    queue_max_size: 16,
                    queue_size: 16,
                    flags: 0,
                    desc_table_addr: host + queue.desc_table_addr().raw_value(),
                    used_ring_addr: host + used,
                    avail_ring_addr: host + queue.avail_addr().raw_value(),
                    log_addr: None,
                },
            )
            .unwrap();
        frontend.set_vring_base(1, 0).unwrap();
        let kick = EventFd::new(EFD_NONBLOCK).unwrap();
        let call = EventFd::new(EFD_NONBLOCK).unwrap();
        frontend.set_vring_call(1, &call).unwrap();
        frontend.set_vring_kick(1, &kick).unwrap();
        frontend.set_vring_enable(1, true).unwrap();
        kick.write(1).unwrap();

        let deadline = Instant::now() + Duration::from_secs(10);
        while call.read().is_err() {
            assert!(Instant::now() < deadline, "the device never answered");
            thread::sleep(Duration::from_millis(5));
        }
        let len: u32 = ram.read_obj(GuestAddress(used + 8)).unwrap();
        assert_eq!(len, 16 + 0x1001);
        let mut tail = [0u8; 2];
        ram.read_slice(&mut tail, GuestAddress(0x13800)).unwrap();
        assert_eq!(tail, [0x55, 0]);
        let used_page = used / 0x1000;
        let mut expected = vec![used_page, 0x11, 0x12, 0x13];
        expected.sort_unstable();
        assert_eq!(logged_pages(&log), expected);
    });
    result.unwrap();
}
