//! Turns complete lines into events in the current batch, groups multiline
//! events, and hands full batches to the [`Outlet`] (the sink task or the
//! disk buffer), which makes the reader wait while there is no room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use regex::bytes::Regex;
use sidecar_runtime::Shutdown;

use serde_json::{Map, Value};

use crate::batch::Batch;
use crate::checkpoint::{FileKey, Mark, Store};
use crate::container::{self, Format, Stream};
use crate::event::{Fields, Line, Template};
use crate::lines::capped;
use crate::outlet::Outlet;

/// The file a line came from.
pub struct Source<'a> {
    pub key: FileKey,
    pub generation: u32,
    pub path_json: &'a str,
    /// Identifies the file's content stream; with a line's offset it makes
    /// the event's document id.
    pub seed: u64,
    /// Host, `--field`s and Kubernetes metadata of the file's events.
    pub fields: &'a Arc<Fields>,
}

/// A complete line, decoded from `--format`.
struct Rec<'a> {
    text: &'a [u8],
    offset: u64,
    end: u64,
    truncated: bool,
    stream: Option<Stream>,
    /// The container runtime's time of the line (RFC 3339).
    time: Option<&'a str>,
    error: Option<&'static str>,
}

/// Parts of a container log line split by the runtime (CRI `P`, Docker
/// without a newline), joined until the last part.
struct Join {
    generation: u32,
    offset: u64,
    time: String,
    text: Vec<u8>,
    truncated: bool,
}

/// Room in a new batch's body beyond `--batch-max-bytes`: the event that
/// crosses the limit goes in before the batch is sent.
const BATCH_SLACK: usize = 64 << 10;

pub struct Limits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
    pub max_line_bytes: usize,
}

pub struct MultilineRule {
    pub start: Regex,
    pub max_lines: usize,
    pub timeout: Duration,
}

/// A multiline event still collecting lines.
struct Pending {
    generation: u32,
    seed: u64,
    path_json: String,
    fields: Arc<Fields>,
    stream: Option<Stream>,
    time: Option<String>,
    text: Vec<u8>,
    offset: u64,
    end: u64,
    lines: usize,
    truncated: bool,
    last: Instant,
}

/// Event time, formatted once per millisecond rather than once per line.
struct Clock {
    millis: i64,
    nanos: i64,
    text: String,
}

impl Clock {
    fn update(&mut self) {
        let now = SystemTime::now();
        let nanos = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        self.nanos = nanos;
        if nanos / 1_000_000 != self.millis {
            self.millis = nanos / 1_000_000;
            self.text = humantime::format_rfc3339_millis(now).to_string();
        }
    }
}

/// Runtime times to nanoseconds; lines of one second share the parse of
/// their date and time, only the fraction is read per line.
#[derive(Default)]
struct TimeCache {
    /// `YYYY-MM-DDTHH:MM:SS` and the zone suffix, and its Unix seconds.
    second: String,
    zone: String,
    secs: i64,
}

impl TimeCache {
    fn nanos(&mut self, t: &str) -> Option<i64> {
        let (head, rest) = (t.get(..19)?, t.get(19..)?);
        let (frac, zone) = match rest.strip_prefix('.') {
            Some(r) => r.split_at(r.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", rest),
        };
        if head != self.second || zone != self.zone {
            self.secs = container::unix_nanos(&format!("{head}{zone}"))?.div_euclid(1_000_000_000);
            self.second = head.to_string();
            self.zone = zone.to_string();
        }
        let digits = frac.get(..frac.len().min(9))?;
        let mut n: i64 = digits.parse().unwrap_or(0);
        for _ in digits.len()..9 {
            n *= 10;
        }
        Some(self.secs * 1_000_000_000 + n)
    }
}

pub struct Emitter {
    template: Template,
    format: Format,
    multiline: Option<MultilineRule>,
    pending: HashMap<FileKey, Pending>,
    joins: HashMap<(FileKey, Stream), Join>,
    batch: Batch,
    first_at: Option<Instant>,
    /// The last batch handed over was full: the reader is working off a
    /// backlog, and what it read after it need not wait for --batch-timeout.
    after_full: bool,
    limits: Limits,
    outlet: Outlet,
    shutdown: Shutdown,
    clock: Clock,
    times: TimeCache,
}

impl Emitter {
    pub fn new(
        template: Template,
        format: Format,
        multiline: Option<MultilineRule>,
        limits: Limits,
        outlet: Outlet,
        shutdown: Shutdown,
    ) -> Emitter {
        let mut clock = Clock {
            millis: -1,
            nanos: 0,
            text: String::new(),
        };
        clock.update();
        Emitter {
            template,
            format,
            multiline,
            pending: HashMap::new(),
            joins: HashMap::new(),
            batch: Batch::default(),
            first_at: None,
            after_full: false,
            limits,
            outlet,
            shutdown,
            clock,
            times: TimeCache::default(),
        }
    }

