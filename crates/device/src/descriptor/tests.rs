use std::fs::File;
use std::os::fd::{AsFd, FromRawFd};
use std::os::unix::fs::FileExt;

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::{DescriptorTable, MockSplitQueue};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

const MEM_SIZE: usize = 0x10000;
const W: u16 = VRING_DESC_F_WRITE as u16;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

fn raw(addr: u64, len: u32, flags: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
}

/// Builds a direct chain from (addr, len, flags) triples through the mock driver queue, so the
/// descriptors come from virtio-queue's own chain iterator.
fn with_chain<T>(
    mem: &GuestMemoryMmap,
    descs: &[(u64, u32, u16)],
    f: impl FnOnce(Result<(ChainReader<'_>, ChainWriter<'_>), ChainError>) -> T,
) -> T {
    let queue = MockSplitQueue::new(mem, 16);
    let raws: Vec<_> = descs.iter().map(|&(a, l, fl)| raw(a, l, fl)).collect();
    let chain = queue.build_desc_chain(&raws).unwrap();
    f(split_chain(mem, chain))
}

fn memfd() -> File {
    // SAFETY: the name is a valid NUL-terminated string and the flags are valid.
    let fd = unsafe { libc::memfd_create(c"device-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(
        fd >= 0,
        "memfd_create failed: {}",
        io::Error::last_os_error()
    );
    // SAFETY: `fd` was just created and is owned by nobody else.
    unsafe { File::from_raw_fd(fd) }
}

#[test]
fn reads_request_across_descriptors() {
    let mem = memory();
    mem.write_slice(b"abcdefgh", GuestAddress(0x1000)).unwrap();
    mem.write_slice(b"ijklmnop", GuestAddress(0x2000)).unwrap();
    with_chain(
        &mem,
        &[(0x1000, 8, 0), (0x2000, 8, 0), (0x3000, 16, W)],
        |parts| {
            let (mut r, w) = parts.unwrap();
            assert_eq!(r.available_bytes(), 16);
            assert_eq!(w.available_bytes(), 16);
            let mut buf = [0u8; 12];
            r.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"abcdefghijkl");
            assert_eq!(r.available_bytes(), 4);
            let mut big = [0u8; 5];
            let err = r.read_exact(&mut big).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            // A failed read consumes nothing.
            assert_eq!(r.available_bytes(), 4);
            let mut rest = [0u8; 4];
            r.read_exact(&mut rest).unwrap();
            assert_eq!(&rest, b"mnop");
            assert_eq!(r.available_bytes(), 0);
        },
    );
}

#[test]
fn writes_reply_across_descriptors() {
    let mem = memory();
    with_chain(
        &mem,
        &[(0x1000, 4, 0), (0x3000, 6, W), (0x4000, 6, W)],
        |parts| {
            let (_r, mut w) = parts.unwrap();
            w.write_all(b"0123456789").unwrap();
            assert_eq!(w.bytes_written(), 10);
            assert_eq!(w.available_bytes(), 2);
            let err = w.write_all(b"xyz").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WriteZero);
            assert_eq!(w.bytes_written(), 10);
            w.write_all(b"AB").unwrap();
            assert_eq!(w.available_bytes(), 0);
        },
    );
    let mut a = [0u8; 6];
    let mut b = [0u8; 6];
    mem.read_slice(&mut a, GuestAddress(0x3000)).unwrap();
    mem.read_slice(&mut b, GuestAddress(0x4000)).unwrap();
    assert_eq!(&a, b"012345");
    assert_eq!(&b, b"6789AB");
}

