//! Secrets never reach logs or metric labels.

/// Replaces the password of a URL with `xxxxx` (as Go's `URL.Redacted`).
/// Strings that do not parse as URLs are returned unchanged.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("xxxxx"));
            u.to_string()
        }
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_password_only() {
        assert_eq!(
            super::redact_url("http://u:secret@h:1/p?q"),
            "http://u:xxxxx@h:1/p?q"
        );
        assert_eq!(super::redact_url("http://h/p"), "http://h/p");
    }
}
