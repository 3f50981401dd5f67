//! `--buffer-dir`: batches read but not yet acknowledged by the sink, kept
//! in an append-only queue of checksummed segment files (as Vector's disk
//! buffer and Fluent Bit's filesystem storage do), bounded by
//! `--buffer-max-bytes-disk`.
//!
//! Who owns a line: until its batch is durable in the buffer, the file does
//! (the checkpoint stays before it and a restart reads it again); from then
//! on, the buffer does: the checkpoint moves past it, and a rotated or
//! deleted file can be closed although the sink has not seen its lines.
//!
//! fsync policy: appends are plain writes. Once a second (with the
//! checkpoint write), before a file is closed, and at shutdown, the
//! segments written since are fsynced and only then do the checkpoints move
//! past their lines. A crash of the process (kill -9, OOM) loses nothing
//! (the page cache keeps the writes); a crash of the machine loses at most
//! the writes since the last fsync, whose lines the checkpoint had not
//! passed: they are read again from the files. Either way a record may be
//! sent twice (at least once), never skipped.
//!
//! The sink reads records oldest first, one at a time, and acknowledges
//! each once delivered; a segment whose records are all acknowledged is
//! deleted. How far the oldest segment got is written to a small ledger
//! with the checkpoints, so a restart resends at most a second of records.
//! A record whose checksum fails (a write torn by a crash, a damaged disk)
//! ends its segment: the segment is cut there, counted and logged.

mod record;
mod segment;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::batch::Batch;
use crate::checkpoint::{Mark, Store};
use crate::metrics::Metrics;
use segment::Ledger;

/// Segment file size: a fraction of the cap, so acknowledged records are
/// given back in steps that are small against it.
const SEGMENTS_PER_CAP: u64 = 8;
const MIN_SEGMENT: u64 = 64 << 10;
const MAX_SEGMENT: u64 = 64 << 20;
const LOCK: &str = "buffer.lock";

pub struct Buffer {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    /// One fsync pass at a time, so a pass that found nothing to sync does
    /// not report marks as durable while another pass is still syncing them.
    syncing: Mutex<()>,
    /// A record was appended, or the writer is gone.
    data: Notify,
    /// A segment was freed (or became free to drop).
    space: Notify,
    metrics: Metrics,
    _lock: nix::fcntl::Flock<File>,
}

struct State {
    /// Oldest first; appends go to the last one unless it is sealed.
    segments: VecDeque<Segment>,
    next_id: u64,
    /// Bytes of all segment files.
    bytes: u64,
    /// Events in records not yet acknowledged.
    events: u64,
    /// Checkpoint marks of the records appended since the last fsync.
    marks: Vec<Mark>,
    /// A segment file was created since the last fsync of the directory.
    dir_dirty: bool,
    /// Acknowledgements not yet written to the ledger.
    ledger: Option<Ledger>,
    writer_closed: bool,
}

struct Segment {
    id: u64,
    file: Arc<File>,
    /// Bytes written.
    len: u64,
    /// Where the oldest record not yet acknowledged starts.
    read_at: u64,
    /// Records acknowledged, from the start.
    acked: u64,
    /// Events in records not yet acknowledged.
    events: u64,
    /// No more appends.
    sealed: bool,
    /// Written since its last fsync.
    dirty: bool,
}

/// A record handed to the sink; given back to [`Buffer::ack`].
pub struct Ticket {
    segment: u64,
    len: u64,
    events: u64,
}

/// Why an append did not happen.
pub enum Full {
    /// No room under `--buffer-max-bytes-disk`: wait for [`Buffer::space`].
    Cap,
    /// The write failed (disk full, I/O error); nothing was appended.
    Io(std::io::Error),
}

