//! The Docker image, without Docker (no engine here): the Dockerfile and the compose
//! file are read and checked against the code (ports, user, volume, health check), and
//! the image's runtime conditions are reproduced: the binary started as an unprivileged
//! user in an empty working directory with the image's environment.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

/// The runtime stage of the Dockerfile: its `ENV`, `EXPOSE`, `WORKDIR`, `VOLUME`, `USER`
/// and `HEALTHCHECK` lines.
struct Image {
    env: BTreeMap<String, String>,
    expose: Vec<u16>,
    workdir: String,
    volume: String,
    user: String,
    healthcheck: String,
}

/// The Dockerfile's last stage (what the image runs), lines continued with `\` joined.
fn runtime_stage() -> String {
    let text = std::fs::read_to_string("Dockerfile").unwrap();
    text.rsplit("\nFROM ").next().unwrap().replace("\\\n", " ")
}

fn image() -> Image {
    let runtime = runtime_stage();
    let mut image = Image {
        env: BTreeMap::new(),
        expose: Vec::new(),
        workdir: String::new(),
        volume: String::new(),
        user: String::new(),
        healthcheck: String::new(),
    };
    for line in runtime.lines().map(str::trim) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').unwrap();
                    image.env.insert(k.into(), v.into());
                }
            }
            "EXPOSE" => image.expose = rest.split_whitespace().map(|p| p.parse().unwrap()).collect(),
            "WORKDIR" => image.workdir = rest.into(),
            "VOLUME" => image.volume = rest.trim_matches(|c| c == '[' || c == ']' || c == '"').into(),
            "USER" => image.user = rest.into(),
            "HEALTHCHECK" => image.healthcheck = rest.into(),
            _ => {}
        }
    }
    image
}

