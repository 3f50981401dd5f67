//! `--error-file`: the last error as upstream's JSON `{"Msg","Err","Args"}`,
//! written atomically (temp file + rename, 0644) and removed after a success.

use std::path::Path;

/// `args`: the log line's key/value pairs, an object as upstream's
/// (`{"failCount":1,"maxFailures":0}`).
pub fn write(path: &Path, msg: &str, err: &str, args: serde_json::Value) {
    let body = serde_json::json!({ "Msg": msg, "Err": err, "Args": args }).to_string();
    if let Err(e) = write_atomic(path, body.as_bytes()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write --error-file");
    }
}

/// A configuration error, before there is a sync to describe.
pub fn write_plain(path: &Path, msg: &str) {
    if let Err(e) = write_atomic(path, msg.as_bytes()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write --error-file");
    }
}

fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut line = body.to_vec();
    line.push(b'\n');
    sidecar_runtime::fsutil::write_atomic(path, &line, 0o644)
}

pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}
