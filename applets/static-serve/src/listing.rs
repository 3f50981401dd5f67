//! Directory listings as HTML or JSON. Every file name is HTML-escaped in text
//! and percent-encoded in links (stored XSS via file names: GHSA-rwfq-v4hq-h7fg).

use std::fmt::Write;

use crate::path::encode_component;
use crate::tree::DirEntry;

/// HTML listing of `url_path` (the directory's canonical, encoded URL path).
pub fn html(url_path: &str, entries: &[DirEntry]) -> String {
    let title = escape(&percent_encoding::percent_decode_str(url_path).decode_utf8_lossy());
    let mut out = String::with_capacity(512 + entries.len() * 160);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<table>\n\
         <tr><th>Name</th><th>Size</th><th>Last modified</th></tr>\n"
    );
    if url_path != "/" {
        out.push_str("<tr><td><a href=\"../\">../</a></td><td>-</td><td>-</td></tr>\n");
    }
    for e in entries {
        let name = String::from_utf8_lossy(e.name_bytes());
        let slash = if e.is_dir { "/" } else { "" };
        let size = if e.is_dir {
            "-".to_string()
        } else {
            e.meta.size.to_string()
        };
        let _ = writeln!(
            out,
            "<tr><td><a href=\"./{href}{slash}\">{text}{slash}</a></td><td>{size}</td><td>{modified}</td></tr>",
            href = encode_component(e.name_bytes()),
            text = escape(&name),
            modified = humantime::format_rfc3339_seconds(e.meta.modified),
        );
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

/// JSON listing: `[{"name", "type": "file"|"directory", "size", "mtime"}]`.
pub fn json(entries: &[DirEntry]) -> String {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let mut v = serde_json::json!({
                "name": String::from_utf8_lossy(e.name_bytes()),
                "type": if e.is_dir { "directory" } else { "file" },
                "mtime": humantime::format_rfc3339_seconds(e.meta.modified).to_string(),
            });
            if !e.is_dir {
                v["size"] = e.meta.size.into();
            }
            v
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Whether the client prefers JSON (`Accept: application/json`).
pub fn wants_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json") && !v.contains("text/html"))
}

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Meta;
    use std::time::UNIX_EPOCH;

    fn entry(name: &str, is_dir: bool) -> DirEntry {
        DirEntry {
            name: name.into(),
            is_dir,
            meta: Meta::from_metadata(&std::fs::metadata("/").unwrap()).with_size(3, UNIX_EPOCH),
        }
    }

    #[test]
    fn names_are_escaped() {
        let page = html(
            "/a%20b/",
            &[
                entry("<img src=x onerror=alert(1)>", false),
                entry("escape(this)name", true),
            ],
        );
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(
            page.contains("href=\"./%3Cimg%20src=x%20onerror=alert%281%29%3E\""),
            "{page}"
        );
        assert!(page.contains("href=\"./escape%28this%29name/\""), "{page}");
        assert!(page.contains("Index of /a b/"));
        let j: serde_json::Value = serde_json::from_str(&json(&[entry("x\"y", false)])).unwrap();
        assert_eq!(j[0]["name"], "x\"y");
        assert_eq!(j[0]["size"], 3);
    }
}
