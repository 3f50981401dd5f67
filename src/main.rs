//! `sidecar`: one static binary, five Pod sidecars. Dispatch only.

mod applets;
mod dispatch;
mod docs;

use sidecar_runtime::build_info::{self, BuildInfo};

fn main() -> std::process::ExitCode {
    build_info::set(BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("SIDECAR_GIT_COMMIT"),
        date: env!("SIDECAR_BUILD_DATE"),
        applets: applets::APPLETS.iter().map(|a| a.name).collect(),
    });
    dispatch::main(std::env::args_os().collect())
}