#[test]
fn the_dockerfile_matches_the_code() {
    let image = image();
    let defaults = rustaxum::Config::from_lookup(|_| None).unwrap();
    let env = |k: &str| image.env.get(k).unwrap_or_else(|| panic!("the image sets {k}")).clone();
    // Every port the image's environment opens is exposed, and they are the defaults.
    let ports: Vec<u16> = ["BROADCAST_APP_PORT", "BROADCAST_WEBSOCKET_PORT", "BROADCAST_RTC_PORT"]
        .iter()
        .map(|k| env(k).parse().unwrap())
        .collect();
    assert_eq!(
        ports,
        [
            defaults.server.app_port.unwrap(),
            defaults.server.port,
            defaults.rtc.port.unwrap()
        ]
    );
    for p in &ports {
        assert!(image.expose.contains(p), "EXPOSE {p}");
    }
    // A non-root user, a working directory that is the volume (where ./data goes).
    assert!(!image.user.is_empty() && image.user != "root");
    assert_eq!(image.workdir, image.volume);
    assert!(
        rustaxum::services::emithub::DEFAULT_EMIT_HUB_DB_PATH.starts_with("./"),
        "relative to WORKDIR"
    );
    // The health check is the binary's own probe (no curl in the image: a TLS node or
    // one with the app port off would be unhealthy forever with a fixed http:// URL).
    assert!(
        image.healthcheck.ends_with(r#"CMD ["rustaxum", "health"]"#),
        "{}",
        image.healthcheck
    );
    assert!(
        !runtime_stage()
            .lines()
            .any(|l| l.contains("apt-get install") && l.contains("curl")),
        "the image installs no curl"
    );
    // The compose file runs the same ports and gives the token it requires; reads ./.env;
    // builds one image and runs it twice; keeps Redis's data; probes readiness with the
    // binary; gives the drain its time.
    let compose = std::fs::read_to_string("docker-compose.prod.yml").unwrap();
    for needle in [
        "BROADCAST_API_TOKEN: ${BROADCAST_API_TOKEN:?",
        "BROADCAST_RTC_PORT: \"8081\"",
        r#"test: ["CMD", "rustaxum", "health", "--ready"]"#,
        "\"8081:8081\"",
        "env_file:",
        "path: .env",
        r#""--appendonly", "yes""#,
        "redis-data:/data",
        "ipv4_address: 172.28.0.11",
        "ipv4_address: 172.28.0.12",
        "pull_policy: never",
        "stop_grace_period: 20s",
    ] {
        assert!(compose.contains(needle), "docker-compose.prod.yml: {needle}");
    }
    assert_eq!(compose.matches("\n    build: .").count(), 1, "the image is built once");
    assert!(!compose.contains("\"curl\""));
    // The build copies what Cargo.toml declares (examples and the test crate included).
    let ignore = std::fs::read_to_string(".dockerignore").unwrap();
    for kept in ["src", "examples", "tests/it"] {
        assert!(
            !ignore.lines().any(|l| l.trim_end_matches('/') == kept),
            "{kept} is ignored"
        );
    }
}

/// The binary as the image runs it: its environment, `dir` as the working directory, and
/// (when these tests run as root) as the unprivileged user `nobody`.
fn as_in_the_image(dir: &std::path::Path, extra: &[(&str, String)]) -> tokio::process::Command {
    let mut cmd = if is_root() {
        let mut c = tokio::process::Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            env!("CARGO_BIN_EXE_rustaxum"),
        ]);
        c
    } else {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rustaxum"))
    };
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in &image().env {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn volume_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rustaxum-image-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    if is_root() {
        let ok = std::process::Command::new("chown")
            .args(["nobody:nogroup"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    dir
}

// Issue 23: as the image's user in `/` the binary exited 1 ("cannot create the
// directory ./data"); and without a token the refusal must name the variable.
#[tokio::test]
async fn the_image_starts_as_its_unprivileged_user_in_its_working_directory() {
    let dir = volume_dir();
    let out = as_in_the_image(&dir, &[]).output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("BROADCAST_API_TOKEN"), "{err}");

    let [app, ws, rtc] = [free_port(), free_port(), free_port()];
    let token = "image-token-0123456789abcdef".to_string();
    let mut child = as_in_the_image(
        &dir,
        &[
            ("BROADCAST_API_TOKEN", token.clone()),
            ("BROADCAST_APP_PORT", app.to_string()),
            ("BROADCAST_WEBSOCKET_PORT", ws.to_string()),
            ("BROADCAST_RTC_PORT", rtc.to_string()),
        ],
    )
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("started")
        .unwrap()
        .unwrap_or_default();
    assert_eq!(first, format!("rustaxum listening on http://0.0.0.0:{ws}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    // The health check's request, and an EmitHub channel written to ./data.
    let health = reqwest::get(format!("http://127.0.0.1:{ws}/health")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let created = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{app}/api/v1/channels"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "in the volume"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status().as_u16(),
        201,
        "{}",
        created.text().await.unwrap_or_default()
    );
    assert!(
        dir.join("data/emit_hub.redb").is_file(),
        "the database is in the volume"
    );
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

// Issue 35: the health check is `rustaxum health`, run in the container beside the server
// with the same environment: it finds the port and the scheme itself (https:// for a TLS
// node, whose certificate names no loopback address), exits 0 while the server answers,
// `--ready` fails while it drains, and both fail (naming the URL) once it is gone.
#[tokio::test]
async fn the_health_check_is_the_binary_and_speaks_what_the_node_speaks() {
    let dir = volume_dir();
    let pki = crate::tls::Pki::new();
    let (cert, key) = pki.leaf("health");
    // The image's user must read the key (a mounted secret would be made readable so).
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for tls in [false, true] {
        let ws = free_port();
        let mut env = vec![
            ("BROADCAST_API_TOKEN", "image-token-0123456789abcdef".to_string()),
            ("BROADCAST_APP_PORT", "off".to_string()),
            ("BROADCAST_WEBSOCKET_PORT", ws.to_string()),
            ("BROADCAST_RTC_PORT", "off".to_string()),
            ("BROADCAST_DRAIN_SECONDS", "2".to_string()),
        ];
        if tls {
            env.push(("BROADCAST_TLS_CERT", cert.display().to_string()));
            env.push(("BROADCAST_TLS_KEY", key.display().to_string()));
        }
        let health = |args: &[&str]| {
            let mut cmd = as_in_the_image(&dir, &env);
            cmd.arg("health").args(args);
            cmd.output()
        };
        let scheme = if tls { "https" } else { "http" };
        let out = health(&[]).await.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "nothing listens yet: {err}");
        assert!(err.contains(&format!("{scheme}://127.0.0.1:{ws}/health")), "{err}");

        let mut server = as_in_the_image(&dir, &env).spawn().unwrap();
        let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("started")
            .unwrap()
            .unwrap_or_default();
        assert_eq!(first, format!("rustaxum listening on {scheme}://0.0.0.0:{ws}"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        for args in [&[][..], &["--ready"][..]] {
            let out = health(args).await.unwrap();
            let said = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{args:?}: {said}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let path = if args.is_empty() { "health" } else { "ready" };
            assert!(
                said.starts_with(&format!("{scheme}://127.0.0.1:{ws}/{path}: 200")),
                "{said}"
            );
        }
        // Draining: alive, not ready.
        let pid = server.id().unwrap().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let out = loop {
            let out = health(&["--ready"]).await.unwrap();
            if out.status.code() == Some(1) || std::time::Instant::now() > deadline {
                break out;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("503") && err.contains("draining"), "{err}");
        assert_eq!(
            health(&[]).await.unwrap().status.code(),
            Some(0),
            "alive while draining"
        );
        let exit = tokio::time::timeout(Duration::from_secs(15), server.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit.code(), Some(0));
        assert_eq!(health(&[]).await.unwrap().status.code(), Some(1), "gone");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// The image itself, where a Docker daemon runs (none on the CI machine: the test says so
// and checks the files above instead).
#[tokio::test]
async fn the_image_builds_where_docker_runs() {
    let daemon = tokio::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .await;
    match daemon {
        Ok(out) if out.status.success() => {}
        Ok(_) | Err(_) => {
            println!("no Docker daemon on this machine: the image is not built here (the Dockerfile is checked by the_dockerfile_matches_the_code)");
            return;
        }
    }
    // The base images come from Docker Hub; a machine that cannot reach it cannot build
    // any image, which says nothing about this Dockerfile.
    for base in ["rust:1-bookworm", "debian:bookworm-slim"] {
        let pulled = tokio::process::Command::new("docker")
            .args(["pull", "--quiet", base])
            .output()
            .await
            .unwrap();
        if !pulled.status.success() {
            println!(
                "a Docker daemon, but {base} cannot be pulled here ({}): the image is not built",
                String::from_utf8_lossy(&pulled.stderr).trim()
            );
            return;
        }
    }
    let out = tokio::process::Command::new("docker")
        .args(["build", "--quiet", "-t", "rustaxum:test", "."])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tokio::process::Command::new("docker")
        .args(["run", "--rm", "rustaxum:test", "rustaxum", "health", "--help"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

// The systemd unit in deploy/ is one systemd accepts (its own verifier), with the binary
// it starts; the hardening leaves what the server needs (raising its open-files limit).
#[tokio::test]
async fn the_systemd_unit_is_valid() {
    let unit = std::fs::read_to_string("deploy/rustaxum.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/rustaxum\n"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"), "reload is SIGHUP");
    // The install comments, run in order on a fresh machine, leave nothing out: the
    // directory of the environment file exists before the file is installed into it.
    let steps: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("#   sudo ")).collect();
    let dir = steps
        .iter()
        .position(|s| s.starts_with("install -d") && s.contains("/etc/rustaxum"));
    let env = steps.iter().position(|s| s.contains("/etc/rustaxum/rustaxum.env"));
    assert!(matches!((dir, env), (Some(d), Some(e)) if d < e), "{steps:?}");
    assert!(unit.contains("Type=notify"));
    assert!(
        !unit.contains("@resources"),
        "setrlimit (the open-files limit) must stay allowed"
    );
    let dir = std::env::temp_dir().join(format!("rustaxum-unit-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rustaxum.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/rustaxum", env!("CARGO_BIN_EXE_rustaxum")),
    )
    .unwrap();
    let out = tokio::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .await
        .expect("systemd-analyze (systemd) is installed");
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && !said.contains("rustaxum.service:"), "{said}");
}
