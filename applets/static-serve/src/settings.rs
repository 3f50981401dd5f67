//! Validated settings: every flag checked once at startup (bad values exit 2
//! with the flag's name), in the form the request path needs.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use http::{HeaderName, HeaderValue};
use sidecar_runtime::usage;

use crate::auth::BasicAuth;
use crate::cors::Cors;
use crate::tree::Policy;
use crate::StaticServe;

/// A file the response pipeline falls back to.
#[derive(Debug, Clone)]
pub enum PageFile {
    /// Below the root: read from the same pinned tree as the request.
    InTree(PathBuf),
    /// An absolute path outside the root (a ConfigMap mount).
    Absolute(PathBuf),
}

pub struct Settings {
    pub root: PathBuf,
    pub index_files: Vec<PathBuf>,
    pub listing: bool,
    pub listing_format: crate::ListingFormat,
    pub spa_fallback: Option<PageFile>,
    pub not_found_page: Option<PageFile>,
    pub policy: Policy,
    cache_globs: GlobSet,
    cache_values: Vec<HeaderValue>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub cors: Option<Cors>,
    pub auth: Option<Arc<BasicAuth>>,
    pub gzip: bool,
    pub access_log: bool,
    /// static-web-server's `--health`: `GET /health` answers 200, unlogged.
    pub health: bool,
}

impl Settings {
    pub fn from_args(a: &StaticServe) -> anyhow::Result<Settings> {
        if a.root.exists() && !a.root.is_dir() {
            return Err(usage!("--root: {} is not a directory", a.root.display()));
        }
        let mut index_files = Vec::new();
        for name in a
            .index_files
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            index_files.push(relative("--index-files", Path::new(name))?);
        }
        let page = |flag: &str, p: &Option<PathBuf>| -> anyhow::Result<Option<PageFile>> {
            Ok(match p {
                None => None,
                Some(p) if p.is_absolute() => match p.strip_prefix(&a.root) {
                    Ok(rel) => Some(PageFile::InTree(relative(flag, rel)?)),
                    Err(_) => Some(PageFile::Absolute(p.clone())),
                },
                Some(p) => Some(PageFile::InTree(relative(flag, p)?)),
            })
        };
        let mut globs = GlobSetBuilder::new();
        let mut cache_values = Vec::new();
        for spec in a.cache_control.iter().filter(|s| !s.trim().is_empty()) {
            let (glob, value) = spec
                .split_once('=')
                .ok_or_else(|| usage!("--cache-control {spec:?}: expected GLOB=VALUE"))?;
            let glob = GlobBuilder::new(glob.trim().trim_start_matches('/'))
                .build()
                .map_err(|e| usage!("--cache-control {spec:?}: {e}"))?;
            globs.add(glob);
            cache_values.push(
                HeaderValue::from_str(value.trim())
                    .map_err(|_| usage!("--cache-control {spec:?}: invalid header value"))?,
            );
        }
        let cache_globs = globs.build().map_err(|e| usage!("--cache-control: {e}"))?;
        let mut headers = Vec::new();
        for (k, v) in &a.header {
            // parse_header already checked both.
            headers.push((
                HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| usage!("--header {k}: invalid name"))?,
                HeaderValue::from_str(v).map_err(|_| usage!("--header {k}: invalid value"))?,
            ));
        }
        let cors = Cors::new(
            &a.cors_allow_origins,
            &a.cors_allow_headers,
            &a.cors_expose_headers,
        )?;
        let auth = match (&a.basic_auth_file, &a.basic_auth_entry) {
            (Some(_), Some(_)) => {
                return Err(usage!(
                    "--basic-auth: give either it or --basic-auth-file, not both"
                ))
            }
            (Some(f), None) => Some(Arc::new(
                BasicAuth::load(f).map_err(|e| usage!("--basic-auth-file: {e}"))?,
            )),
            (None, Some(entry)) => Some(Arc::new(
                BasicAuth::entry(entry).map_err(|e| usage!("--basic-auth: {e}"))?,
            )),
            (None, None) => None,
        };
        Ok(Settings {
            root: a.root.clone(),
            index_files,
            listing: a.listing,
            listing_format: a.listing_format,
            spa_fallback: page("--spa-fallback", &a.spa_fallback)?,
            not_found_page: page("--not-found-page", &a.not_found_page)?,
            policy: Policy {
                symlinks: !a.no_symlinks,
                hidden_files: a.hidden_files,
            },
            cache_globs,
            cache_values,
            headers,
            cors,
            auth,
            gzip: a.gzip,
            access_log: a.access_log,
            health: a.health,
        })
    }

    /// The `--cache-control` value for a file at `rel` (relative to the root).
    pub fn cache_control(&self, rel: &Path) -> Option<&HeaderValue> {
        if self.cache_values.is_empty() {
            return None;
        }
        self.cache_globs
            .matches(rel)
            .into_iter()
            .min()
            .map(|i| &self.cache_values[i])
    }
}

/// A path below the root: relative, without `..`.
fn relative(flag: &str, p: &Path) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            _ => {
                return Err(usage!(
                    "{flag}: {} must name a file below --root",
                    p.display()
                ))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(usage!(
            "{flag}: {} must name a file below --root",
            p.display()
        ));
    }
    Ok(out)
}
