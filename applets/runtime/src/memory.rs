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

/// Gives freed heap memory back to the kernel, at most once per
/// `RELEASE_EVERY`: at once, or (when one was made less than that ago) at
/// the end of the interval, so the last of a burst of closes is not missed.
/// Call when a connection closes. glibc keeps what a burst freed (an
/// HTTP/2 client that made us buffer 60 MB, then left): without this the
/// sidecar's RSS, and its container's memory accounting, stay at the
/// burst's high-water mark. An idle process closes nothing and pays
/// nothing; a busy one pays one `malloc_trim` (about a millisecond for a
/// 50 MB heap) per interval.
pub fn release_freed_memory() {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    const RELEASE_EVERY: Duration = Duration::from_secs(10);
    /// When memory was last released, and whether a release is scheduled.
    static STATE: Mutex<(Option<Instant>, bool)> = Mutex::new((None, false));
    let now = Instant::now();
    let wait = {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        match state.0 {
            Some(last) if now.duration_since(last) < RELEASE_EVERY => {
                if state.1 {
                    return;
                }
                state.1 = true;
                Some(RELEASE_EVERY - now.duration_since(last))
            }
            _ => {
                state.0 = Some(now);
                None
            }
        }
    };
    match wait {
        None => trim(),
        Some(wait) => {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                STATE.lock().unwrap_or_else(|e| e.into_inner()).1 = false;
                return;
            };
            runtime.spawn(async move {
                tokio::time::sleep(wait).await;
                *STATE.lock().unwrap_or_else(|e| e.into_inner()) = (Some(Instant::now()), false);
                trim();
            });
        }
    }
}

fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}
