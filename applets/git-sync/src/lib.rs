//! Keep a git ref checked out in a shared volume (kubernetes/git-sync v4 compatible).
//!
//! Flags keep upstream's names, Go value syntax and env vars (`GITSYNC_*`, with
//! the legacy `GIT_SYNC_*` names winning when both are set, as in v4.4+), so a
//! Pod spec only swaps the image. Every git operation runs in-process with
//! libgit2: the image needs no git, ssh or shell.

mod auth;
mod checkout;
mod config;
mod cookies;
mod errorfile;
mod fetch;
mod gc;
mod github_app;
mod gitproto;
mod goparse;
mod hooks;
mod indexfile;
mod layout;
mod local;
mod metrics;
mod packfeed;
mod packidx;
mod pass;
mod preflight;
mod refname;
mod repo;
mod server;
mod shallow;
mod smarthttp;
mod spare;
mod sparse;
mod sshproto;
mod sync_loop;
mod tcp;
mod treewalk;
mod trust;
mod worktree;

use std::ffi::OsString;

use sidecar_runtime::{Applet, Context};

/// Flags upstream gives no env var.
const NO_ENV: &[&str] = &["man", "git-config-add"];

/// Shows each flag's `$GITSYNC_*` variable in `--help` as clap's own `env`
/// does for the other applets. `config` reads the variables itself (to let
/// the legacy `GIT_SYNC_*` names win), so clap must not.
fn show_env(arg: clap::Arg) -> clap::Arg {
    let Some(long) = arg.get_long() else {
        return arg;
    };
    if arg.is_hide_set() || NO_ENV.contains(&long) {
        return arg;
    }
    let var = format!("GITSYNC_{}", long.to_uppercase().replace('-', "_"));
    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    arg.help(format!("{help} [env: {var}]"))
}

/// Raw flags. Values stay strings here: `config` parses them with Go's syntax,
/// merges the env vars and names the flag or variable in every error.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(args_override_self = true)]
#[command(
    after_help = "Every flag also reads $GITSYNC_<FLAG> (and the legacy $GIT_SYNC_<FLAG>); see the README."
)]
#[command(mut_args = show_env)]
pub struct GitSync {
    /// The git repository to sync (required).
    #[arg(long)]
    pub repo: Option<String>,
    /// The git revision (branch, tag, or full hash) to sync [default: HEAD].
    #[arg(long = "ref")]
    pub ref_: Option<String>,
    /// Shallow clone depth; 0 means full history [default: 1].
    #[arg(long)]
    pub depth: Option<String>,
    /// Submodule behaviour: recursive, shallow or off [default: recursive].
    #[arg(long)]
    pub submodules: Option<String>,
    /// Sparse-checkout patterns file (git's non-cone syntax), applied to each worktree.
    #[arg(long)]
    pub sparse_checkout_file: Option<String>,
    /// Partial-clone filter (refused: libgit2 cannot fetch with a filter; exits 2).
    #[arg(long)]
    pub filter: Option<String>,
    /// The root directory for git-sync operations (required).
    #[arg(long)]
    pub root: Option<String>,
    /// Symlink path, absolute or relative to --root [default: last part of --repo].
    #[arg(long)]
    pub link: Option<String>,
    /// File (absolute or relative to --root) that receives the last error as JSON.
    #[arg(long)]
    pub error_file: Option<String>,
    /// Wait between syncs, at least 10ms [default: 10s].
    #[arg(long)]
    pub period: Option<String>,
    /// Wait between tries until the first success [default: --period].
    #[arg(long)]
    pub init_period: Option<String>,
    /// Deadline for one whole sync, at least 10ms [default: 120s].
    #[arg(long)]
    pub sync_timeout: Option<String>,
    /// Exit after the first successful sync.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub one_time: Option<String>,
    /// Signal (name or number) that starts a sync at once.
    #[arg(long)]
    pub sync_on_signal: Option<String>,
    /// Consecutive failures tolerated; -1 retries forever [default: 0].
    #[arg(long, allow_hyphen_values = true)]
    pub max_failures: Option<String>,
    /// Failure limit before the first success [default: --max-failures].
    #[arg(long, allow_hyphen_values = true)]
    pub init_max_failures: Option<String>,
    /// File (absolute or relative to --root) touched after each changed sync.
    #[arg(long)]
    pub touch_file: Option<String>,
    /// Upstream adds an /etc/passwd entry for ssh; the in-process client needs none, so this only logs.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub add_user: Option<String>,
    /// Make everything group-writable (umask 0002).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub group_write: Option<String>,
    /// How long replaced worktrees are kept [default: 0].
    #[arg(long)]
    pub stale_worktree_timeout: Option<String>,

