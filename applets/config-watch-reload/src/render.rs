//! `--render SRC:DST`: environment expansion into a file the app reads.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use sidecar_runtime::expand;

/// Which references a template may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `$(VAR)`, `${VAR}`, `${VAR:-default}` and `$$` (a literal `$`); an
    /// unset variable without a default is an error (the runtime's strict
    /// mode; bare `$VAR` is kept: Prometheus rules use `$labels`).
    Full,
    /// prometheus-config-reloader's `--config-envsubst-file`: `$(VAR)` only,
    /// so Prometheus' own `${1}` and `$1` pass through; an unset variable is
    /// kept literally and counted (the runtime's lenient mode).
    Kubernetes,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub syntax: Syntax,
}

/// What one render did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// DST was rewritten (it did not already hold this content).
    pub written: bool,
    /// Unset variables left literally (Kubernetes syntax only).
    pub unset: Vec<String>,
}

impl Template {
    /// Reads SRC (gunzipping it when it starts with the gzip magic), expands
    /// it, and replaces DST atomically when its content differs.
    pub fn render(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Rendered> {
        let (out, unset) = self.expanded(lookup)?;
        if std::fs::read(&self.dst).ok().as_deref() == Some(&out[..]) {
            return Ok(Rendered {
                written: false,
                unset,
            });
        }
        write_atomically(&self.dst, &out)?;
        Ok(Rendered {
            written: true,
            unset,
        })
    }

    /// What DST would hold, and the unset variables kept literally.
    pub fn expanded(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Vec<u8>, Vec<String>)> {
        let raw = std::fs::read(&self.src).map_err(|e| match e.kind() {
            // Go's wording, which scripts around prometheus-config-reloader match.
            std::io::ErrorKind::NotFound => {
                anyhow::anyhow!(
                    "cannot read {}: no such file or directory",
                    self.src.display()
                )
            }
            _ => anyhow::Error::new(e).context(format!("cannot read {}", self.src.display())),
        })?;
        let input = gunzip_if_needed(raw)
            .with_context(|| format!("cannot gunzip {}", self.src.display()))?;
        // An unset variable is a configuration error (exit 2 at start).
        expand(&input, self.syntax, lookup)
            .map_err(|e| sidecar_runtime::usage!("{} {}: {e}", self.flag(), self.src.display()))
    }

    /// The flag that named this template.
    pub fn flag(&self) -> &'static str {
        match self.syntax {
            Syntax::Full => "--render",
            Syntax::Kubernetes => "--config-envsubst-file",
        }
    }
}

/// gzip is recognised by its magic bytes (as thanos does), not the file name.
fn gunzip_if_needed(raw: Vec<u8>) -> std::io::Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b, 0x08]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out)?;
        return Ok(out);
    }
    Ok(raw)
}

/// The app never reads a half-written config.
fn write_atomically(dst: &Path, content: &[u8]) -> Result<()> {
    sidecar_runtime::fsutil::write_atomic(dst, content, 0o644)
        .with_context(|| format!("cannot write {}", dst.display()))
}

impl Syntax {
    /// The runtime's forms and unset-variable mode for this syntax.
    fn rules(self) -> (expand::Syntax, expand::Mode) {
        match self {
            Syntax::Full => (expand::Syntax::BRACED, expand::Mode::Strict),
            Syntax::Kubernetes => (expand::Syntax::KUBERNETES, expand::Mode::Lenient),
        }
    }
}

/// Expands references in `input`. Returns the output and, for the
/// Kubernetes syntax, the unset names kept literally.
pub fn expand(
    input: &[u8],
    syntax: Syntax,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<u8>, Vec<String>)> {
    let (forms, mode) = syntax.rules();
    let e = expand::expand_bytes(input, forms, mode, lookup)?;
    Ok((e.text, e.unset))
}

/// prometheus-config-reloader's `--statefulset-ordinal-from-envvar`: the
/// trailing digits of a pod name (`prometheus-10` → `10`), if the name ends
/// in `-<digits>` or digits.
pub fn ordinal(pod_name: &str) -> Option<String> {
    let digits: String = pod_name
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!digits.is_empty()).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn full(s: &str) -> Result<String> {
        expand(s.as_bytes(), Syntax::Full, &env).map(|(o, _)| String::from_utf8(o).unwrap())
    }

    #[test]
    fn full_syntax() {
        assert_eq!(
            full("a=$(HOST) b=${HOST} c=${NOPE:-dflt} d=${EMPTY:-e} $$ $1 ${1} $").unwrap(),
            "a=db b=db c=dflt d=e $ $1 ${1} $"
        );
        assert_eq!(full("$$(HOST)").unwrap(), "$(HOST)");
        let err = full("x=${NOPE} y=$(ALSO)").unwrap_err().to_string();
        assert!(err.contains("NOPE, ALSO"), "{err}");
        assert!(
            err.ends_with(r#"found reference to unset environment variable "NOPE""#),
            "{err}"
        );
        assert!(full("${HOST:-oops").is_err());
    }

    #[test]
    fn kubernetes_syntax_keeps_unset_and_prometheus_references() {
        let (o, unset) =
            expand(b"$(HOST) $(NOPE) ${HOST} $$ $1", Syntax::Kubernetes, &env).unwrap();
        assert_eq!(String::from_utf8(o).unwrap(), "db $(NOPE) ${HOST} $$ $1");
        assert_eq!(unset, ["NOPE"]);
    }

    #[test]
    fn renders_gzip_atomically_and_only_on_change() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("in.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"host: $(HOST)\n").unwrap();
        std::fs::write(&src, gz.finish().unwrap()).unwrap();
        let t = Template {
            src,
            dst: d.path().join("out.yaml"),
            syntax: Syntax::Full,
        };
        assert!(t.render(&env).unwrap().written);
        assert_eq!(std::fs::read_to_string(&t.dst).unwrap(), "host: db\n");
        let mode = std::fs::metadata(&t.dst).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert!(!t.render(&env).unwrap().written);
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal("prometheus-0").as_deref(), Some("0"));
        assert_eq!(ordinal("prometheus-10").as_deref(), Some("10"));
        assert_eq!(ordinal("prometheus1").as_deref(), Some("1"));
        assert_eq!(ordinal("prometheus-10a"), None);
        assert_eq!(ordinal("pro-10-metheus"), None);
    }
}
