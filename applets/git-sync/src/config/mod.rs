//! Flags + env vars → a validated `Config`, with upstream's names, defaults,
//! precedence and checks. Every error names the flag or variable (exit 2).
//!
//! Resolution is a pure function of the flags and the environment: it logs
//! nothing and touches no file or socket, so `check` can run it before
//! anything binds. One module per concern; this one puts them together.

mod credentials;
mod files;
mod gitconfig;
mod hooks;
mod http;
mod lookup;
mod schedule;
mod source;

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::Signal;
use sidecar_runtime::usage;

pub use credentials::{Credential, GithubApp, PrivateKey, Ssh};
pub use lookup::{Env, ProcessEnv};

use crate::GitSync;
use lookup::{Lookup, Raw};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submodules {
    Recursive,
    Shallow,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcMode {
    Auto,
    Always,
    Aggressive,
    Off,
}

#[derive(Debug, Clone)]
pub struct ExecHook {
    pub command: String,
    pub timeout: Duration,
    pub backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct WebHook {
    pub url: String,
    pub method: String,
    /// 0 means fire and forget.
    pub success_status: u16,
    pub timeout: Duration,
    pub backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub repo: String,
    pub ref_: String,
    pub depth: u32,
    pub submodules: Submodules,
    pub sparse_checkout_file: Option<PathBuf>,
    /// Absolute and lexically clean; created and symlink-resolved at startup.
    pub root: PathBuf,
    /// As given: absolute, or relative to the resolved root.
    pub link: String,
    pub error_file: Option<String>,
    pub touch_file: Option<String>,
    pub period: Duration,
    pub init_period: Duration,
    pub sync_timeout: Duration,
    pub one_time: bool,
    pub sync_on_signal: Option<Signal>,
    pub max_failures: i64,
    pub init_max_failures: i64,
    pub group_write: bool,
    pub add_user: bool,
    pub stale_worktree_timeout: Duration,
    pub exechook: Option<ExecHook>,
    pub webhook: Option<WebHook>,
    pub credentials: Vec<Credential>,
    pub ssh: Ssh,
    pub askpass_url: Option<String>,
    pub github_app: Option<GithubApp>,
    /// `--cookie-file`: cookies sent with every HTTP(S) request.
    pub cookie_file: Option<PathBuf>,
    pub git_configs: Vec<(String, String)>,
    pub gc: GcMode,
    pub http_bind: Option<SocketAddr>,
    pub http_metrics: bool,
    pub http_pprof: bool,
    pub verbose: i64,
    pub ready_max_staleness: Option<Duration>,
    pub sync_token_file: Option<PathBuf>,
    /// What upstream logs while parsing (deprecated flags, overridden env
    /// vars); logged once by the process that runs this configuration.
    pub notes: Vec<String>,
}

impl Config {
    pub fn resolve(mut f: GitSync, env: &dyn Env) -> Result<Config> {
        let l = Lookup::new(env);
        reject_unsupported(&f, &l)?;
        let root = files::root(&mut f, &l)?;
        let source = source::resolve(&mut f, &l)?;
        let files = files::resolve(&mut f, &l, root, &source.repo)?;
        let schedule = schedule::resolve(&mut f, &l)?;
        let exechook = hooks::exechook(&mut f, &l)?;
        let webhook = hooks::webhook(&mut f, &l)?;
        let creds = credentials::resolve(&mut f, &l, source.repo)?;
        let git_configs = gitconfig::resolve(&mut f, &l)?;
        let http = http::resolve(&mut f, &l)?;
        Ok(Config {
            repo: creds.repo,
            ref_: source.ref_,
            depth: source.depth,
            submodules: source.submodules,
            sparse_checkout_file: source.sparse_checkout_file,
            root: files.root,
            link: files.link,
            error_file: files.error_file,
            touch_file: files.touch_file,
            period: schedule.period,
            init_period: schedule.init_period,
            sync_timeout: schedule.sync_timeout,
            one_time: schedule.one_time,
            sync_on_signal: schedule.sync_on_signal,
            max_failures: schedule.max_failures,
            init_max_failures: schedule.init_max_failures,
            group_write: files.group_write,
            add_user: files.add_user,
            stale_worktree_timeout: files.stale_worktree_timeout,
            exechook,
            webhook,
            credentials: creds.credentials,
            ssh: creds.ssh,
            askpass_url: creds.askpass_url,
            github_app: creds.github_app,
            cookie_file: creds.cookie_file,
            git_configs,
            gc: files.gc,
            http_bind: http.http_bind,
            http_metrics: http.http_metrics,
            http_pprof: http.http_pprof,
            verbose: http.verbose,
            ready_max_staleness: http.ready_max_staleness,
            sync_token_file: http.sync_token_file,
            notes: l.into_notes(),
        })
    }
}

/// Where `--error-file` points, from the raw flags (before validation, so a
/// config error can be written there). Relative to `--root`.
pub fn raw_error_file(f: &GitSync, env: &dyn Env) -> Option<PathBuf> {
    files::raw_error_file(f, &Lookup::new(env))
}

/// Upstream flags this implementation does not have. They are recognised by
/// name and refused, never silently ignored (README lists why).
fn reject_unsupported(f: &GitSync, l: &Lookup) -> Result<()> {
    let set = |flag: &str, v: &Option<String>, envs: &[&str]| {
        l.get(flag, v.clone(), envs).filter(|r| !r.value.is_empty())
    };
    let unsupported: [(&str, Option<Raw>, &str); 3] = [
        (
            "filter",
            set("filter", &f.filter, &["GITSYNC_FILTER"]),
            "partial clone is not possible: git runs in-process with libgit2, which cannot \
             fetch with a filter (use --depth and --sparse-checkout-file to fetch and check out less)",
        ),
        (
            "pre-publish-exechook-command",
            set(
                "pre-publish-exechook-command",
                &f.pre_publish_exechook_command,
                &["GITSYNC_PRE_PUBLISH_EXECHOOK_COMMAND"],
            ),
            "unreleased upstream feature, not implemented",
        ),
        (
            "git",
            set("git", &f.git, &["GITSYNC_GIT", "GIT_SYNC_GIT"]).filter(|r| r.value != "git"),
            "git runs in-process (libgit2); there is no git binary to replace",
        ),
    ];
    for (flag, raw, why) in unsupported {
        if let Some(r) = raw {
            return Err(usage!(
                "unsupported flag: --{flag} (set by {}): {why}",
                r.source
            ));
        }
    }
    Ok(())
}

/// Go's `filepath.Abs`: joined to the cwd and cleaned lexically, so
/// `../../x/../y` works before the directory exists.
pub fn absolute_clean(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    fn resolve(f: GitSync, env: &[(&'static str, &'static str)]) -> Result<Config> {
        Config::resolve(f, &MapEnv(env.iter().copied().collect()))
    }

    fn base() -> GitSync {
        GitSync {
            repo: Some("https://example.com/org/repo.git".into()),
            root: Some("/tmp/x".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_match_upstream() {
        let c = resolve(base(), &[]).unwrap();
        assert_eq!(c.ref_, "HEAD");
        assert_eq!(c.depth, 1);
        assert_eq!(c.link, "repo.git");
        assert_eq!(c.period, Duration::from_secs(10));
        assert_eq!(c.init_period, c.period);
        assert_eq!(c.sync_timeout, Duration::from_secs(120));
        assert_eq!(c.gc, GcMode::Always);
        assert_eq!(c.submodules, Submodules::Recursive);
        assert_eq!(c.max_failures, 0);
        assert!(c.ssh.known_hosts);
    }

    #[test]
    fn flag_beats_env_and_legacy_env_beats_new() {
        let mut f = base();
        f.period = Some("2s".into());
        let c = resolve(f, &[("GITSYNC_PERIOD", "5s")]).unwrap();
        assert_eq!(c.period, Duration::from_secs(2));
        let c = resolve(base(), &[("GITSYNC_DEPTH", "3"), ("GIT_SYNC_DEPTH", "0x4")]).unwrap();
        assert_eq!(c.depth, 4);
        let c = resolve(base(), &[("GIT_SYNC_WAIT", "0.5")]).unwrap();
        assert_eq!(c.period, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_name_the_source() {
        let e = resolve(base(), &[("GITSYNC_ONE_TIME", "yes")]).unwrap_err();
        assert!(e.to_string().contains("$GITSYNC_ONE_TIME"), "{e}");
        let mut f = base();
        f.period = Some("5ms".into());
        assert!(resolve(f, &[])
            .unwrap_err()
            .to_string()
            .contains("--period"));
        let mut f = base();
        f.filter = Some("blob:none".into());
        assert!(resolve(f, &[])
            .unwrap_err()
            .to_string()
            .contains("--filter"));
        let mut f = base();
        f.http_metrics = Some("true".into());
        assert!(resolve(f, &[])
            .unwrap_err()
            .to_string()
            .contains("--http-bind"));
    }

    #[test]
    fn password_in_url_becomes_a_credential() {
        let mut f = base();
        f.repo = Some("http://me:p%40ss@h:8/r".into());
        let c = resolve(f, &[]).unwrap();
        assert_eq!(c.repo, "http://h:8/r");
        assert_eq!(c.credentials[0].username, "me");
        assert_eq!(c.credentials[0].password, "p@ss");
    }

    #[test]
    fn credentials_json() {
        let mut f = base();
        f.credential = vec![r#"[{"url":"https://a","username":"u","password-file":"/p"}]"#.into()];
        let c = resolve(f, &[]).unwrap();
        assert_eq!(c.credentials[0].password_file, "/p");
        let mut f = base();
        f.credential = vec![r#"{"url":"https://a","username":"u","password":"x","nope":1}"#.into()];
        assert!(resolve(f, &[]).is_err());
    }

    #[test]
    fn roots_are_cleaned() {
        assert_eq!(
            absolute_clean(Path::new("/a/../../b/./c")),
            PathBuf::from("/b/c")
        );
    }
}
