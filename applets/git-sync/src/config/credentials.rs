//! How to authenticate: `--username` with `$GITSYNC_PASSWORD` or
//! `--password-file` (or `user:pass@` in an http(s) `--repo`),
//! `--credential`, `--ssh-*`, `--askpass-url`, `--cookie-file` and GitHub App
//! auth (`--github-app-*`, `--github-base-url`).

use std::path::PathBuf;

use anyhow::Result;
use serde::Deserialize;
use sidecar_runtime::usage;

use super::lookup::{non_empty, Lookup};
use crate::goparse;
use crate::GitSync;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub url: String,
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default, rename = "password-file")]
    pub password_file: String,
}

#[derive(Debug, Clone)]
pub struct Ssh {
    pub key_files: Vec<PathBuf>,
    pub known_hosts: bool,
    pub known_hosts_file: PathBuf,
}

/// Where the GitHub App's private key comes from.
#[derive(Debug, Clone)]
pub enum PrivateKey {
    /// `$GITSYNC_GITHUB_APP_PRIVATE_KEY`.
    Inline(String),
    /// `--github-app-private-key-file`, read at each token refresh.
    File(PathBuf),
}

/// GitHub App auth: a JWT signed with the app's key buys an installation
/// token, used as the HTTPS password.
#[derive(Debug, Clone)]
pub struct GithubApp {
    pub base_url: String,
    pub private_key: PrivateKey,
    /// The JWT's issuer: the client ID, else the application ID.
    pub issuer: String,
    pub installation_id: i64,
}

/// Upstream's fixed `--cookie-file` path (a Secret mounted there).
pub const COOKIE_FILE: &str = "/etc/git-secret/cookie_file";

pub struct Credentials {
    /// `--repo` without `user:pass@`.
    pub repo: String,
    pub credentials: Vec<Credential>,
    pub ssh: Ssh,
    pub askpass_url: Option<String>,
    pub github_app: Option<GithubApp>,
    pub cookie_file: Option<PathBuf>,
}

pub fn resolve(f: &mut GitSync, l: &Lookup, repo: String) -> Result<Credentials> {
    let mut username = l.string(
        "username",
        f.username.take(),
        &["GITSYNC_USERNAME", "GIT_SYNC_USERNAME"],
        "",
    );
    let mut password = l.string(
        "__env__GITSYNC_PASSWORD",
        f.env_password.take(),
        &["GITSYNC_PASSWORD", "GIT_SYNC_PASSWORD"],
        "",
    );
    if let Some(p) = f.password.take().filter(|p| !p.is_empty()) {
        l.note("setting $GITSYNC_PASSWORD from deprecated --password");
        password = p;
    }
    let password_file = l.string(
        "password-file",
        f.password_file.take(),
        &["GITSYNC_PASSWORD_FILE", "GIT_SYNC_PASSWORD_FILE"],
        "",
    );
    let github_app = github_app(f, l, &username, &password, &password_file)?;

    let mut repo = repo;
    let repo_url = url::Url::parse(&repo).ok();
    if !username.is_empty() {
        if password.is_empty() && password_file.is_empty() {
            return Err(usage!("required flag: $GITSYNC_PASSWORD or --password-file must be specified when --username is specified"));
        }
        if !password.is_empty() && !password_file.is_empty() {
            return Err(usage!(
                "invalid flag: only one of $GITSYNC_PASSWORD and --password-file may be specified"
            ));
        }
        if repo_url
            .as_ref()
            .is_some_and(|u| !u.username().is_empty() || u.password().is_some())
        {
            return Err(usage!("invalid flag: credentials may not be specified in --repo when --username is specified"));
        }
    } else {
        if !password.is_empty() {
            return Err(usage!(
                "invalid flag: $GITSYNC_PASSWORD may only be specified when --username is specified"
            ));
        }
        if !password_file.is_empty() {
            return Err(usage!(
                "invalid flag: --password-file may only be specified when --username is specified"
            ));
        }
        // user:pass@ in an http(s) URL becomes a credential (ssh keeps its user).
        if let Some(mut u) = repo_url.filter(|u| matches!(u.scheme(), "http" | "https")) {
            if !u.username().is_empty() || u.password().is_some() {
                username = percent_decode(u.username());
                password = u.password().map(percent_decode).unwrap_or_default();
                let _ = u.set_username("");
                let _ = u.set_password(None);
                repo = u.to_string();
            }
        }
    }
    let mut credentials = Vec::new();
    if !username.is_empty() {
        credentials.push(Credential {
            url: repo.clone(),
            username,
            password,
            password_file,
        });
    }
    let mut raw_creds = std::mem::take(&mut f.credential);
    if raw_creds.is_empty() {
        if let Some(r) = l.get("credential", None, &["GITSYNC_CREDENTIAL"]) {
            raw_creds.push(r.value);
        }
    }
    for raw in raw_creds.iter().filter(|r| !r.trim().is_empty()) {
        credentials.extend(parse_credentials(raw)?);
    }

    let askpass_url = non_empty(l.string(
        "askpass-url",
        f.askpass_url.take(),
        &[
            "GITSYNC_ASKPASS_URL",
            "GIT_SYNC_ASKPASS_URL",
            "GIT_ASKPASS_URL",
        ],
        "",
    ));
    let cookie_file = l
        .bool(
            "cookie-file",
            f.cookie_file.take(),
            &[
                "GITSYNC_COOKIE_FILE",
                "GIT_SYNC_COOKIE_FILE",
                "GIT_COOKIE_FILE",
            ],
            false,
        )?
        .then(|| PathBuf::from(COOKIE_FILE));
    Ok(Credentials {
        repo,
        credentials,
        ssh: ssh(f, l)?,
        askpass_url,
        github_app,
        cookie_file,
    })
}

