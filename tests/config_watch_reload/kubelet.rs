//! The kubelet's AtomicWriter (pkg/volume/util/atomic_writer.go), replayed on
//! a plain directory: the exact sequence of creates, symlinks and renames a
//! ConfigMap or Secret volume sees on every update.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

pub struct Volume {
    pub dir: PathBuf,
    swaps: u32,
}

impl Volume {
    /// An empty volume directory (the kubelet fills it before containers start).
    pub fn new(dir: &Path) -> Volume {
        std::fs::create_dir_all(dir).unwrap();
        Volume {
            dir: dir.to_path_buf(),
            swaps: 0,
        }
    }

    /// Publishes `files` (key → content; keys may be nested, `a/b.conf`).
    pub fn write(&mut self, files: &[(&str, &str)]) {
        self.swaps += 1;
        let data = self.dir.join("..data");
        // 2. The old target.
        let old = std::fs::read_link(&data).ok();
        // 5. A new timestamped directory.
        let ts = format!(
            "..2026_01_01_00_00_00.{}{:06}",
            std::process::id(),
            self.swaps
        );
        let ts_dir = self.dir.join(&ts);
        std::fs::create_dir(&ts_dir).unwrap();
        // 6. The files.
        for (key, content) in files {
            let p = ts_dir.join(key);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
        }
        // 8, 9. The atomic switch.
        let tmp = self.dir.join("..data_tmp");
        symlink(&ts, &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        // 10. User-visible links, top path element only.
        let tops: Vec<&str> = files
            .iter()
            .map(|(k, _)| k.split('/').next().unwrap())
            .collect();
        for top in &tops {
            let link = self.dir.join(top);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{top}"), &link).unwrap();
            }
        }
        // 11. Remove user-visible paths of deleted keys.
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !name.starts_with("..") && !tops.contains(&name.as_str()) {
                std::fs::remove_file(self.dir.join(&name)).unwrap();
            }
        }
        // 12. The old timestamped directory.
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}
