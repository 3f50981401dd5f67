//! The one environment expansion: which reference forms a text may hold
//! ([`Syntax`]) and what an unset variable does ([`Mode`]).
//!
//! | form | meaning |
//! |---|---|
//! | `$(VAR)` | Kubernetes style (`command`, `args`, prometheus-config-reloader) |
//! | `${VAR}` | shell style |
//! | `${VAR:-default}` | `default` when VAR is unset or empty |
//! | `$VAR` | shell style, bare (off where the text has `$labels`-like words of its own) |
//! | `$$` | a literal `$` |
//!
//! Anything else (`$1`, `${1}`, `${a.b}`, a lone `$`) is kept as written, so
//! texts with references of their own (Prometheus' `$1`) pass through.
//!
//! - [`Mode::Strict`]: an unset variable (without a default) is an error that
//!   names every such variable; nothing is half-expanded.
//! - [`Mode::Lenient`]: an unset variable is kept as written (Kubernetes does
//!   that, so a typo shows) and reported in [`Expanded::unset`].

use std::fmt;

/// Which reference forms are expanded; the others are kept as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syntax {
    /// `$(VAR)`.
    pub paren: bool,
    /// `${VAR}` and `${VAR:-default}`.
    pub braces: bool,
    /// `$VAR`.
    pub bare: bool,
    /// `$$` → `$`.
    pub escape: bool,
}

impl Syntax {
    /// `$(VAR)` only, `$$` kept: what prometheus-config-reloader's
    /// `--config-envsubst-file` understands.
    pub const KUBERNETES: Syntax = Syntax {
        paren: true,
        braces: false,
        bare: false,
        escape: false,
    };
    /// `$(VAR)`, `${VAR}`, `${VAR:-default}` and `$$`; bare `$VAR` is kept,
    /// since config files use `$word` for their own purposes.
    pub const BRACED: Syntax = Syntax {
        paren: true,
        braces: true,
        bare: false,
        escape: true,
    };
    /// Every form, `$VAR` included.
    pub const ALL: Syntax = Syntax {
        paren: true,
        braces: true,
        bare: true,
        escape: true,
    };
}

/// What an unset variable without a default does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// It is an error naming it.
    Strict,
    /// It is kept as written and listed in [`Expanded::unset`].
    Lenient,
}

/// The result of an expansion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expanded<T> {
    pub text: T,
    /// Variables kept as written because they were unset ([`Mode::Lenient`]),
    /// each once, in order of first use.
    pub unset: Vec<String>,
}

/// Why a strict expansion failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpandError {
    /// Variables unset without a default, each once, in order of first use.
    Unset(Vec<String>),
    /// `${VAR:-` without its `}`.
    Unterminated(String),
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Ends in thanos' wording for the first variable, which
            // prometheus-operator users search for and scripts match on.
            ExpandError::Unset(names) if names.len() == 1 => write!(
                f,
                "no ${{VAR:-default}}: found reference to unset environment variable {:?}",
                names[0]
            ),
            ExpandError::Unset(names) => write!(
                f,
                "{} variables unset without ${{VAR:-default}} ({}): found reference to unset environment variable {:?}",
                names.len(),
                names.join(", "),
                names[0]
            ),
            ExpandError::Unterminated(name) => write!(f, "unterminated ${{{name}:-…}}"),
        }
    }
}

impl std::error::Error for ExpandError {}