fn ssh(f: &mut GitSync, l: &Lookup) -> Result<Ssh> {
    let mut key_files = std::mem::take(&mut f.ssh_key_file);
    if key_files.is_empty() {
        if let Some(r) = l.get(
            "ssh-key-file",
            None,
            &[
                "GITSYNC_SSH_KEY_FILE",
                "GIT_SYNC_SSH_KEY_FILE",
                "GIT_SSH_KEY_FILE",
            ],
        ) {
            key_files = r
                .value
                .split(':')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
    }
    if key_files.is_empty() {
        key_files.push("/etc/git-secret/ssh".into());
    }
    Ok(Ssh {
        key_files: key_files.into_iter().map(PathBuf::from).collect(),
        known_hosts: l.bool(
            "ssh-known-hosts",
            f.ssh_known_hosts.take(),
            &[
                "GITSYNC_SSH_KNOWN_HOSTS",
                "GIT_SYNC_KNOWN_HOSTS",
                "GIT_KNOWN_HOSTS",
            ],
            true,
        )?,
        known_hosts_file: PathBuf::from(l.string(
            "ssh-known-hosts-file",
            f.ssh_known_hosts_file.take(),
            &[
                "GITSYNC_SSH_KNOWN_HOSTS_FILE",
                "GIT_SYNC_SSH_KNOWN_HOSTS_FILE",
                "GIT_SSH_KNOWN_HOSTS_FILE",
            ],
            "/etc/git-secret/known_hosts",
        )),
    })
}

/// Upstream's GitHub App checks, in its order and words.
fn github_app(
    f: &mut GitSync,
    l: &Lookup,
    username: &str,
    password: &str,
    password_file: &str,
) -> Result<Option<GithubApp>> {
    let int = |flag: &str, v: Option<String>, env: &str| -> Result<i64> {
        match l.get(flag, v, &[env]) {
            Some(r) if !r.value.is_empty() => {
                goparse::parse_int(&r.value).map_err(|e| usage!("{}: {e}", r.source))
            }
            _ => Ok(0),
        }
    };
    let app_id = int(
        "github-app-application-id",
        f.github_app_application_id.take(),
        "GITSYNC_GITHUB_APP_APPLICATION_ID",
    )?;
    let installation_id = int(
        "github-app-installation-id",
        f.github_app_installation_id.take(),
        "GITSYNC_GITHUB_APP_INSTALLATION_ID",
    )?;
    let client_id = l.string(
        "github-app-client-id",
        f.github_app_client_id.take(),
        &["GITSYNC_GITHUB_APP_CLIENT_ID"],
        "",
    );
    let key = l.string(
        "__env__GITSYNC_GITHUB_APP_PRIVATE_KEY",
        f.env_github_app_private_key.take(),
        &["GITSYNC_GITHUB_APP_PRIVATE_KEY"],
        "",
    );
    let key_file = l.string(
        "github-app-private-key-file",
        f.github_app_private_key_file.take(),
        &["GITSYNC_GITHUB_APP_PRIVATE_KEY_FILE"],
        "",
    );
    let base_url = l.string(
        "github-base-url",
        f.github_base_url.take(),
        &["GITSYNC_GITHUB_BASE_URL"],
        "https://api.github.com/",
    );
    if app_id == 0 && client_id.is_empty() {
        if installation_id != 0 {
            return Err(usage!("invalid flag: --github-app-installation-id may only be specified when --github-app-private-key-file is specified"));
        }
        return Ok(None);
    }
    if app_id != 0 && !client_id.is_empty() {
        return Err(usage!("invalid flag: only one of --github-app-application-id or --github-app-client-id may be specified"));
    }
    if installation_id == 0 {
        return Err(usage!("invalid flag: --github-app-installation-id must be specified when --github-app-application-id or --github-app-client-id are specified"));
    }
    let private_key = match (key.is_empty(), key_file.is_empty()) {
        (true, true) => return Err(usage!("invalid flag: $GITSYNC_GITHUB_APP_PRIVATE_KEY or --github-app-private-key-file must be specified when --github-app-application-id or --github-app-client-id are specified")),
        (false, false) => return Err(usage!("invalid flag: only one of $GITSYNC_GITHUB_APP_PRIVATE_KEY or --github-app-private-key-file may be specified")),
        (false, true) => PrivateKey::Inline(key),
        (true, false) => PrivateKey::File(PathBuf::from(key_file)),
    };
    if !username.is_empty() {
        return Err(usage!("invalid flag: --username may not be specified when --github-app-private-key-file is specified"));
    }
    if !password.is_empty() {
        return Err(usage!("invalid flag: --password may not be specified when --github-app-private-key-file is specified"));
    }
    if !password_file.is_empty() {
        return Err(usage!("invalid flag: --password-file may not be specified when --github-app-private-key-file is specified"));
    }
    let base = url::Url::parse(&base_url)
        .map_err(|e| usage!("invalid flag: --github-base-url {base_url:?}: {e}"))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(usage!(
            "invalid flag: --github-base-url must be an http(s) URL"
        ));
    }
    Ok(Some(GithubApp {
        base_url,
        private_key,
        issuer: if client_id.is_empty() {
            app_id.to_string()
        } else {
            client_id
        },
        installation_id,
    }))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// One `--credential` value: a JSON object or a list of them.
fn parse_credentials(raw: &str) -> Result<Vec<Credential>> {
    let creds: Vec<Credential> = if raw.trim_start().starts_with('[') {
        serde_json::from_str(raw).map_err(|e| usage!("invalid flag: --credential {raw:?}: {e}"))?
    } else {
        vec![serde_json::from_str(raw)
            .map_err(|e| usage!("invalid flag: --credential {raw:?}: {e}"))?]
    };
    for c in &creds {
        if c.url.is_empty() {
            return Err(usage!("invalid flag: --credential URL must be specified"));
        }
        if c.username.is_empty() {
            return Err(usage!(
                "invalid flag: --credential username must be specified"
            ));
        }
        if c.password.is_empty() && c.password_file.is_empty() {
            return Err(usage!(
                "invalid flag: --credential password or password-file must be specified"
            ));
        }
        if !c.password.is_empty() && !c.password_file.is_empty() {
            return Err(usage!("invalid flag: only one of --credential password and password-file may be specified"));
        }
    }
    Ok(creds)
}
