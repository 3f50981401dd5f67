//! How `git fetch` reads `--ref`: a full hash, or a name tried in git's
//! order. Shared by the network and the local-filesystem fetch.

pub fn is_full_hash(r: &str) -> bool {
    r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The ref names `git fetch` tries for a short name, in its order.
pub fn candidates(r: &str) -> Vec<String> {
    vec![
        r.to_string(),
        format!("refs/{r}"),
        format!("refs/tags/{r}"),
        format!("refs/heads/{r}"),
        format!("refs/remotes/{r}"),
        format!("refs/remotes/{r}/HEAD"),
    ]
}