    /// Command run (no args, cwd = new worktree, $GITSYNC_HASH set) after each change.
    #[arg(long)]
    pub exechook_command: Option<String>,
    /// Exechook timeout, at least 1s [default: 30s].
    #[arg(long)]
    pub exechook_timeout: Option<String>,
    /// Wait before retrying a failed exechook, at least 1s [default: 3s].
    #[arg(long)]
    pub exechook_backoff: Option<String>,
    /// Pre-publish exechook (unsupported: exits 2).
    #[arg(long)]
    pub pre_publish_exechook_command: Option<String>,
    /// Pre-publish exechook timeout (unsupported).
    #[arg(long, hide = true)]
    pub pre_publish_exechook_timeout: Option<String>,
    /// Pre-publish exechook backoff (unsupported).
    #[arg(long, hide = true)]
    pub pre_publish_exechook_backoff: Option<String>,
    /// URL called (with header Gitsync-Hash) after each change.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Webhook HTTP method [default: POST].
    #[arg(long)]
    pub webhook_method: Option<String>,
    /// Status that means success; 0 = fire and forget [default: 200].
    #[arg(long, allow_hyphen_values = true)]
    pub webhook_success_status: Option<String>,
    /// Webhook timeout, at least 1s [default: 1s].
    #[arg(long)]
    pub webhook_timeout: Option<String>,
    /// Wait before retrying a failed webhook, at least 1s [default: 3s].
    #[arg(long)]
    pub webhook_backoff: Option<String>,

    /// Username for https auth (with $GITSYNC_PASSWORD or --password-file).
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the password or token, re-read before every sync.
    #[arg(long)]
    pub password_file: Option<String>,
    /// JSON credential {"url","username","password"|"password-file"} or a list; repeatable.
    #[arg(long)]
    pub credential: Vec<String>,
    /// SSH private key file; repeatable [default: /etc/git-secret/ssh].
    #[arg(long)]
    pub ssh_key_file: Vec<String>,
    /// Verify SSH host keys against --ssh-known-hosts-file [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ssh_known_hosts: Option<String>,
    /// known_hosts file [default: /etc/git-secret/known_hosts].
    #[arg(long)]
    pub ssh_known_hosts_file: Option<String>,
    /// Send the cookies of /etc/git-secret/cookie_file (Netscape format) with HTTP(S) requests.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cookie_file: Option<String>,
    /// URL queried before each sync for username=/password= lines.
    #[arg(long)]
    pub askpass_url: Option<String>,
    /// GitHub App private key (PEM) file; or $GITSYNC_GITHUB_APP_PRIVATE_KEY.
    #[arg(long)]
    pub github_app_private_key_file: Option<String>,
    /// GitHub App client ID (or --github-app-application-id).
    #[arg(long)]
    pub github_app_client_id: Option<String>,
    /// GitHub App application ID (or --github-app-client-id).
    #[arg(long)]
    pub github_app_application_id: Option<String>,
    /// GitHub App installation ID whose token is the HTTPS password.
    #[arg(long)]
    pub github_app_installation_id: Option<String>,
    /// GitHub API base URL for GitHub App auth [default: https://api.github.com/].
    #[arg(long)]
    pub github_base_url: Option<String>,

    /// The git binary upstream runs; libgit2 runs in-process, so only `git` is accepted.
    #[arg(long)]
    pub git: Option<String>,
    /// Extra git config 'key:value,key2:"value 2"' written into the repository's config.
    #[arg(long)]
    pub git_config: Option<String>,
    /// One extra git config 'key:value'; repeatable.
    #[arg(long)]
    pub git_config_add: Vec<String>,
    /// Garbage collection: auto, always, aggressive or off [default: always].
    #[arg(long)]
    pub git_gc: Option<String>,

    /// Address of upstream's HTTP endpoint (/ and /metrics).
    #[arg(long)]
    pub http_bind: Option<String>,
    /// Serve /metrics on --http-bind.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub http_metrics: Option<String>,
    /// Go's pprof does not exist here: /debug/pprof/ answers with a note.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub http_pprof: Option<String>,
    /// Log verbosity, as upstream's -v (2+ logs every sync pass).
    #[arg(short = 'v', long = "verbose", allow_hyphen_values = true)]
    pub verbose: Option<String>,
    /// Print the full help and exit (before anything starts).
    #[arg(long, action = clap::ArgAction::HelpLong)]
    pub man: Option<bool>,