#[test]
fn split_at_lets_payload_precede_header() {
    let mem = memory();
    with_chain(&mem, &[(0x3000, 4, W), (0x4000, 12, W)], |parts| {
        let (_r, mut head) = parts.unwrap();
        let mut tail = head.split_at(6).unwrap();
        assert_eq!(head.available_bytes(), 6);
        assert_eq!(tail.available_bytes(), 10);
        tail.write_all(b"payload!!!").unwrap();
        head.write_all(b"HEADER").unwrap();
        assert_eq!(head.bytes_written(), 6);
        assert_eq!(tail.bytes_written(), 10);
        assert!(head.write_all(b"x").is_err());
        assert!(tail.write_all(b"x").is_err());
        assert_eq!(
            head.split_at(1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    });
    let mut a = [0u8; 4];
    let mut b = [0u8; 12];
    mem.read_slice(&mut a, GuestAddress(0x3000)).unwrap();
    mem.read_slice(&mut b, GuestAddress(0x4000)).unwrap();
    assert_eq!(&a, b"HEAD");
    assert_eq!(&b, b"ERpayload!!!");
}

#[test]
fn split_at_boundaries() {
    let mem = memory();
    with_chain(&mem, &[(0x3000, 4, W), (0x4000, 4, W)], |parts| {
        let (_r, mut w) = parts.unwrap();
        w.write_all(b"ab").unwrap();
        // Split exactly at a descriptor boundary, counted from the unwritten position.
        let mut tail = w.split_at(2).unwrap();
        assert_eq!(tail.available_bytes(), 4);
        let mut empty = tail.split_at(4).unwrap();
        assert_eq!(empty.available_bytes(), 0);
        assert!(empty.write_all(b"z").is_err());
        tail.write_all(b"WXYZ").unwrap();
        w.write_all(b"cd").unwrap();
        let zero = w.split_at(0).unwrap();
        assert_eq!(zero.available_bytes(), 0);
    });
    let mut out = [0u8; 8];
    mem.read_slice(&mut out[..4], GuestAddress(0x3000)).unwrap();
    mem.read_slice(&mut out[4..], GuestAddress(0x4000)).unwrap();
    assert_eq!(&out, b"abcdWXYZ");
}

#[test]
fn read_to_file_writes_guest_bytes_to_file() {
    let mem = memory();
    mem.write_slice(b"hdr!", GuestAddress(0x1000)).unwrap();
    mem.write_slice(b"hello ", GuestAddress(0x1004)).unwrap();
    mem.write_slice(b"world", GuestAddress(0x2000)).unwrap();
    let file = memfd();
    with_chain(
        &mem,
        &[(0x1000, 10, 0), (0x2000, 5, 0), (0x3000, 16, W)],
        |parts| {
            let (mut r, _w) = parts.unwrap();
            let mut hdr = [0u8; 4];
            r.read_exact(&mut hdr).unwrap();
            let n = r.read_to_file(file.as_fd(), 100, 3).unwrap();
            assert_eq!(n, 11, "count is capped at the request's remaining bytes");
            assert_eq!(r.available_bytes(), 0);
        },
    );
    let mut out = vec![0u8; 14];
    file.read_exact_at(&mut out, 0).unwrap();
    assert_eq!(&out, b"\0\0\0hello world");
}

#[test]
fn read_to_file_honours_count() {
    let mem = memory();
    mem.write_slice(b"abcdef", GuestAddress(0x1000)).unwrap();
    let file = memfd();
    with_chain(&mem, &[(0x1000, 6, 0)], |parts| {
        let (mut r, _w) = parts.unwrap();
        assert_eq!(r.read_to_file(file.as_fd(), 4, 0).unwrap(), 4);
        assert_eq!(r.available_bytes(), 2);
        let mut rest = [0u8; 2];
        r.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"ef");
    });
    assert_eq!(file.metadata().unwrap().len(), 4);
}

#[test]
fn write_from_file_reads_into_guest_and_stops_at_eof() {
    let mem = memory();
    let file = memfd();
    file.write_all_at(b"0123456789", 0).unwrap();
    with_chain(
        &mem,
        &[(0x1000, 4, 0), (0x3000, 3, W), (0x4000, 16, W)],
        |parts| {
            let (_r, mut w) = parts.unwrap();
            w.write_all(b"H").unwrap();
            let n = w.write_from_file(file.as_fd(), 100, 2).unwrap();
            assert_eq!(n, 8, "short at end of file");
            assert_eq!(w.bytes_written(), 9);
            assert_eq!(w.available_bytes(), 10);
            assert_eq!(w.write_from_file(file.as_fd(), 5, 10).unwrap(), 0);
        },
    );
    let mut a = [0u8; 3];
    let mut b = [0u8; 6];
    mem.read_slice(&mut a, GuestAddress(0x3000)).unwrap();
    mem.read_slice(&mut b, GuestAddress(0x4000)).unwrap();
    assert_eq!(&a, b"H23");
    assert_eq!(&b, b"456789");
}

#[test]
fn write_from_file_honours_count_and_bad_fd_is_an_error() {
    let mem = memory();
    let file = memfd();
    file.write_all_at(b"abcdefgh", 0).unwrap();
    with_chain(&mem, &[(0x3000, 8, W)], |parts| {
        let (_r, mut w) = parts.unwrap();
        assert_eq!(w.write_from_file(file.as_fd(), 3, 0).unwrap(), 3);
        assert_eq!(w.available_bytes(), 5);
        // A directory cannot be read with preadv: the error surfaces, nothing is consumed.
        let dir = File::open(std::env::temp_dir()).unwrap();
        assert!(w.write_from_file(dir.as_fd(), 3, 0).is_err());
        assert_eq!(w.available_bytes(), 5);
    });
    let mut out = [0u8; 3];
    mem.read_slice(&mut out, GuestAddress(0x3000)).unwrap();
    assert_eq!(&out, b"abc");
}

#[test]
fn descriptor_outside_guest_memory_is_rejected() {
    let mem = memory();
    // Straddles the end of guest memory.
    with_chain(
        &mem,
        &[(0x1000, 4, 0), (MEM_SIZE as u64 - 8, 16, W)],
        |parts| {
            assert_eq!(
                parts.err(),
                Some(ChainError::OutOfBounds {
                    addr: MEM_SIZE as u64 - 8,
                    len: 16
                })
            );
        },
    );
    // Entirely unmapped, and at the very top of the address space.
    with_chain(&mem, &[(0x10_0000, 4, 0)], |parts| {
        assert!(matches!(parts, Err(ChainError::OutOfBounds { .. })));
    });
    with_chain(&mem, &[(u64::MAX - 1, 4, 0)], |parts| {
        assert!(matches!(parts, Err(ChainError::OutOfBounds { .. })));
    });
}

#[test]
fn readable_after_writable_is_rejected() {
    let mem = memory();
    with_chain(
        &mem,
        &[(0x1000, 4, 0), (0x3000, 4, W), (0x2000, 4, 0)],
        |parts| {
            assert_eq!(parts.err(), Some(ChainError::ReadableAfterWritable));
        },
    );
    // Even a zero-length writable descriptor starts the writable part.
    with_chain(&mem, &[(0x3000, 0, W), (0x2000, 4, 0)], |parts| {
        assert_eq!(parts.err(), Some(ChainError::ReadableAfterWritable));
    });
}

#[test]
fn a_structural_fault_wins_over_an_unbacked_descriptor_before_it() {
    let mem = memory();
    let next = VRING_DESC_F_NEXT as u16;
    let oob = (MEM_SIZE as u64, 4);
    let readable_after_writable = [
        Descriptor::new(oob.0, oob.1, next, 1),
        Descriptor::new(0x3000, 4, W | next, 2),
        Descriptor::new(0x2000, 4, 0, 0),
    ];
    assert_eq!(
        split_chain(&mem, readable_after_writable).err(),
        Some(ChainError::ReadableAfterWritable)
    );
    let truncated = [
        Descriptor::new(oob.0, oob.1, next, 1),
        Descriptor::new(0x2000, 4, next, 2),
    ];
    assert_eq!(
        split_chain(&mem, truncated).err(),
        Some(ChainError::Truncated)
    );
    let too_long = [
        Descriptor::new(oob.0, oob.1, next, 1),
        Descriptor::new(0x1000, u32::MAX, 0, 0),
    ];
    assert_eq!(split_chain(&mem, too_long).err(), Some(ChainError::TooLong));
    // With the structure sound, the first unbacked descriptor is the one reported.
    let unbacked = [
        Descriptor::new(0x1000, 4, next, 1),
        Descriptor::new(oob.0, oob.1, W | next, 2),
        Descriptor::new(oob.0 + 8, 4, W, 0),
    ];
    assert_eq!(
        split_chain(&mem, unbacked).err(),
        Some(ChainError::OutOfBounds {
            addr: oob.0,
            len: oob.1
        })
    );
}

#[test]
fn transfers_over_more_slices_than_the_stack_holds() {
    let mem = memory();
    let next = VRING_DESC_F_NEXT as u16;
    for n in [
        STACK_IOVECS as u16 - 1,
        STACK_IOVECS as u16,
        STACK_IOVECS as u16 + 1,
    ] {
        let data: Vec<u8> = (0..n).map(|i| i as u8 ^ 0x5a).collect();
        let file = memfd();
        file.write_all_at(&data, 0).unwrap();
        // One 1-byte writable descriptor per byte, apart in memory: n slices.
        let descs: Vec<Descriptor> = (0..n)
            .map(|i| {
                let flags = W | if i + 1 < n { next } else { 0 };
                Descriptor::new(0x1000 + 0x10 * u64::from(i), 1, flags, i + 1)
            })
            .collect();
        let (_, mut w) = split_chain(&mem, descs).unwrap();
        assert_eq!(
            w.write_from_file(file.as_fd(), usize::MAX, 0).unwrap(),
            n as usize
        );
        for i in 0..n {
            let mut b = [0u8];
            mem.read_slice(&mut b, GuestAddress(0x1000 + 0x10 * u64::from(i)))
                .unwrap();
            assert_eq!(b[0], data[usize::from(i)], "slice {i} of {n}");
        }
    }
}

#[test]
fn total_length_overflow_is_rejected() {
    let mem = memory();
    let next = VRING_DESC_F_NEXT as u16;
    let descs = [
        Descriptor::new(0x1000, 0x8000_0000, next, 1),
        Descriptor::new(0x1000, 0x8000_0000, W, 0),
    ];
    assert_eq!(split_chain(&mem, descs).err(), Some(ChainError::TooLong));
}

#[test]
fn looping_chain_is_rejected() {
    let mem = memory();
    let next = VRING_DESC_F_NEXT as u16;
    let queue = MockSplitQueue::new(&mem, 16);
    let descs = [
        RawDescriptor::from(Descriptor::new(0x1000, 4, next, 1)),
        RawDescriptor::from(Descriptor::new(0x2000, 4, next, 0)),
    ];
    let chain = queue.build_multiple_desc_chains(&descs).unwrap();
    assert_eq!(split_chain(&mem, chain).err(), Some(ChainError::Truncated));
}

#[test]
fn empty_chain_is_rejected() {
    let mem = memory();
    assert_eq!(
        split_chain(&mem, std::iter::empty()).err(),
        Some(ChainError::Empty)
    );
}

#[test]
fn indirect_chain_is_followed() {
    let mem = memory();
    mem.write_slice(b"indirect", GuestAddress(0x1000)).unwrap();
    let next = VRING_DESC_F_NEXT as u16;
    let table = DescriptorTable::new(&mem, GuestAddress(0x8000), 3);
    table
        .store(0, RawDescriptor::from(Descriptor::new(0x1000, 8, next, 1)))
        .unwrap();
    table
        .store(
            1,
            RawDescriptor::from(Descriptor::new(0x3000, 4, W | next, 2)),
        )
        .unwrap();
    table
        .store(2, RawDescriptor::from(Descriptor::new(0x4000, 4, W, 0)))
        .unwrap();
    with_chain(
        &mem,
        &[(0x8000, 3 * 16, VRING_DESC_F_INDIRECT as u16)],
        |parts| {
            let (mut r, mut w) = parts.unwrap();
            assert_eq!(r.available_bytes(), 8);
            assert_eq!(w.available_bytes(), 8);
            let mut buf = [0u8; 8];
            r.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"indirect");
            w.write_all(b"reply!!!").unwrap();
        },
    );
    let mut a = [0u8; 4];
    let mut b = [0u8; 4];
    mem.read_slice(&mut a, GuestAddress(0x3000)).unwrap();
    mem.read_slice(&mut b, GuestAddress(0x4000)).unwrap();
    assert_eq!(&a, b"repl");
    assert_eq!(&b, b"y!!!");
}