    /// Called once per read chunk: lines of one chunk share a timestamp.
    pub fn tick_clock(&mut self) {
        self.clock.update();
    }

    /// The fields of a file's events: its Kubernetes metadata `meta`
    /// under the host and `--field`s.
    pub fn fields(&self, meta: &Map<String, Value>) -> Arc<Fields> {
        Arc::new(self.template.fields(meta))
    }

    /// One complete line (without its newline) that starts at `offset`;
    /// `end` is just past its newline. Returns false when shutdown
    /// interrupted a wait for buffer space.
    pub fn line(
        &mut self,
        src: &Source,
        text: &[u8],
        offset: u64,
        end: u64,
        truncated: bool,
    ) -> bool {
        let mut rec = Rec {
            text,
            offset,
            end,
            truncated,
            stream: None,
            time: None,
            error: None,
        };
        if self.format == Format::Raw {
            return self.record(src, rec);
        }
        let Some(r) = container::decode(self.format, text) else {
            // Not what the runtime writes: shipped as it is, and flagged.
            rec.error = Some(match self.format {
                Format::Docker => "not a Docker json-file line",
                _ => "not a CRI log line",
            });
            return self.record(src, rec);
        };
        let key = (src.key, r.stream);
        if !r.partial && !self.joins.contains_key(&key) {
            rec.text = &r.message;
            rec.stream = Some(r.stream);
            rec.time = Some(r.time);
            return self.record(src, rec);
        }
        let max = self.limits.max_line_bytes;
        let j = self.joins.entry(key).or_insert_with(|| Join {
            generation: src.generation,
            offset,
            time: r.time.to_string(),
            text: Vec::new(),
            truncated: false,
        });
        if j.generation != src.generation {
            // The file was truncated under a half-joined line: start over.
            *j = Join {
                generation: src.generation,
                offset,
                time: r.time.to_string(),
                text: Vec::new(),
                truncated: false,
            };
        }
        let (part, cut) = capped(&r.message, max.saturating_sub(j.text.len()));
        j.text.extend_from_slice(part);
        j.truncated |= cut || truncated;
        if r.partial {
            return true;
        }
        let j = self.joins.remove(&key).expect("joined just above");
        rec.text = &j.text;
        rec.offset = j.offset;
        rec.truncated = j.truncated;
        rec.stream = Some(r.stream);
        rec.time = Some(&j.time);
        self.record(src, rec)
    }

