//! `--error-file`: the last error as upstream's JSON `{"Msg","Err","Args"}`,
//! written atomically (temp file + rename, 0644) and removed after a success.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn write(path: &Path, msg: &str, err: &str) {
    let body = serde_json::json!({ "Msg": msg, "Err": err, "Args": [] }).to_string();
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
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(body)?;
    f.write_all(b"\n")?;
    drop(f);
    std::fs::rename(&tmp, path)
}

pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}
