//! The multi-call binary: dispatch, busybox conventions, static linking,
//! exit codes, probes and signal handling shared by every applet.

mod support;

use std::process::Command;

use support::{http, run, Sidecar};

#[test]
fn list_prints_every_applet() {
    let out = run(&["--list"]);
    assert!(out.status.success());
    let list = String::from_utf8(out.stdout).unwrap();
    for name in [
        "config-watch-reload",
        "git-sync",
        "log-tail-ship",
        "static-serve",
        "tcp-proxy",
    ] {
        assert!(
            list.lines().any(|l| l == name),
            "{name} missing from --list:\n{list}"
        );
    }
}

#[test]
fn unknown_applet_exits_127() {
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "sidecar: applet not found: frobnicate"
    );
}

#[test]
fn version_and_help() {
    let out = run(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sidecar "));
    let out = run(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("static-serve"));
    let out = run(&["--help", "static-serve"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--admin-addr"), "{text}");
    // Each applet's --help starts with the line `sidecar --help` lists for it.
    let overview = String::from_utf8(run(&["--help"]).stdout).unwrap();
    let list = String::from_utf8(run(&["--list"]).stdout).unwrap();
    for name in list.lines() {
        let help = String::from_utf8(run(&[name, "--help"]).stdout).unwrap();
        let about = help.lines().next().unwrap();
        let entry = overview
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap();
        assert!(
            entry.trim_end().ends_with(about),
            "{name}: {about:?} vs {entry:?}"
        );
    }
    let out = run(&["--help", "nope"]);
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn install_links_dispatch_on_argv0() {
    for symbolic in [false, true] {
        let dir = support::tempdir();
        let mut args = vec!["--install"];
        if symbolic {
            args.push("-s");
        }
        let path = dir.path().to_str().unwrap().to_string();
        args.push(&path);
        let out = run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let link = dir.path().join("tcp-proxy");
        assert_eq!(
            link.symlink_metadata().unwrap().file_type().is_symlink(),
            symbolic
        );
        let out = support::run_cmd(Command::new(&link).arg("--version"));
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("tcp-proxy "));
    }
}

#[test]
fn bad_flag_and_bad_env_exit_2_naming_them() {
    let out = run(&["tcp-proxy", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));

    let out = support::run_cmd(
        Command::new(support::bin())
            .args(["tcp-proxy"])
            .env("SIDECAR_SHUTDOWN_GRACE", "soon"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shutdown-grace"));

    let out = run(&["tcp-proxy", "--log-format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));
}

#[test]
fn binary_is_static_and_runs_in_an_empty_root() {
    let out = support::run_cmd(Command::new("file").arg("-L").arg(support::bin()));
    let desc = String::from_utf8_lossy(&out.stdout);
    assert!(
        desc.contains("static-pie linked") || desc.contains("statically linked"),
        "not static: {desc}"
    );
    if !support::require_root("chroot into an empty root") {
        return;
    }
    let root = support::tempdir();
    // `cp`, not std::fs::copy: a write fd open in this process would leak into
    // children forked by parallel tests and make the exec fail with ETXTBSY.
    let cp = support::run_cmd(
        Command::new("cp")
            .arg(support::bin())
            .arg(root.path().join("sidecar")),
    );
    assert!(cp.status.success());
    let out = support::run_cmd(
        Command::new("chroot")
            .arg(root.path())
            .args(["/sidecar", "--list"]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("git-sync"));
}

/// `/readyz` turns 503 as soon as SIGTERM arrives, before the applet drains,
/// and the process exits 0.
#[test]
fn sigterm_drops_readiness_then_exits_zero() {
    let dir = support::tempdir();
    let mut sc = Sidecar::start(
        "config-watch-reload",
        &[
            "--watch",
            dir.path().to_str().unwrap(),
            "--exec",
            "true",
            "--log-level=debug",
        ],
    );
    let admin = sc.admin_addr();
    support::wait_until("ready", || http::get(admin, "/readyz").status == 200);
    assert_eq!(http::get(admin, "/healthz").status, 200);
    let metrics = http::get(admin, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("# EOF"), "{}", metrics.text());
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    sc.wait_for_log("shutting down");
    assert_eq!(sc.wait_exit().code(), Some(0), "{}", sc.stderr());
}

/// The admin port is bounded like a data port: a client that sends nothing
/// is closed at the head timeout, connections over the cap are closed at
/// once, and probes are answered again as soon as the holders are gone.
#[test]
fn idle_admin_connections_cannot_hold_the_admin_port() {
    use std::io::Read;
    let dir = support::tempdir();
    let mut sc = Sidecar::start(
        "config-watch-reload",
        &["--watch", dir.path().to_str().unwrap(), "--exec", "true"],
    );
    let admin = sc.admin_addr();
    support::wait_until("ready", || http::get(admin, "/healthz").status == 200);
    let idle: Vec<std::net::TcpStream> = (0..64)
        .map(|_| std::net::TcpStream::connect(admin).unwrap())
        .collect();
    // The 65th is over the cap: closed without an answer.
    let mut over = std::net::TcpStream::connect(admin).unwrap();
    over.set_read_timeout(Some(support::DEADLINE)).unwrap();
    assert_eq!(over.read(&mut [0; 16]).unwrap_or(1), 0, "closed at once");
    // The silent ones are closed at the head timeout.
    for mut c in idle {
        c.set_read_timeout(Some(support::DEADLINE)).unwrap();
        assert_eq!(c.read(&mut [0; 16]).unwrap_or(1), 0, "closed by the server");
    }
    assert_eq!(http::get(admin, "/healthz").status, 200);
}

/// As PID 1 of its container (here: of a PID namespace the test creates),
/// `sidecar` reaps orphans that the commands it runs leave behind.
#[test]
fn reaps_orphans_as_pid_1() {
    if !support::require_root("PID namespace for the PID 1 reaping test") {
        return;
    }
    let dir = support::tempdir();
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child"])
        .arg(support::bin())
        .args([
            "config-watch-reload",
            "--admin-addr=off",
            "--reload-on-start",
            "--watch",
        ])
        .arg(dir.path())
        // The shell exits at once; its `sleep` is re-parented to PID 1.
        .args(["--exec", "sh -c 'sleep 2.471 &'"]);
    let mut sc = Sidecar::spawn(&mut cmd);
    let unshare_pid = sc.pid() as i32;
    let orphan = find_orphan(unshare_pid, "2.471");
    // The orphan is a child of the sidecar (PID 1 inside), not of the shell.
    let sidecar_pid = ppid_of(orphan).expect("orphan still running");
    assert_eq!(ppid_of(sidecar_pid), Some(unshare_pid));
    // Once it exits it must be reaped, not left as a zombie.
    support::wait_until("the orphan to be reaped", || {
        !std::path::Path::new(&format!("/proc/{orphan}")).exists()
    });
    // unshare does not forward signals: stop the sidecar itself.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(sc.wait_exit().code(), Some(0), "{}", sc.stderr());
}

fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The `sleep MARKER` process started below `ancestor`.
fn find_orphan(ancestor: i32, marker: &str) -> i32 {
    let mut found = None;
    support::wait_until("the orphaned sleep to start", || {
        found = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cmdline == format!("sleep\0{marker}\0").as_bytes()
                    && ppid_of(*pid).and_then(ppid_of) == Some(ancestor)
            });
        found.is_some()
    });
    found.unwrap()
}

/// `sidecar … 2>&1 | head -1`: once stderr is closed, logging fails quietly
/// and the applet still stops cleanly on SIGTERM.
#[test]
fn a_closed_stderr_does_not_stop_the_applet() {
    use std::io::{BufRead, BufReader};
    let dir = support::tempdir();
    let mut child = Command::new(support::bin())
        .args([
            "config-watch-reload",
            "--admin-addr=127.0.0.1:0",
            "--exec=true",
            "--watch",
        ])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let admin = support::addr_field(&first, "addr=").expect("admin address logged first");
    drop(stderr);
    // The applet keeps serving and logging (into the closed pipe).
    support::wait_until("ready", || http::get(admin, "/readyz").status == 200);
    std::fs::write(dir.path().join("app.conf"), "x").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < support::DEADLINE,
            "did not exit after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
}

/// While an applet drains after SIGTERM, a second signal exits at once with
/// 128 + the signal's number. tcp-proxy drains by waiting for open
/// connections, so one held-open connection keeps it draining.
#[test]
fn a_second_signal_exits_at_once() {
    use std::io::{Read, Write};
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        // Echo one connection, then hold it open.
        if let Ok((mut s, _)) = upstream.accept() {
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    let mut sc = Sidecar::start(
        "tcp-proxy",
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstream={up_addr}"),
            "--shutdown-grace=60s",
        ],
    );
    sc.admin_addr(); // the admin server logs its address first
    let line = sc.wait_for_log("listening addr=");
    let listen = support::addr_field(&line, "addr=").unwrap();
    let mut client = std::net::TcpStream::connect(listen).unwrap();
    client.set_read_timeout(Some(support::DEADLINE)).unwrap();
    client.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");

    sc.signal(nix::sys::signal::Signal::SIGTERM);
    sc.wait_for_log("shutting down");
    sc.signal(nix::sys::signal::Signal::SIGINT);
    let status = sc.wait_exit();
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{}", sc.stderr());
    assert!(sc.logged("second signal"));
}

/// `APPLET --check` validates and exits without binding anything: it
/// succeeds while another socket holds the very ports it is given.
#[test]
fn check_validates_without_binding() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = held.local_addr().unwrap();
    let out = run(&[
        "tcp-proxy",
        "--check",
        &format!("--listen={admin}"),
        "--upstream=127.0.0.1:9",
        &format!("--admin-addr={admin}"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("configuration is valid"), "{stderr}");

    let out = run(&[
        "tcp-proxy",
        "--check",
        "--upstream=127.0.0.1:9",
        "--admin-addr=nowhere",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-addr"));
}

/// `--check` names the file each applet would fail on later, at its first
/// sync, request or rejected event, and says what it will wait for.
#[test]
fn check_names_the_file_a_start_would_fail_on_later() {
    let d = support::tempdir();
    let dir = d.path();
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("below");
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let root = format!("--root={}", p(&dir.join("root")));
    let git = |extra: &[&str]| {
        let mut a = vec!["git-sync".to_string(), root.clone()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            git(&[
                "--repo=git@example.com:o/r.git",
                &format!("--ssh-key-file={}", p(&dir.join("no-key"))),
            ]),
            format!(
                "--ssh-key-file {}: no such file or directory",
                p(&dir.join("no-key"))
            ),
        ),
        (
            git(&[
                "--repo=https://example.com/r.git",
                "--username=u",
                &format!("--password-file={}", p(&dir.join("no-pw"))),
            ]),
            format!("--password-file {}", p(&dir.join("no-pw"))),
        ),
        (
            git(&["--repo=https://example.com/r.git", "--webhook-url=ftp://h/"]),
            "--webhook-url \"ftp://h/\": expected an http:// or https:// URL".into(),
        ),
        (
            git(&[
                "--repo=https://example.com/r.git",
                "--exechook-command=surely-not-a-program",
            ]),
            "--exechook-command: surely-not-a-program: command not found".into(),
        ),
        (
            vec![
                "git-sync".into(),
                "--repo=https://example.com/r.git".into(),
                format!("--root={}", p(&under_file)),
            ],
            format!("--root {}", p(&under_file)),
        ),
        (
            vec!["static-serve".into(), format!("--root={}", p(&under_file))],
            format!("--root {}", p(&under_file)),
        ),
        (
            vec![
                "static-serve".into(),
                "--root=.".into(),
                "--listen=:8080".into(),
                "--listen=nowhere".into(),
            ],
            "--listen".into(),
        ),
        (
            vec![
                "static-serve".into(),
                "--root=.".into(),
                format!("--listen=unix:{}", p(&file)),
            ],
            format!("{} exists and is not a socket", p(&file)),
        ),
        (
            vec![
                "tcp-proxy".into(),
                "--listen=127.0.0.1:0".into(),
                "--upstream=127.0.0.1:9".into(),
                format!("--access-log={}", p(&under_file)),
            ],
            format!("--access-log {}", p(&under_file)),
        ),
        (
            vec![
                "log-tail-ship".into(),
                "--path=/tmp/x.log".into(),
                format!("--data-dir={}", p(&under_file)),
            ],
            format!("--data-dir {}", p(&under_file)),
        ),
        (
            vec![
                "log-tail-ship".into(),
                "--path=/tmp/x.log".into(),
                format!("--dead-letter={}", p(dir)),
            ],
            format!("--dead-letter {}: is a directory", p(dir)),
        ),
    ];
    for (args, needle) in &cases {
        let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
        full.extend(["--check", "--admin-addr=off"]);
        let out = run(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{full:?}: {err}");
        assert!(
            err.contains(needle.as_str()),
            "{full:?}: want {needle:?} in {err}"
        );
    }
    // A root git-sync has not made yet is waited for, not an error.
    let late = format!("--root={}", p(&dir.join("late")));
    let out = run(&["static-serve", &late, "--check", "--admin-addr=off"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("does not exist yet"), "{err}");
}

/// busybox: a link named after an applet this binary lacks.
#[test]
fn unknown_applet_via_a_link_exits_127() {
    let dir = support::tempdir();
    let link = dir.path().join("nope");
    std::os::unix::fs::symlink(support::bin(), &link).unwrap();
    let out = support::run_cmd(&mut Command::new(&link));
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "sidecar: applet not found: nope"
    );
}

/// `--version` and the `sidecar_build_info` gauge tell the same story:
/// version, commit, build date, applets.
#[test]
fn version_and_build_info_gauge_agree() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key}: line in\n{text}"))
            .to_string()
    };
    let version = text
        .lines()
        .next()
        .unwrap()
        .strip_prefix("sidecar ")
        .unwrap();
    let (commit, built, applets) = (field("commit"), field("built"), field("applets"));
    assert!(!commit.is_empty() && built.ends_with('Z'), "{text}");
    let list = String::from_utf8(run(&["--list"]).stdout).unwrap();
    assert_eq!(
        applets.split(' ').collect::<Vec<_>>(),
        list.lines().collect::<Vec<_>>()
    );

    let dir = support::tempdir();
    let mut sc = Sidecar::start(
        "config-watch-reload",
        &["--watch", dir.path().to_str().unwrap(), "--exec", "true"],
    );
    let admin = sc.admin_addr();
    let gauge = format!(
        "sidecar_build_info{{version=\"{version}\",commit=\"{commit}\",build_date=\"{built}\",applets=\"{}\"}}",
        applets.replace(' ', ",")
    );
    let text = support::metrics::scrape(admin);
    assert_eq!(support::metrics::sample(&text, &gauge), Some(1.0), "{text}");
}

/// Every command whose answer goes to stdout stops quietly when the reader
/// has gone (`sidecar --man | head -1`): no panic, nothing on stderr.
#[test]
fn a_closed_stdout_never_panics() {
    let list = String::from_utf8(run(&["--list"]).stdout).unwrap();
    let mut commands: Vec<Vec<String>> = [
        "--list",
        "--version",
        "--help",
        "--man",
        "--completions bash",
        "--completions zsh",
        "--completions fish",
        "git-sync --man",
    ]
    .iter()
    .map(|c| c.split(' ').map(String::from).collect())
    .collect();
    for name in list.lines() {
        commands.push(vec!["--man".into(), name.into()]);
        commands.push(vec![name.into(), "--help".into()]);
        commands.push(vec![name.into(), "--version".into()]);
    }
    for args in commands {
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let out = support::run_cmd(
            Command::new(support::bin())
                .args(&args)
                .env("SIDECAR_ADMIN_ADDR", "off")
                .stdout(std::process::Stdio::from(write)),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `sidecar --completions SHELL` loads in that shell and completes the
/// applets and their flags.
#[test]
fn completions_load_in_bash_zsh_and_fish() {
    let dir = support::tempdir();
    for shell in ["bash", "zsh", "fish"] {
        if !support::require_peer(shell) {
            continue;
        }
        let out = run(&["--completions", shell]);
        assert!(out.status.success());
        let script = dir.path().join(format!("sidecar.{shell}"));
        std::fs::write(&script, &out.stdout).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("static-serve") && text.contains("--admin-addr"));
        let check = match shell {
            // Loads, and registers a completion function for `sidecar`.
            "bash" => format!("source {} && complete -p sidecar", script.display()),
            // Parses (compinit is not needed to read the file).
            "zsh" => format!("zsh -n {}", script.display()),
            _ => format!("fish --no-execute {}", script.display()),
        };
        let out = support::run_cmd(Command::new("bash").args(["-c", &check]));
        assert!(
            out.status.success(),
            "{shell}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `sidecar --man [APPLET]` is a man page groff renders, listing the flags.
#[test]
fn man_pages_for_sidecar_and_every_applet() {
    let list = String::from_utf8(run(&["--list"]).stdout).unwrap();
    let mut pages = vec![(vec!["--man".to_string()], "--completions".to_string())];
    for name in list.lines() {
        pages.push((vec!["--man".into(), name.into()], "--admin-addr".into()));
    }
    let out = run(&["--man", "nope"]);
    assert_eq!(out.status.code(), Some(127));
    if !support::require_peer("groff") {
        return;
    }
    for (args, flag) in pages {
        let out = support::run_cmd(Command::new(support::bin()).args(&args));
        assert!(out.status.success(), "{args:?}");
        let dir = support::tempdir();
        let page = dir.path().join("page.1");
        std::fs::write(&page, &out.stdout).unwrap();
        let rendered = support::run_cmd(
            Command::new("groff")
                // As man renders it (-k: UTF-8 input), as plain text.
                .args(["-k", "-man", "-Tutf8", "-ww", "-P-cbou"])
                .arg(&page),
        );
        let text = String::from_utf8_lossy(&rendered.stdout);
        let warnings = String::from_utf8_lossy(&rendered.stderr);
        assert!(
            rendered.status.success() && warnings.is_empty(),
            "{args:?}: {warnings}"
        );
        assert!(text.contains(&flag), "{args:?}:\n{text}");
    }
}

/// `--depth -1`: the value reaches the flag's own parser, whose error names
/// the flag, instead of clap taking `-1` for an unknown option.
#[test]
fn negative_numbers_without_equals_name_the_flag() {
    for (args, flag) in [
        (
            &[
                "tcp-proxy",
                "--upstream=127.0.0.1:9",
                "--max-connections",
                "-1",
            ][..],
            "--max-connections",
        ),
        (
            &["static-serve", "--root=/", "--max-connections", "-1"][..],
            "--max-connections",
        ),
        (
            &["log-tail-ship", "--path=/x", "--multiline-max-lines", "-1"][..],
            "--multiline-max-lines",
        ),
        (
            &["git-sync", "--repo=x", "--root=/tmp/x", "--depth", "-1"][..],
            "--depth",
        ),
    ] {
        let out = run(&[args, &["--admin-addr=off"]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}
