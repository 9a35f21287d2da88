//! The allocations a change costs on its way out of the stream: the payload detached from the
//! read buffer ([`detach`]) and decoded. Counted with a counting global allocator, so this file
//! runs as its own test binary with one test (another test's allocations would be counted too).
//!
//! Expected: one allocation for the detached payload (its bytes and `Bytes`'s reference count
//! together), one column vector per row image; taking column values as slices allocates
//! nothing. A payload above [`INLINE_MAX`] gets an exact `Vec` and a shared header: two.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use blueshift_decoder::pgoutput::{
    encode, ColumnValue, DeleteBody, InsertBody, OldTuple, PgOutputDecoder, PgOutputMessage,
    ProtocolVersion, TupleData, UpdateBody,
};
use blueshift_decoder::stream::{detach, INLINE_MAX};
use blueshift_decoder::Oid;
use bytes::{Bytes, BytesMut};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn row(values: &[&[u8]]) -> TupleData {
    TupleData {
        columns: values
            .iter()
            .map(|v| ColumnValue::Text(Bytes::copy_from_slice(v)))
            .collect(),
    }
}

fn wire(message: &PgOutputMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(message, false, &mut out).unwrap();
    out.to_vec()
}

/// Allocations per message to detach `frame` from a read buffer, decode it, and keep the
/// result (dropped outside the count), over `n` rounds.
fn allocations_per_change(read_buffer: &Bytes, n: usize) -> f64 {
    let mut decoder = PgOutputDecoder::new(ProtocolVersion::V1);
    let mut kept = Vec::with_capacity(n);
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for _ in 0..n {
        let data = detach(read_buffer);
        let message = decoder.decode(data).unwrap();
        if let PgOutputMessage::Insert(m) = &message {
            // Reading values as slices allocates nothing.
            std::hint::black_box(m.new.columns.iter().filter_map(ColumnValue::bytes).count());
        }
        kept.push(message);
    }
    COUNTING.store(false, Ordering::Relaxed);
    let count = ALLOCATIONS.load(Ordering::Relaxed);
    drop(kept);
    count as f64 / n as f64
}

#[test]
fn a_change_costs_one_allocation_per_payload_and_row_image() {
    let insert = PgOutputMessage::Insert(InsertBody {
        xid: None,
        relation: Oid(16384),
        new: row(&[b"4242", b"17", b"0123456789abcdef0123456789abcdef"]),
    });
    let update = PgOutputMessage::Update(UpdateBody {
        xid: None,
        relation: Oid(16384),
        old: Some(OldTuple::Key(row(&[b"4241"]))),
        new: row(&[b"4242", b"17", b"0123456789abcdef0123456789abcdef"]),
    });
    let delete = PgOutputMessage::Delete(DeleteBody {
        xid: None,
        relation: Oid(16384),
        old: OldTuple::Key(row(&[b"4242"])),
    });
    let wide_value = vec![b'x'; 2 * INLINE_MAX];
    let wide = PgOutputMessage::Insert(InsertBody {
        xid: None,
        relation: Oid(16384),
        new: row(&[b"1", &wide_value]),
    });
    let n = 10_000;
    let mut seen = Vec::new();
    for (name, message, expected) in [
        ("insert", &insert, 2.0),
        ("update with old key", &update, 3.0),
        ("delete", &delete, 2.0),
        ("insert above INLINE_MAX", &wide, 3.0),
    ] {
        let bytes = Bytes::from(wire(message));
        let per_change = allocations_per_change(&bytes, n);
        seen.push(format!("{name}: {per_change:.4}"));
        // A stray allocation of the test harness's own threads may land in the count.
        assert!(
            per_change <= expected + 0.01,
            "{name}: {per_change:.4} allocations per change, expected at most {expected}"
        );
    }
    println!("allocations per change: {}", seen.join(", "));
}