impl Buffer {
    /// Opens (or creates) the buffer in `dir`, checking every record left by
    /// the last run: a torn or corrupt one ends its segment there.
    pub fn open(dir: &Path, max_bytes: u64, metrics: &Metrics) -> anyhow::Result<Arc<Buffer>> {
        use sidecar_runtime::usage;
        std::fs::create_dir_all(dir)
            .map_err(|e| usage!("--buffer-dir {}: cannot create: {e}", dir.display()))?;
        let f = File::create(dir.join(LOCK))
            .map_err(|e| usage!("--buffer-dir {}: not writable: {e}", dir.display()))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| {
                usage!(
                    "--buffer-dir {}: in use by another log-tail-ship ({e})",
                    dir.display()
                )
            })?;
        let ledger = segment::read_ledger(dir)?.unwrap_or_default();
        let mut ids: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| segment::parse_name(&e.ok()?.file_name().to_string_lossy()))
            .collect();
        ids.sort_unstable();
        let mut st = State {
            segments: VecDeque::new(),
            // Never an id the ledger may name: a new segment under that
            // id would have its first records skipped after a restart.
            next_id: ids.last().copied().unwrap_or(0).max(ledger.segment) + 1,
            bytes: 0,
            events: 0,
            marks: Vec::new(),
            dir_dirty: false,
            ledger: None,
            writer_closed: false,
        };
        for id in ids {
            if let Some(s) = recover(dir, id, ledger, metrics)? {
                st.bytes += s.len;
                st.events += s.events;
                st.segments.push_back(s);
            }
        }
        if st.bytes > 0 {
            tracing::info!(dir = %dir.display(), segments = st.segments.len(), events = st.events, bytes = st.bytes, "disk buffer holds events from the last run; sending them first");
        }
        let buffer = Buffer {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / SEGMENTS_PER_CAP).clamp(MIN_SEGMENT, MAX_SEGMENT),
            state: Mutex::new(st),
            syncing: Mutex::new(()),
            data: Notify::new(),
            space: Notify::new(),
            metrics: metrics.clone(),
            _lock: lock,
        };
        buffer.gauges(&buffer.lock());
        Ok(Arc::new(buffer))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gauges(&self, st: &State) {
        let m = &self.metrics;
        m.disk_buffer_bytes.set(st.bytes as i64);
        m.disk_buffer_segments.set(st.segments.len() as i64);
        m.disk_buffer_events.set(st.events as i64);
    }

    /// Appends `batch` (its marks become durable at the next [`sync`]).
    /// Over the cap it is refused, unless the buffer is empty (a batch
    /// larger than the cap) or `force` (a closing file's last lines at
    /// shutdown: over the cap by one batch rather than lost).
    pub fn append(&self, batch: &Batch, force: bool) -> Result<(), Full> {
        let size = record::frame_len(batch);
        if !record::fits(batch) {
            return Err(Full::Io(std::io::Error::other("batch over 4 GiB")));
        }
        let mut st = self.lock();
        // The segment being written, fully acknowledged: drop it rather
        // than keep its bytes counted.
        if st
            .segments
            .back()
            .is_some_and(|s| !s.sealed && s.len > 0 && s.read_at == s.len)
        {
            let s = st.segments.pop_back().expect("just looked");
            self.remove(&mut st, s);
        }
        if !force && st.bytes > 0 && st.bytes + size > self.max_bytes {
            return Err(Full::Cap);
        }
        let roll = match st.segments.back() {
            Some(s) if !s.sealed => s.len >= self.segment_bytes,
            _ => true,
        };
        if roll {
            self.roll(&mut st).map_err(Full::Io)?;
        }
        let s = st.segments.back_mut().expect("rolled above");
        let head = record::encode_head(batch);
        let at = s.len;
        let written = s
            .file
            .write_all_at(&head, at)
            .and_then(|()| s.file.write_all_at(&batch.body, at + head.len() as u64));
        if let Err(e) = written {
            // Cut what was written, and append to a new segment next time,
            // so no garbage sits between two records.
            let _ = s.file.set_len(at);
            s.sealed = true;
            if s.len == 0 {
                let s = st.segments.pop_back().expect("just written");
                self.remove(&mut st, s);
            }
            return Err(Full::Io(e));
        }
        let events = batch.len() as u64;
        s.len += size;
        s.events += events;
        s.dirty = true;
        st.bytes += size;
        st.events += events;
        for m in &batch.marks {
            merge(&mut st.marks, *m);
        }
        self.gauges(&st);
        drop(st);
        self.data.notify_one();
        Ok(())
    }

    /// Seals the segment being written and starts a new one.
    fn roll(&self, st: &mut State) -> std::io::Result<()> {
        if let Some(s) = st.segments.back_mut() {
            s.sealed = true;
        }
        let id = st.next_id;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.dir.join(segment::name(id)))?;
        st.next_id += 1;
        st.dir_dirty = true;
        st.segments.push_back(Segment {
            id,
            file: Arc::new(file),
            len: 0,
            read_at: 0,
            acked: 0,
            events: 0,
            sealed: false,
            dirty: false,
        });
        Ok(())
    }

    /// Deletes a segment that is out of the queue.
    fn remove(&self, st: &mut State, s: Segment) {
        st.bytes -= s.len;
        st.events -= s.events;
        let path = self.dir.join(segment::name(s.id));
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::error!(path = %path.display(), error = %e, "cannot delete an acknowledged buffer segment");
        }
    }

    /// Resolves when space was freed since the last call.
    pub async fn space(&self) {
        self.space.notified().await
    }

    /// fsyncs what was appended since the last call, then moves the
    /// checkpoints past the lines of those records: the buffer owns them now.
    /// A failure is logged here; the checkpoints then stay where they were.
    pub fn sync(&self, store: &Mutex<Store>) -> std::io::Result<()> {
        let _one = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let (files, dir, marks) = {
            let mut st = self.lock();
            let files: Vec<(u64, Arc<File>)> = st
                .segments
                .iter_mut()
                .filter_map(|s| std::mem::take(&mut s.dirty).then(|| (s.id, s.file.clone())))
                .collect();
            (
                files,
                std::mem::take(&mut st.dir_dirty),
                std::mem::take(&mut st.marks),
            )
        };
        let synced = files
            .iter()
            .try_for_each(|(_, f)| f.sync_data())
            .and_then(|()| {
                if dir {
                    File::open(&self.dir)?.sync_all()?;
                }
                Ok(())
            });
        if let Err(e) = synced {
            // Not durable: the checkpoints stay, and the next pass tries again.
            tracing::error!(error = %e, "cannot fsync --buffer-dir; checkpoints stay before its lines");
            let mut st = self.lock();
            for s in st.segments.iter_mut() {
                s.dirty |= files.iter().any(|(id, _)| *id == s.id);
            }
            st.dir_dirty |= dir;
            let newer = std::mem::replace(&mut st.marks, marks);
            for m in newer {
                merge(&mut st.marks, m);
            }
            return Err(e);
        }
        store.lock().unwrap_or_else(|e| e.into_inner()).ack(&marks);
        Ok(())
    }

    /// Writes how far the sink got, if that moved.
    pub fn write_ledger(&self) -> std::io::Result<()> {
        let Some(l) = self.lock().ledger.take() else {
            return Ok(());
        };
        segment::write_ledger(&self.dir, l).inspect_err(|_| {
            self.lock().ledger.get_or_insert(l);
        })
    }

    /// The writer is gone: the sink stops once it read everything.
    pub fn close_writer(&self) {
        self.lock().writer_closed = true;
        self.data.notify_one();
    }

    /// The oldest record not yet acknowledged; None once the writer is
    /// gone and every record was handed out.
    pub async fn next(&self) -> Option<(Batch, Ticket)> {
        loop {
            let found = {
                let st = self.lock();
                let s = st.segments.iter().find(|s| s.read_at < s.len);
                match s {
                    Some(s) => Some((s.id, s.file.clone(), s.read_at, s.len)),
                    None if st.writer_closed => return None,
                    None => None,
                }
            };
            let Some((id, file, at, end)) = found else {
                self.data.notified().await;
                continue;
            };
            let read = tokio::task::spawn_blocking(move || read_record(&file, at, end)).await;
            match read {
                Ok(Ok((batch, len))) => {
                    let events = batch.len() as u64;
                    return Some((
                        batch,
                        Ticket {
                            segment: id,
                            len,
                            events,
                        },
                    ));
                }
                Ok(Err(why)) => self.corrupt(id, at, end, &why),
                Err(e) => {
                    tracing::error!(error = %e, "buffer read task failed");
                    self.corrupt(id, at, end, "read task failed");
                }
            }
        }
    }

    /// A record that was good when written reads back bad (the disk, or
    /// someone, changed it): the rest of its segment cannot be trusted.
    fn corrupt(&self, id: u64, at: u64, end: u64, why: &str) {
        tracing::error!(segment = %segment::name(id), offset = at, bytes = end - at, reason = why, "corrupt record in the disk buffer; dropping the rest of its segment");
        self.metrics.disk_buffer_corrupt.inc();
        self.metrics.disk_buffer_corrupt_bytes.inc_by(end - at);
        let mut st = self.lock();
        if let Some(i) = st.segments.iter().position(|s| s.id == id) {
            let s = &mut st.segments[i];
            let lost = std::mem::take(&mut s.events);
            s.read_at = s.len;
            s.sealed = true;
            st.events -= lost;
            let s = st.segments.remove(i).expect("found above");
            self.remove(&mut st, s);
        }
        self.gauges(&st);
        drop(st);
        self.space.notify_one();
    }

    /// The sink delivered the record of `t`.
    pub fn ack(&self, t: Ticket) {
        let mut st = self.lock();
        let Some(i) = st.segments.iter().position(|s| s.id == t.segment) else {
            return;
        };
        let s = &mut st.segments[i];
        s.read_at += t.len;
        s.acked += 1;
        s.events -= t.events;
        let (ledger, done, sealed) = (
            Ledger {
                segment: s.id,
                records: s.acked,
            },
            s.read_at >= s.len,
            s.sealed,
        );
        st.events -= t.events;
        st.ledger = Some(ledger);
        if done && sealed {
            let s = st.segments.remove(i).expect("found above");
            self.remove(&mut st, s);
        }
        self.gauges(&st);
        drop(st);
        if done {
            self.space.notify_one();
        }
    }
}

