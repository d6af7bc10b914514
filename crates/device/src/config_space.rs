//! The virtio-fs device configuration space (virtio 1.2, 5.11.4): a 36-byte NUL-padded tag
//! followed by the number of request queues as a little-endian u32.

/// Size of the tag field in bytes.
pub const TAG_LEN: usize = 36;
/// Size of the whole configuration space in bytes.
pub const CONFIG_LEN: usize = TAG_LEN + 4;

/// Encodes the configuration space. The tag must already be validated to fit in [`TAG_LEN`];
/// a longer one is cut rather than overflowing the field.
pub fn encode(tag: Option<&str>, num_request_queues: u32) -> [u8; CONFIG_LEN] {
    let mut space = [0u8; CONFIG_LEN];
    if let Some(tag) = tag {
        let bytes = tag.as_bytes();
        let n = bytes.len().min(TAG_LEN);
        space[..n].copy_from_slice(&bytes[..n]);
    }
    space[TAG_LEN..].copy_from_slice(&num_request_queues.to_le_bytes());
    space
}

/// Returns `size` bytes of `space` from `offset`, or nothing when the range does not lie wholly
/// inside it (the frontend then sees an empty reply instead of the daemon crashing).
pub fn read(space: &[u8], offset: u32, size: u32) -> Vec<u8> {
    let start = offset as usize;
    match start.checked_add(size as usize) {
        Some(end) if end <= space.len() => space[start..end].to_vec(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_is_nul_padded_and_queue_count_little_endian() {
        let space = encode(Some("myfs"), 0x0102_0304);
        assert_eq!(&space[..4], b"myfs");
        assert!(space[4..TAG_LEN].iter().all(|&b| b == 0));
        assert_eq!(&space[TAG_LEN..], &[4, 3, 2, 1]);
    }

    #[test]
    fn full_length_tag_has_no_terminator() {
        let tag = "a".repeat(TAG_LEN);
        let space = encode(Some(&tag), 1);
        assert_eq!(&space[..TAG_LEN], tag.as_bytes());
        assert_eq!(&space[TAG_LEN..], &[1, 0, 0, 0]);
    }

    #[test]
    fn no_tag_gives_zero_tag_field() {
        let space = encode(None, 2);
        assert!(space[..TAG_LEN].iter().all(|&b| b == 0));
        assert_eq!(&space[TAG_LEN..], &[2, 0, 0, 0]);
    }

    #[test]
    fn reads_honour_bounds() {
        let space = encode(Some("tag"), 1);
        assert_eq!(read(&space, 0, CONFIG_LEN as u32), space.to_vec());
        assert_eq!(read(&space, 1, 2), b"ag".to_vec());
        assert_eq!(read(&space, TAG_LEN as u32, 4), vec![1, 0, 0, 0]);
        assert_eq!(read(&space, CONFIG_LEN as u32, 0), Vec::<u8>::new());
        assert!(read(&space, 0, CONFIG_LEN as u32 + 1).is_empty());
        assert!(read(&space, CONFIG_LEN as u32, 1).is_empty());
        assert!(read(&space, u32::MAX, u32::MAX).is_empty());
        assert!(read(&space, 39, u32::MAX).is_empty());
    }
}
