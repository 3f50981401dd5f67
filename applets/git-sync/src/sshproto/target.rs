//! Where an ssh URL points and what runs there, read as libgit2 read it
//! (`git_net_url_parse`, `git_net_url_parse_scp` and `gen_proto` in
//! libgit2 1.9), so a `--repo` that worked with libgit2's ssh works alike.

use percent_encoding::percent_decode_str;

/// ssh's port.
const DEFAULT_PORT: u16 = 22;

/// The user, server and repository path of an ssh URL.
#[derive(Debug, PartialEq)]
pub struct Target {
    pub user: Option<String>,
    /// Without the brackets of an IPv6 address.
    pub host: String,
    pub port: u16,
    /// As written: relative (to the remote user's home) in `host:repo`.
    pub path: String,
}

impl Target {
    /// `ssh://[user@]host[:port]/path` (also `ssh+git://`, `git+ssh://`),
    /// or scp-like `[user@]host:path` and `[[user@]host:port]:path`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let target = match url.split_once("://") {
            Some((scheme, rest)) if is_scheme(scheme) => from_url(rest),
            _ => from_scp(url),
        }
        .ok_or_else(|| format!("malformed ssh URL: {url}"))?;
        // As git and libgit2: upload-pack must not take the path for an option.
        if target.path.starts_with('-') {
            return Err(format!(
                "cannot ssh: path '{}' is ambiguous with command-line option",
                target.path
            ));
        }
        Ok(target)
    }

    /// What the server runs: `<program> '<path>'`, quoted for its shell
    /// (`'` and `!` as `'\''` and `'\!'`), with `/~user` read as `~user`.
    pub fn command(&self, program: &str) -> String {
        let path = match self.path.strip_prefix('/') {
            Some(rest) if rest.starts_with('~') => rest,
            _ => &self.path,
        };
        let mut command = format!("{program} '");
        for c in path.chars() {
            if matches!(c, '\'' | '!') {
                command.push_str("'\\");
                command.push(c);
                command.push('\'');
            } else {
                command.push(c);
            }
        }
        command.push('\'');
        command
    }
}

/// What libgit2 takes for a URL scheme: letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// After `scheme://`: the user and host are percent-decoded, the path is
/// kept as written, without a query or fragment.
fn from_url(rest: &str) -> Option<Target> {
    let (authority, path) = rest.split_at(rest.find('/')?);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            (Some(decode(user)?), hostport)
        }
        None => (None, authority),
    };
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host.to_string(), after)
        }
        None => {
            let colon = hostport.find(':').unwrap_or(hostport.len());
            (decode(&hostport[..colon])?, &hostport[colon..])
        }
    };
    let port = match port.strip_prefix(':') {
        Some(p) if !p.is_empty() => p.parse().ok()?,
        _ if port.is_empty() || port == ":" => DEFAULT_PORT,
        _ => return None,
    };
    (!host.is_empty()).then(|| Target {
        user,
        host,
        port,
        path: path.to_string(),
    })
}

/// scp-like syntax: an `@` before the first `:` ends the user; inside
/// brackets a `:` ends the host and starts the port, unless the brackets
/// hold an IPv6 address.
fn from_scp(s: &str) -> Option<Target> {
    let (user, host, port, path) = match s.strip_prefix('[') {
        Some(inner) => {
            let (inside, after) = inner.split_once(']')?;
            let path = after.strip_prefix(':')?;
            if inside.matches(':').count() > 1 {
                (None, inside, DEFAULT_PORT, path)
            } else {
                let (user, hostport) = split_user(inside);
                let (host, port) = match hostport.split_once(':') {
                    Some((host, port)) => (host, port.parse().ok()?),
                    None => (hostport, DEFAULT_PORT),
                };
                (user, host, port, path)
            }
        }
        None => {
            let (userhost, path) = s.split_once(':')?;
            let (user, host) = split_user(userhost);
            (user, host, DEFAULT_PORT, path)
        }
    };
    (!host.is_empty() && !path.is_empty()).then(|| Target {
        user: user.map(str::to_string),
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

fn split_user(s: &str) -> (Option<&str>, &str) {
    match s.split_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, s),
    }
}

fn decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::Target;

    fn parsed(url: &str) -> (Option<String>, String, u16, String) {
        let t = Target::parse(url).unwrap();
        let command = t.command("git-upload-pack");
        (t.user, t.host, t.port, command)
    }

    fn expect(
        user: Option<&str>,
        host: &str,
        port: u16,
        command: &str,
    ) -> (Option<String>, String, u16, String) {
        (
            user.map(str::to_string),
            host.to_string(),
            port,
            command.to_string(),
        )
    }

    #[test]
    fn ssh_urls() {
        assert_eq!(
            parsed("ssh://test@10.0.0.1/git/repo"),
            expect(Some("test"), "10.0.0.1", 22, "git-upload-pack '/git/repo'")
        );
        assert_eq!(
            parsed("ssh://git@127.0.0.1:2222/srv/r.git?x#y"),
            expect(
                Some("git"),
                "127.0.0.1",
                2222,
                "git-upload-pack '/srv/r.git'"
            )
        );
        assert_eq!(
            parsed("git+ssh://h/~u/r"),
            expect(None, "h", 22, "git-upload-pack '~u/r'")
        );
        assert_eq!(
            parsed("ssh+git://a%40b:pw@[::1]:23/r"),
            expect(Some("a@b"), "::1", 23, "git-upload-pack '/r'")
        );
        assert_eq!(
            parsed("ssh://h:/it's!"),
            expect(None, "h", 22, r"git-upload-pack '/it'\''s'\!''")
        );
    }

    #[test]
    fn scp_like_urls() {
        assert_eq!(
            parsed("test@10.0.0.1:/git/repo"),
            expect(Some("test"), "10.0.0.1", 22, "git-upload-pack '/git/repo'")
        );
        // Relative to the remote home, as git passes it.
        assert_eq!(
            parsed("github.com:o/r.git"),
            expect(None, "github.com", 22, "git-upload-pack 'o/r.git'")
        );
        assert_eq!(
            parsed("h:~/r"),
            expect(None, "h", 22, "git-upload-pack '~/r'")
        );
        assert_eq!(
            parsed("[git@127.0.0.1:2222]:/srv/r"),
            expect(Some("git"), "127.0.0.1", 2222, "git-upload-pack '/srv/r'")
        );
        assert_eq!(
            parsed("[::1]:r"),
            expect(None, "::1", 22, "git-upload-pack 'r'")
        );
    }

    #[test]
    fn malformed_urls() {
        for bad in [
            "ssh://h",
            "ssh://h:x/r",
            "ssh:///r",
            "h:",
            ":r",
            "[h:1]r",
            "[h:x]:r",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert_eq!(e, format!("malformed ssh URL: {bad}"));
        }
        assert_eq!(
            Target::parse("h:-x").unwrap_err(),
            "cannot ssh: path '-x' is ambiguous with command-line option"
        );
    }
}
