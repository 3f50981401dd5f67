//! ECS-shaped events, serialized straight into the batch buffer.
//!
//! `{"@timestamp":…,"message":…,"log":{"file":{"path":…},"offset":N,"flags":[…]},"host":{"name":…},…fields}`.
//! Everything constant (host, `--field`s) is serialized once; per line only
//! the timestamp, the escaped message, the path and the offset are written.

use serde_json::{Map, Value};

use crate::container::Stream;

/// One line (or multiline group) ready to become an event.
pub struct Line<'a> {
    pub text: &'a [u8],
    pub offset: u64,
    pub truncated: bool,
    pub multiline: bool,
    /// `log.iostream` of a container log line.
    pub stream: Option<Stream>,
    /// Why the line could not be decoded in `--format` (it is shipped as is).
    pub error: Option<&'static str>,
}

/// What every event of one file carries besides its line: host, `--field`s
/// and Kubernetes metadata, serialized once per file (and again when the
/// metadata changes), not once per line.
#[derive(Default)]
pub struct Fields {
    /// `log.*` fields other than ours, serialized as `,"k":v…`.
    log_extra: String,
    /// The other top-level fields as `,"k":v…`.
    rest: String,
    /// Same fields as a map, for `--parse json` merging.
    map: Map<String, Value>,
}

pub struct Template {
    /// host and `--field`s.
    base: Map<String, Value>,
    parse_json: bool,
}

impl Template {
    pub fn new(host_name: &str, fields: &[(String, String)], parse_json: bool) -> Template {
        let mut base = Map::new();
        insert_dotted(&mut base, "host.name", Value::String(host_name.to_string()));
        for (k, v) in fields {
            insert_dotted(&mut base, k, Value::String(v.clone()));
        }
        Template { base, parse_json }
    }

    /// The fields of a file whose own metadata (Kubernetes) is `meta`; the
    /// host and `--field`s win over it.
    pub fn fields(&self, meta: &Map<String, Value>) -> Fields {
        let mut root = meta.clone();
        merge(&mut root, self.base.clone());
        // Ours win over user fields of the same name.
        for reserved in ["@timestamp", "message"] {
            root.remove(reserved);
        }
        let map = root.clone();
        let log_extra = match root.remove("log") {
            Some(Value::Object(mut m)) => {
                for ours in ["file", "offset", "flags", "iostream"] {
                    m.remove(ours);
                }
                inner(&m)
            }
            _ => String::new(),
        };
        Fields {
            log_extra,
            rest: inner(&root),
            map,
        }
    }