    /// A line decoded: grouped into a multiline event, or sent.
    fn record(&mut self, src: &Source, rec: Rec) -> bool {
        let Rec {
            text,
            offset,
            end,
            truncated,
            ..
        } = rec;
        if let Some(rule) = &self.multiline {
            let continues = text.is_empty() || !rule.start.is_match(text);
            if let Some(p) = self.pending.get_mut(&src.key) {
                if continues && p.generation == src.generation && p.lines < rule.max_lines {
                    let room = self.limits.max_line_bytes.saturating_sub(p.text.len());
                    let add = text.len() + 1;
                    if add <= room {
                        p.text.push(b'\n');
                        p.text.extend_from_slice(text);
                    } else {
                        if room > 0 {
                            p.text.push(b'\n');
                            p.text.extend_from_slice(&text[..room - 1]);
                        }
                        p.truncated = true;
                    }
                    p.truncated |= truncated;
                    p.end = end;
                    p.lines += 1;
                    p.last = Instant::now();
                    return true;
                }
            }
            if !self.flush_pending(&src.key) {
                return false;
            }
            if text.is_empty() {
                return self.skip(src, end);
            }
            self.pending.insert(
                src.key,
                Pending {
                    generation: src.generation,
                    seed: src.seed,
                    path_json: src.path_json.to_string(),
                    fields: src.fields.clone(),
                    stream: rec.stream,
                    time: rec.time.map(str::to_string),
                    text: text.to_vec(),
                    offset,
                    end,
                    lines: 1,
                    truncated,
                    last: Instant::now(),
                },
            );
            return true;
        }
        if text.is_empty() {
            return self.skip(src, end);
        }
        let line = Line {
            text,
            offset,
            truncated,
            multiline: false,
            stream: rec.stream,
            error: rec.error,
        };
        self.push(src, &line, end, rec.time)
    }

    /// An empty line: nothing to send, but the checkpoint may pass it.
    fn skip(&mut self, src: &Source, end: u64) -> bool {
        self.batch.mark(Mark {
            key: src.key,
            generation: src.generation,
            end,
        });
        self.first_at.get_or_insert_with(Instant::now);
        true
    }

    /// Adds an event to the batch. `time` is the container runtime's time
    /// of the line; without it the event time is the read time.
    fn push(&mut self, src: &Source, line: &Line, end: u64, time: Option<&str>) -> bool {
        let b = &mut self.batch;
        let (text, nanos) = match time.and_then(|t| Some((t, self.times.nanos(t)?))) {
            Some(tn) => tn,
            None => (self.clock.text.as_str(), self.clock.nanos),
        };
        let id = xxhash_rust::xxh3::xxh3_128_with_seed(&line.offset.to_le_bytes(), src.seed);
        if let Some(f) = self.outlet.framing() {
            let at = b.body.len();
            f.write(&mut b.body, nanos, id);
            b.framing += b.body.len() - at;
            b.starts.push(b.body.len());
        }
        self.template
            .write(&mut b.body, text, src.path_json, line, src.fields);
        b.body.push(b'\n');
        b.ends.push(b.body.len());
        b.times.push(nanos);
        b.ids.push(id);
        b.mark(Mark {
            key: src.key,
            generation: src.generation,
            end,
        });
        self.first_at.get_or_insert_with(Instant::now);
        // Documents count, not action lines: --batch-max-bytes means the
        // same with and without them.
        if b.len() >= self.limits.max_events || b.body.len() - b.framing >= self.limits.max_bytes {
            let sent = self.flush();
            self.after_full = sent;
            return sent;
        }
        true
    }

    /// Sends the multiline event collecting for `key`, if any.
    pub fn flush_pending(&mut self, key: &FileKey) -> bool {
        let Some(p) = self.pending.remove(key) else {
            return true;
        };
        let line = Line {
            text: &p.text,
            offset: p.offset,
            truncated: p.truncated,
            multiline: p.lines > 1,
            stream: p.stream,
            error: None,
        };
        let src = Source {
            key: *key,
            generation: p.generation,
            path_json: &p.path_json,
            seed: p.seed,
            fields: &p.fields,
        };
        self.push(&src, &line, p.end, p.time.as_deref())
    }

    /// Sends what is due: multiline events idle past their timeout, and the
    /// batch once `--batch-timeout` passed since its first event.
    pub fn tick(&mut self) -> bool {
        if let Some(rule) = &self.multiline {
            let due: Vec<FileKey> = self
                .pending
                .iter()
                .filter(|(_, p)| p.last.elapsed() >= rule.timeout)
                .map(|(k, _)| *k)
                .collect();
            for k in due {
                if !self.flush_pending(&k) {
                    return false;
                }
            }
        }
        match self.first_at {
            Some(t) if t.elapsed() >= self.limits.timeout => self.flush(),
            _ => true,
        }
    }

