//! The process's allocator (mimalloc) and the one thing we ask of it by hand: giving freed
//! memory back to the operating system after a password hash.
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
}

/// Returns the memory mimalloc holds freed to the operating system.
pub fn release_free_memory() {
    ffi::mi_collect(true);
}