    /// Appends one event as a JSON object (no newline) to `out`.
    /// `path_json` is the file path already JSON-encoded (with quotes).
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        timestamp: &str,
        path_json: &str,
        line: &Line,
        fields: &Fields,
    ) {
        if self.parse_json {
            if let Some(obj) = parse_object(line.text) {
                self.write_merged(out, timestamp, path_json, line, obj, fields);
                return;
            }
        }
        out.extend_from_slice(b"{\"@timestamp\":\"");
        out.extend_from_slice(timestamp.as_bytes());
        out.extend_from_slice(b"\",\"message\":");
        write_str(out, line.text);
        self.write_log(out, path_json, line, fields);
        if let Some(why) = line.error {
            out.extend_from_slice(br#","error":{"type":"format","message":"#);
            write_str(out, why.as_bytes());
            out.push(b'}');
        } else if self.parse_json {
            out.extend_from_slice(
                br#","error":{"type":"json","message":"line is not a JSON object"}"#,
            );
        }
        out.extend_from_slice(fields.rest.as_bytes());
        out.push(b'}');
    }

    fn write_log(&self, out: &mut Vec<u8>, path_json: &str, line: &Line, fields: &Fields) {
        out.extend_from_slice(b",\"log\":{\"file\":{\"path\":");
        out.extend_from_slice(path_json.as_bytes());
        out.extend_from_slice(b"},\"offset\":");
        out.extend_from_slice(itoa::Buffer::new().format(line.offset).as_bytes());
        match (line.truncated, line.multiline) {
            (false, false) => {}
            (true, false) => out.extend_from_slice(br#","flags":["truncated"]"#),
            (false, true) => out.extend_from_slice(br#","flags":["multiline"]"#),
            (true, true) => out.extend_from_slice(br#","flags":["multiline","truncated"]"#),
        }
        if let Some(s) = line.stream {
            out.extend_from_slice(b",\"iostream\":\"");
            out.extend_from_slice(s.as_str().as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(fields.log_extra.as_bytes());
        out.push(b'}');
    }

    /// `--parse json`: the line's fields over ours, except `log.file.path`
    /// and `log.offset`, which always say where the line came from.
    fn write_merged(
        &self,
        out: &mut Vec<u8>,
        timestamp: &str,
        path_json: &str,
        line: &Line,
        obj: Map<String, Value>,
        fields: &Fields,
    ) {
        let mut ev = fields.map.clone();
        ev.insert("@timestamp".into(), Value::String(timestamp.to_string()));
        merge(&mut ev, obj);
        let log = ev
            .entry("log")
            .and_modify(|v| {
                if !v.is_object() {
                    *v = Value::Object(Map::new())
                }
            })
            .or_insert_with(|| Value::Object(Map::new()));
        let log = log.as_object_mut().expect("made an object above");
        let path: Value = serde_json::from_str(path_json).unwrap_or(Value::Null);
        log.insert("file".into(), serde_json::json!({ "path": path }));
        log.insert("offset".into(), Value::from(line.offset));
        let mut flags = Vec::new();
        if line.multiline {
            flags.push("multiline");
        }
        if line.truncated {
            flags.push("truncated");
        }
        if !flags.is_empty() {
            log.insert("flags".into(), Value::from(flags));
        }
        if let Some(s) = line.stream {
            log.insert("iostream".into(), Value::from(s.as_str()));
        }
        // Writing a Map into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &ev);
    }
}

fn parse_object(text: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// Deep merge: objects merge key by key, anything else replaces.
fn merge(dst: &mut Map<String, Value>, src: Map<String, Value>) {
    for (k, v) in src {
        match (dst.get_mut(&k), v) {
            (Some(Value::Object(d)), Value::Object(s)) => merge(d, s),
            (_, v) => {
                dst.insert(k, v);
            }
        }
    }
}

/// `a.b.c=v` becomes `{"a":{"b":{"c":v}}}`, merged into `root`.
pub fn insert_dotted(root: &mut Map<String, Value>, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut cur = root;
    for p in parts {
        let slot = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        cur = slot.as_object_mut().expect("made an object above");
    }
    cur.insert(last.to_string(), value);
}

/// A map's members as `,"k":v,"k2":v2` (empty for an empty map).
fn inner(m: &Map<String, Value>) -> String {
    let mut s = String::new();
    for (k, v) in m {
        s.push(',');
        s.push_str(&Value::String(k.clone()).to_string());
        s.push(':');
        s.push_str(&v.to_string());
    }
    s
}

/// Writes `bytes` as a JSON string. Invalid UTF-8 becomes U+FFFD.
pub use crate::json::write_str;

/// A path as a JSON string literal, computed once per file.
pub fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(t: &Template, text: &[u8]) -> Value {
        let mut out = Vec::new();
        let line = Line {
            text,
            offset: 7,
            truncated: false,
            multiline: false,
            stream: None,
            error: None,
        };
        t.write(
            &mut out,
            "2026-01-01T00:00:00.000Z",
            &json_string("/l/a.log"),
            &line,
            &t.fields(&Map::new()),
        );
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn text_event_is_ecs_shaped() {
        let t = Template::new(
            "node1",
            &[
                ("k8s.pod".into(), "web".into()),
                ("log.level".into(), "x".into()),
            ],
            false,
        );
        let v = event(&t, b"he said \"hi\"\t\xff");
        assert_eq!(v["message"], "he said \"hi\"\t\u{fffd}");
        assert_eq!(v["log"]["file"]["path"], "/l/a.log");
        assert_eq!(v["log"]["offset"], 7);
        assert_eq!(v["log"]["level"], "x");
        assert_eq!(v["host"]["name"], "node1");
        assert_eq!(v["k8s"]["pod"], "web");
        assert_eq!(v["@timestamp"], "2026-01-01T00:00:00.000Z");
    }

    #[test]
    fn json_lines_merge_and_bad_json_is_flagged() {
        let t = Template::new("node1", &[("env".into(), "prod".into())], true);
        let v = event(
            &t,
            br#"{"level":"warn","message":"m","log":{"offset":99},"host":{"ip":"1"}}"#,
        );
        assert_eq!(v["level"], "warn");
        assert_eq!(v["message"], "m");
        assert_eq!(v["log"]["offset"], 7);
        assert_eq!(v["host"]["name"], "node1");
        assert_eq!(v["host"]["ip"], "1");
        assert_eq!(v["env"], "prod");
        let v = event(&t, b"not json");
        assert_eq!(v["message"], "not json");
        assert_eq!(v["error"]["type"], "json");
    }
}