/// One segment left by the last run, checked and cut after its last good
/// record; None if it held nothing left to send (it is deleted).
fn recover(dir: &Path, id: u64, ledger: Ledger, m: &Metrics) -> anyhow::Result<Option<Segment>> {
    let path = dir.join(segment::name(id));
    if id < ledger.segment {
        std::fs::remove_file(&path)?;
        return Ok(None);
    }
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let len = file.metadata()?.len();
    let acked = if id == ledger.segment {
        ledger.records
    } else {
        0
    };
    let scan = segment::scan(&file, len, acked)?;
    if let Some(bad) = &scan.bad {
        tracing::warn!(segment = %path.display(), offset = scan.valid, bytes = len - scan.valid, reason = ?bad, "torn or corrupt record in the disk buffer; cutting the segment there");
        m.disk_buffer_corrupt.inc();
        m.disk_buffer_corrupt_bytes.inc_by(len - scan.valid);
        file.set_len(scan.valid)?;
        file.sync_all()?;
    }
    if scan.read_at >= scan.valid {
        std::fs::remove_file(&path)?;
        return Ok(None);
    }
    Ok(Some(Segment {
        id,
        file: Arc::new(file),
        len: scan.valid,
        read_at: scan.read_at,
        acked: acked.min(scan.records),
        events: scan.events,
        sealed: true,
        dirty: false,
    }))
}

