//! `sidecar`: one static binary, five Pod sidecars. Dispatch only.

mod applets;
mod dispatch;

fn main() -> std::process::ExitCode {
    dispatch::main(std::env::args_os().collect())
}
