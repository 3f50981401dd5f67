//! Finding what `--ref` points at upstream, and getting its objects.
//!
//! A poll first lists the remote's refs (one round trip, no pack) and
//! downloads only when the target commit is missing locally or on the first
//! sync of the process (so a changed `--depth` takes effect, as upstream's
//! fetch on every pass does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use git2::{AutotagOption, Direction, Oid, RemoteCallbacks, Repository};

use crate::{local, refname, shallow};

/// `GIT_FETCH_DEPTH_UNSHALLOW`: turns a shallow repository into a full one.
const DEPTH_UNSHALLOW: i32 = i32::MAX;

pub struct Fetched {
    pub commit: Oid,
    /// Whether objects were downloaded (upstream's `git_fetch_count_total`).
    pub downloaded: bool,
}

pub struct Request<'a> {
    pub url: &'a str,
    pub ref_: &'a str,
    pub depth: u32,
    /// Download even when the commit is present (first sync of the process).
    pub force_download: bool,
    pub cancel: Arc<AtomicBool>,
}

pub fn fetch(repo: &Repository, req: &Request) -> Result<Fetched> {
    match local::local_path(req.url) {
        Some(path) => fetch_local(repo, req, &path),
        None => fetch_remote(repo, req),
    }
}

fn fetch_local(repo: &Repository, req: &Request, path: &std::path::Path) -> Result<Fetched> {
    let src = Repository::open(path).with_context(|| {
        format!(
            "'{}' does not appear to be a git repository",
            path.display()
        )
    })?;
    let commit = local::resolve(&src, req.ref_)?;
    let downloaded = req.force_download || !has_commit(repo, commit);
    if downloaded {
        local::fetch(&src, commit, req.depth, repo, &req.cancel)?;
    }
    Ok(Fetched { commit, downloaded })
}

/// Fetch options whose progress callbacks abort the transfer once `cancel`
/// is set. Credentials and host keys are the transports' own
/// ([`crate::smarthttp`], [`crate::sshproto`]): libgit2 asks for none.
pub fn options(cancel: Arc<AtomicBool>) -> git2::FetchOptions<'static> {
    let mut o = git2::FetchOptions::new();
    o.remote_callbacks(callbacks(cancel));
    o
}

fn callbacks(cancel: Arc<AtomicBool>) -> RemoteCallbacks<'static> {
    let mut cb = RemoteCallbacks::new();
    let c = cancel.clone();
    cb.transfer_progress(move |_| !c.load(Ordering::Relaxed));
    cb.sideband_progress(move |_| !cancel.load(Ordering::Relaxed));
    cb
}