    /// The reader read every file to its end. If the batch before this one
    /// went out full, these are the last lines of a backlog (a burst, or
    /// what piled up while the shipper was down): they go now rather than
    /// after --batch-timeout. A trickle of lines never fills a batch, so it
    /// is still sent once per --batch-timeout; a steady stream adds at most
    /// one request per full batch. False when shutdown interrupted.
    pub fn caught_up(&mut self) -> bool {
        if self.after_full {
            return self.flush();
        }
        true
    }

    /// When [`tick`](Self::tick) next has work.
    pub fn deadline(&self) -> Option<Instant> {
        let batch = self.first_at.map(|t| t + self.limits.timeout);
        let ml = self
            .multiline
            .as_ref()
            .and_then(|r| self.pending.values().map(|p| p.last + r.timeout).min());
        [batch, ml].into_iter().flatten().min()
    }

    /// Hands the batch on, first waiting for room. False when shutdown
    /// came first.
    pub fn flush(&mut self) -> bool {
        self.hand_over(false)
    }

    fn hand_over(&mut self, force: bool) -> bool {
        self.first_at = None;
        self.after_full = false;
        if self.batch.is_empty() && self.batch.marks.is_empty() {
            return true;
        }
        // The next batch is sized for a full one up front (action lines as
        // many as in this one): growing it by doubling would copy it
        // several times over.
        let mut next = Batch::default();
        next.body
            .reserve_exact(self.limits.max_bytes + BATCH_SLACK + self.batch.framing * 9 / 8);
        let batch = std::mem::replace(&mut self.batch, next);
        self.outlet.send(batch, force)
    }

    /// A file is about to be closed. With a disk buffer, the lines read so
    /// far go into it and are made durable first, so that the checkpoint
    /// moves past them and closing a deleted file loses nothing. At
    /// shutdown they go in over the cap rather than be lost with the file.
    pub fn persist(&mut self, store: &Mutex<Store>) -> bool {
        if !self.outlet.is_disk() {
            return true;
        }
        if !self.hand_over(self.shutdown.is_requested()) {
            return false;
        }
        self.outlet.sync(store);
        true
    }

    /// Whether shutdown started.
    pub fn stopping(&self) -> bool {
        self.shutdown.is_requested()
    }

    /// Drops the multiline events and split lines still collecting: at shutdown they are
    /// not sent, so the checkpoint stays before them and a restart reads
    /// them whole instead of splitting them.
    pub fn drop_pending(&mut self) {
        self.pending.clear();
        self.joins.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::sink::ActionLines;
    use tokio::sync::{mpsc, Semaphore};

    /// An emitter of batches of at most three events that are never due
    /// by time, and the queue its batches go to.
    fn emitter(rt: &tokio::runtime::Runtime) -> (Emitter, mpsc::UnboundedReceiver<Batch>) {
        framed_emitter(rt, None)
    }

    fn framed_emitter(
        rt: &tokio::runtime::Runtime,
        framing: Option<ActionLines>,
    ) -> (Emitter, mpsc::UnboundedReceiver<Batch>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outlet = Outlet::memory(
            tx,
            Arc::new(Semaphore::new(64 << 20)),
            framing,
            rt.handle().clone(),
            Shutdown::new(),
            Metrics::default(),
        );
        let limits = Limits {
            max_events: 3,
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(3600),
            max_line_bytes: 1 << 10,
        };
        let template = Template::new("h", &[], false);
        let em = Emitter::new(template, Format::Raw, None, limits, outlet, Shutdown::new());
        (em, rx)
    }

    /// Feeds `n` lines of one file.
    fn feed(em: &mut Emitter, n: u64) {
        let fields = em.fields(&Map::new());
        let src = Source {
            key: FileKey { dev: 1, ino: 1 },
            generation: 0,
            path_json: "\"/l/a.log\"",
            seed: 0,
            fields: &fields,
        };
        for i in 0..n {
            assert!(em.line(&src, b"a line", i * 7, i * 7 + 7, false));
        }
    }

    /// Feeds `n` lines and says the reader is at the end of its files;
    /// returns the sizes of the batches handed over.
    fn lines_then_caught_up(
        em: &mut Emitter,
        rx: &mut mpsc::UnboundedReceiver<Batch>,
        n: u64,
    ) -> Vec<usize> {
        feed(em, n);
        assert!(em.caught_up());
        std::iter::from_fn(|| rx.try_recv().ok().map(|b| b.len())).collect()
    }

    /// `--sink elasticsearch` flags.
    fn es_args() -> crate::config::Args {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: crate::config::Args,
        }
        <Cli as clap::Parser>::parse_from([
            "t",
            "--path=/l/*.log",
            "--sink=elasticsearch",
            "--es-url=http://es:9200",
            "--es-index=app-%Y.%m.%d",
        ])
        .args
    }

