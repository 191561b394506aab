//! The `rustaxum` binary: starts on defaults, refuses unsafe or invalid config, and
//! shuts down on SIGTERM closing sockets with 1001 and exiting 0.

mod common;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn server() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rustaxum"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BROADCAST_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits_zero() {
    let mut child = server().args(["--port", "0"]).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line.strip_prefix("rustaxum listening on ").expect(&line).to_string();
    let ws_url = format!("{}/ws?channel=general", url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    common::recv_json(&mut ws).await;

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let frame = common::expect_close(&mut ws).await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1001);
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn invalid_config_stops_startup_naming_the_variable() {
    let out = server().env("BROADCAST_WEBSOCKET_PORT", "80x0").output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BROADCAST_WEBSOCKET_PORT") && err.contains("80x0"),
        "{err}"
    );
}

#[tokio::test]
async fn public_address_without_api_token_is_refused() {
    let out = server()
        .args(["--host", "0.0.0.0", "--port", "0"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BROADCAST_API_TOKEN"));
}

#[tokio::test]
async fn artisan_websocket_runs_the_server() {
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_artisan"))
        .args(["broadcast", "websocket", "--port", &port.to_string()])
        .env_remove("BROADCAST_HOST")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, format!("🌐 Starting WebSocket server on port {port}"));
    let listening = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(listening.contains(&format!("127.0.0.1:{port}")), "{listening}");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws/general"))
        .await
        .unwrap();
    assert_eq!(common::recv_json(&mut ws).await["event"], "subscription_succeeded");
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

// Hardening (issue 8, defect 11): a guessable API token on a public address is refused.
#[tokio::test]
async fn a_short_api_token_on_a_public_address_is_refused() {
    let run = server()
        .args(["--host", "0.0.0.0", "--port", "0"])
        .env("BROADCAST_API_TOKEN", "x")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the server refused to start, it did not serve")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BROADCAST_API_TOKEN") && err.contains("16"), "{err}");
}

fn soft_open_files(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

// Hardening (issue 8, defect 3): with the usual soft limit of a few hundred open files,
// a few hundred idle TCP connections used to take the server offline.
#[tokio::test]
async fn idle_connections_cannot_exhaust_a_low_soft_file_limit() {
    let hard: u64 = {
        let out = std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(u64::MAX)
    };
    assert!(hard > 1024, "this test needs a hard limit above 1024, have {hard}");
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -Sn 256 && exec \"$0\" --port 0",
            env!("CARGO_BIN_EXE_rustaxum"),
        ])
        .env_remove("BROADCAST_HOST")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line.strip_prefix("rustaxum listening on ").expect(&line).to_string();
    let pid = child.id().unwrap();
    assert!(soft_open_files(pid) > 1024, "the soft limit was raised");
    let addr = url.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let health = tokio::time::timeout(Duration::from_secs(5), reqwest::get(format!("{url}/health")))
        .await
        .expect("/health answers while 600 idle connections are open")
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
