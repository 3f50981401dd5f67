//! `--git-config` (upstream's `k:v,k2:"v 2"` syntax) and `--git-config-add`.

use anyhow::Result;
use sidecar_runtime::usage;

use super::lookup::Lookup;
use crate::GitSync;

pub fn resolve(f: &mut GitSync, l: &Lookup) -> Result<Vec<(String, String)>> {
    let mut git_configs = Vec::new();
    if let Some(r) = l.get(
        "git-config",
        f.git_config.take(),
        &["GITSYNC_GIT_CONFIG", "GIT_SYNC_GIT_CONFIG"],
    ) {
        git_configs = parse(&r.value).map_err(|e| usage!("{}: {e}", r.source))?;
    }
    for add in &f.git_config_add {
        let mut one = parse(add).map_err(|e| usage!("--git-config-add: {e}"))?;
        if one.len() != 1 {
            return Err(usage!(
                "--git-config-add: expected exactly one key:value, got {add:?}"
            ));
        }
        git_configs.append(&mut one);
    }
    Ok(git_configs)
}

/// Upstream's `--git-config` syntax: `k:v,k2:"v 2"`; keys and values may be
/// quoted; escapes `\n \t \" \, \\` only.
pub fn parse(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key = parse_token(&mut chars, ':', "key")?;
        if chars.next() != Some(':') {
            return Err(format!("key {key:?} has no value (want key:value)"));
        }
        let value = parse_token(&mut chars, ',', "value")?;
        if key.is_empty() {
            return Err("empty key".into());
        }
        out.push((key, value));
        match chars.next() {
            None => return Ok(out),
            Some(',') => {}
            Some(c) => return Err(format!("unexpected {c:?} after value")),
        }
    }
}

fn parse_token(
    chars: &mut std::iter::Peekable<std::str::Chars>,
    stop: char,
    what: &str,
) -> Result<String, String> {
    let mut out = String::new();
    let quoted = chars.peek() == Some(&'"');
    if quoted {
        chars.next();
    }
    loop {
        match chars.peek().copied() {
            None if quoted => return Err(format!("unterminated quoted {what}")),
            None => return Ok(out),
            Some('"') if quoted => {
                chars.next();
                return Ok(out);
            }
            Some(c) if c == stop && !quoted => return Ok(out),
            Some('\\') => {
                chars.next();
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(c @ ('"' | ',' | '\\')) => out.push(c),
                    Some(c) => return Err(format!("unsupported escape \\{c} in {what}")),
                    None => return Err(format!("dangling backslash in {what}")),
                }
            }
            Some(c) => {
                chars.next();
                out.push(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn upstream_syntax() {
        assert_eq!(
            parse(r#"a.b:c,"d.e":"f, \"g\"""#).unwrap(),
            vec![
                ("a.b".into(), "c".into()),
                ("d.e".into(), "f, \"g\"".into())
            ]
        );
        assert!(parse(r"a:\q").is_err());
        assert!(parse("novalue").is_err());
    }
}
