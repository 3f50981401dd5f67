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
