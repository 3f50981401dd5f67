//! `--sparse-checkout-file`: which paths a worktree checks out.

use std::path::Path;

use anyhow::{Context as _, Result};

/// `--sparse-checkout-file`: git's non-cone patterns (gitignore syntax, the
/// last matching pattern decides; a path is checked out when it matches a
/// positive pattern, itself or through a parent directory).
pub struct Sparse {
    pub text: String,
    matcher: ignore::gitignore::Gitignore,
}

impl Sparse {
    pub fn load(path: &Path) -> Result<Sparse> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("can't read --sparse-checkout-file {}", path.display()))?;
        let mut b = ignore::gitignore::GitignoreBuilder::new("/");
        for line in text.lines() {
            b.add_line(None, line)
                .with_context(|| format!("--sparse-checkout-file: bad pattern {line:?}"))?;
        }
        let matcher = b.build().context("--sparse-checkout-file")?;
        Ok(Sparse { text, matcher })
    }

    pub fn includes(&self, path: &std::ffi::OsStr) -> bool {
        // The matcher's "ignore" is sparse's "include".
        self.matcher
            .matched_path_or_any_parents(Path::new("/").join(path), false)
            .is_ignore()
    }
}