/// libgit2's message alone (git2's Display adds its class and code).
fn message(e: git2::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

fn has_commit(repo: &Repository, oid: Oid) -> bool {
    repo.find_commit(oid).is_ok()
}

fn fetch_remote(repo: &Repository, req: &Request) -> Result<Fetched> {
    let mut remote = repo.remote_anonymous(req.url)?;
    // One connection lists the refs and, when the commit is new, downloads
    // it: over git daemon or ssh a second one costs a connection and an
    // upload-pack process on the server.
    let cb = callbacks(req.cancel.clone());
    let mut conn = remote
        .connect_auth(Direction::Fetch, Some(cb), None)
        .map_err(message)
        .with_context(|| cannot_connect(req))?;
    let listed = heads(conn.list()?);
    match wanted(repo, req, &listed)? {
        Wanted::Known(commit) => Ok(known(commit)),
        Wanted::Download(spec, advertised) => download(repo, conn.remote(), req, &spec, advertised),
    }
}

fn known(commit: Oid) -> Fetched {
    Fetched {
        commit,
        downloaded: false,
    }
}

enum Wanted {
    /// The ref names this commit, which the repository has.
    Known(Oid),
    /// The refspec to fetch and, when advertised, the commit it names.
    Download(String, Option<Oid>),
}

fn wanted(repo: &Repository, req: &Request, listed: &[(String, Oid)]) -> Result<Wanted> {
    let (refspec, advertised) = find(listed, req.ref_)?;
    let known = advertised.filter(|o| has_commit(repo, *o));
    Ok(match (known, req.force_download) {
        (Some(commit), false) => Wanted::Known(commit),
        _ => Wanted::Download(refspec, advertised),
    })
}

/// Fetches `refspec` (through `remote`'s connection if it has one).
fn download(
    repo: &Repository,
    remote: &mut git2::Remote,
    req: &Request,
    refspec: &str,
    advertised: Option<Oid>,
) -> Result<Fetched> {
    let mut opts = options(req.cancel.clone());
    opts.download_tags(AutotagOption::None);
    opts.update_fetchhead(true);
    let shallow_now = !shallow::read(repo.path()).is_empty();
    let depth = match req.depth {
        0 if shallow_now => DEPTH_UNSHALLOW,
        0 => 0,
        d => i32::try_from(d).unwrap_or(DEPTH_UNSHALLOW),
    };
    opts.depth(depth);
    remote
        .fetch(&[refspec], Some(&mut opts), None)
        .map_err(message)
        .with_context(|| {
            format!(
                "cannot fetch {} from {}",
                req.ref_,
                sidecar_runtime::redact::redact_url(req.url)
            )
        })?;
    let fetched = repo
        .find_reference("FETCH_HEAD")
        .and_then(|r| r.peel_to_commit())
        .map(|c| c.id());
    let commit = match (advertised, fetched) {
        (Some(o), _) => repo.find_object(o, None)?.peel_to_commit()?.id(),
        (None, Ok(o)) => o,
        (None, Err(_)) => Oid::from_str(req.ref_)?,
    };
    repo.find_commit(commit)
        .with_context(|| format!("couldn't find remote ref {}", req.ref_))?;
    Ok(Fetched {
        commit,
        downloaded: true,
    })
}

fn cannot_connect(req: &Request) -> String {
    format!(
        "cannot connect to {}",
        sidecar_runtime::redact::redact_url(req.url)
    )
}

fn heads(list: &[git2::RemoteHead]) -> Vec<(String, Oid)> {
    list.iter()
        .map(|h| (h.name().to_string(), h.oid()))
        .collect()
}

/// Picks `--ref` out of the advertised refs: the refspec to fetch and, when
/// advertised, the commit it names (annotated tags peeled via `^{}`).
fn find(heads: &[(String, Oid)], r: &str) -> Result<(String, Option<Oid>)> {
    let lookup = |name: &str| -> Option<Oid> {
        let peeled = format!("{name}^{{}}");
        heads
            .iter()
            .find(|(n, _)| *n == peeled)
            .or_else(|| heads.iter().find(|(n, _)| n == name))
            .map(|(_, o)| *o)
    };
    if refname::is_full_hash(r) {
        let oid = Oid::from_str(r)?;
        let advertised = heads.iter().any(|(_, o)| *o == oid);
        return Ok((r.to_string(), advertised.then_some(oid)));
    }
    if r == "HEAD" {
        let oid = lookup("HEAD").ok_or_else(|| anyhow::anyhow!("couldn't find remote ref HEAD"))?;
        return Ok(("HEAD".into(), Some(oid)));
    }
    for name in refname::candidates(r) {
        if let Some(oid) = lookup(&name) {
            return Ok((name, Some(oid)));
        }
    }
    anyhow::bail!("couldn't find remote ref {r}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_refs_like_git_fetch() {
        let a = Oid::from_str("1111111111111111111111111111111111111111").unwrap();
        let b = Oid::from_str("2222222222222222222222222222222222222222").unwrap();
        let c = Oid::from_str("3333333333333333333333333333333333333333").unwrap();
        let heads = vec![
            ("HEAD".to_string(), a),
            ("refs/heads/main".to_string(), a),
            ("refs/tags/v1".to_string(), b),
            ("refs/tags/v1^{}".to_string(), c),
        ];
        assert_eq!(
            find(&heads, "main").unwrap(),
            ("refs/heads/main".into(), Some(a))
        );
        assert_eq!(
            find(&heads, "v1").unwrap(),
            ("refs/tags/v1".into(), Some(c))
        );
        assert_eq!(find(&heads, "HEAD").unwrap().1, Some(a));
        assert_eq!(find(&heads, &c.to_string()).unwrap().1, Some(c));
        assert_eq!(
            find(&heads, &b.to_string().replace('2', "4")).unwrap().1,
            None
        );
        let e = find(&heads, "nope").unwrap_err().to_string();
        assert!(e.contains("couldn't find remote ref nope"), "{e}");
    }
}
