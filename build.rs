//! Build information for `--version` and the `sidecar_build_info` gauge.
//! Works from a clean checkout, a worktree, or a tarball without `.git`:
//! `SIDECAR_GIT_COMMIT` overrides git (the Dockerfile passes it, since the
//! image build context leaves `.git` out), and `SOURCE_DATE_EPOCH` fixes the
//! date for reproducible builds.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SIDECAR_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    pack_relative_relocations();
    order_functions();

    let commit = std::env::var("SIDECAR_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SIDECAR_GIT_COMMIT={}", commit.trim());

    let date = match std::env::var("SOURCE_DATE_EPOCH").map(|s| s.trim().to_string()) {
        Ok(secs) if !secs.is_empty() => {
            let secs: u64 = secs
                .trim()
                .parse()
                .expect("SOURCE_DATE_EPOCH: seconds since 1970");
            UNIX_EPOCH + Duration::from_secs(secs)
        }
        _ => SystemTime::now(),
    };
    println!(
        "cargo:rustc-env=SIDECAR_BUILD_DATE={}",
        humantime::format_rfc3339_seconds(date)
    );
}

/// The static-pie binary carries one 24-byte relocation per pointer in its
/// data (60,000 of them: 1.35 MiB of `.rela.dyn`), all read at start, so every
/// applet paid them in RSS. DT_RELR packs them into a bitmap a few KiB long
/// (binutils >= 2.38 or lld; glibc >= 2.36 applies them).
fn pack_relative_relocations() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// An idle applet's RSS is mostly its binary's code, mapped by the kernel in
/// 64 KiB fault-around windows: the ~1 MiB of functions an applet runs,
/// left where the compiler put them, spread over 7-12 MiB of windows. The
/// release link places them together (link/symbol-order.txt, made by
/// scripts/symbol-order), the functions shared by several applets first.
/// lld only (GNU ld lacks the flag): rustc links x86_64 Linux with its own
/// lld from 1.90 on, unless another linker is configured.
fn order_functions() {
    let order = std::path::Path::new("link/symbol-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let own_linker = ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|f| flags.contains(f))
        || !var("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty();
    if var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || own_linker
        || !rustc_links_with_lld()
        || !order.exists()
    {
        return;
    }
    let path = std::fs::canonicalize(order).expect("link/symbol-order.txt");
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    // A name the binary no longer has (renamed since the file was made)
    // only loses its place; a warning per name would bury real ones.
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// Whether rustc is 1.90 or later, whose x86_64 Linux default linker is lld.
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let minor = text
        .lines()
        .find_map(|l| l.strip_prefix("release: 1."))
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}

/// The checked-out commit, and a rerun whenever it moves. `None` without git
/// or outside a repository.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD names the branch; the branch's ref (loose or packed) names the
    // commit. `--git-path` resolves both for worktrees too.
    for path in ["HEAD", "packed-refs"] {
        rerun_if_changed(git(&["rev-parse", "--git-path", path]));
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        rerun_if_changed(git(&["rev-parse", "--git-path", &branch]));
    }
    Some(commit)
}

/// Only for files that exist: cargo reruns on every build for a missing one.
fn rerun_if_changed(path: Option<String>) {
    if let Some(p) = path.filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={p}");
    }
}