/// Looks variables up in the process environment.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Expands `input` with variables from `lookup`.
pub fn expand(
    input: &str,
    syntax: Syntax,
    mode: Mode,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded<String>, ExpandError> {
    let e = expand_bytes(input.as_bytes(), syntax, mode, lookup)?;
    Ok(Expanded {
        // Only whole UTF-8 strings are inserted and split points are ASCII.
        text: String::from_utf8(e.text).expect("expansion of UTF-8 is UTF-8"),
        unset: e.unset,
    })
}

/// [`expand`] for texts that may not be UTF-8 (templates).
pub fn expand_bytes(
    input: &[u8],
    syntax: Syntax,
    mode: Mode,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded<Vec<u8>>, ExpandError> {
    let mut out = Vec::with_capacity(input.len());
    let mut unset: Vec<String> = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'$' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        match reference(&input[i..], syntax) {
            Some(Ref::Dollar(len)) => {
                out.push(b'$');
                i += len;
            }
            Some(Ref::Var { name, default, len }) => {
                let value = match default {
                    Some(_) => lookup(name).filter(|v| !v.is_empty()),
                    None => lookup(name),
                };
                match (value, default) {
                    (Some(v), _) => out.extend_from_slice(v.as_bytes()),
                    (None, Some(d)) => out.extend_from_slice(d),
                    (None, None) => {
                        if !unset.iter().any(|u| u == name) {
                            unset.push(name.to_string());
                        }
                        out.extend_from_slice(&input[i..i + len]);
                    }
                }
                i += len;
            }
            Some(Ref::Unterminated(name)) if mode == Mode::Strict => {
                return Err(ExpandError::Unterminated(name.to_string()));
            }
            Some(Ref::Unterminated(_)) | None => {
                out.push(b'$');
                i += 1;
            }
        }
    }
    if mode == Mode::Strict && !unset.is_empty() {
        return Err(ExpandError::Unset(unset));
    }
    Ok(Expanded { text: out, unset })
}

/// A reference at the start of `s` (which starts with `$`).
enum Ref<'a> {
    /// `$$`, this long.
    Dollar(usize),
    Var {
        name: &'a str,
        default: Option<&'a [u8]>,
        len: usize,
    },
    Unterminated(&'a str),
}

fn reference(s: &[u8], syntax: Syntax) -> Option<Ref<'_>> {
    let name_at = |from: usize, first_digit_ok: bool| {
        let rest = s.get(from..)?;
        let len = rest.iter().take_while(|c| is_name(**c)).count();
        let ok = len > 0 && (first_digit_ok || !rest[0].is_ascii_digit());
        // Only ASCII name bytes were taken.
        ok.then(|| std::str::from_utf8(&rest[..len]).expect("ascii"))
    };
    match *s.get(1)? {
        b'$' if syntax.escape => Some(Ref::Dollar(2)),
        // thanos' `$(…)` allows `[a-zA-Z_0-9]+`.
        b'(' if syntax.paren => {
            let name = name_at(2, true)?;
            (s.get(2 + name.len()) == Some(&b')')).then_some(Ref::Var {
                name,
                default: None,
                len: name.len() + 3,
            })
        }
        b'{' if syntax.braces => {
            let name = name_at(2, false)?;
            let after = &s[2 + name.len()..];
            if after.first() == Some(&b'}') {
                return Some(Ref::Var {
                    name,
                    default: None,
                    len: name.len() + 3,
                });
            }
            if !after.starts_with(b":-") {
                return None; // `${a.b}`: not ours
            }
            match after.iter().position(|c| *c == b'}') {
                Some(close) => Some(Ref::Var {
                    name,
                    default: Some(&after[2..close]),
                    len: 2 + name.len() + close + 1,
                }),
                None => Some(Ref::Unterminated(name)),
            }
        }
        _ if syntax.bare => {
            let name = name_at(1, false)?;
            Some(Ref::Var {
                name,
                default: None,
                len: name.len() + 1,
            })
        }
        _ => None,
    }
}

fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("5432".into()),
            _ => None,
        }
    }

    fn run(s: &str, syntax: Syntax, mode: Mode) -> Result<Expanded<String>, ExpandError> {
        expand(s, syntax, mode, &vars)
    }

    #[test]
    fn every_form_when_set() {
        let e = run(
            "$(HOST) ${HOST} $HOST:$PORT ${NOPE:-d} ${EMPTY:-e} ${HOST:-x} $$HOST",
            Syntax::ALL,
            Mode::Strict,
        )
        .unwrap();
        assert_eq!(e.text, "db db db:5432 d e db $HOST");
        assert!(e.unset.is_empty());
    }

    #[test]
    fn foreign_references_pass_through() {
        for syntax in [Syntax::KUBERNETES, Syntax::BRACED, Syntax::ALL] {
            let e = run("$1 ${1} ${a.b} $ end$ $( $(a-b) ${", syntax, Mode::Strict).unwrap();
            assert_eq!(e.text, "$1 ${1} ${a.b} $ end$ $( $(a-b) ${", "{syntax:?}");
        }
    }

    #[test]
    fn strict_names_every_unset_variable_once() {
        let err = run("${NOPE} $(ALSO) ${NOPE}", Syntax::BRACED, Mode::Strict).unwrap_err();
        assert_eq!(err, ExpandError::Unset(vec!["NOPE".into(), "ALSO".into()]));
        let msg = err.to_string();
        assert!(msg.contains("NOPE, ALSO"), "{msg}");
        assert!(
            msg.ends_with(r#"found reference to unset environment variable "NOPE""#),
            "{msg}"
        );
        assert_eq!(
            run("${HOST:-oops", Syntax::BRACED, Mode::Strict).unwrap_err(),
            ExpandError::Unterminated("HOST".into())
        );
    }

    #[test]
    fn lenient_keeps_unset_variables_as_written() {
        let e = run(
            "$(NOPE) ${NOPE} $NOPE ${NOPE:-d} ${HOST:-oops",
            Syntax::ALL,
            Mode::Lenient,
        )
        .unwrap();
        assert_eq!(e.text, "$(NOPE) ${NOPE} $NOPE d ${HOST:-oops");
        assert_eq!(e.unset, ["NOPE"]);
    }

    #[test]
    fn syntaxes_leave_the_forms_they_lack() {
        let text = "$(HOST) ${HOST} $HOST $$";
        let k = run(text, Syntax::KUBERNETES, Mode::Strict).unwrap();
        assert_eq!(k.text, "db ${HOST} $HOST $$");
        let b = run(text, Syntax::BRACED, Mode::Strict).unwrap();
        assert_eq!(b.text, "db db $HOST $");
    }

    #[test]
    fn bytes_that_are_not_utf8_pass_through() {
        let e = expand_bytes(b"\xff$(HOST)\xfe", Syntax::KUBERNETES, Mode::Strict, &vars).unwrap();
        assert_eq!(e.text, b"\xffdb\xfe");
    }
}