    #[test]
    fn a_framed_batch_is_the_bulk_request_and_still_yields_its_documents() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let args = es_args();
        let (mut em, mut rx) = framed_emitter(&rt, Some(ActionLines::new(&args).unwrap()));
        feed(&mut em, 3);
        let mut batch = rx.try_recv().unwrap();
        assert_eq!(batch.len(), 3);
        // What the sink builds from the documents for a retry: the same bytes.
        let mut lines = ActionLines::new(&args).unwrap();
        let mut rebuilt = Vec::new();
        for i in 0..batch.len() {
            lines.write(&mut rebuilt, batch.times[i], batch.ids[i]);
            rebuilt.extend_from_slice(batch.doc(i));
            rebuilt.push(b'\n');
        }
        assert_eq!(rebuilt, batch.body);
        let docs: Vec<Vec<u8>> = (0..batch.len()).map(|i| batch.doc(i).to_vec()).collect();
        assert!(docs.iter().all(|d| d.starts_with(b"{\"@timestamp\"")));
        // Shared with the request, it is not copied, and its documents stay.
        let sent = batch.share().unwrap();
        assert_eq!(sent, rebuilt);
        assert!(batch.body.is_empty());
        assert_eq!(
            (0..batch.len())
                .map(|i| batch.doc(i).to_vec())
                .collect::<Vec<_>>(),
            docs
        );
        // Without action lines there is nothing to share.
        assert!(Batch::default().share().is_none());
    }

    #[test]
    fn the_rest_of_a_backlog_goes_at_once_a_trickle_waits_for_the_timeout() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let (mut em, mut rx) = emitter(&rt);
        // Fewer lines than a batch: they wait for --batch-timeout.
        assert_eq!(lines_then_caught_up(&mut em, &mut rx, 2), [] as [usize; 0]);
        // A backlog: full batches, then its last lines at once.
        assert_eq!(lines_then_caught_up(&mut em, &mut rx, 6), [3, 3, 2]);
        // After it, a trickle waits again.
        assert_eq!(lines_then_caught_up(&mut em, &mut rx, 1), [] as [usize; 0]);
        assert!(em.tick());
        assert_eq!(em.batch.len(), 1);
    }

    #[test]
    fn runtime_times_parse_with_a_cached_second() {
        let mut c = TimeCache::default();
        assert_eq!(c.nanos("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(
            c.nanos("1970-01-01T00:00:01.000000002Z"),
            Some(1_000_000_002)
        );
        assert_eq!(c.nanos("1970-01-01T00:00:02Z"), Some(2_000_000_000));
        assert_eq!(c.nanos("1970-01-01T01:00:02.25+01:00"), Some(2_250_000_000));
        assert_eq!(c.nanos("soon"), None);
    }
}