#[test]
fn indirect_descriptor_outside_memory_is_rejected() {
    let mem = memory();
    let table = DescriptorTable::new(&mem, GuestAddress(0x8000), 1);
    table
        .store(0, RawDescriptor::from(Descriptor::new(0xfff0, 0x100, 0, 0)))
        .unwrap();
    with_chain(
        &mem,
        &[(0x8000, 16, VRING_DESC_F_INDIRECT as u16)],
        |parts| {
            assert!(matches!(
                parts,
                Err(ChainError::OutOfBounds { addr: 0xfff0, .. })
            ));
        },
    );
}

#[test]
fn malformed_indirect_table_is_rejected() {
    let mem = memory();
    // A table length that is not a multiple of the descriptor size.
    with_chain(
        &mem,
        &[(0x8000, 10, VRING_DESC_F_INDIRECT as u16)],
        |parts| {
            assert_eq!(parts.err(), Some(ChainError::Empty));
        },
    );
    // A table outside guest memory.
    with_chain(
        &mem,
        &[(0x10_0000, 16, VRING_DESC_F_INDIRECT as u16)],
        |parts| {
            assert!(parts.is_err());
        },
    );
}

#[test]
fn io_spanning_more_descriptors_than_one_syscall_takes() {
    const N: u16 = 1500;
    let mem = memory();
    let next = VRING_DESC_F_NEXT as u16;
    let data: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
    mem.write_slice(&data, GuestAddress(0x1000)).unwrap();
    // Every byte in its own descriptor, more than MAX_IOVECS of them.
    let descs: Vec<Descriptor> = (0..N)
        .map(|i| {
            let flags = if i + 1 < N { next } else { 0 };
            Descriptor::new(0x1000 + u64::from(i), 1, flags, i + 1)
        })
        .collect();
    let (mut r, _) = split_chain(&mem, descs.clone()).unwrap();
    let file = memfd();
    assert_eq!(
        r.read_to_file(file.as_fd(), usize::MAX, 0).unwrap(),
        N as usize
    );
    let mut out = vec![0u8; N as usize];
    file.read_exact_at(&mut out, 0).unwrap();
    assert_eq!(out, data);

    let (mut r, _) = split_chain(&mem, descs).unwrap();
    let mut copy = vec![0u8; N as usize];
    r.read_exact(&mut copy).unwrap();
    assert_eq!(copy, data);
}

