//! The global allocator: mimalloc, tuned to give freed memory back to the system at once.
//!
//! mimalloc rather than glibc's allocator: large transactions are assembled on one runtime
//! thread and freed on another, and glibc's per-thread arenas keep such memory resident.
//!
//! **Purge delay 0.** mimalloc (v3) keeps freed pages resident for `purge_delay` (1 s by default)
//! before it gives them back (`MADV_DONTNEED`), so while a large transaction streams through —
//! changes decoded, spilled, read back in chunks, folded, sent, freed — a second's worth of
//! freed pages stays resident on top of what is in use. Measured with `heaptrack` (the
//! `system-allocator` build; `tests/tests/memory_budget.rs`, a 4 MiB budget): the live heap
//! grew by 10 MiB over the process at rest while the resident size grew by 42 MiB with the
//! default delay; BENCHMARKS.md ("Issue 15, memory: where the resident bytes went") has the
//! figures with the delay at 0. `MIMALLOC_PURGE_DELAY` in the environment still wins (milliseconds).
//!
//! `--features system-allocator` builds with glibc's allocator instead, for heap profilers that
//! see only `malloc` (`heaptrack`); never for a release.

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of mimalloc v3's `mi_option_e` (`libmimalloc-sys` names no constant
/// for it).
#[cfg(not(feature = "system-allocator"))]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets mimalloc's options before anything else runs (see the module docs).
pub(crate) fn tune() {
    #[cfg(not(feature = "system-allocator"))]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` only stores an option's value; any value is valid for
        // `purge_delay` (milliseconds; 0 purges at once).
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}
