//! Kubernetes metadata for events, as Filebeat's `add_kubernetes_metadata`
//! and Fluent Bit's kubernetes filter add it, without asking the API server:
//!
//! - `--k8s-metadata`: `POD_NAME`, `POD_NAMESPACE`, `POD_UID`, `NODE_NAME`
//!   and `CONTAINER_NAME` from the environment (the downward API's env form),
//!   and with `--k8s-podinfo-dir` the `labels` and `annotations` files of a
//!   downwardAPI volume, re-read when the kubelet updates them.
//! - `--format cri|docker`: the pod and container of each file from its
//!   kubelet path (`/var/log/pods/<ns>_<pod>_<uid>/<container>/`).
//!
//! Fields are ECS `kubernetes.*`, with label and annotation keys dedotted
//! (`app.kubernetes.io/name` → `app_kubernetes_io/name`, Filebeat's default,
//! so `app` and `app.kubernetes.io/name` cannot collide in a mapping), and
//! `service.name` from the `app.kubernetes.io/name` label.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use sidecar_runtime::watch::Watch;

use crate::container::{pod_path, Format};
use crate::metrics::Metrics;

/// The label whose value names the service (Kubernetes' recommended labels).
const SERVICE_LABEL: &str = "app.kubernetes.io/name";

/// The metadata every file's events get; cheap to ask whether it changed.
pub struct Metadata {
    format: Format,
    /// `--k8s-metadata`: this pod's fields (env and podinfo files).
    pod: Option<Mutex<Map<String, Value>>>,
    /// Bumped when the pod's fields change: files then rebuild theirs.
    generation: AtomicU64,
}