/// The kernel writes READ payloads behind vm-memory's back; the pages it wrote must be marked
/// in the region-relative bitmaps all the same, offsets within a descriptor and a descriptor
/// that crosses into the next region included.
#[test]
fn payload_read_from_a_file_marks_exactly_its_pages() {
    use vm_memory::bitmap::{AtomicBitmap, Bitmap};
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    let mem: GuestMemoryMmap<AtomicBitmap> = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10000),
        (GuestAddress(0x10000), 0x10000),
    ])
    .unwrap();
    let file = memfd();
    file.write_all_at(&[9u8; 0x1001], 0).unwrap();
    let queue = MockSplitQueue::new(&mem, 16);
    // One writable descriptor from page 0xf of the first region into the second; the 16-byte
    // header goes first (vm-memory marks that), then 0x1001 payload bytes at 0xf010..0x10011.
    let chain = queue.build_desc_chain(&[raw(0xf000, 0x3000, W)]).unwrap();
    let (_, mut w) = split_chain(&mem, chain).unwrap();
    w.write_all(&[1u8; 16]).unwrap();
    assert_eq!(w.write_from_file(file.as_fd(), 0x2000, 0).unwrap(), 0x1001);
    let first = mem.find_region(GuestAddress(0)).unwrap();
    let second = mem.find_region(GuestAddress(0x10000)).unwrap();
    let dirty = |r: &vm_memory::GuestRegionMmap<AtomicBitmap>, page: usize| {
        r.bitmap().dirty_at(page * 0x1000)
    };
    let first_dirty: Vec<usize> = (0..16).filter(|&p| dirty(first, p)).collect();
    let second_dirty: Vec<usize> = (0..16).filter(|&p| dirty(second, p)).collect();
    // The mock queue's own rings were written through vm-memory in the first pages.
    assert!(first_dirty.contains(&0xf), "{first_dirty:?}");
    assert!(!first_dirty.contains(&0xe), "{first_dirty:?}");
    assert_eq!(
        second_dirty,
        [0],
        "only the payload's last 0x11 bytes reach the second region"
    );
    assert_eq!(second.len(), 0x10000);
    let mut tail = [0u8; 2];
    mem.read_slice(&mut tail, GuestAddress(0x10010)).unwrap();
    assert_eq!(tail, [9, 0]);
}
