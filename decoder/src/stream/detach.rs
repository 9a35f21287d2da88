//! Payloads that keep only their own bytes.
//!
//! A CopyData message is cut from the connection's read buffer, so a zero-copy `XLogData`
//! payload is a slice of that buffer and keeps all of it alive (64 KiB or more) for as long as
//! any value decoded from it lives — an assembled transaction, a queued job. Memory would then
//! follow how the socket happened to be read, not what is held. [`detach`] copies a payload into
//! an allocation of its own, so the read buffer is reused at the next read and a held change
//! costs what [`held_size`] says.
//!
//! **One allocation per payload.** Up to [`INLINE_MAX`] bytes the payload goes inline into the
//! one allocation that also carries `Bytes`'s reference count ([`Bytes::from_owner`] over a
//! fixed-size array), in size classes at most 1.5 × apart; the slices the decoder takes of it
//! (column values) only count references. A larger payload is an exact `Vec` plus the shared
//! header `Bytes` makes on the first slice: two allocations, for a payload of kilobytes.

use bytes::Bytes;

/// The largest payload stored inline; larger ones get an exact allocation.
pub const INLINE_MAX: usize = 4096;

/// What an inline payload holds besides its class: `from_owner`'s reference count and the
/// array's length (two words), and the allocator's chunk header.
const INLINE_OVERHEAD: usize = 2 * std::mem::size_of::<usize>() + 16;

/// What a larger payload holds besides its bytes: the shared header `Bytes` gives a promoted
/// `Vec` (three words) and the allocator's chunk headers of both allocations.
const VEC_OVERHEAD: usize = 3 * std::mem::size_of::<usize>() + 2 * 16;

/// A payload inline in a fixed-size array.
struct Inline<const N: usize> {
    len: usize,
    buf: [u8; N],
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }
}

fn inline<const N: usize>(data: &[u8]) -> Bytes {
    let mut owner = Inline {
        len: data.len(),
        buf: [0u8; N],
    };
    if let Some(dst) = owner.buf.get_mut(..data.len()) {
        dst.copy_from_slice(data);
    }
    // One allocation: `from_owner` boxes the array together with its reference count.
    Bytes::from_owner(owner)
}

/// The size classes, each at most 1.5 × the one before.
const CLASSES: [usize; 13] = [
    64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
];

/// The class a payload of `len` bytes is stored in, if inline.
fn class(len: usize) -> Option<usize> {
    CLASSES.iter().copied().find(|&c| len <= c)
}

/// A copy of `data` that owns its bytes (see the module docs).
pub fn detach(data: &[u8]) -> Bytes {
    match class(data.len()) {
        Some(64) => inline::<64>(data),
        Some(96) => inline::<96>(data),
        Some(128) => inline::<128>(data),
        Some(192) => inline::<192>(data),
        Some(256) => inline::<256>(data),
        Some(384) => inline::<384>(data),
        Some(512) => inline::<512>(data),
        Some(768) => inline::<768>(data),
        Some(1024) => inline::<1024>(data),
        Some(1536) => inline::<1536>(data),
        Some(2048) => inline::<2048>(data),
        Some(3072) => inline::<3072>(data),
        Some(_) => inline::<4096>(data),
        None => Bytes::from(data.to_vec()),
    }
}

/// The bytes the process holds for a detached payload of `len` bytes: its size class (or its
/// length) and the headers.
pub fn held_size(len: usize) -> usize {
    match class(len) {
        Some(c) => c + INLINE_OVERHEAD,
        None => len + VEC_OVERHEAD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_payloads_hold_their_own_bytes() {
        let read_buffer = Bytes::from((0..=255u8).cycle().take(65536).collect::<Vec<u8>>());
        for len in [0, 1, 63, 64, 65, 100, 4095, 4096, 4097, 20_000] {
            let frame = read_buffer.slice(1000..1000 + len);
            let owned = detach(&frame);
            assert_eq!(owned, frame, "len {len}");
            let range = read_buffer.as_ptr_range();
            assert!(
                len == 0 || !range.contains(&owned.as_ptr()),
                "len {len} still points into the read buffer"
            );
            // Slices of the copy see the same bytes.
            if len > 10 {
                assert_eq!(owned.slice(3..10), frame.slice(3..10));
                let clone = owned.clone();
                drop(owned);
                assert_eq!(clone, frame);
            }
            assert!(held_size(len) >= len);
        }
    }

    #[test]
    fn classes_waste_at_most_half() {
        for len in 1..=INLINE_MAX {
            let c = class(len).unwrap();
            assert!(c >= len);
            assert!(c <= 64.max(len * 3 / 2 + 1), "len {len} class {c}");
        }
        assert_eq!(class(INLINE_MAX + 1), None);
        assert!(CLASSES.windows(2).all(|w| w[1] * 2 <= w[0] * 3));
    }
}
