//! config-watch-reload driven the way a Pod drives it: real files changed the
//! way the kubelet and editors change them, a real HTTP server receiving
//! reloads, real processes receiving signals.

mod support;

#[path = "config_watch_reload/kubelet.rs"]
mod kubelet;
#[path = "config_watch_reload/tls_app.rs"]
mod tls_app;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kubelet::Volume;
use support::http::{self, Receiver};
use support::metrics::metric;
use support::{run, Sidecar};

const APPLET: &str = "config-watch-reload";

/// Starts the applet and waits until it took its initial snapshot.
fn start(args: &[&str]) -> (Sidecar, SocketAddr) {
    let mut sc = Sidecar::start(APPLET, args);
    let admin = sc.admin_addr();
    sc.wait_for_log("watching");
    support::wait_until("ready", || http::get(admin, "/readyz").status == 200);
    (sc, admin)
}

fn successes(admin: SocketAddr) -> f64 {
    metric(
        admin,
        r#"config_watch_reload_reloads_total{result="success"}"#,
    )
    .unwrap_or(0.0)
}

/// Replaces a file's content in one step (write beside it, rename over), so
/// no snapshot can see it half-written.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("cwr-tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn kubelet_swaps_reload_once_each_and_identical_content_never() {
    let d = support::tempdir();
    let mut vol = Volume::new(&d.path().join("config"));
    vol.write(&[("app.yaml", "v: 0"), ("nested/rules.yaml", "r: 0")]);
    let rx = Receiver::start();
    let url = rx.url("/-/reload");
    let (_sc, admin) = start(&["--watch", s(&vol.dir), "--reload-url", &url]);

    for i in 1..=12 {
        let app = format!("v: {i}");
        vol.write(&[("app.yaml", &app), ("nested/rules.yaml", "r: 0")]);
        let req = rx.next();
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/-/reload")
        );
    }
    // A nested key changes through the same swap.
    vol.write(&[("app.yaml", "v: 12"), ("nested/rules.yaml", "r: 1")]);
    rx.next();

    // A swap to identical content, a touch and a chmod: no reload. The next
    // real change proves it: only one more reload and change are counted.
    vol.write(&[("app.yaml", "v: 12"), ("nested/rules.yaml", "r: 1")]);
    let target = vol.dir.join("app.yaml").canonicalize().unwrap();
    std::fs::write(&target, "v: 12").unwrap();
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    vol.write(&[("app.yaml", "v: 13"), ("nested/rules.yaml", "r: 1")]);
    rx.next();
    support::wait_until("success counted", || successes(admin) == 14.0);
    assert_eq!(
        metric(admin, "config_watch_reload_changes_total"),
        Some(14.0)
    );
    assert_eq!(metric(admin, "reloader_last_reload_successful"), Some(1.0));
    assert!(metric(admin, "config_watch_reload_watch_events_total").unwrap() > 0.0);
    assert!(rx.drain().is_empty());
}

#[test]
fn watch_on_a_file_survives_any_number_of_swaps() {
    let d = support::tempdir();
    let mut vol = Volume::new(&d.path().join("secret"));
    vol.write(&[("token", "t0"), ("other", "o")]);
    let rx = Receiver::start();
    let url = rx.url("/reload");
    let file = vol.dir.join("token");
    let (_sc, admin) = start(&["--watch", s(&file), "--reload-url", &url]);
    for i in 1..=10 {
        vol.write(&[("token", &format!("t{i}")), ("other", "o")]);
        rx.next();
    }
    // Another key of the same volume is not watched.
    vol.write(&[("token", "t10"), ("other", "changed")]);
    vol.write(&[("token", "t11"), ("other", "changed")]);
    rx.next();
    support::wait_until("success counted", || successes(admin) == 11.0);
    assert_eq!(
        metric(admin, "config_watch_reload_changes_total"),
        Some(11.0)
    );
}

#[test]
fn editors_writing_in_place_or_renaming_over_and_late_paths() {
    let d = support::tempdir();
    let file = d.path().join("app.conf");
    support::write(&file, "a");
    let late = d.path().join("not/yet/there.conf");
    let rx = Receiver::start();
    let url = rx.url("/");
    let (_sc, _admin) = start(&[
        "--watch",
        s(&file),
        "--watch",
        s(&late),
        "--reload-url",
        &url,
    ]);

    // In place.
    std::fs::write(&file, "b").unwrap();
    rx.next();
    // Rename over (most editors, `kubectl cp`, atomic writers).
    let tmp = d.path().join(".app.conf.swp");
    std::fs::write(&tmp, "c").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    rx.next();
    // vim's backup dance: move away, write anew, delete the backup.
    let backup = d.path().join("app.conf~");
    std::fs::rename(&file, &backup).unwrap();
    std::fs::write(&file, "d").unwrap();
    std::fs::remove_file(&backup).unwrap();
    rx.next();
    // Deleted, then created again.
    std::fs::remove_file(&file).unwrap();
    rx.next();
    std::fs::write(&file, "e").unwrap();
    rx.next();
    // A path whose directories did not exist at start.
    support::write(&late, "x");
    rx.next();
    std::fs::write(&late, "y").unwrap();
    rx.next();
}

#[test]
fn a_burst_of_changes_gives_one_reload() {
    let d = support::tempdir();
    let dir = d.path().join("conf.d");
    support::write(&dir.join("0.conf"), "start");
    let rx = Receiver::start();
    let url = rx.url("/");
    // A long quiet time, so the burst is one burst on a loaded machine too.
    let (_sc, admin) = start(&[
        "--watch",
        s(&dir),
        "--reload-url",
        &url,
        "--debounce",
        "2s",
        "--max-wait",
        "5m",
    ]);
    for i in 0..100 {
        std::fs::write(dir.join(format!("{}.conf", i % 10)), format!("burst {i}")).unwrap();
    }
    rx.next();
    assert!(
        rx.next_within(Duration::from_secs(4)).is_none(),
        "a second reload for one burst"
    );
    assert_eq!(successes(admin), 1.0);
}

