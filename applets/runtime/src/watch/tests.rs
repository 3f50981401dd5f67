//! Each case the watch must handle, once, with real files and real inotify.
//! Every wait is bounded by `LIMIT`; none stands in for an event.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A bound on each wait, so a missed event fails the test instead of hanging.
const LIMIT: Duration = Duration::from_secs(10);

async fn next(w: &mut Watch) -> Changed {
    tokio::time::timeout(LIMIT, w.changed())
        .await
        .expect("no change reported")
}

/// Batches up to and including the first that names `target`.
async fn until(w: &mut Watch, target: &Path) -> Vec<Changed> {
    let mut batches = Vec::new();
    for _ in 0..100 {
        let c = next(w).await;
        let done = c.contains(target);
        batches.push(c);
        if done {
            return batches;
        }
    }
    panic!("{} never reported: {batches:?}", target.display());
}

fn write(path: &Path, content: &str) {
    fs::write(path, content).unwrap();
}

#[tokio::test]
async fn write_in_place_is_seen() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("a.conf");
    write(&f, "one");
    let mut w = Watch::files([&f]);
    write(&f, "two");
    let c = next(&mut w).await;
    assert!(c.contains(&f), "{c:?}");
    assert!(c.paths.contains(&f), "{c:?}");
}

#[tokio::test]
async fn renames_are_reported_with_both_names() {
    let d = tempfile::tempdir().unwrap();
    let from = d.path().join("app.log");
    let to = d.path().join("app.log.1");
    write(&from, "one");
    let mut w = Watch::files([d.path()]);
    fs::rename(&from, &to).unwrap();
    let batches = until(&mut w, d.path()).await;
    let renames: Vec<_> = batches.into_iter().flat_map(|c| c.renames).collect();
    assert_eq!(renames, [(from, to)]);
}

#[tokio::test]
async fn atomic_rename_over_the_file_is_seen_and_the_watch_survives_it() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("a.conf");
    write(&f, "one");
    let mut w = Watch::files([&f]);
    let tmp = d.path().join(".a.conf.tmp");
    write(&tmp, "two");
    fs::rename(&tmp, &f).unwrap();
    until(&mut w, &f).await;
    // The file's inode was replaced; the directory watch still sees the new one.
    write(&f, "three");
    until(&mut w, &f).await;
}

/// The kubelet's AtomicWriter: `cert.pem -> ..data/cert.pem`, `..data ->
/// ..<timestamp>`; an update writes a new timestamped directory and renames a
/// new `..data` symlink over the old one.
#[tokio::test]
async fn kubelet_data_symlink_swap_is_seen_every_time() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path();
    let version = |n: u32| {
        let v = m.join(format!("..2026_12_06_0{n}"));
        fs::create_dir(&v).unwrap();
        write(&v.join("cert.pem"), &format!("v{n}"));
        v
    };
    let mut old = version(1);
    symlink(old.file_name().unwrap(), m.join("..data")).unwrap();
    let cert = m.join("cert.pem");
    symlink("..data/cert.pem", &cert).unwrap();
    let mut w = Watch::files([&cert]);
    for n in 2..=3 {
        let new = version(n);
        symlink(new.file_name().unwrap(), m.join("..data_tmp")).unwrap();
        fs::rename(m.join("..data_tmp"), m.join("..data")).unwrap();
        fs::remove_dir_all(&old).unwrap();
        old = new;
        until(&mut w, &cert).await;
        assert_eq!(fs::read_to_string(&cert).unwrap(), format!("v{n}"));
    }
}

#[tokio::test]
async fn replaced_or_recreated_directory_is_followed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("certs");
    let f = dir.join("tls.crt");
    fs::create_dir(&dir).unwrap();
    write(&f, "one");
    let mut w = Watch::files([&f]);

    // Replaced by a rename: the old inode moves away with its watch.
    let staged = d.path().join("certs.new");
    fs::create_dir(&staged).unwrap();
    write(&staged.join("tls.crt"), "two");
    fs::rename(&dir, d.path().join("certs.old")).unwrap();
    fs::rename(&staged, &dir).unwrap();
    until(&mut w, &f).await;
    write(&f, "three"); // in the new directory
    until(&mut w, &f).await;

    // Deleted and created again.
    fs::remove_dir_all(&dir).unwrap();
    fs::create_dir(&dir).unwrap();
    until(&mut w, &f).await;
    write(&f, "four");
    until(&mut w, &f).await;
}

