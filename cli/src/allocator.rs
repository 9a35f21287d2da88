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
//! **No transparent huge pages.** mimalloc asks for huge pages on its arena (`MADV_HUGEPAGE`,
//! which a kernel in THP `madvise` mode honours) and then purges only whole 2 MiB pages: one
//! live object keeps 2 MiB resident. Measured on an idle `blueshift sync` (release build, this
//! machine's `madvise` mode): 14.2 MiB anonymous resident with them, 3.4 MiB without. So THP is
//! off for the process (`prctl(PR_SET_THP_DISABLE)`, checked by the kernel at every fault) and
//! for mimalloc's later mappings (`allow_thp`), unless `MIMALLOC_ALLOW_THP` says otherwise.
//! The flag is inherited by child processes: the servers `demo` and `bench` start run without
//! THP too (in `madvise` mode PostgreSQL never asks for them, so nothing changes for them there).
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

/// `mi_option_allow_thp` of mimalloc v3's `mi_option_e`.
#[cfg(not(feature = "system-allocator"))]
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Sets mimalloc's options before anything else runs (see the module docs).
pub(crate) fn tune() {
    #[cfg(not(feature = "system-allocator"))]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: `mi_option_set` only stores an option's value (0: no `MADV_HUGEPAGE` on new
        // mappings); `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` only sets a flag of this process
        // (its result is ignored: without it the process merely keeps huge pages).
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
            #[cfg(target_os = "linux")]
            {
                // prctl's arguments are `unsigned long`s.
                let (disable, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
                libc::prctl(libc::PR_SET_THP_DISABLE, disable, unused, unused, unused);
            }
        }
    }
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
