//! A counting global allocator: every target's run must stay within a memory budget that grows
//! with the input's length, so a parser that reserves what a hostile length field declares
//! (instead of what the bytes hold) fails here, on the stable toolchain, where libFuzzer's own
//! `-malloc_limit_mb` is off (it needs a sanitizer's malloc hooks).
//!
//! [`bounded`] arms the budget for one run. An allocation that would take the bytes live since
//! the run started past it is refused on the spot: the allocator writes what was asked for to
//! standard error and returns null, which makes Rust abort ("memory allocation of N bytes
//! failed") before anything is touched, and libFuzzer saves the input as a crash. After the run
//! the peak is checked against the budget too, with a message naming both.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Once;

/// Bytes allocated and not yet freed, process-wide.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most bytes live above [`BASE`] since the run started.
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Bytes live when the run started.
static BASE: AtomicUsize = AtomicUsize::new(0);
/// The run's budget, in bytes above [`BASE`].
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Whether a run is being measured.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The size of an allocation refused in this run (0: none), in case the code under test
/// handled the refusal (`try_reserve`) instead of aborting.
static REFUSED: AtomicUsize = AtomicUsize::new(0);

/// The allocator: the system's, counted.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

impl Counting {
    /// Accounts `size` more bytes; false when that would pass the armed budget.
    fn grow(&self, size: usize) -> bool {
        let live = LIVE.fetch_add(size, Relaxed).saturating_add(size);
        if ARMED.load(Relaxed) {
            let used = live.saturating_sub(BASE.load(Relaxed));
            let limit = LIMIT.load(Relaxed);
            if used > limit {
                LIVE.fetch_sub(size, Relaxed);
                refuse(size, used, limit);
                return false;
            }
            PEAK.fetch_max(used, Relaxed);
        }
        true
    }

    fn shrink(&self, size: usize) {
        LIVE.fetch_sub(size, Relaxed);
    }
}

/// Says why an allocation is refused, and disarms the budget so that nothing the message or the
/// abort that follows may allocate is refused in turn. Writes to the unbuffered standard error
/// with `core::fmt` only.
fn refuse(size: usize, used: usize, limit: usize) {
    ARMED.store(false, Relaxed);
    REFUSED.store(size.max(1), Relaxed);
    let _ = writeln!(
        std::io::stderr(),
        "\n==== allocation budget exceeded: {size} more bytes would make {used} live in this \
         run, past its budget of {limit} bytes; the input made the code under test allocate \
         far more than its length ===="
    );
}

// SAFETY: every method forwards to `System` with the caller's layout and pointer unchanged; the
// counting touches only atomics. Refusing an allocation (returning null) is allowed by
// `GlobalAlloc`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.grow(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            self.shrink(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !self.grow(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            self.shrink(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        self.shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !self.grow(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                self.shrink(new_size - old);
            }
        } else if new_size < old {
            self.shrink(old - new_size);
        }
        p
    }
}

/// How much one run may allocate: `per_input_byte` bytes for every byte of input, plus `fixed`
/// (what the code under test reserves whatever the input, such as a read buffer).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Bytes allowed per input byte.
    pub per_input_byte: usize,
    /// Bytes allowed whatever the input.
    pub fixed: usize,
}

impl Budget {
    /// The budget for an input of `len` bytes.
    pub fn for_input(self, len: usize) -> usize {
        len.saturating_mul(self.per_input_byte)
            .saturating_add(self.fixed)
    }
}

/// Runs `f` outside the armed budget: the harness's own work on what the code under test
/// returned, such as formatting a parsed configuration for a check (a `Debug` of many hosts is
/// longer than its input by more than any budget's factor, legitimately). `f` must free what it
/// allocates before it returns, so the run's accounting goes on unchanged.
pub fn outside<R>(f: impl FnOnce() -> R) -> R {
    let armed = ARMED.swap(false, Relaxed);
    let result = f();
    ARMED.store(armed, Relaxed);
    result
}

/// Runs `f` for an input of `input_len` bytes within `budget`; returns its result and the peak
/// bytes it held live. Panics if the peak passed the budget (an allocation that would pass it
/// has already aborted the process).
pub fn bounded<R>(input_len: usize, budget: Budget, f: impl FnOnce() -> R) -> (R, usize) {
    disarm_on_panic();
    let limit = budget.for_input(input_len);
    BASE.store(LIVE.load(Relaxed), Relaxed);
    PEAK.store(0, Relaxed);
    REFUSED.store(0, Relaxed);
    LIMIT.store(limit, Relaxed);
    ARMED.store(true, Relaxed);
    let result = f();
    ARMED.store(false, Relaxed);
    let peak = PEAK.load(Relaxed);
    let refused = REFUSED.load(Relaxed);
    assert!(
        refused == 0,
        "an allocation of {refused} bytes for an input of {input_len} bytes was refused for \
         passing the budget of {limit} bytes ({budget:?})"
    );
    assert!(
        peak <= limit,
        "peak allocation {peak} bytes for an input of {input_len} bytes passes the budget of \
         {limit} bytes ({budget:?})"
    );
    (result, peak)
}

/// Makes a panic disarm the budget before the panic hook (libFuzzer's, which prints the message
/// and, with `RUST_BACKTRACE`, a symbolized backtrace) runs: what a failing check prints must
/// not be refused, or the report would turn into an allocation failure inside the hook.
fn disarm_on_panic() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            ARMED.store(false, Relaxed);
            previous(info)
        }));
    });
}

/// Bytes live now, process-wide (for tests of the allocator itself).
pub fn live() -> usize {
    LIVE.load(Relaxed)
}
