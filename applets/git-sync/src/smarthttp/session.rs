//! What the transport of the sync running on a thread needs from it.

use std::cell::RefCell;

use crate::auth::Auth;

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

#[derive(Clone)]
pub(super) struct Current {
    pub auth: Auth,
    /// `http.followRedirects` is not `false`: a redirect may change host.
    pub offsite_redirects: bool,
    /// `http.proxy`: it takes precedence over the proxy variables, as in git.
    pub proxy: Option<String>,
}

/// The credentials and cookies of the sync running on this thread, and the
/// repository's `http.followRedirects` and `http.proxy`. libgit2 hands a custom transport
/// neither its credential callback nor its custom headers nor the remote's
/// repository, so the transport, made on the thread that calls libgit2,
/// takes them from here. Ends when dropped.
pub struct Session(Option<Current>);

impl Session {
    pub fn enter(auth: &Auth, repo: &git2::Repository) -> Session {
        let config = repo.config().ok();
        // libgit2 refused only a change of host, and only when false.
        let offsite_redirects = config
            .as_ref()
            .and_then(|c| c.get_bool("http.followRedirects").ok())
            .unwrap_or(true);
        let proxy = config
            .as_ref()
            .and_then(|c| c.get_string("http.proxy").ok())
            .filter(|p| !p.is_empty());
        let current = Current {
            auth: auth.clone(),
            offsite_redirects,
            proxy,
        };
        Session(CURRENT.with(|c| c.replace(Some(current))))
    }

    pub(super) fn current() -> Option<Current> {
        CURRENT.with(|c| c.borrow().clone())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = self.0.take());
    }
}
