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

fn image() -> Image {
    let text = std::fs::read_to_string("Dockerfile").unwrap();
    let runtime = text.rsplit("\nFROM ").next().unwrap().replace("\\\n", " ");
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
        rustaxum::emithub::DEFAULT_EMIT_HUB_DB_PATH.starts_with("./"),
        "relative to WORKDIR"
    );
    // The health check asks a route the server has, on the port the image listens on.
    assert!(image.healthcheck.contains("/health") && image.healthcheck.contains("${BROADCAST_WEBSOCKET_PORT}"));
    // The compose file runs the same ports and gives the token it requires.
    let compose = std::fs::read_to_string("docker-compose.prod.yml").unwrap();
    for needle in [
        "BROADCAST_API_TOKEN: ${BROADCAST_API_TOKEN:?",
        "BROADCAST_RTC_PORT: \"8081\"",
        "/ready",
        "\"8081:8081\"",
    ] {
        assert!(compose.contains(needle), "docker-compose.prod.yml: {needle}");
    }
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

// The systemd unit in deploy/ is one systemd accepts (its own verifier), with the binary
// it starts; the hardening leaves what the server needs (raising its open-files limit).
#[tokio::test]
async fn the_systemd_unit_is_valid() {
    let unit = std::fs::read_to_string("deploy/rustaxum.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/rustaxum\n"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"), "reload is SIGHUP");
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
