//! Errors that decide the exit code.

/// Bad flags, env or config: exit code 2. The message names the flag, variable
/// or file and says what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Shorthand: `return Err(usage!("--root: {} is not a directory", p))`.
#[macro_export]
macro_rules! usage {
    ($($arg:tt)*) => {
        ::anyhow::Error::new($crate::UsageError(format!($($arg)*)))
    };
}

/// Exit codes shared by every applet (DESIGN.md).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 127;
}

/// The errors `e` wraps (its `source()`, that one's, …), nearest first, not
/// `e` itself.
pub fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(e.source(), |c| c.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_listed_nearest_first() {
        let e = anyhow::anyhow!("disk on fire")
            .context("writing the checkpoint")
            .context("saving");
        let texts: Vec<String> = causes(e.as_ref()).map(|c| c.to_string()).collect();
        assert_eq!(texts, ["writing the checkpoint", "disk on fire"]);
        let alone = std::io::Error::other("alone");
        assert_eq!(causes(&alone).count(), 0);
    }
}