#[tokio::test]
async fn a_file_in_a_directory_that_does_not_exist_yet_is_seen_once_created() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("later/deeper/x.conf");
    let mut w = Watch::files([&f]);
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    write(&f, "x");
    let mut seen = false;
    for _ in 0..100 {
        next(&mut w).await;
        if fs::read_to_string(&f).is_ok_and(|s| s == "x") {
            seen = true;
            break;
        }
    }
    assert!(seen);
    write(&f, "y");
    until(&mut w, &f).await;
}

/// Our own re-reads (open, read, close) and writes to files nobody watches in
/// the same directory wake nothing: the next batch is the sentinel's alone.
#[tokio::test]
async fn own_reads_and_unrelated_files_are_ignored() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("a.conf");
    let sentinel = d.path().join("sentinel");
    write(&f, "one");
    let mut w = Watch::files([&f, &sentinel]);
    for _ in 0..50 {
        fs::read(&f).unwrap();
        Fingerprint::of_files(&[&f]);
    }
    write(&d.path().join("unrelated.log"), "noise");
    write(&sentinel, "go");
    for c in until(&mut w, &sentinel).await {
        assert_eq!(c.targets, BTreeSet::from([sentinel.clone()]), "{c:?}");
        assert_eq!(c.paths, BTreeSet::from([sentinel.clone()]), "{c:?}");
    }
}

/// Fifty writes arrive as few batches, not fifty, and nothing of them is left
/// queued behind: the batch after them is the next write's alone.
#[tokio::test]
async fn a_burst_is_coalesced() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("a.conf");
    let marker = d.path().join("marker");
    let sentinel = d.path().join("sentinel");
    write(&f, "0");
    let mut w = Watch::files([&f, &marker, &sentinel]).debounce(Duration::from_millis(200));
    for i in 0..50 {
        write(&f, &i.to_string());
    }
    write(&marker, "burst done");
    let batches = until(&mut w, &marker).await;
    assert!(
        batches.len() < 50,
        "{} batches for 50 writes",
        batches.len()
    );
    assert!(batches.iter().any(|c| c.contains(&f)));
    write(&sentinel, "after");
    for c in until(&mut w, &sentinel).await {
        assert!(!c.contains(&f), "a write of the burst came late: {c:?}");
    }
}

#[test]
fn blocking_waiters_see_changes_and_time_out_when_idle() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("a.conf");
    write(&f, "one");
    let mut w = Watch::files([&f]);
    assert_eq!(w.changed_blocking(Some(Duration::ZERO)), None);
    write(&f, "two");
    let c = w.changed_blocking(Some(LIMIT)).expect("no change reported");
    assert!(c.contains(&f));
}

#[test]
fn fingerprint_changes_with_content_and_existence_only() {
    let d = tempfile::tempdir().unwrap();
    let f: PathBuf = d.path().join("a");
    let missing = Fingerprint::of_files(&[&f]);
    write(&f, "one");
    let one = Fingerprint::of_files(&[&f]);
    assert_ne!(one, missing);
    write(&f, "one");
    assert_eq!(Fingerprint::of_files(&[&f]), one);
    write(&f, "two");
    assert_ne!(Fingerprint::of_files(&[&f]), one);
    assert_eq!(Fingerprint::of_bytes(b"two"), Fingerprint::of_bytes(b"two"));
}

#[test]
fn events_concern_the_file_its_directories_and_kubelet_entries_only() {
    let c = Path::new("/m/cert.pem");
    assert!(concerns(Path::new("/m/cert.pem"), c));
    assert!(concerns(Path::new("/m"), c));
    assert!(concerns(Path::new("/m/..data"), c));
    assert!(!concerns(Path::new("/m/key.pem"), c));
    assert!(!concerns(Path::new("/other/cert.pem"), c));
    let dir = Path::new("/m");
    assert!(concerns(Path::new("/m/key.pem"), dir));
}
