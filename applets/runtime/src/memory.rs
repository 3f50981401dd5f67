//! What the allocator keeps while the process idles.

/// glibc gives a thread that finds the heap locked an arena of its own (up
/// to eight per core), and each arena keeps memory it freed: on a node with
/// many cores an idle sidecar carries dozens of them. Two arenas keep that
/// small while the data-path threads rarely wait on each other. Call before
/// any thread starts.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
