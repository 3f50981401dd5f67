//! examples/: every demo's smoke mode runs, and every manifest is a valid,
//! restricted, native-sidecar Pod with requests and one image name.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

const IMAGE: &str = "ghcr.io/sidecar-dev/sidecar:0.2.0";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn manifests() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    assert!(out.len() >= 5, "no manifests found");
    out
}

/// `examples/demo.sh MODE --smoke` for every scenario, at once: each
/// asserts its own effect (the page, the reloaded value, the shipped lines)
/// and exits 0.
#[test]
fn every_demo_passes_its_smoke_mode() {
    if !support::require_peer("git") || !support::require_peer("python3") {
        return;
    }
    let mut modes = vec!["static", "config", "logs"];
    // The mesh demo is examples/mesh-demo.sh, which `demo.sh mesh` runs.
    if examples().join("mesh-demo.sh").exists() {
        modes.push("mesh");
    }
    let runs: Vec<_> = modes
        .into_iter()
        .map(|mode| {
            std::thread::spawn(move || {
                let out = support::run_cmd(
                    Command::new(examples().join("demo.sh"))
                        .args([mode, "--smoke"])
                        .env("SIDECAR_BIN", support::bin()),
                );
                (mode, out)
            })
        })
        .collect();
    for run in runs {
        let (mode, out) = run.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "demo.sh {mode} --smoke:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // It tells the user where the admin server's metrics are.
        assert!(stdout.contains("/metrics"), "{mode}: {stdout}");
    }
}

#[test]
fn manifests_pass_kubernetes_validate_strict() {
    // .ci/run installs it from PyPI.
    if !support::require_peer("kubernetes-validate") {
        return;
    }
    let out = support::run_cmd(
        Command::new("kubernetes-validate")
            .arg("--strict")
            .args(manifests()),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("ERROR") && !text.contains("WARN"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pod specs in a manifest, with the file name.
fn pods() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in manifests() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let doc = <Value as serde::Deserialize>::deserialize(doc).unwrap();
            let spec = match doc["kind"].as_str() {
                Some("Pod") => doc["spec"].clone(),
                Some("Deployment" | "DaemonSet" | "StatefulSet" | "Job") => {
                    doc["spec"]["template"]["spec"].clone()
                }
                _ => continue,
            };
            out.push((name.clone(), spec));
        }
    }
    out
}

fn containers(spec: &Value) -> Vec<(&Value, bool)> {
    let mut out = Vec::new();
    for (key, init) in [("initContainers", true), ("containers", false)] {
        if let Some(seq) = spec[key].as_sequence() {
            out.extend(seq.iter().map(|c| (c, init)));
        }
    }
    out
}

/// The iptables init container of the transparent proxy needs NET_ADMIN and
/// root: the one exception to the restricted profile.
fn is_iptables_init(c: &Value) -> bool {
    c["image"].as_str().is_some_and(|i| i.contains("iptables"))
}

fn is_sidecar(c: &Value) -> bool {
    c["image"].as_str().is_some_and(|i| i.contains("sidecar"))
}