impl Metadata {
    pub fn new(format: Format, k8s: bool) -> Metadata {
        Metadata {
            format,
            pod: k8s.then(|| Mutex::new(Map::new())),
            generation: AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The metadata of the file at `path`. A kubelet pod log path names
    /// its own pod and container, which replace this pod's (a DaemonSet
    /// reads other pods' logs); the node stays.
    pub fn for_path(&self, path: &str) -> Map<String, Value> {
        let mut m = match &self.pod {
            Some(p) => p.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            None => Map::new(),
        };
        if self.format == Format::Raw {
            return m;
        }
        let Some(p) = pod_path(path) else { return m };
        let node = m.get("kubernetes").and_then(|k| k.get("node")).cloned();
        m.remove("service");
        let mut k = json!({
            "namespace": p.namespace,
            "pod": {"name": p.pod, "uid": p.uid},
            "container": {"name": p.container},
        });
        if let Some(node) = node {
            k["node"] = node;
        }
        m.insert("kubernetes".into(), k);
        m
    }

    /// Publishes this pod's fields; whether they changed.
    fn set_pod(&self, fields: Map<String, Value>) -> bool {
        let Some(p) = &self.pod else { return false };
        let mut cur = p.lock().unwrap_or_else(|e| e.into_inner());
        if *cur == fields {
            return false;
        }
        *cur = fields;
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// This pod's identity from the environment, as the downward API's env
/// form sets it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodEnv {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub node: Option<String>,
    pub container: Option<String>,
}

impl PodEnv {
    pub fn from_env() -> PodEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        PodEnv {
            name: var("POD_NAME"),
            namespace: var("POD_NAMESPACE"),
            uid: var("POD_UID"),
            node: var("NODE_NAME"),
            container: var("CONTAINER_NAME"),
        }
    }
}

/// The ECS fields of a pod.
pub fn pod_fields(
    env: &PodEnv,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Map<String, Value> {
    let mut k = Map::new();
    let mut put = |path: &[&str], v: &Option<String>| {
        if let Some(v) = v {
            let mut cur = &mut k;
            for p in &path[..path.len() - 1] {
                cur = cur
                    .entry(*p)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("only objects are made here");
            }
            cur.insert(path[path.len() - 1].into(), Value::String(v.clone()));
        }
    };
    put(&["pod", "name"], &env.name);
    put(&["pod", "uid"], &env.uid);
    put(&["namespace"], &env.namespace);
    put(&["node", "name"], &env.node);
    put(&["container", "name"], &env.container);
    let dedotted = |m: &BTreeMap<String, String>| -> Map<String, Value> {
        m.iter()
            .map(|(k, v)| (k.replace('.', "_"), Value::String(v.clone())))
            .collect()
    };
    if !labels.is_empty() {
        k.insert("labels".into(), Value::Object(dedotted(labels)));
    }
    if !annotations.is_empty() {
        k.insert("annotations".into(), Value::Object(dedotted(annotations)));
    }
    let mut root = Map::new();
    if !k.is_empty() {
        root.insert("kubernetes".into(), Value::Object(k));
    }
    if let Some(service) = labels.get(SERVICE_LABEL) {
        root.insert("service".into(), json!({ "name": service }));
    }
    root
}

/// A downwardAPI `labels` or `annotations` file: one `key="value"` a line,
/// the value quoted as Go's `strconv.Quote` does (`\"`, `\\`, `\n`, `\t`,
/// `\xNN`, `\uNNNN`, …).
pub fn parse_podinfo(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |what: &str| format!("line {}: {what}", n + 1);
        let (key, quoted) = line
            .split_once('=')
            .ok_or_else(|| err("expected key=\"value\""))?;
        if key.is_empty() {
            return Err(err("empty key"));
        }
        let value = unquote(quoted).map_err(|e| err(&e))?;
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// The inverse of Go's `strconv.Quote`.
fn unquote(q: &str) -> Result<String, String> {
    let inner = q
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .filter(|_| q.len() >= 2)
        .ok_or("value is not a quoted string")?;
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            return Err("unescaped quote in the value".into());
        }
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next().ok_or("value ends in a backslash")? {
            'a' => out.push(0x07),
            'b' => out.push(0x08),
            'f' => out.push(0x0c),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(0x0b),
            '\\' => out.push(b'\\'),
            '"' => out.push(b'"'),
            '\'' => out.push(b'\''),
            // A raw byte (Go quotes invalid UTF-8 this way).
            'x' => out.push(hex(&mut chars, 2)? as u8),
            'u' => push_char(hex(&mut chars, 4)?, &mut out)?,
            'U' => push_char(hex(&mut chars, 8)?, &mut out)?,
            d @ '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let v = u32::from_str_radix(&format!("{d}{rest}"), 8)
                    .ok()
                    .filter(|v| rest.len() == 2 && *v <= 0xff)
                    .ok_or("bad octal escape")?;
                out.push(v as u8);
            }
            other => return Err(format!("unknown escape \\{other}")),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The next `n` characters as a hexadecimal number.
fn hex(chars: &mut std::str::Chars, n: usize) -> Result<u32, String> {
    let digits: String = chars.by_ref().take(n).collect();
    if digits.len() != n {
        return Err("short escape".into());
    }
    u32::from_str_radix(&digits, 16).map_err(|_| format!("bad escape \\{digits}"))
}

fn push_char(v: u32, out: &mut Vec<u8>) -> Result<(), String> {
    let c = char::from_u32(v).ok_or("escape is not a character")?;
    let mut buf = [0; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    Ok(())
}

/// Keeps this pod's fields current: reads the environment and the podinfo
/// files now, then again whenever `runtime::watch` sees the files change.
/// A malformed file is logged and counted, and its last good values stay.
pub struct PodInfo {
    env: PodEnv,
    dir: Option<PathBuf>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    metadata: Arc<Metadata>,
    metrics: Metrics,
}

impl PodInfo {
    pub fn new(dir: Option<&Path>, metadata: Arc<Metadata>, metrics: Metrics) -> PodInfo {
        PodInfo {
            env: PodEnv::from_env(),
            dir: dir.map(Path::to_path_buf),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            metadata,
            metrics,
        }
    }

    /// The watch on the podinfo files, made before their first read.
    pub fn watch(&self) -> Option<Watch> {
        let dir = self.dir.as_ref()?;
        Some(Watch::files([dir.join("labels"), dir.join("annotations")]))
    }

    /// Reads the files and publishes the fields.
    pub fn load(&mut self) {
        if let Some(dir) = &self.dir {
            if let Some(l) = read(dir, "labels", &self.metrics) {
                self.labels = l;
            }
            if let Some(a) = read(dir, "annotations", &self.metrics) {
                self.annotations = a;
            }
        }
        let fields = pod_fields(&self.env, &self.labels, &self.annotations);
        if self.metadata.set_pod(fields) {
            tracing::info!(
                labels = self.labels.len(),
                annotations = self.annotations.len(),
                "pod metadata updated"
            );
        }
    }

    /// Re-reads on every change until the task is dropped.
    pub async fn follow(mut self, mut watch: Watch) {
        loop {
            watch.changed().await;
            self.load();
            self.metrics.podinfo_reloads.inc();
        }
    }
}

/// One podinfo file; `None` (logged, counted) when it cannot be used. A
/// missing file is empty: the pod has no labels or annotations, or the
/// volume does not project that field.
fn read(dir: &Path, name: &str, metrics: &Metrics) -> Option<BTreeMap<String, String>> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(BTreeMap::new()),
        Err(e) => {
            metrics.podinfo_errors.inc();
            tracing::error!(path = %path.display(), error = %e, "cannot read podinfo file; keeping the last good values");
            return None;
        }
    };
    match parse_podinfo(&text) {
        Ok(m) => Some(m),
        Err(e) => {
            metrics.podinfo_errors.inc();
            tracing::error!(path = %path.display(), error = %e, "malformed podinfo file; keeping the last good values");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_podinfo_format_with_its_escapes() {
        let text = concat!(
            "app.kubernetes.io/name=\"web\"\n",
            "note=\"say \\\"hi\\\"\\n\\tand \\\\ bye\"\n",
            "uni=\"caf\\u00e9 \\U0001F600 \\x41 \\101\"\n",
            "empty=\"\"\n",
        );
        let m = parse_podinfo(text).unwrap();
        assert_eq!(m["app.kubernetes.io/name"], "web");
        assert_eq!(m["note"], "say \"hi\"\n\tand \\ bye");
        assert_eq!(m["uni"], "café 😀 A A");
        assert_eq!(m["empty"], "");
    }

    #[test]
    fn malformed_podinfo_is_refused_with_its_line() {
        for (bad, why) in [
            ("a=\"1\"\nb=2\n", "line 2"),
            ("novalue\n", "line 1"),
            ("=\"x\"\n", "empty key"),
            ("a=\"x\\q\"\n", "unknown escape"),
            ("a=\"x\n", "line 1"),
            ("a=\"x\"y\"\n", "unescaped quote"),
        ] {
            let e = parse_podinfo(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn pod_fields_are_ecs_with_dedotted_labels_and_a_service_name() {
        let env = PodEnv {
            name: Some("web-1".into()),
            namespace: Some("prod".into()),
            uid: None,
            node: Some("node-a".into()),
            container: Some("app".into()),
        };
        let labels = BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "web".to_string()),
            ("tier".to_string(), "front".to_string()),
        ]);
        let f = Value::Object(pod_fields(&env, &labels, &BTreeMap::new()));
        assert_eq!(
            f,
            json!({
                "kubernetes": {
                    "pod": {"name": "web-1"},
                    "namespace": "prod",
                    "node": {"name": "node-a"},
                    "container": {"name": "app"},
                    "labels": {"app_kubernetes_io/name": "web", "tier": "front"},
                },
                "service": {"name": "web"},
            })
        );
    }

    #[test]
    fn a_pod_log_path_names_its_own_pod_and_keeps_the_node() {
        let m = Metadata::new(Format::Cri, true);
        let env = PodEnv {
            name: Some("shipper-x".into()),
            node: Some("node-a".into()),
            ..PodEnv::default()
        };
        m.set_pod(pod_fields(&env, &BTreeMap::new(), &BTreeMap::new()));
        assert_eq!(m.generation(), 1);
        let f = Value::Object(m.for_path("/var/log/pods/ns_web-1_u1/nginx/0.log"));
        assert_eq!(
            f["kubernetes"],
            json!({"namespace": "ns", "pod": {"name": "web-1", "uid": "u1"},
                   "container": {"name": "nginx"}, "node": {"name": "node-a"}})
        );
        let other = Value::Object(m.for_path("/var/log/app.log"));
        assert_eq!(other["kubernetes"]["pod"]["name"], "shipper-x");
        // The same fields again are no change.
        m.set_pod(pod_fields(&env, &BTreeMap::new(), &BTreeMap::new()));
        assert_eq!(m.generation(), 1);
    }
}