/// The record at `at` (before `end`), checked; its batch and frame length.
/// The body is read into a buffer of its own, which becomes the batch's.
fn read_record(file: &File, at: u64, end: u64) -> Result<(Batch, u64), String> {
    use record::{FRAME_HEAD, PAYLOAD_HEAD};
    let io = |e: std::io::Error| e.to_string();
    let mut head = [0; FRAME_HEAD + PAYLOAD_HEAD];
    if at + head.len() as u64 > end {
        return Err("record longer than its segment".into());
    }
    file.read_exact_at(&mut head, at).map_err(io)?;
    let frame_head: &[u8; FRAME_HEAD] = head[..FRAME_HEAD].try_into().expect("frame head");
    let payload_head: &[u8; PAYLOAD_HEAD] = head[FRAME_HEAD..].try_into().expect("payload head");
    let (len, _) = record::parse_head(frame_head);
    let frame = (FRAME_HEAD as u64) + u64::from(len);
    let index_len = record::index_len(payload_head);
    if at + frame > end || (PAYLOAD_HEAD + index_len) as u64 > u64::from(len) {
        return Err("record longer than its segment".into());
    }
    let mut index = vec![0; PAYLOAD_HEAD + index_len];
    index[..PAYLOAD_HEAD].copy_from_slice(payload_head);
    let mut pos = at + head.len() as u64;
    file.read_exact_at(&mut index[PAYLOAD_HEAD..], pos)
        .map_err(io)?;
    pos += index_len as u64;
    let mut body = vec![0; len as usize - index.len()];
    file.read_exact_at(&mut body, pos).map_err(io)?;
    record::verify(frame_head, &[&index, &body]).map_err(|b| format!("{b:?}"))?;
    let batch = record::decode(&index, body).map_err(|b| format!("{b:?}"))?;
    Ok((batch, frame))
}

