//! The process's allocator (mimalloc) and what we ask of the memory system by hand: no
//! transparent huge pages, and freed memory given back to the operating system after a password
//! hash.
//!
//! mimalloc asks the kernel for transparent huge pages on its arenas (`madvise(MADV_HUGEPAGE)`),
//! so a few touched bytes can make 2 MiB resident: an idle gateway held 8 MiB of huge pages in a
//! 14 MiB heap (bench/README.md). The gateway's heap is small and scattered (connections,
//! tunnels, snapshots), where huge pages save little TLB work and cost resident memory, so they
//! are turned off for the process at start ([`disable_huge_pages`]).
//!
//! Argon2id takes a 19 MiB block per hash (first-start administrator, every login). mimalloc
//! frees such a block into its arena and returns the pages to the system only after a delay,
//! and only when some thread allocates again; a gateway that sits idle after a login would keep
//! the 19 MiB resident for good (bench/README.md: idle RSS 37 or 66 MiB). Forcing a collection
//! right after the hash returns it at once; it runs on the blocking thread that hashed, next to
//! a hash that took tens of milliseconds, so its cost does not show.

/// Measured faster than glibc malloc per proxied request, with less resident memory after load
/// (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The workspace denies unsafe code; this block is its one exception. `mi_collect` is part of
// the mimalloc library the `mimalloc` crate links (its `libmimalloc-sys` declares it too, behind
// a feature that would pull another crate in for its C types).
#[allow(unsafe_code)]
mod ffi {
    unsafe extern "C" {
        /// `force`: also return freed pages of other threads' abandoned heaps and the arenas'
        /// free ranges to the operating system now, instead of after mimalloc's purge delay.
        pub safe fn mi_collect(force: bool);
    }

    /// `prctl(PR_SET_THP_DISABLE, 1)`: no transparent huge pages for this process's memory,
    /// whatever was `madvise`d. Takes no pointer; fails only on kernels older than 3.15.
    #[cfg(target_os = "linux")]
    pub fn disable_thp() -> bool {
        // SAFETY: prctl with PR_SET_THP_DISABLE reads its integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, 0, 0, 0) == 0 }
    }
}

/// Turns transparent huge pages off for this process (see the module's documentation). Runs
/// first thing in `main`: pages touched from then on are 4 KiB ones.
pub fn disable_huge_pages() {
    #[cfg(target_os = "linux")]
    if !ffi::disable_thp() {
        // Not fatal: memory use is only higher. Logging is not set up yet.
        eprintln!("warning: could not turn transparent huge pages off (prctl)");
    }
}

/// Returns the memory mimalloc holds freed to the operating system.
pub fn release_free_memory() {
    ffi::mi_collect(true);
}
