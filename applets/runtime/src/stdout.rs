//! Writing a command's answer (help, man page, completions) to stdout.
//! Rust ignores SIGPIPE, so `print!` into a closed pipe (`sidecar --man |
//! head -1`) would panic; here a reader that went away ends the output
//! quietly, as ripgrep does.

use std::io::{ErrorKind, Write};
use std::process::ExitCode;

/// Writes `text` to stdout; a reader that has gone away is not an error.
pub fn write(text: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// [`write`], as the exit code of a command whose whole job is the output:
/// 0, or 1 with a message for a write error other than a closed pipe.
pub fn print(text: &[u8]) -> ExitCode {
    match write(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sidecar: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}