/// Adds a checkpoint mark, keeping one per file (the furthest).
fn merge(marks: &mut Vec<Mark>, m: Mark) {
    match marks.iter_mut().find(|x| x.key == m.key) {
        Some(x) if x.generation == m.generation => x.end = x.end.max(m.end),
        Some(x) => *x = m,
        None => marks.push(m),
    }
}

/// The tailer's side: appends, and tells the sink when it is gone.
pub struct Writer(pub Arc<Buffer>);

impl Drop for Writer {
    fn drop(&mut self) {
        self.0.close_writer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{FileKey, Fingerprint};

    fn batch(tag: &str, n: usize, key: FileKey, end: u64) -> Batch {
        let mut b = Batch::default();
        for i in 0..n {
            b.body
                .extend_from_slice(format!("{{\"m\":\"{tag}-{i}\"}}\n").as_bytes());
            b.ends.push(b.body.len());
            b.times.push(0);
            b.ids.push(0);
        }
        b.mark(Mark {
            key,
            generation: 0,
            end,
        });
        b
    }

    fn docs(b: &Batch) -> Vec<String> {
        (0..b.len())
            .map(|i| String::from_utf8(b.doc(i).to_vec()).unwrap())
            .collect()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn checkpoints_move_only_once_synced_and_acks_delete_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::default();
        let key = FileKey { dev: 1, ino: 2 };
        let store = Mutex::new(Store::load(None).unwrap());
        store
            .lock()
            .unwrap()
            .track(key, 0, Path::new("/a"), Fingerprint::default(), 0);
        // Segments of 64 KiB, records of 40 KiB: two per segment.
        let b = Buffer::open(dir.path(), 512 << 10, &m).unwrap();
        let big = "x".repeat(40 << 10);
        for i in 1..=4u64 {
            b.append(&batch(&big, 1, key, i * 100), false).ok().unwrap();
        }
        assert_eq!(store.lock().unwrap().acked(&key), Some(0));
        b.sync(&store).unwrap();
        assert_eq!(store.lock().unwrap().acked(&key), Some(400));
        assert_eq!(m.disk_buffer_segments.get(), 2);
        assert_eq!(m.disk_buffer_events.get(), 4);
        let rt = rt();
        let (_, t) = rt.block_on(b.next()).unwrap();
        b.ack(t);
        // Half of the first segment acknowledged: it stays.
        assert_eq!(m.disk_buffer_segments.get(), 2);
        let (_, t) = rt.block_on(b.next()).unwrap();
        b.ack(t);
        assert_eq!(m.disk_buffer_segments.get(), 1);
        assert_eq!(m.disk_buffer_events.get(), 2);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".seg"))
            .collect();
        assert_eq!(names, [segment::name(2)]);
    }

    #[test]
    fn a_restart_resumes_after_the_ledger_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let key = FileKey { dev: 1, ino: 2 };
        let store = Mutex::new(Store::load(None).unwrap());
        let rt = rt();
        {
            let b = Buffer::open(dir.path(), 1 << 20, &Metrics::default()).unwrap();
            for tag in ["a", "b", "c"] {
                b.append(&batch(tag, 2, key, 1), false).ok().unwrap();
            }
            let (got, t) = rt.block_on(b.next()).unwrap();
            assert_eq!(docs(&got), [r#"{"m":"a-0"}"#, r#"{"m":"a-1"}"#]);
            b.ack(t);
            b.sync(&store).unwrap();
            b.write_ledger().unwrap();
        }
        // A crash in the middle of the last append.
        let seg = dir.path().join(segment::name(1));
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let m = Metrics::default();
        let b = Buffer::open(dir.path(), 1 << 20, &m).unwrap();
        assert_eq!(m.disk_buffer_corrupt.get(), 1);
        assert_eq!(m.disk_buffer_events.get(), 2);
        let (got, t) = rt.block_on(b.next()).unwrap();
        assert_eq!(docs(&got), [r#"{"m":"b-0"}"#, r#"{"m":"b-1"}"#]);
        b.ack(t);
        // New appends go to a new segment, after the recovered ones.
        b.append(&batch("d", 1, key, 1), false).ok().unwrap();
        let (got, t) = rt.block_on(b.next()).unwrap();
        assert_eq!(docs(&got), [r#"{"m":"d-0"}"#]);
        assert!(dir.path().join(segment::name(2)).exists());
        b.ack(t);
        b.write_ledger().unwrap();
        drop(b);
        // Everything was acknowledged: the next start deletes segment 2,
        // and the one after must not reuse its id (the ledger names it).
        drop(Buffer::open(dir.path(), 1 << 20, &Metrics::default()).unwrap());
        let b = Buffer::open(dir.path(), 1 << 20, &Metrics::default()).unwrap();
        b.append(&batch("e", 1, key, 1), false).ok().unwrap();
        drop(b);
        let b = Buffer::open(dir.path(), 1 << 20, &Metrics::default()).unwrap();
        let (got, _) = rt.block_on(b.next()).unwrap();
        assert_eq!(docs(&got), [r#"{"m":"e-0"}"#]);
    }

    #[test]
    fn over_the_cap_appends_wait_unless_empty_or_forced() {
        let dir = tempfile::tempdir().unwrap();
        let key = FileKey { dev: 1, ino: 2 };
        let b = Buffer::open(dir.path(), 200, &Metrics::default()).unwrap();
        let big = batch(&"y".repeat(300), 1, key, 1);
        // Alone, a batch larger than the cap still goes in.
        assert!(b.append(&big, false).is_ok());
        assert!(matches!(b.append(&big, false), Err(Full::Cap)));
        assert!(b.append(&big, true).is_ok());
        let rt = rt();
        for _ in 0..2 {
            let (_, t) = rt.block_on(b.next()).unwrap();
            b.ack(t);
        }
        // Everything acknowledged: the segment being written is dropped.
        assert!(b.append(&big, false).is_ok());
        b.close_writer();
        let (_, t) = rt.block_on(b.next()).unwrap();
        b.ack(t);
        assert!(rt.block_on(b.next()).is_none());
    }
}