/// Pod Security "restricted": non-root, no privilege escalation, every
/// capability dropped, RuntimeDefault seccomp; plus requests everywhere,
/// one image name, and long-running sidecars in native form.
#[test]
fn manifests_are_restricted_native_sidecars_with_requests() {
    let mut wrong = Vec::new();
    let pods = pods();
    assert!(pods.len() >= 5);
    for (file, spec) in &pods {
        let pod_sc = &spec["securityContext"];
        for (c, init) in containers(spec) {
            let name = format!("{file}: {}", c["name"].as_str().unwrap_or("?"));
            let sc = &c["securityContext"];
            let either = |key: &str| {
                if sc[key].is_null() {
                    pod_sc[key].clone()
                } else {
                    sc[key].clone()
                }
            };
            if c["resources"]["requests"].is_null() {
                wrong.push(format!("{name}: no resource requests"));
            }
            if is_sidecar(c) {
                if c["image"].as_str() != Some(IMAGE) {
                    wrong.push(format!("{name}: image is not {IMAGE}"));
                }
                let args = format!("{:?}{:?}", c["args"], c["command"]);
                let one_shot = args.contains("--one-time");
                // static-serve can be the Pod's app itself (its only container).
                let app = !init
                    && spec["containers"]
                        .as_sequence()
                        .is_some_and(|c| c.len() == 1);
                let native = init && c["restartPolicy"].as_str() == Some("Always");
                if !one_shot && !app && !native {
                    wrong.push(format!(
                        "{name}: not a native sidecar (initContainers, restartPolicy: Always)"
                    ));
                }
            }
            if is_iptables_init(c) {
                continue;
            }
            if either("runAsNonRoot").as_bool() != Some(true) {
                wrong.push(format!("{name}: runAsNonRoot is not true"));
            }
            if either("runAsUser").as_u64() == Some(0) {
                wrong.push(format!("{name}: runs as uid 0"));
            }
            if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
                wrong.push(format!("{name}: allowPrivilegeEscalation is not false"));
            }
            let drops = sc["capabilities"]["drop"].as_sequence();
            if !drops.is_some_and(|d| d.iter().any(|c| c.as_str() == Some("ALL"))) {
                wrong.push(format!("{name}: capabilities do not drop ALL"));
            }
            let adds = sc["capabilities"]["add"]
                .as_sequence()
                .cloned()
                .unwrap_or_default();
            if adds.iter().any(|c| c.as_str() != Some("NET_BIND_SERVICE")) {
                wrong.push(format!("{name}: adds capabilities"));
            }
            let seccomp = either("seccompProfile");
            if !matches!(
                seccomp["type"].as_str(),
                Some("RuntimeDefault" | "Localhost")
            ) {
                wrong.push(format!("{name}: no RuntimeDefault seccomp profile"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// git-sync holds the app until its first sync: a native sidecar with a
/// startup probe on /readyz (or a `--one-time` init container), said so in a
/// comment.
#[test]
fn git_sync_examples_hold_the_app_until_the_first_sync() {
    let mut seen = 0;
    for (file, spec) in pods() {
        for (c, init) in containers(&spec) {
            let args = format!("{:?}{:?}", c["args"], c["command"]);
            if !is_sidecar(c) || !args.contains("git-sync") {
                continue;
            }
            seen += 1;
            let probe = c["startupProbe"]["httpGet"]["path"].as_str() == Some("/readyz");
            let one_time = args.contains("--one-time");
            assert!(
                init && (probe || one_time),
                "{file}: git-sync does not hold the app"
            );
            let text = std::fs::read_to_string(examples().join(&file)).unwrap();
            assert!(text.contains("first sync"), "{file}: no comment on why");
        }
    }
    assert!(seen >= 2);
}

/// Every command in README.md's code blocks is run here, or is one the
/// tests above run (the demo) or CI itself runs (`.ci/run`).
#[test]
fn every_readme_command_is_run_by_a_test() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        // The first lines are an indented code block; so are sh fences.
        let code = if in_sh {
            Some(line)
        } else {
            line.strip_prefix("    ")
        };
        if let Some(code) = code {
            let cmd = code.split(" #").next().unwrap().trim();
            if !cmd.is_empty() && !cmd.starts_with('-') && !cmd.starts_with('|') {
                commands.push(cmd.to_string());
            }
        }
    }
    assert!(commands.len() >= 5, "{commands:?}");
    let home = support::tempdir();
    std::fs::create_dir_all(home.path().join(".local/share/bash-completion/completions")).unwrap();
    let mut ran = 0;
    for cmd in &commands {
        if cmd.starts_with("./examples/demo.sh ") || cmd.starts_with("examples/demo.sh ") {
            continue; // every_demo_passes_its_smoke_mode
        }
        if cmd == "./.ci/run" {
            continue; // CI runs it; it runs this test
        }
        assert!(
            cmd.starts_with("sidecar "),
            "README command no test runs: {cmd}"
        );
        if cmd.contains("man -l") && !support::require_peer("man") {
            continue;
        }
        // `sidecar` is the binary under test; `man` renders without a pager.
        let script = format!("sidecar() {{ \"$SIDECAR_BIN\" \"$@\"; }}\nset -eo pipefail\n{cmd}\n");
        let out = support::run_cmd(
            Command::new("bash")
                .args(["-c", &script])
                .current_dir(home.path())
                .env("SIDECAR_BIN", support::bin())
                .env("HOME", home.path())
                .env("MANPAGER", "cat")
                .env("PAGER", "cat"),
        );
        assert!(
            out.status.success(),
            "{cmd}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 5);
    let completions = home
        .path()
        .join(".local/share/bash-completion/completions/sidecar");
    assert!(std::fs::read_to_string(completions)
        .unwrap()
        .contains("_sidecar"));
}

/// The image stays one static file on `scratch`, run as a non-root user,
/// and its build context leaves out target/ (hundreds of MB) and .git.
#[test]
fn dockerfile_builds_a_static_non_root_scratch_image() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(last_stage.starts_with("scratch"), "{last_stage}");
    let user = last_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line in the final stage");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "USER {user}"
    );
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    for excluded in ["target/", ".git"] {
        assert!(
            ignore.lines().any(|l| l == excluded),
            ".dockerignore lacks {excluded}"
        );
    }
}

/// scripts/fresh-machine-check, the README's proof that its two commands set
/// up a fresh Debian machine, takes an hour and root: CI only parses it.
#[test]
fn fresh_machine_check_parses() {
    let out = support::run_cmd(
        Command::new("bash")
            .args(["-n", "scripts/fresh-machine-check"])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
