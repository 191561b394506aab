//! A Laravel project switches to rustaxum by its `.env` alone. For the three ways Laravel
//! writes it (10 with Pusher, 11+ with Reverb, 11+ with Pusher; `tests/laravel/*.env`),
//! the real binary is started in a directory holding that `.env` and nothing else, and
//! Laravel Echo (the `pusher` or `reverb` broadcaster) and the `pusher` server SDK,
//! configured from the same `.env` as Laravel configures them (tests/pusher/laravel.mjs),
//! exchange events on a public, a private and a presence channel, and a whisper.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

/// Starts rustaxum in a fresh directory holding `fixture` (with `__PORT__` replaced by a
/// free port), waits until it listens, runs the Laravel half with `broadcaster`, and
/// returns what the server logged.
async fn laravel_project(fixture: &str, broadcaster: &str, port_from_env_file: bool) -> String {
    let modules = std::path::Path::new("tests/pusher/node_modules");
    assert!(
        modules.exists(),
        "run `npm ci` in tests/pusher first (scripts/test does)"
    );
    let dir = std::env::temp_dir().join(format!("rustaxum-laravel-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let text = std::fs::read_to_string(format!("tests/laravel/{fixture}"))
        .unwrap()
        .replace("__PORT__", &port.to_string());
    let env_file = dir.join(".env");
    std::fs::write(&env_file, text).unwrap();

    let mut cmd = server_command();
    cmd.current_dir(&dir).env_remove("EMIT_HUB_DB_PATH");
    if !port_from_env_file {
        // Laravel 10/11 with Pusher: PUSHER_PORT is the clients' side; rustaxum listens on
        // BROADCAST_WEBSOCKET_PORT (8080 by default, as docs/laravel.md sets PUSHER_PORT).
        cmd.env("BROADCAST_WEBSOCKET_PORT", port.to_string());
    }
    let mut child = cmd.spawn().expect("spawn rustaxum");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .expect("the server starts")
        .unwrap()
        .unwrap_or_else(|| panic!("no output; the server stopped"));
    assert_eq!(line, format!("rustaxum listening on http://127.0.0.1:{port}"));
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let logged = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(l)) = err.next_line().await {
            all.push_str(&l);
            all.push('\n');
        }
        all
    });

    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-force-exit", "tests/pusher/laravel.mjs"])
        .env("RX_ENV_FILE", &env_file)
        .env("RX_BROADCASTER", broadcaster)
        .kill_on_drop(true)
        .output();
    let node = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the Laravel half finishes within a minute")
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&node.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&node.stderr));
    terminate(child).await;
    let logged = logged.await.unwrap();
    eprintln!("{logged}");
    assert!(
        node.status.success() && stdout.contains("# fail 0"),
        "{fixture} with Echo's {broadcaster} broadcaster"
    );
    let _ = std::fs::remove_dir_all(&dir);
    logged
}

#[tokio::test]
async fn a_laravel_10_pusher_env_is_served_as_is() {
    let logged = laravel_project("laravel10-pusher.env", "pusher", false).await;
    assert!(
        logged.contains("BROADCAST_DRIVER=pusher is Laravel's setting"),
        "{logged}"
    );
    assert!(logged.contains("app 1700001"), "{logged}");
}

#[tokio::test]
async fn a_laravel_11_reverb_env_is_served_as_is() {
    // Echo's reverb broadcaster; rustaxum listens on REVERB_SERVER_PORT.
    let logged = laravel_project("laravel11-reverb.env", "reverb", true).await;
    assert!(
        logged.contains("BROADCAST_CONNECTION=reverb is Laravel's setting"),
        "{logged}"
    );
    assert!(logged.contains("app 512345"), "{logged}");
}

#[tokio::test]
async fn a_laravel_11_pusher_env_is_served_as_is() {
    let logged = laravel_project("laravel11-pusher.env", "pusher", false).await;
    assert!(logged.contains("app 1800002"), "{logged}");
}

// A Reverb-only .env used to start silently without serving its app; with no app at all
// the refusal of the first Pusher client now says why.
#[tokio::test]
async fn a_pusher_client_refused_for_want_of_any_app_is_explained_in_the_log() {
    let mut child = server_command().args(["--port", "0"]).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line
        .strip_prefix("rustaxum listening on ")
        .unwrap()
        .replacen("http", "ws", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}/app/some-key?protocol=7"))
        .await
        .unwrap();
    let first = recv_json(&mut ws).await;
    assert_eq!(first["data"]["code"], 4001, "{first}");
    let explained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(l)) = err.next_line().await {
            if l.contains("no Pusher app is configured") {
                return l;
            }
        }
        String::new()
    })
    .await
    .expect("the refusal is logged");
    assert!(explained.contains("REVERB_APP_"), "{explained}");
    child.kill().await.unwrap();
}