    /// /readyz answers 503 once the last successful sync is older than this (0 = off).
    #[arg(long)]
    pub ready_max_staleness: Option<String>,
    /// File holding a bearer token that `POST /sync` on the admin address requires.
    #[arg(long)]
    pub sync_token_file: Option<String>,

    // Deprecated upstream flags, still accepted there.
    #[arg(long, hide = true)]
    pub branch: Option<String>,
    #[arg(long, hide = true)]
    pub rev: Option<String>,
    #[arg(long, hide = true)]
    pub dest: Option<String>,
    #[arg(long, hide = true)]
    pub wait: Option<String>,
    #[arg(long, hide = true)]
    pub timeout: Option<String>,
    #[arg(long, hide = true, allow_hyphen_values = true)]
    pub max_sync_failures: Option<String>,
    #[arg(long, hide = true)]
    pub sync_hook_command: Option<String>,
    #[arg(long, hide = true)]
    pub password: Option<String>,
    #[arg(long, hide = true, allow_hyphen_values = true)]
    pub change_permissions: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ssh: Option<String>,
    #[arg(long = "v", hide = true, allow_hyphen_values = true)]
    pub v_deprecated: Option<String>,
    /// Upstream's test-only way to pass $GITSYNC_PASSWORD on the command line.
    #[arg(long = "__env__GITSYNC_PASSWORD", hide = true)]
    pub env_password: Option<String>,
    #[arg(long = "__env__GITSYNC_GITHUB_APP_PRIVATE_KEY", hide = true)]
    pub env_github_app_private_key: Option<String>,
}

impl Applet for GitSync {
    const NAME: &'static str = "git-sync";
    const ABOUT: &'static str =
        "Keep a git ref checked out in a shared volume (kubernetes/git-sync v4 compatible)";
    const ADMIN_ADDR: &'static str = "0.0.0.0:9540";
    const MULTI_THREAD: bool = false;

    /// pflag spells help `-?` too.
    fn rewrite_args(args: Vec<OsString>) -> Vec<OsString> {
        args.into_iter()
            .map(|a| {
                if a == "-?" {
                    OsString::from("--help")
                } else {
                    a
                }
            })
            .collect()
    }

    /// Upstream has no admin server, so Pod specs written for it never set
    /// one: when the default port is taken (a second git-sync in the Pod),
    /// run without it and say so, instead of failing to start. An address
    /// the user chose is always honoured (and its bind errors are fatal).
    /// The port is probed by connecting, not binding: nothing listens
    /// before the configuration has been checked.
    fn admin_addr_override(&self) -> Option<String> {
        let explicit = std::env::var_os("SIDECAR_ADMIN_ADDR").is_some()
            || std::env::args().any(|a| a == "--admin-addr" || a.starts_with("--admin-addr="));
        if explicit || !default_admin_port_taken() {
            return None;
        }
        tracing::warn!(
            addr = Self::ADMIN_ADDR,
            "default admin address is in use: admin server off (set --admin-addr to choose one)"
        );
        Some("off".into())
    }

    /// Runs before anything binds (and alone with `--check`).
    fn check(&self) -> anyhow::Result<()> {
        self.validate().map(drop)
    }

    fn check_strict(&self) -> anyhow::Result<()> {
        preflight::check_strict(&self.validate()?)
    }

    fn before_threads(&self) -> anyhow::Result<()> {
        sync_loop::configure_process(&self.validate()?)
    }

    async fn run(self, ctx: Context) -> anyhow::Result<()> {
        let cfg = self.validate()?;
        sync_loop::run(cfg, ctx).await
    }
}

impl GitSync {
    /// The whole configuration, checked before anything starts: flags and
    /// env vars, then the files they name that must exist up front. A
    /// config error is also written to `--error-file` as plain text, as
    /// upstream does.
    pub fn validate(&self) -> anyhow::Result<config::Config> {
        let checked = config::Config::resolve(self.clone(), &config::ProcessEnv)
            .and_then(|cfg| preflight::check_files(&cfg).map(|()| cfg));
        checked.inspect_err(|e| {
            if let Some(path) = config::raw_error_file(self, &config::ProcessEnv) {
                errorfile::write_plain(&path, &format!("{e:#}"));
            }
        })
    }
}

/// Whether something already listens on the default admin port.
fn default_admin_port_taken() -> bool {
    let port = GitSync::ADMIN_ADDR
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_default();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_ok()
}
