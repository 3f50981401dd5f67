//! Container runtime log formats (`--format cri|docker`) and the Kubernetes
//! metadata a kubelet log path carries. Pure: bytes in, records out.
//!
//! - CRI (containerd, CRI-O): `2024-01-01T00:00:00.000000000Z stdout F text`.
//!   The tag is `F` for a full line or `P` for a part of a line the runtime
//!   split (at 16 KiB); parts are joined by the caller.
//! - Docker json-file: `{"log":"text\n","stream":"stdout","time":"…"}`. A
//!   `log` without its trailing newline is a part of a longer line.

use std::borrow::Cow;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Each line is the message.
    Raw,
    /// Kubernetes CRI logging format (containerd, CRI-O).
    Cri,
    /// Docker's json-file driver.
    Docker,
}

/// Which output of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn parse(s: &[u8]) -> Option<Stream> {
        match s {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of a container log, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// RFC 3339 time the runtime wrote the line, as written.
    pub time: &'a str,
    pub stream: Stream,
    /// A part of a longer line: more follows in the next record of the stream.
    pub partial: bool,
    pub message: Cow<'a, [u8]>,
}

/// Decodes one line; `None` if it is not in the format.
pub fn decode(format: Format, line: &[u8]) -> Option<Record<'_>> {
    match format {
        Format::Raw => None,
        Format::Cri => cri(line),
        Format::Docker => docker(line),
    }
}

fn cri(line: &[u8]) -> Option<Record<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?;
    let stream = Stream::parse(fields.next()?)?;
    // The tag may grow more flags after a `:`; the first is P or F.
    let tag = fields.next()?;
    let partial = match tag.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    if !time.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    Some(Record {
        time,
        stream,
        partial,
        message: Cow::Borrowed(fields.next().unwrap_or_default()),
    })
}

#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

fn docker(line: &[u8]) -> Option<Record<'_>> {
    let d: DockerLine = serde_json::from_slice(line).ok()?;
    let stream = Stream::parse(d.stream.as_bytes())?;
    // The time is plain ASCII and never escaped; a borrowed one is the norm.
    let Cow::Borrowed(time) = d.time else {
        return None;
    };
    let (message, partial) = match d.log {
        Cow::Borrowed(s) => match s.strip_suffix('\n') {
            Some(s) => (Cow::Borrowed(s.as_bytes()), false),
            None => (Cow::Borrowed(s.as_bytes()), true),
        },
        Cow::Owned(mut s) => {
            let full = s.ends_with('\n');
            if full {
                s.pop();
            }
            (Cow::Owned(s.into_bytes()), !full)
        }
    };
    Some(Record {
        time,
        stream,
        partial,
        message,
    })
}

/// Unix nanoseconds of an RFC 3339 time, if it is one.
pub fn unix_nanos(time: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(time)
        .ok()?
        .timestamp_nanos_opt()
}

/// Where a kubelet log file says it comes from:
/// `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`.
#[derive(Debug, PartialEq, Eq)]
pub struct PodPath<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub uid: &'a str,
    pub container: &'a str,
}

/// The pod and container of a kubelet log path (rotated names such as
/// `0.log.20240101-000000` included). Namespace and pod names cannot hold
/// `_`, so the directory splits unambiguously.
pub fn pod_path(path: &str) -> Option<PodPath<'_>> {
    let mut parts = path.rsplit('/');
    let _file = parts.next()?;
    let container = parts.next()?;
    let pod_dir = parts.next()?;
    let mut ids = pod_dir.split('_');
    let (namespace, pod, uid) = (ids.next()?, ids.next()?, ids.next()?);
    if ids.next().is_some()
        || [namespace, pod, uid, container]
            .iter()
            .any(|s| s.is_empty())
    {
        return None;
    }
    Some(PodPath {
        namespace,
        pod,
        uid,
        container,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(time: &str, stream: Stream, partial: bool, msg: &str) -> Record<'static> {
        Record {
            time: Box::leak(time.to_string().into_boxed_str()),
            stream,
            partial,
            message: Cow::Owned(msg.as_bytes().to_vec()),
        }
    }

    #[test]
    fn cri_lines_full_partial_and_empty() {
        let t = "2024-01-01T00:00:00.123456789Z";
        assert_eq!(
            cri(format!("{t} stdout F hello world").as_bytes()),
            Some(rec(t, Stream::Stdout, false, "hello world"))
        );
        assert_eq!(
            cri(format!("{t} stderr P part ").as_bytes()),
            Some(rec(t, Stream::Stderr, true, "part "))
        );
        assert_eq!(
            cri(format!("{t} stdout F").as_bytes()),
            Some(rec(t, Stream::Stdout, false, ""))
        );
        assert_eq!(
            cri(b"2016-10-06T00:17:09.669794202+02:00 stdout F:x a").map(|r| r.partial),
            Some(false)
        );
        for bad in [
            &b"plain text line"[..],
            b"2024-01-01T00:00:00Z stdin F x",
            b"2024-01-01T00:00:00Z stdout X x",
            b"",
        ] {
            assert_eq!(cri(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn docker_lines_full_partial_and_escaped() {
        let t = "2024-01-01T00:00:00.5Z";
        assert_eq!(
            docker(br#"{"log":"hi\n","stream":"stdout","time":"2024-01-01T00:00:00.5Z"}"#),
            Some(rec(t, Stream::Stdout, false, "hi"))
        );
        assert_eq!(
            docker(br#"{"log":"a \"q\"","stream":"stderr","time":"2024-01-01T00:00:00.5Z"}"#),
            Some(rec(t, Stream::Stderr, true, "a \"q\""))
        );
        assert_eq!(docker(b"not json"), None);
        assert_eq!(docker(br#"{"log":"x\n","stream":"x","time":"t"}"#), None);
    }

    #[test]
    fn times_in_nanoseconds() {
        assert_eq!(
            unix_nanos("1970-01-01T00:00:01.000000002Z"),
            Some(1_000_000_002)
        );
        assert_eq!(unix_nanos("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(unix_nanos("yesterday"), None);
    }

    #[test]
    fn kubelet_paths_name_the_pod_and_container() {
        assert_eq!(
            pod_path("/var/log/pods/default_web-7d9f_0f3a-11/nginx/0.log"),
            Some(PodPath {
                namespace: "default",
                pod: "web-7d9f",
                uid: "0f3a-11",
                container: "nginx"
            })
        );
        assert_eq!(
            pod_path("/var/log/pods/ns_p_u/c/0.log.20240101-000000").map(|p| p.container),
            Some("c")
        );
        assert_eq!(pod_path("/var/log/app/web.log"), None);
        assert_eq!(pod_path("a_b/c.log"), None);
    }
}
