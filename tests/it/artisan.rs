//! Each artisan command against a running server, through the real binary.

use std::process::Output;

use crate::common::*;
use serde_json::json;

/// The `artisan` binary against `server`, without a token from the environment.
pub(crate) async fn artisan(server: &TestServer, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"))
        .arg("--server")
        .arg(server.url(""))
        .args(args)
        .env_remove("BROADCAST_API_TOKEN")
        .output()
        .await
        .expect("run artisan")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn broadcast_test_reaches_the_browser() {
    let server = start().await;
    let (mut ws, _) = server.connect("/ws?channel=general").await;
    let out = artisan(
        &server,
        &["broadcast", "test", "--channel", "general", "--message", "Hello World"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("Testing broadcast to channel: general"), "{text}");
    assert!(text.contains("Broadcast test completed successfully"), "{text}");
    let msg = recv_json(&mut ws).await;
    assert_eq!(msg["channel"], "general");
    assert_eq!(msg["data"]["message"], "Hello World");
}

#[tokio::test]
async fn stats_and_channels_show_live_figures() {
    let server = start().await;
    let (_a, _) = server.connect("/ws?channel=general").await;
    let (_b, _) = server.connect("/ws?channel=general").await;
    let (_c, _) = server
        .connect(&format!("/ws?channel=user.123&auth_token={}", token("123", json!({}))))
        .await;
    let out = artisan(&server, &["broadcast", "stats"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("Broadcasting System Statistics"), "{text}");
    assert!(text.contains("general: 2 connections"), "{text}");
    assert!(text.contains("user.123: 1 connection (private)"), "{text}");
    assert!(text.contains("Total Active Channels: 2"), "{text}");
    assert!(text.contains("Connections: 3"), "{text}");
    // No Pusher app here: the native channels are the default app's.
    assert!(
        text.contains("default: 3 connections, 2 channels, 3 subscriptions"),
        "{text}"
    );

    let t = token("9", json!({}));
    let (_p1, _) = server.connect(&format!("/ws/presence.room.1?auth_token={t}")).await;
    let (_p2, _) = server.connect(&format!("/ws/presence.room.1?auth_token={t}")).await;
    let text = stdout(&artisan(&server, &["broadcast", "stats"]).await);
    assert!(
        text.contains("presence.room.1: 2 connections (presence, 1 member)"),
        "{text}"
    );
    let text = stdout(&artisan(&server, &["broadcast", "channels"]).await);
    let room = text.lines().find(|l| l.starts_with("presence.room.1")).expect(&text);
    assert_eq!(
        room.split_whitespace().collect::<Vec<_>>(),
        ["presence.room.1", "presence", "2", "1"]
    );

    let out = artisan(&server, &["broadcast", "channels"]).await;
    let text = stdout(&out);
    assert!(out.status.success());
    let general = text.lines().find(|l| l.starts_with("general")).expect(&text);
    assert_eq!(
        general.split_whitespace().collect::<Vec<_>>(),
        ["general", "public", "2", "-"]
    );
    assert!(text.contains("3 channel(s)"), "{text}");
}

#[tokio::test]
async fn ping_sends_count_events_at_the_interval() {
    let server = start().await;
    let (mut ws, _) = server.connect("/ws?channel=heartbeat").await;
    let out = artisan(
        &server,
        &[
            "broadcast",
            "ping",
            "--channel",
            "heartbeat",
            "--interval",
            "0.1",
            "--count",
            "3",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    for expected in 1..=3 {
        let msg = recv_json(&mut ws).await;
        assert_eq!(msg["event"], "ping");
        assert_eq!(msg["data"]["sequence"], expected);
    }
    assert!(stdout(&out).contains("Sent 3 ping(s)"));
}

#[tokio::test]
async fn notify_user_and_system_alert() {
    let server = start().await;
    let (mut user, _) = server
        .connect(&format!("/ws/user.42?auth_token={}", token("42", json!({}))))
        .await;
    let (mut alerts, _) = server
        .connect(&format!(
            "/ws/admin.alerts?auth_token={}",
            token("1", json!({"roles": ["admin"]}))
        ))
        .await;
    let out = artisan(
        &server,
        &[
            "broadcast",
            "notify:user",
            "42",
            "Welcome",
            "Registration successful",
            "--action-url",
            "/dashboard",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let msg = recv_json(&mut user).await;
    assert_eq!(msg["event"], "notification");
    assert_eq!(
        (
            msg["data"]["title"].as_str(),
            msg["data"]["message"].as_str(),
            msg["data"]["action_url"].as_str()
        ),
        (Some("Welcome"), Some("Registration successful"), Some("/dashboard"))
    );

    let out = artisan(
        &server,
        &[
            "broadcast",
            "system:alert",
            "warning",
            "Maintenance starting soon",
            "--action-required",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let msg = recv_json(&mut alerts).await;
    assert_eq!(msg["event"], "system.alert");
    assert_eq!(
        msg["data"],
        json!({
            "level": "warning",
            "message": "Maintenance starting soon",
            "action_required": true,
            "timestamp": msg["data"]["timestamp"],
        })
    );

    let out = artisan(&server, &["broadcast", "system:alert", "apocalyptic", "x"]).await;
    assert!(!out.status.success(), "unknown level is refused");
}

#[tokio::test]
async fn monitor_samples_then_exits_after_the_duration() {
    let server = start().await;
    let (_ws, _) = server.connect("/ws?channel=general").await;
    let started = std::time::Instant::now();
    let out = artisan(
        &server,
        &["broadcast", "monitor", "--duration", "2", "--interval", "0.5"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    let text = stdout(&out);
    let samples = text.lines().filter(|l| l.contains("connections: 1")).count();
    assert!(samples >= 3, "{text}");
    assert!(text.contains("Monitoring finished"), "{text}");
}

#[tokio::test]
async fn unreachable_server_is_a_one_line_error_and_nonzero_exit() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    for args in [
        &["broadcast", "stats"][..],
        &["broadcast", "test"][..],
        &["broadcast", "channels"][..],
        &["broadcast", "ping", "--channel", "general", "--interval", "1"][..],
        &["broadcast", "monitor", "--duration", "1"][..],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"))
            .arg("--server")
            .arg(format!("http://127.0.0.1:{port}"))
            .args(args)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("cannot reach rustaxum"), "{err}");
        assert_eq!(stdout(&out), "", "no heading before the error: {args:?}");
    }
}

// Issue 10: `artisan broadcast stats | head` used to panic with a broken pipe.
#[tokio::test]
async fn a_closed_stdout_ends_the_command_quietly() {
    let server = start().await;
    let (_ws, _) = server.connect("/ws?channel=general").await;
    for args in [&["broadcast", "stats"][..], &["broadcast", "channels"][..]] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"))
            .arg("--server")
            .arg(server.url(""))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the command prints anything, as `head` does.
        drop(child.stdout.take());
        let out = child.wait_with_output().await.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    }
}

#[tokio::test]
async fn channel_columns_line_up_and_ping_says_how_to_stop() {
    let server = start().await;
    let (_a, _) = server.connect("/ws?channel=general").await;
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(server.connect("/ws?channel=announcements").await);
    }
    let text = stdout(&artisan(&server, &["broadcast", "channels"]).await);
    let rows: Vec<&str> = text.lines().filter(|l| !l.ends_with("channel(s)")).collect();
    assert_eq!(rows.len(), 3, "{text}");
    // Every row has the same length, and the numbers end where their heading ends.
    assert!(rows.iter().all(|r| r.len() == rows[0].len()), "{text}");
    let end = rows[0].find("SUBSCRIBERS").unwrap() + "SUBSCRIBERS".len();
    let announcements = rows.iter().find(|r| r.starts_with("announcements")).unwrap();
    assert_eq!(&announcements[end - 2..end], "12", "{text}");
    let general = rows.iter().find(|r| r.starts_with("general")).unwrap();
    assert_eq!(&general[end - 2..end], " 1", "{text}");

    let mut ping = tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"))
        .arg("--server")
        .arg(server.url(""))
        .args(["broadcast", "ping", "--channel", "general", "--interval", "60"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(ping.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.contains("Ctrl-C") && first.contains("--count"), "{first}");
}

#[tokio::test]
async fn token_is_sent_when_configured() {
    let mut config = config();
    config.server.api_token = Some("t0k3n".into());
    let server = start_with(config).await;
    let (mut ws, _) = server.connect("/ws?channel=general").await;
    let out = artisan(&server, &["broadcast", "test"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = artisan(
        &server,
        &["--token", "t0k3n", "broadcast", "test", "--message", "with token"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(recv_json(&mut ws).await["data"]["message"], "with token");
}

#[tokio::test]
async fn history_shows_a_channels_kept_messages_and_how_to_page() {
    let mut config = config();
    config.history.channels = vec!["orders".into()];
    let server = start_with(config).await;
    for n in 1..=5 {
        server.publish("orders", "shipped", json!({"n": n})).await;
    }
    let out = artisan(&server, &["broadcast", "history", "orders", "--limit", "2"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let epoch = server.get("/api/broadcast/channels/orders/history").await.1["position"]["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.starts_with(&format!("orders at {epoch}:5 (oldest kept: 1)")),
        "{text}"
    );
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].trim_start().starts_with("4 ") && rows[0].contains(r#"{"n":4}"#),
        "{text}"
    );
    assert!(
        rows[1].trim_start().starts_with("5 ") && rows[1].contains("shipped"),
        "{text}"
    );

    let out = artisan(
        &server,
        &[
            "broadcast",
            "history",
            "orders",
            "--since",
            &format!("{epoch}:1"),
            "--limit",
            "2",
        ],
    )
    .await;
    let text = stdout(&out);
    assert!(text.contains(r#"{"n":2}"#) && text.contains(r#"{"n":3}"#), "{text}");
    assert!(text.contains(&format!("more: --since {epoch}:3")), "{text}");

    let out = artisan(&server, &["broadcast", "history", "general"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keeps no history"),
        "{out:?}"
    );
}

// Issue 25: `--server 127.0.0.1:3000` was refused; `bench` on a non-public channel said
// only "HTTP error: 403 Forbidden"; "1 connections".
#[tokio::test]
async fn artisan_takes_host_port_says_what_to_do_and_counts_in_words() {
    let server = start().await;
    let (_ws, _) = server.connect("/ws?channel=general").await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"))
        .args(["--server", &server.addr.to_string(), "broadcast", "stats"])
        .env_remove("BROADCAST_API_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout(&out).contains("general: 1 connection (public)"),
        "{}",
        stdout(&out)
    );

    let out = artisan(
        &server,
        &[
            "broadcast",
            "bench",
            "--connections",
            "2",
            "--messages",
            "1",
            "--channel",
            "secret-room",
        ],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BROADCAST_PUBLIC_CHANNELS=secret-room"), "{err}");
}

// Issue 25: global options cluttered every subcommand's help, and `bench-report` offered
// `--server`/`--token` that meant nothing there.
#[tokio::test]
async fn server_options_are_offered_only_where_they_apply() {
    let run = |args: &'static [&'static str]| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"))
            .args(args)
            .env_remove("BROADCAST_API_TOKEN")
            .output()
            .await
            .unwrap()
    };
    let help = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
    for command in ["stats", "test", "bench", "monitor", "history"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"))
            .args(["broadcast", command, "--help"])
            .output()
            .await
            .unwrap();
        let text = help(&out);
        assert!(
            text.contains("--server") && text.contains("--token"),
            "{command}: {text}"
        );
    }
    let out = run(&["broadcast", "bench-report", "--help"]).await;
    let text = help(&out);
    assert!(text.contains("--input"), "{text}");
    for option in ["--server", "--token", "--config"] {
        assert!(!text.contains(option), "bench-report offers {option}: {text}");
    }
    let out = run(&["broadcast", "websocket", "--help"]).await;
    let text = help(&out);
    assert!(text.contains("--config") && !text.contains("--server"), "{text}");

    // Given where they mean nothing, they are refused by name.
    let out = run(&["broadcast", "bench-report", "--server", "127.0.0.1:3000"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--server", "127.0.0.1:3000", "broadcast", "bench-report"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--server does not apply to `broadcast bench-report`"),
        "{err}"
    );
}

#[tokio::test]
async fn the_server_may_be_named_after_the_command_too() {
    let server = start().await;
    let (_ws, _) = server.connect("/ws?channel=general").await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"))
        .args(["broadcast", "stats", "--server", &server.addr.to_string()])
        .env_remove("BROADCAST_API_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("general: 1 connection"), "{}", stdout(&out));
}

/// A server on loopback that is not rustaxum, or is a hostile one: `answer` for every path.
async fn hostile(answer: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, answer).await.unwrap() });
    url
}

async fn artisan_at(url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"))
        .arg("--server")
        .arg(url)
        .args(args)
        .env_remove("BROADCAST_API_TOKEN")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run artisan")
}

// Issue 34: artisan trusted whatever answered: an HTML page or wrong JSON types exited 0,
// an endless body grew it to 4.6 GB, escape sequences from the server were printed raw.
#[tokio::test]
async fn artisan_against_a_broken_or_hostile_server_fails_clearly() {
    use axum::routing::any;
    // Another program's web page.
    let html = hostile(axum::Router::new().fallback(any(|| async {
        axum::response::Html("<html><body>Welcome to nginx!</body></html>")
    })))
    .await;
    for args in [
        &["broadcast", "stats"][..],
        &["broadcast", "channels"],
        &["broadcast", "test", "--channel", "x"],
    ] {
        let out = artisan_at(&html, args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {out:?}");
        assert!(
            err.contains(&html) && err.contains("not JSON: <html><body>Welcome to nginx!"),
            "{args:?}: {err}"
        );
    }
    // JSON, but not rustaxum's.
    let wrong = hostile(axum::Router::new().fallback(any(|| async {
        axum::Json(json!({"connections": "many", "channels": "none", "status": "ok"}))
    })))
    .await;
    let out = artisan_at(&wrong, &["broadcast", "stats"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("connections is \"many\""),
        "{err}"
    );
    let out = artisan_at(&wrong, &["broadcast", "channels"]).await;
    assert!(!out.status.success(), "{out:?}");
    // An endless answer: cut off at 16 MiB, not held.
    let endless = hostile(axum::Router::new().fallback(any(|| async {
        let chunk = bytes::Bytes::from(vec![b'['; 1 << 20]);
        let stream = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
        axum::body::Body::from_stream(stream)
    })))
    .await;
    let started = std::time::Instant::now();
    let out = artisan_at(&endless, &["broadcast", "stats"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("larger than 16 MiB"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Escape sequences in what the server says are shown, not obeyed.
    let evil = hostile(axum::Router::new().fallback(any(|| async {
        axum::Json(json!({
            "connections": 1, "driver": "x\u{1b}]0;pwned\u{7}", "slow_disconnects": 0, "uptime_seconds": 1,
            "messages": {"published": 0, "delivered": 0, "received": 0},
            "channels": {"evil\u{1b}[2J": {"kind": "public", "subscribers": 1}},
            "apps": {}
        }))
    })))
    .await;
    let out = artisan_at(&evil, &["broadcast", "stats"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "{text:?}");
    assert!(text.contains("evil\\u{1b}[2J"), "{text}");
}