#[test]
fn max_wait_bounds_coalescing_under_a_steady_stream() {
    let d = support::tempdir();
    let file = d.path().join("busy.conf");
    support::write(&file, "0");
    let rx = Receiver::start();
    let url = rx.url("/");
    // The quiet time is never reached: only --max-wait can fire.
    let (_sc, _admin) = start(&[
        "--watch",
        s(&file),
        "--reload-url",
        &url,
        "--debounce",
        "10m",
        "--max-wait",
        "300ms",
    ]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, file) = (stop.clone(), file.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 20_000 {
                i += 1;
                std::fs::write(&file, i.to_string()).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    rx.next();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
}

#[test]
fn failing_validation_blocks_and_rollback_reloads_again() {
    let d = support::tempdir();
    let file = d.path().join("nginx.conf");
    support::write(&file, "good 1");
    let rx = Receiver::start();
    let url = rx.url("/");
    let validate = format!("grep -q good {}", s(&file));
    let (mut sc, admin) = start(&[
        "--watch",
        s(&file),
        "--reload-url",
        &url,
        "--validate-cmd",
        &validate,
    ]);

    replace(&file, "bad");
    sc.wait_for_log("validation failed");
    assert_eq!(
        metric(admin, "config_watch_reload_validation_failures_total"),
        Some(1.0)
    );
    // Back to the content the app already has: reloaded all the same, since
    // the app may have seen the bad files.
    replace(&file, "good 1");
    rx.next();
    let line = sc.wait_for_log("change detected");
    let hash = line
        .split("new=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    sc.wait_for_log(&format!("reload succeeded hash=\"{hash}\""));
    assert_eq!(successes(admin), 1.0, "the bad config was never reloaded");
    replace(&file, "good 2");
    rx.next();
}

#[test]
fn failed_reload_retries_newest_only_and_rollback_recovers() {
    let d = support::tempdir();
    let file = d.path().join("prometheus.yml");
    support::write(&file, "config A");
    let watched = file.clone();
    // The app rejects config B, as Prometheus answers 500 for a bad config.
    let rx = Receiver::with(move |_| {
        if std::fs::read_to_string(&watched)
            .unwrap_or_default()
            .contains('B')
        {
            (500, "bad config".into())
        } else {
            (200, String::new())
        }
    });
    let url = rx.url("/-/reload");
    let (mut sc, admin) = start(&[
        "--watch",
        s(&file),
        "--reload-url",
        &url,
        "--retry-interval",
        "50ms",
        "--retry-max-interval",
        "200ms",
    ]);
    replace(&file, "config B");
    rx.next();
    rx.next();
    sc.wait_for_log("action failed");
    assert_eq!(metric(admin, "reloader_last_reload_successful"), Some(0.0));
    // Back to A: the same content as the last success, reloaded again.
    replace(&file, "config A");
    let line = sc.wait_for_log("change detected");
    let hash_a = line
        .split("new=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    // A request for B still in flight may be answered 200 (the app reads
    // the file at reload time); the reload of A itself must follow.
    sc.wait_for_log(&format!("reload succeeded hash=\"{hash_a}\""));
    support::wait_until("success metric", || {
        metric(admin, "reloader_last_reload_successful") == Some(1.0)
    });
    assert!(metric(admin, "reloader_reloads_failed_total").unwrap() >= 2.0);
    // B is not retried once A succeeded.
    rx.drain();
    assert!(rx.next_within(Duration::from_secs(1)).is_none());
}

/// A process with a unique name that records each SIGHUP in `dir/hups`.
struct HupTarget {
    /// Killed with its `sleep` on drop.
    _process: support::Peer,
    name: String,
    hups: std::path::PathBuf,
    pid_file: std::path::PathBuf,
}

impl HupTarget {
    fn start(dir: &Path) -> HupTarget {
        // Unique per test: signals by name or command line reach every match.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("hup{}x{n}", std::process::id() % 10_000_000);
        let script = dir.join(&name);
        let hups = dir.join("hups");
        let pid_file = dir.join("app.pid");
        let ready = dir.join("ready");
        support::write(
            &script,
            &format!(
                "#!/bin/sh\ntrap 'echo hup >> {hups}' HUP\necho $$ > {pid}\ntouch {ready}\nwhile :; do sleep 1 & wait $!; done\n",
                hups = hups.display(),
                pid = pid_file.display(),
                ready = ready.display()
            ),
        );
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let process = support::Peer::spawn(&mut std::process::Command::new(&script)).unwrap();
        support::wait_until("signal target ready", || ready.exists());
        HupTarget {
            _process: process,
            name,
            hups,
            pid_file,
        }
    }

    fn count(&self) -> usize {
        std::fs::read_to_string(&self.hups)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

#[test]
fn sighup_by_process_name_and_by_pid_file() {
    let d = support::tempdir();
    // Two targets: signals sent at the same moment to one process coalesce.
    let by_name = HupTarget::start(&d.path().join("a"));
    let by_pid = HupTarget::start(&d.path().join("b"));
    let mut vol = Volume::new(&d.path().join("config"));
    vol.write(&[("app.conf", "0")]);
    let (_a, _) = start(&[
        "--watch",
        s(&vol.dir),
        "--signal",
        "HUP",
        "--process-name",
        &by_name.name,
    ]);
    let (_b, _) = start(&[
        "--watch",
        s(&vol.dir),
        "--signal",
        "SIGHUP",
        "--pid-file",
        s(&by_pid.pid_file),
    ]);
    vol.write(&[("app.conf", "1")]);
    support::wait_until("SIGHUP by name", || by_name.count() == 1);
    support::wait_until("SIGHUP by pid file", || by_pid.count() == 1);
    vol.write(&[("app.conf", "2")]);
    support::wait_until("second SIGHUP by name", || by_name.count() == 2);
    support::wait_until("second SIGHUP by pid file", || by_pid.count() == 2);
}

#[test]
fn signal_by_command_line_with_exec_after_it() {
    let d = support::tempdir();
    let target = HupTarget::start(d.path());
    let file = d.path().join("app.conf");
    support::write(&file, "0");
    let marker = d.path().join("exec-ran");
    // Written beside and renamed, so the test never reads it half-written.
    let exec = format!(
        "sh -c 'echo $CONFIG_WATCH_RELOAD_HASH > {m}.tmp && mv {m}.tmp {m}'",
        m = s(&marker)
    );
    let re = format!("/{}$", target.name);
    let (_sc, _) = start(&[
        "--watch",
        s(&file),
        "--process-cmdline",
        &re,
        "--exec",
        &exec,
    ]);
    std::fs::write(&file, "1").unwrap();
    support::wait_until("exec ran", || marker.exists());
    // The shell runs its trap when its `wait` is interrupted, which may come
    // after --exec finished: wait for it rather than read it at once. (The
    // order of actions is proved by the plan's unit test.)
    support::wait_until("SIGHUP (the default) handled", || target.count() == 1);
    let hash = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(hash.trim().len(), 64, "{hash}");
}

#[test]
fn render_expands_environment_and_reloads_on_template_change() {
    let d = support::tempdir();
    let src = d.path().join("templates/app.tmpl");
    let dst = d.path().join("out/app.yaml");
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    support::write(
        &src,
        "host: $(DB_HOST)\nport: ${DB_PORT:-5432}\nuser: ${DB_USER}\nprice: $$5\nregex: ${1}\n",
    );
    let rx = Receiver::start();
    let url = rx.url("/");
    let render = format!("{}:{}", s(&src), s(&dst));
    let mut cmd = std::process::Command::new(support::bin());
    cmd.args([
        APPLET,
        "--render",
        &render,
        "--reload-url",
        &url,
        "--admin-addr=127.0.0.1:0",
    ])
    .env("DB_HOST", "db.local")
    .env("DB_USER", "app")
    .env_remove("DB_PORT");
    let mut sc = Sidecar::spawn(&mut cmd);
    let admin = sc.admin_addr();
    sc.wait_for_log("watching");
    support::wait_until("ready", || http::get(admin, "/readyz").status == 200);
    assert_eq!(
        std::fs::read_to_string(&dst).unwrap(),
        "host: db.local\nport: 5432\nuser: app\nprice: $5\nregex: ${1}\n"
    );
    // A gzip template, swapped in by rename.
    let tmp = d.path().join("templates/.new");
    let gz = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        gz.stdin
            .as_ref()
            .unwrap()
            .write_all(b"host: ${DB_HOST}\n")
            .unwrap();
    }
    let out = gz.wait_with_output().unwrap();
    std::fs::write(&tmp, out.stdout).unwrap();
    std::fs::rename(&tmp, &src).unwrap();
    rx.next();
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "host: db.local\n");
    // An unset variable blocks the reload and leaves the output alone.
    support::write(&src, "x: ${NOT_SET_ANYWHERE}\n");
    sc.wait_for_log("NOT_SET_ANYWHERE");
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "host: db.local\n");
    assert_eq!(
        metric(admin, "config_watch_reload_render_errors_total"),
        Some(1.0)
    );
}

#[test]
fn unset_variable_at_start_exits_2_naming_it() {
    let d = support::tempdir();
    let src = d.path().join("t");
    support::write(&src, "a: ${CWR_SURELY_UNSET}");
    let render = format!("{}:{}", s(&src), s(&d.path().join("o")));
    let out = run(&[
        APPLET,
        "--render",
        &render,
        "--exec",
        "true",
        "--admin-addr=off",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(s(&src)), "{err}");
    // thanos' wording ends the message (its test matches the suffix).
    assert!(
        err.trim_end()
            .ends_with(r#"found reference to unset environment variable "CWR_SURELY_UNSET""#),
        "{err}"
    );
}

#[test]
fn once_renders_validates_acts_and_exits() {
    let d = support::tempdir();
    let src = d.path().join("t");
    let dst = d.path().join("o");
    support::write(&src, "a: ${HOME}");
    let marker = d.path().join("ran");
    let render = format!("{}:{}", s(&src), s(&dst));
    let exec = format!("touch {}", s(&marker));
    let validate = format!("test -s {}", s(&dst));
    let out = run(&[
        APPLET,
        "--once",
        "--render",
        &render,
        "--validate-cmd",
        &validate,
        "--exec",
        &exec,
        "--admin-addr=off",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(marker.exists());
    assert!(std::fs::read_to_string(&dst).unwrap().starts_with("a: /"));
    let out = run(&[
        APPLET,
        "--once",
        "--watch",
        s(&src),
        "--exec",
        "false",
        "--admin-addr=off",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn configmap_reload_drop_in_flags() {
    let d = support::tempdir();
    let mut vol = Volume::new(&d.path().join("config"));
    vol.write(&[("app.yaml", "0")]);
    let rx = Receiver::with(|_| (204, String::new()));
    let url = format!("http://reloader:s3cr3t-pw@{}/-/reload", rx.addr);
    let mut sc = Sidecar::start(
        APPLET,
        &[
            "-volume-dir",
            s(&vol.dir),
            &format!("-webhook-url={url}"),
            "-webhook-method",
            "GET",
            "-webhook-status-code=204",
            "-web.listen-address=127.0.0.1:0",
            "-web.telemetry-path=/cm-metrics",
            "-webhook-retries=-1",
        ],
    );
    let admin = sc.admin_addr();
    sc.wait_for_log("watching");
    vol.write(&[("app.yaml", "1")]);
    let req = rx.next();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", "/-/reload")
    );
    // user:pass@ becomes basic auth: base64("reloader:s3cr3t-pw").
    assert_eq!(
        req.header("authorization"),
        Some("Basic cmVsb2FkZXI6czNjcjN0LXB3")
    );
    let sample = format!(
        r#"configmap_reload_success_reloads_total{{webhook="http://reloader:xxxxx@{}/-/reload"}}"#,
        rx.addr
    );
    support::wait_until("success metric", || metric(admin, &sample) == Some(1.0));
    let sample = format!(
        r#"configmap_reload_requests_total{{webhook="http://reloader:xxxxx@{}/-/reload",status_code="204"}}"#,
        rx.addr
    );
    assert_eq!(metric(admin, &sample), Some(1.0));
    // configmap-reload's web pages: `/` links to the telemetry path, which
    // serves the metrics (as /metrics still does).
    let index = http::get(admin, "/");
    assert_eq!(index.status, 200);
    assert!(index.text().contains("<a href='/cm-metrics'>Metrics</a>"));
    let metrics = http::get(admin, "/cm-metrics").text();
    assert!(
        metrics.contains("configmap_reload_requests_total"),
        "{metrics}"
    );
    assert!(!metrics.contains("s3cr3t"), "{metrics}");
    let metrics = support::metrics::scrape(admin);
    assert!(!metrics.contains("s3cr3t"), "{metrics}");
    assert!(!sc.stderr().contains("s3cr3t"), "{}", sc.stderr());
}

#[test]
fn password_never_logged_when_the_webhook_fails() {
    let d = support::tempdir();
    let file = d.path().join("c");
    support::write(&file, "0");
    let rx = Receiver::with(|_| (401, "unauthorized".into()));
    let url = format!("http://u:hunter2-secret@{}/reload", rx.addr);
    let (mut sc, admin) = start(&[
        "--watch",
        s(&file),
        "--webhook-url",
        &url,
        "--webhook-retries",
        "2",
        "--retry-interval",
        "20ms",
    ]);
    std::fs::write(&file, "1").unwrap();
    sc.wait_for_log("giving up");
    assert!(sc.stderr().contains("status 401"), "{}", sc.stderr());
    assert!(sc.stderr().contains("wants credentials"), "{}", sc.stderr());
    assert!(!sc.stderr().contains("hunter2"), "{}", sc.stderr());
    let metrics = support::metrics::scrape(admin);
    assert!(!metrics.contains("hunter2"));
    assert!(
        metrics.contains("reason=\"retries_exhausted\""),
        "{metrics}"
    );
    // Both attempts got an answer: counted by status, as configmap-reload does.
    let sample = format!(
        r#"configmap_reload_requests_total{{webhook="http://u:xxxxx@{}/reload",status_code="401"}}"#,
        rx.addr
    );
    assert_eq!(metric(admin, &sample), Some(2.0));
    assert_eq!(
        metric(admin, "config_watch_reload_retries_exhausted_total"),
        Some(1.0)
    );
}

#[test]
fn prometheus_config_reloader_drop_in_flags() {
    let d = support::tempdir();
    let cfg = d.path().join("config/prometheus.yaml.gz");
    let out = d.path().join("config_out/prometheus.env.yaml");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let rules = d.path().join("rules");
    let mut rule_vol = Volume::new(&rules);
    rule_vol.write(&[("alerts.yaml", "groups: []")]);
    let template = "external_labels:\n  replica: $(POD_NAME)\n  shard: $(STATEFULSET_ORDINAL_NUMBER)\n  keep: $(CWR_NOT_SET)\nrelabel: ${1}:9090 $1\n";
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    let gz = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s' \"$T\" | gzip -c > {}", s(&cfg)))
        .env("T", template)
        .status()
        .unwrap();
    assert!(gz.success());
    let rx = Receiver::start();
    let url = rx.url("/-/reload");
    let mut cmd = std::process::Command::new(support::bin());
    cmd.args([
        APPLET,
        "--listen-address=127.0.0.1:0",
        &format!("--reload-url={url}"),
        &format!("--config-file={}", s(&cfg)),
        &format!("--config-envsubst-file={}", s(&out)),
        &format!("--watched-dir={}", s(&rules)),
        "--watch-interval=3m",
        "--delay-interval=100ms",
        "--retry-interval=100ms",
        "--log-format=logfmt",
        "--log-level=info",
        // Accepted as no-ops: an empty web config asks for nothing, and
        // there is no Go memory limit to set.
        "--web-config-file=",
        "--auto-gomemlimit-ratio=0.9",
    ])
    .env("POD_NAME", "prometheus-k8s-3")
    .env_remove("CWR_NOT_SET");
    let mut sc = Sidecar::spawn(&mut cmd);
    let admin = sc.admin_addr();
    // prometheus-config-reloader reloads once at start (no stored hash).
    let first = rx.next();
    assert_eq!(first.method, "POST");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "external_labels:\n  replica: prometheus-k8s-3\n  shard: 3\n  keep: $(CWR_NOT_SET)\nrelabel: ${1}:9090 $1\n"
    );
    assert_eq!(
        metric(
            admin,
            "reloader_config_environment_variable_expansion_errors"
        ),
        Some(1.0)
    );
    rule_vol.write(&[("alerts.yaml", "groups: [a]")]);
    rx.next();
    assert!(metric(admin, r#"reloader_info{method="http"}"#).is_some());
    sc.wait_for_log("reload succeeded");
}

#[test]
fn watch_interval_zero_renders_once_without_reloading() {
    let d = support::tempdir();
    let cfg = d.path().join("prometheus.yaml");
    let out = d.path().join("out.yaml");
    support::write(&cfg, "replica: $(HOSTNAME_FOR_CWR)\n");
    let rx = Receiver::start();
    let url = rx.url("/-/reload");
    let output = support::run_cmd(
        std::process::Command::new(support::bin())
            .args([
                APPLET,
                "--watch-interval=0",
                &format!("--reload-url={url}"),
                &format!("--config-file={}", s(&cfg)),
                &format!("--config-envsubst-file={}", s(&out)),
                "--listen-address=:0",
            ])
            .env("HOSTNAME_FOR_CWR", "r0"),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "replica: r0\n");
    assert!(rx.drain().is_empty(), "no reload in init-container mode");
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let d = support::tempdir();
    let dir = s(d.path());
    let cases: &[(&[&str], &str)] = &[
        (&["--exec", "true"], "--watch"),
        (&["--watch", dir], "nothing to do"),
        (
            &["--watch", dir, "--exec", "true", "--debounce", "soon"],
            "--debounce",
        ),
        (&["--watch", dir, "--signal", "HUP"], "--signal"),
        (
            &["--watch", dir, "--signal", "NOPE", "--pid-file", "/x"],
            "NOPE",
        ),
        (
            &["--watch", dir, "--process-name", "a", "--pid-file", "/x"],
            "--pid-file",
        ),
        (
            &["--watch", dir, "--reload-url", "not a url"],
            "--reload-url",
        ),
        (
            &[
                "--watch",
                dir,
                "--reload-url",
                "http://h/",
                "--reload-status",
                "abc",
            ],
            "--reload-status",
        ),
        (
            &[
                "--watch",
                dir,
                "--reload-url",
                "http://h/",
                "--reload-header",
                "nocolon",
            ],
            "--reload-header",
        ),
        (&["--watch", dir, "--render", "nocolon"], "--render"),
        (&["--watch", dir, "--exec", "'unclosed"], "--exec"),
        (
            &["--watch", dir, "--exec", "true", "--no-such-flag"],
            "--no-such-flag",
        ),
        (
            &["--watch", dir, "--process-cmdline", "(", "--signal", "HUP"],
            "--process-cmdline",
        ),
        (&["--config-envsubst-file", "/tmp/x"], "--config-file"),
        // TLS/auth for our own listener cannot be honoured: refused, not
        // silently served in plain HTTP.
        (
            &[
                "--watch",
                dir,
                "--exec",
                "true",
                "--web-config-file=/etc/web.yaml",
            ],
            "--web-config-file /etc/web.yaml",
        ),
        // configmap-reload's two required flags, named as its users know them.
        (&["-webhook-url=http://h/"], "--volume-dir"),
        (&["-volume-dir", dir], "--webhook-url"),
    ];
    for (args, needle) in cases {
        let mut full = vec![APPLET];
        full.extend_from_slice(args);
        full.push("--admin-addr=off");
        let out = run(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = support::run_cmd(
        std::process::Command::new(support::bin())
            .args([APPLET, "--watch", dir, "--exec", "true", "--admin-addr=off"])
            .env("CONFIG_WATCH_RELOAD_MAX_WAIT", "forever"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-wait"));
}

#[test]
fn env_vars_configure_every_flag() {
    let d = support::tempdir();
    let file = d.path().join("c");
    support::write(&file, "0");
    let rx = Receiver::start();
    let mut cmd = std::process::Command::new(support::bin());
    cmd.args([APPLET, "--admin-addr=127.0.0.1:0"])
        .env("CONFIG_WATCH_RELOAD_WATCH", s(&file))
        .env("CONFIG_WATCH_RELOAD_RELOAD_URL", rx.url("/env"))
        .env("CONFIG_WATCH_RELOAD_RELOAD_METHOD", "PUT")
        .env("CONFIG_WATCH_RELOAD_RELOAD_HEADER", "X-Reason: config")
        .env("CONFIG_WATCH_RELOAD_RELOAD_ON_START", "true");
    let mut sc = Sidecar::spawn(&mut cmd);
    sc.wait_for_log("watching");
    let req = rx.next();
    assert_eq!((req.method.as_str(), req.path.as_str()), ("PUT", "/env"));
    assert_eq!(req.header("x-reason"), Some("config"));
}

#[test]
fn bearer_token_file_is_read_at_each_request() {
    let d = support::tempdir();
    let file = d.path().join("c");
    support::write(&file, "0");
    let token = d.path().join("token");
    support::write(&token, "first\n");
    let rx = Receiver::start();
    let url = rx.url("/");
    let (_sc, _) = start(&[
        "--watch",
        s(&file),
        "--reload-url",
        &url,
        "--reload-bearer-token-file",
        s(&token),
    ]);
    std::fs::write(&file, "1").unwrap();
    assert_eq!(rx.next().header("authorization"), Some("Bearer first"));
    support::write(&token, "second");
    std::fs::write(&file, "2").unwrap();
    assert_eq!(rx.next().header("authorization"), Some("Bearer second"));
}

#[test]
fn recursive_watches_subdirectories() {
    let d = support::tempdir();
    let dir = d.path().join("rules");
    support::write(&dir.join("team-a/alerts.yaml"), "0");
    let rx = Receiver::start();
    let url = rx.url("/");
    let (_sc, _) = start(&["--watch", s(&dir), "--recursive", "--reload-url", &url]);
    std::fs::write(dir.join("team-a/alerts.yaml"), "1").unwrap();
    rx.next();
    support::write(&dir.join("team-b/new/alerts.yaml"), "x");
    rx.next();
    std::fs::write(dir.join("team-b/new/alerts.yaml"), "y").unwrap();
    rx.next();
}

/// thanos' `TestReloader_DirectoriesApply` steps, plus its
/// `…BasedOnWatchInterval` case (a symlink target outside the watched
/// directories), which here needs no poll: link targets are watched too.
#[test]
fn symlinked_directories_and_link_targets_outside() {
    let d = support::tempdir();
    let watched = d.path().join("watched");
    let (rules_a, rules_b, ext) = (
        d.path().join("rules-a"),
        d.path().join("rules-b"),
        d.path().join("ext"),
    );
    support::write(&rules_a.join("r.yaml"), "a0");
    support::write(&rules_b.join("r.yaml"), "b0");
    support::write(&ext.join("x.yaml"), "x0");
    std::fs::create_dir_all(&watched).unwrap();
    std::os::unix::fs::symlink(&rules_a, watched.join("rule-dir")).unwrap();
    std::os::unix::fs::symlink(ext.join("x.yaml"), watched.join("x.yaml")).unwrap();
    let rx = Receiver::start();
    let url = rx.url("/");
    let rule_dir = watched.join("rule-dir");
    let (_sc, admin) = start(&[
        "--watch",
        s(&watched),
        "--watch",
        s(&rule_dir),
        "--reload-url",
        &url,
    ]);

    support::write(&watched.join("new.yaml"), "n0"); // create a file
    rx.next();
    replace(&watched.join("new.yaml"), "n1"); // edit a file
    rx.next();
    std::fs::write(rules_a.join("r.yaml"), "a1").unwrap(); // edit through the linked dir
    rx.next();
    let tmp_link = watched.join(".rule-dir.tmp");
    std::os::unix::fs::symlink(&rules_b, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &rule_dir).unwrap(); // repoint the symlink
    rx.next();
    std::fs::write(rules_b.join("r.yaml"), "b1").unwrap(); // edit in the new target
    rx.next();
    std::fs::write(ext.join("x.yaml"), "x1").unwrap(); // a linked file's target, outside
    rx.next();
    support::wait_until("six successes", || successes(admin) == 6.0);
    assert_eq!(
        metric(admin, "config_watch_reload_watch_errors_total"),
        Some(0.0)
    );
}

#[test]
fn warns_when_a_watched_path_is_a_subpath_mount() {
    if !support::require_root("bind mounts in a private mount namespace") {
        return;
    }
    let d = support::tempdir();
    // The kubelet bind-mounts the resolved file of a subPath volume mount.
    let mut vol = Volume::new(&d.path().join("volume"));
    vol.write(&[("app.yaml", "v: 1")]);
    let source = vol.dir.join("app.yaml").canonicalize().unwrap();
    let target = d.path().join("etc/app.yaml");
    support::write(&target, "");
    let script = format!(
        "mount --bind '{}' '{}' && exec '{}' {APPLET} --once --watch '{}' --exec true --admin-addr=off",
        s(&source),
        s(&target),
        support::bin().display(),
        s(&target)
    );
    let out = support::run_cmd(std::process::Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("subPath"), "{err}");
    // The whole volume mounted as a directory gets no warning.
    let out = run(&[
        APPLET,
        "--once",
        "--watch",
        s(&vol.dir),
        "--exec",
        "true",
        "--admin-addr=off",
    ]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("subPath"));
}

#[test]
fn configmap_and_secret_swapped_together_give_one_reload() {
    let d = support::tempdir();
    let mut config = Volume::new(&d.path().join("config"));
    let mut secret = Volume::new(&d.path().join("secret"));
    config.write(&[("app.yaml", "password_file: /secret/pw")]);
    secret.write(&[("pw", "one")]);
    let rx = Receiver::start();
    let url = rx.url("/");
    let (_sc, admin) = start(&[
        "--watch",
        s(&config.dir),
        "--watch",
        s(&secret.dir),
        "--reload-url",
        &url,
        "--debounce",
        "2s",
    ]);
    config.write(&[("app.yaml", "password_file: /secret/pw2")]);
    secret.write(&[("pw2", "two")]);
    rx.next();
    assert!(
        rx.next_within(Duration::from_secs(3)).is_none(),
        "one reload for both volumes"
    );
    assert_eq!(
        metric(admin, "config_watch_reload_changes_total"),
        Some(1.0)
    );
}

/// A fake Prometheus `/api/v1/status/runtimeinfo` for a `HupTarget`: each
/// SIGHUP "reloads" the config file, which fails while it contains `bad`;
/// `lastConfigTime` moves on successful reloads only, as Prometheus does.
fn fake_runtimeinfo(target: &HupTarget, config: std::path::PathBuf) -> Receiver {
    let hups = target.hups.clone();
    let (mut seen, mut success, mut time) = (0, true, 0);
    Receiver::with(move |_| {
        let count = std::fs::read_to_string(&hups)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if count > seen {
            seen = count;
            success = !std::fs::read_to_string(&config)
                .unwrap_or_default()
                .contains("bad");
            if success {
                time += 1;
            }
        }
        let body = format!(
            r#"{{"status":"success","data":{{"reloadConfigSuccess":{success},"lastConfigTime":"2026-01-01T00:00:{time:02}Z"}}}}"#
        );
        (200, body)
    })
}

#[test]
fn prometheus_signal_mode_confirms_through_runtimeinfo() {
    let d = support::tempdir();
    let target = HupTarget::start(&d.path().join("app"));
    let mut vol = Volume::new(&d.path().join("config"));
    vol.write(&[("prometheus.yml", "a")]);
    let info = fake_runtimeinfo(&target, vol.dir.join("prometheus.yml"));
    let name = format!("--process-executable-name={}", target.name);
    let info_url = format!(
        "--runtimeinfo-url={}",
        info.url("/api/v1/status/runtimeinfo")
    );
    let (mut sc, admin) = start(&[
        "--watched-dir",
        s(&vol.dir),
        "--reload-method=signal",
        &name,
        &info_url,
        "--reload-timeout=3s",
        "--retry-interval=100ms",
        "--retry-max-interval=500ms",
    ]);
    assert!(metric(admin, r#"reloader_info{method="signal"}"#).is_some());
    vol.write(&[("prometheus.yml", "b")]);
    sc.wait_for_log("reload succeeded");
    assert_eq!(target.count(), 1);
    // Prometheus rejects the config: the signal "worked", the reload did not.
    vol.write(&[("prometheus.yml", "bad")]);
    sc.wait_for_log("reloading the configuration failed");
    assert_eq!(metric(admin, "reloader_last_reload_successful"), Some(0.0));
    // Fixed: confirmed again.
    vol.write(&[("prometheus.yml", "c")]);
    sc.wait_for_log("reload succeeded");
    assert_eq!(metric(admin, "reloader_last_reload_successful"), Some(1.0));
}

#[test]
fn prometheus_signal_mode_without_confirmation() {
    let d = support::tempdir();
    let target = HupTarget::start(&d.path().join("app"));
    let mut vol = Volume::new(&d.path().join("config"));
    vol.write(&[("prometheus.yml", "a")]);
    let name = format!("--process-executable-name={}", target.name);
    let (_sc, _) = start(&[
        "--watched-dir",
        s(&vol.dir),
        "--reload-method=signal",
        &name,
        "--runtimeinfo-url=",
    ]);
    vol.write(&[("prometheus.yml", "b")]);
    support::wait_until("SIGHUP", || target.count() == 1);
}

#[test]
fn missing_config_file_fails_like_prometheus_config_reloader() {
    let d = support::tempdir();
    let config = format!("--config-file={}", s(&d.path().join("missing.yaml")));
    let envsubst = format!("--config-envsubst-file={}", s(&d.path().join("out.yaml")));
    let rx = Receiver::start();
    let url = format!("--reload-url={}", rx.url("/-/reload"));
    // With and without rendering, watching or in init-container mode: the
    // process ends with 1 and Go's wording (thanos' ConfigApply test matches
    // the suffix), and no reload is sent.
    for extra in [
        &[envsubst.as_str()][..],
        &[],
        &["--watch-interval=0"],
        &[envsubst.as_str(), "--watch-interval=0"],
    ] {
        let mut args = vec![APPLET, config.as_str(), url.as_str(), "--admin-addr=off"];
        args.extend_from_slice(extra);
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(
            err.trim_end()
                .ends_with("missing.yaml: no such file or directory"),
            "{extra:?}: {err}"
        );
    }
    assert!(rx.drain().is_empty());
}

/// The app of thanos' reloader tests: every second request fails (503), so
/// each reload needs a retry.
fn failing_every_second_request() -> Receiver {
    let mut requests = 0;
    Receiver::with(move |_| {
        requests += 1;
        match requests % 2 {
            1 => (200, String::new()),
            _ => (503, "every second request fails".into()),
        }
    })
}

/// thanos' test layout: `in/cfg.yaml.tmpl` rendered into `out/cfg.yaml`.
fn thanos_config_paths(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let output = dir.join("out/cfg.yaml");
    std::fs::create_dir_all(output.parent().unwrap()).unwrap();
    (dir.join("in/cfg.yaml.tmpl"), output)
}

/// thanos' `TestReloader_DirectoriesApply`, through the binary with
/// prometheus-config-reloader's flags: two watched directories (one a
/// symlink to a directory elsewhere), an app that fails every second
/// request, and five steps (create, rename over, move a symlink in, repoint
/// it through a symlink chain, edit inside the symlinked directory). Each
/// step is one reload; with the retries that makes thanos' counts: 9
/// attempts, 4 failed, 5 successful, no watch errors.
#[test]
fn thanos_directories_apply() {
    use std::os::unix::fs::symlink;
    let d = support::tempdir();
    let (dir, dir2, tmp) = (
        d.path().join("dir"),
        d.path().join("dir2"),
        d.path().join("tmp"),
    );
    for p in [&dir, &dir2.join("rule-dir"), &tmp] {
        std::fs::create_dir_all(p).unwrap();
    }
    for (name, content) in [
        ("rule1", "rule1-changed"),
        ("rule3", "rule3-changed"),
        ("rule4", "rule4-changed"),
    ] {
        support::write(&tmp.join(format!("{name}.yaml")), content);
    }
    symlink(dir2.join("rule-dir"), dir.join("rule-dir")).unwrap();
    support::write(&dir.join("rule1.yaml"), "rule");
    support::write(&dir2.join("rule3-source.yaml"), "rule3");
    symlink(dir2.join("rule3-source.yaml"), dir2.join("rule3-001.yaml")).unwrap();
    support::write(&dir2.join("rule-dir/rule4.yaml"), "rule4");

    let rx = failing_every_second_request();
    let (_sc, admin) = start(&[
        &format!("--watched-dir={}", s(&dir)),
        &format!("--watched-dir={}", s(&dir.join("rule-dir"))),
        // A base URL without a path, as in thanos' test.
        &format!("--reload-url=http://{}", rx.addr),
        "--watch-interval=9999h",
        "--retry-interval=100ms",
    ]);
    let steps: [&dyn Fn(); 5] = [
        // Written outside and moved in, so no snapshot sees it half-written.
        &|| {
            support::write(&tmp.join("rule2.yaml"), "rule2");
            std::fs::rename(tmp.join("rule2.yaml"), dir.join("rule2.yaml")).unwrap();
        },
        &|| std::fs::rename(tmp.join("rule1.yaml"), dir.join("rule1.yaml")).unwrap(),
        &|| {
            symlink(dir2.join("rule3-001.yaml"), dir2.join("rule3.yaml")).unwrap();
            std::fs::rename(dir2.join("rule3.yaml"), dir.join("rule3.yaml")).unwrap();
        },
        &|| {
            std::fs::rename(tmp.join("rule3.yaml"), dir2.join("rule3-source.yaml")).unwrap();
            symlink(dir2.join("rule3-source.yaml"), dir2.join("rule3-002.yaml")).unwrap();
            symlink(dir2.join("rule3-002.yaml"), dir2.join("rule3.yaml")).unwrap();
            std::fs::rename(dir2.join("rule3.yaml"), dir.join("rule3.yaml")).unwrap();
            std::fs::remove_file(dir2.join("rule3-001.yaml")).unwrap();
        },
        &|| std::fs::rename(tmp.join("rule4.yaml"), dir2.join("rule-dir/rule4.yaml")).unwrap(),
    ];
    for (i, step) in steps.iter().enumerate() {
        step();
        support::wait_until(&format!("reload after step {i}"), || {
            successes(admin) == (i + 1) as f64
        });
    }
    assert_eq!(metric(admin, "reloader_reloads_total"), Some(9.0));
    assert_eq!(metric(admin, "reloader_reloads_failed_total"), Some(4.0));
    assert_eq!(metric(admin, "reloader_watch_errors_total"), Some(0.0));
    assert_eq!(rx.drain().len(), 9);
}

/// thanos' `TestReloader_ConfigApply` with the thanos sidecar's flag names
/// and `--prometheus.url` (its `ReloadURLFromBase`: requests go to
/// BASE/-/reload): reload at start, a change re-renders and reloads through a
/// failing request, and a config that disappears fails the apply (counted)
/// while watching goes on.
#[test]
fn thanos_config_apply_with_sidecar_flags() {
    let d = support::tempdir();
    let (input, output) = thanos_config_paths(d.path());
    support::write(&input, "config:\n  a: 1\n  b: $(CWR_THANOS_ENV)\n");
    let rx = failing_every_second_request();
    let mut cmd = std::process::Command::new(support::bin());
    cmd.args([
        APPLET,
        "--admin-addr=127.0.0.1:0",
        &format!("--prometheus.url=http://{}", rx.addr),
        &format!("--reloader.config-file={}", s(&input)),
        &format!("--reloader.config-envsubst-file={}", s(&output)),
        "--reloader.watch-interval=9999h",
        "--reloader.retry-interval=100ms",
    ])
    .env("CWR_THANOS_ENV", "2");
    let mut sc = Sidecar::spawn(&mut cmd);
    let admin = sc.admin_addr();
    assert_eq!(rx.next().path, "/-/reload");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "config:\n  a: 1\n  b: 2\n"
    );
    replace(&input, "config:\n  a: changed\n  b: $(CWR_THANOS_ENV)\n");
    assert_eq!(rx.next().path, "/-/reload");
    assert_eq!(rx.next().path, "/-/reload");
    support::wait_until("second reload", || successes(admin) == 2.0);
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "config:\n  a: changed\n  b: 2\n"
    );
    std::fs::remove_file(&input).unwrap();
    sc.wait_for_log("no such file or directory");
    assert_eq!(
        metric(admin, "reloader_config_apply_operations_failed_total"),
        Some(1.0)
    );
    // Still watching: the config comes back and is applied.
    replace(&input, "config:\n  a: back\n");
    rx.next();
    support::wait_until("third reload", || successes(admin) == 3.0);
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "config:\n  a: back\n"
    );
}

/// thanos' `TestReloader_DirectoriesApplyBasedOnWatchInterval`: a file is
/// linked into a watched directory from one outside, then that outside
/// target is edited. Exactly two reloads, and the periodic re-hash
/// (`--watch-interval=1s`) adds none while nothing changes.
#[test]
fn thanos_directories_apply_based_on_watch_interval() {
    use std::os::unix::fs::symlink;
    let d = support::tempdir();
    let (dir, dir2) = (d.path().join("dir"), d.path().join("dir2"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(dir2.join("rule-dir")).unwrap();
    symlink(dir2.join("rule-dir"), dir.join("rule-dir")).unwrap();
    support::write(&dir.join("rule1.yaml"), "rule");
    support::write(&dir.join("rule2.yaml"), "rule2");
    support::write(&dir2.join("rule3-source.yaml"), "rule3");
    symlink(dir2.join("rule3-source.yaml"), dir2.join("rule3-001.yaml")).unwrap();
    support::write(&dir2.join("rule-dir/rule4.yaml"), "rule4");
    let rx = Receiver::start();
    let (_sc, admin) = start(&[
        &format!("--watched-dir={}", s(&dir)),
        &format!("--watched-dir={}", s(&dir.join("rule-dir"))),
        &format!("--reload-url=http://{}", rx.addr),
        "--watch-interval=1s",
        "--retry-interval=9999h",
    ]);
    symlink(dir2.join("rule3-001.yaml"), dir2.join("rule3.yaml")).unwrap();
    std::fs::rename(dir2.join("rule3.yaml"), dir.join("rule3.yaml")).unwrap();
    rx.next();
    // Replaced in one step, so no snapshot sees it half-written.
    support::write(&d.path().join("new"), "rule3-changed");
    std::fs::rename(d.path().join("new"), dir2.join("rule3-source.yaml")).unwrap();
    rx.next();
    support::wait_until("second reload counted", || successes(admin) == 2.0);
    let applies = || metric(admin, "reloader_config_apply_operations_total").unwrap_or(0.0);
    let after = applies();
    support::wait_until("two more periodic re-hashes", || applies() >= after + 2.0);
    assert!(rx.drain().is_empty(), "no reload without a change");
    assert_eq!(successes(admin), 2.0);
}

/// thanos' `TestReloader_ConfigRollback`: the app refuses (503) while the
/// rendered config is the faulty one; going back to the good config, whose
/// hash equals the last successful reload's, reloads again.
#[test]
fn thanos_config_rollback() {
    let d = support::tempdir();
    let (input, output) = thanos_config_paths(d.path());
    let (correct, faulty) = ("config:\n  a: 1\n", "faulty_config:\n  a: 1\n");
    support::write(&input, correct);
    let out = output.clone();
    let rx = Receiver::with(move |_| match std::fs::read_to_string(&out) {
        Ok(c) if c == faulty => (503, "bad config".into()),
        _ => (200, String::new()),
    });
    let mut cmd = std::process::Command::new(support::bin());
    cmd.args([
        APPLET,
        "--listen-address=127.0.0.1:0",
        &format!("--reload-url=http://{}", rx.addr),
        &format!("--config-file={}", s(&input)),
        &format!("--config-envsubst-file={}", s(&output)),
        "--watch-interval=10s",
        "--retry-interval=100ms",
    ]);
    let mut sc = Sidecar::spawn(&mut cmd);
    let admin = sc.admin_addr();
    support::wait_until("initial reload", || successes(admin) == 1.0);
    replace(&input, faulty);
    support::wait_until("faulty config refused", || {
        metric(admin, "reloader_reloads_failed_total").unwrap_or(0.0) >= 1.0
    });
    assert_eq!(std::fs::read_to_string(&output).unwrap(), faulty);
    replace(&input, correct);
    support::wait_until("rollback reloaded", || successes(admin) == 2.0);
    assert_eq!(std::fs::read_to_string(&output).unwrap(), correct);
}

/// A rendered output deleted or edited by someone else is written again at
/// the next re-hash (prometheus-config-reloader renders at every apply),
/// without a reload: the content the app should read did not change. An
/// unset variable kept literally is reported when the output is written,
/// not at every re-hash that finds it intact.
#[test]
fn damaged_render_output_is_restored_without_reloading() {
    let d = support::tempdir();
    let src = d.path().join("in/app.tmpl");
    let dst = d.path().join("out/app.yaml");
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    support::write(&src, "a: $(CWR_RESTORE)\nb: $(CWR_NEVER_SET)\n");
    let rendered = "a: 1\nb: $(CWR_NEVER_SET)\n";
    let rx = Receiver::start();
    let mut cmd = std::process::Command::new(support::bin());
    cmd.args([
        APPLET,
        "--admin-addr=127.0.0.1:0",
        &format!("--config-file={}", s(&src)),
        &format!("--config-envsubst-file={}", s(&dst)),
        &format!("--reload-url={}", rx.url("/")),
        "--watch-interval=200ms",
    ])
    .env("CWR_RESTORE", "1")
    .env_remove("CWR_NEVER_SET");
    let mut sc = Sidecar::spawn(&mut cmd);
    let admin = sc.admin_addr();
    rx.next(); // prometheus-config-reloader's reload at start
    let restored = || std::fs::read_to_string(&dst).ok().as_deref() == Some(rendered);
    std::fs::remove_file(&dst).unwrap();
    support::wait_until("output restored", restored);
    replace(&dst, "edited\n");
    support::wait_until("output restored again", restored);
    let applies = || metric(admin, "reloader_config_apply_operations_total").unwrap_or(0.0);
    let after = applies();
    support::wait_until("two more re-hashes", || applies() >= after + 2.0);
    assert!(rx.drain().is_empty(), "no reload for an unchanged config");
    let warnings = sc
        .stderr()
        .matches("unset variables kept literally")
        .count();
    assert_eq!(warnings, 3, "at start and at each restore: {}", sc.stderr());
}

/// prometheus-config-reloader's client skips TLS verification (its
/// `TestCreateHTTPClient`), so a Prometheus with a self-signed certificate
/// gets its reloads: the same with its flags here. Without them the
/// certificate is verified, unless --reload-insecure-skip-verify.
#[test]
fn https_reload_url_with_a_self_signed_certificate() {
    let d = support::tempdir();
    let Some(app) = tls_app::TlsApp::start(d.path()) else {
        return;
    };
    let url = format!("--reload-url=https://127.0.0.1:{}/-/reload", app.port);
    let config = d.path().join("prometheus.yaml");
    support::write(&config, "global: {}\n");
    let config_flag = format!("--config-file={}", s(&config));
    // (lighttpd serves the endpoint as a file, so GET.)
    let (mut sc, _) = start(&[
        "--watch",
        s(&config),
        &url,
        "--reload-method=GET",
        "--reload-on-start",
        "--webhook-retries=1",
    ]);
    sc.wait_for_log("giving up");
    assert!(sc.stderr().contains("certificate"), "{}", sc.stderr());
    for args in [
        &[config_flag.as_str(), "--reload-method=GET"][..],
        &[
            "--watch",
            s(&config),
            "--reload-method=GET",
            "--reload-on-start",
            "--reload-insecure-skip-verify",
        ],
    ] {
        let mut all = vec![url.as_str()];
        all.extend_from_slice(args);
        let (_sc, admin) = start(&all);
        support::wait_until("reload over TLS", || successes(admin) == 1.0);
    }
}

/// `--check` runs the checks alone: the flags and everything they name,
/// without binding the admin port (held here by someone else), watching,
/// rendering, signalling or sending a reload.
#[test]
fn check_validates_files_urls_and_commands_without_starting() {
    let d = support::tempdir();
    let vol = d.path().join("config");
    support::write(&vol.join("app.yaml"), "v: 1");
    let src = d.path().join("app.tmpl");
    support::write(&src, "home: ${HOME}");
    let dst = d.path().join("app.out");
    let render = format!("{}:{}", s(&src), s(&dst));
    let pid_file = d.path().join("app.pid");
    support::write(&pid_file, &format!("{}\n", std::process::id()));
    let rx = Receiver::start();
    let url = rx.url("/-/reload");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = format!("--admin-addr={}", held.local_addr().unwrap());
    let good = [
        ("--watch", s(&vol)),
        ("--render", render.as_str()),
        ("--reload-url", url.as_str()),
        ("--pid-file", s(&pid_file)),
        ("--validate-cmd", "true"),
        ("--exec", "sh -c 'exit 0'"),
    ];
    // The good flags, each replaced by a bad one of the same name.
    let check = |bad: &[&str]| {
        let mut args = vec![APPLET, "--check", admin.as_str(), "--reload-on-start"];
        for (flag, value) in good {
            if bad.first() != Some(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(bad);
        let out = run(&args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("configuration is valid"), "{err}");
    assert!(!dst.exists(), "--check rendered {}", dst.display());
    assert!(rx.drain().is_empty(), "--check sent a reload");

    // A watched path that does not exist yet is waited for: said, not an error.
    let late = d.path().join("late");
    let (code, err) = check(&["--watch", s(&vol), "--watch", s(&late)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("does not exist yet"), "{err}");

    let empty_dir = d.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let unset = d.path().join("unset.tmpl");
    support::write(&unset, "a: ${CWR_SURELY_UNSET}");
    let garbage = d.path().join("garbage.pid");
    support::write(&garbage, "not a pid");
    let a_file = vol.join("app.yaml");
    let below_a_file = a_file.join("x");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--exec".into(), "surely-not-a-program --flag".into()],
            "--exec: surely-not-a-program: command not found".into(),
        ),
        (
            vec!["--validate-cmd".into(), s(&src).into()],
            format!("--validate-cmd: {}: not an executable file", s(&src)),
        ),
        (
            vec!["--reload-url".into(), "ftp://u:secret@h/".into()],
            "--reload-url \"ftp://u:xxxxx@h/\": expected an http:// or https:// URL".into(),
        ),
        (
            vec!["--render".into(), format!("{}:{}", s(&late), s(&dst))],
            format!("--render {}: no such file or directory", s(&late)),
        ),
        (
            vec!["--render".into(), format!("{}:{}", s(&unset), s(&dst))],
            "CWR_SURELY_UNSET".into(),
        ),
        (
            vec![
                "--render".into(),
                format!("{}:{}", s(&src), s(&late.join("out"))),
            ],
            format!("--render {}", s(&late.join("out"))),
        ),
        (
            vec!["--render".into(), format!("{}:{}", s(&src), s(&empty_dir))],
            format!("--render {}: is a directory", s(&empty_dir)),
        ),
        (
            vec!["--watch".into(), s(&below_a_file).into()],
            format!("--watch {}: Not a directory", s(&below_a_file)),
        ),
        (
            vec!["--pid-file".into(), s(&garbage).into()],
            format!("--pid-file {}: holds \"not a pid\", not a pid", s(&garbage)),
        ),
        (
            vec!["--reload-bearer-token-file".into(), s(&empty_dir).into()],
            format!(
                "--reload-bearer-token-file {}: is a directory",
                s(&empty_dir)
            ),
        ),
    ];
    for (extra, needle) in &cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (code, err) = check(&extra);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert!(
            err.contains(needle.as_str()),
            "{extra:?}: want {needle:?} in {err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }
    assert!(rx.drain().is_empty(), "--check sent a reload");
}

/// What a start tolerates (a missing `--config-file` ends the process with
/// prometheus-config-reloader's exit 1) `--check` reports as a configuration
/// error: exit 2 naming the flag. `SIDECAR_CHECK=true` is `--check`.
#[test]
fn check_reports_what_a_start_finds_later() {
    let d = support::tempdir();
    let missing = d.path().join("missing.yaml");
    let config = format!("--config-file={}", s(&missing));
    let args = [APPLET, config.as_str(), "--admin-addr=off"];
    let out = support::run_cmd(
        std::process::Command::new(support::bin())
            .args(args)
            .env("SIDECAR_CHECK", "true"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "--config-file {}: no such file or directory",
            s(&missing)
        )),
        "{err}"
    );
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1));

    // Runtime info and the Prometheus base URL are requested later, the
    // process looked for later: what is wrong with them is wrong now.
    let dir = s(d.path());
    for (flag, needle) in [
        ("--runtimeinfo-url=ftp://h/", "--runtimeinfo-url"),
        ("--prometheus.url=file:///x", "--prometheus.url"),
        ("--process-name=", "--process-name: empty"),
    ] {
        let out = run(&[
            APPLET,
            "--check",
            "--watched-dir",
            dir,
            "--reload-method=signal",
            flag,
            "--admin-addr=off",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains(needle), "{flag}: {err}");
    }
}
