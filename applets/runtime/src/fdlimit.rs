//! The open-file limit a server needs.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft open-file limit to the hard one and returns the soft limit
/// in force afterwards. Every connection costs descriptors, and containers
/// often start with a soft limit of 1024 under a much higher hard limit.
pub fn raise_fd_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    // The kernel caps descriptors at fs.nr_open (2^20 by default) even when
    // the hard limit says unlimited.
    let target = hard.min(1 << 20);
    if soft < target && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        tracing::debug!(from = soft, to = target, "raised the open-file limit");
        return target;
    }
    soft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let limit = raise_fd_limit();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(limit, soft);
        assert_eq!(soft, hard.min(1 << 20));
    }
}
