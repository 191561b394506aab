//! The `rustaxum` binary: starts on defaults, refuses unsafe or invalid config, and
//! shuts down on SIGTERM closing sockets with 1001 and exiting 0.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn server() -> Command {
    crate::common::server_command()
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
    crate::common::recv_json(&mut ws).await;

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let frame = crate::common::expect_close(&mut ws).await.expect("close frame");
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
    let port = crate::common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_artisan"))
        .args([
            "broadcast",
            "websocket",
            "--port",
            &port.to_string(),
            "--app-port",
            "off",
        ])
        .env_remove("BROADCAST_HOST")
        .env("EMIT_HUB_DB_PATH", ":memory:")
        .env("BROADCAST_RTC_PORT", "off")
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
    assert_eq!(
        crate::common::recv_json(&mut ws).await["event"],
        "subscription_succeeded"
    );
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
        .env("EMIT_HUB_DB_PATH", ":memory:")
        .env("BROADCAST_RTC_PORT", "off")
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

/// Reads `lines` until one satisfies `want`, within ten seconds.
async fn line_matching<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    want: impl Fn(&str) -> bool,
) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("output ended");
            if want(&line) {
                return line;
            }
        }
    })
    .await
    .expect("the expected line")
}

// Issue 10: the application port and the WebSocket port serve the same routes.
#[tokio::test]
async fn the_application_port_and_the_websocket_port_serve_the_same_routes() {
    let mut child = server().args(["--port", "0", "--app-port", "0"]).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ws_line = line_matching(&mut lines, |l| l.starts_with("rustaxum listening on")).await;
    let app_line = line_matching(&mut lines, |l| l.starts_with("rustaxum listening on")).await;
    assert!(!ws_line.contains("application port"), "{ws_line}");
    assert!(app_line.ends_with("(application port)"), "{app_line}");
    let ws_url = ws_line.trim_start_matches("rustaxum listening on ").to_string();
    let app_url = app_line
        .trim_start_matches("rustaxum listening on ")
        .trim_end_matches(" (application port)")
        .to_string();
    assert_ne!(ws_url, app_url);
    // The document's client connects to the application port.
    let (mut on_app, _) =
        tokio_tungstenite::connect_async(format!("{}/ws?channel=general", app_url.replacen("http", "ws", 1)))
            .await
            .unwrap();
    assert_eq!(
        crate::common::recv_json(&mut on_app).await["event"],
        "subscription_succeeded"
    );
    let (mut on_ws, _) = tokio_tungstenite::connect_async(format!("{}/ws/general", ws_url.replacen("http", "ws", 1)))
        .await
        .unwrap();
    crate::common::recv_json(&mut on_ws).await;
    // `curl localhost:3000/api/broadcast/stats` from the document.
    let stats: serde_json::Value = reqwest::get(format!("{app_url}/api/broadcast/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["connections"], 2, "one hub behind both ports");
    let published = reqwest::Client::new()
        .post(format!("{ws_url}/api/broadcast"))
        .json(&serde_json::json!({"channel": "general", "event": "both", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 200);
    for ws in [&mut on_app, &mut on_ws] {
        assert_eq!(crate::common::recv_json(ws).await["event"], "both");
    }
}

// Issue 10: a port set explicitly that cannot be bound stops start-up, naming it.
#[tokio::test]
async fn an_explicit_port_that_is_taken_stops_start_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = server().args(["--port", "0"]).env("BROADCAST_APP_PORT", &port).output();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BROADCAST_APP_PORT") && err.contains(&port), "{err}");
}

// Issue 10: a default port already taken by another program is a warning, not a failure.
#[tokio::test]
async fn a_default_port_that_is_taken_is_skipped_with_a_warning() {
    // Hold the default application port (or find it held already by someone else).
    let _held = std::net::TcpListener::bind("127.0.0.1:3000");
    let mut child = server()
        .args(["--port", "0"])
        .env_remove("BROADCAST_APP_PORT")
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let warning = line_matching(&mut err, |l| l.contains("BROADCAST_APP_PORT")).await;
    assert!(warning.contains("3000") && warning.contains("skipped"), "{warning}");
    let line = line_matching(&mut out, |l| l.starts_with("rustaxum listening on")).await;
    let url = line.trim_start_matches("rustaxum listening on ").to_string();
    let health = reqwest::get(format!("{url}/health")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

// Issue 10: BROADCAST_REDIS_ENABLED that contradicts BROADCAST_DRIVER stops start-up.
#[tokio::test]
async fn redis_enabled_contradicting_the_driver_is_refused() {
    let run = server()
        .args(["--port", "0"])
        .env("BROADCAST_DRIVER", "websocket")
        .env("BROADCAST_REDIS_ENABLED", "true")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BROADCAST_REDIS_ENABLED") && err.contains("BROADCAST_DRIVER=websocket"),
        "{err}"
    );
}

// Issue 12: the typed-frame service's own port (BROADCAST_RTC_PORT, or the document's PORT).
#[tokio::test]
async fn the_typed_frame_service_has_its_own_port() {
    let rtc_port = crate::common::free_port();
    let mut child = server()
        .args(["--port", "0"])
        .env("BROADCAST_RTC_PORT", rtc_port.to_string())
        .env("PORT", "1")
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    line_matching(&mut out, |l| l.starts_with("rustaxum listening on")).await;
    let typed = line_matching(&mut out, |l| l.contains("typed frames")).await;
    assert_eq!(
        typed,
        format!("rustaxum listening on http://127.0.0.1:{rtc_port} (typed frames at /ws)"),
        "BROADCAST_RTC_PORT wins over PORT"
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{rtc_port}/ws"))
        .await
        .unwrap();
    let hello = crate::common::recv_json(&mut ws).await;
    assert_eq!(
        (hello["type"].as_str(), hello["data"]["status"].as_str()),
        (Some("Status"), Some("connected"))
    );
    drop(child);

    // The document's PORT when BROADCAST_RTC_PORT is unset.
    let port = crate::common::free_port();
    let mut child = server()
        .args(["--port", "0"])
        .env_remove("BROADCAST_RTC_PORT")
        .env("PORT", port.to_string())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let typed = line_matching(&mut out, |l| l.contains("typed frames")).await;
    assert!(typed.contains(&format!(":{port} ")), "{typed}");
    drop(child);

    // A port set explicitly that is taken stops start-up naming the variable.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port().to_string();
    let out = server()
        .args(["--port", "0"])
        .env("BROADCAST_RTC_PORT", &taken)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BROADCAST_RTC_PORT") && err.contains(&taken), "{err}");
}

/// Runs the binary with `env` until it listens, does `then` with its base URL, sends
/// SIGTERM and returns (stdout, stderr) as written.
async fn run_and_collect<F, Fut>(env: &[(&str, &str)], then: F) -> (String, String)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut child = server()
        .args(["--port", "0"])
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let err = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut lines = BufReader::new(err).lines();
        let mut all = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    let first = tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = match serde_json::from_str::<serde_json::Value>(&first) {
        Ok(v) => v["fields"]["message"].as_str().unwrap().to_string(),
        Err(_) => first.clone(),
    };
    let url = url.strip_prefix("rustaxum listening on ").unwrap().to_string();
    then(url).await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let mut stdout = first + "\n";
    while let Ok(Some(l)) = out.next_line().await {
        stdout.push_str(&l);
        stdout.push('\n');
    }
    child.wait().await.unwrap();
    (stdout, errors.await.unwrap())
}

// Issue 25: colour codes went to files, JSON mode mixed a plain line into stdout,
// refusals were not logged, shutdown said only "shutting down".
#[tokio::test]
async fn logs_are_plain_off_a_terminal_json_everywhere_with_log_format_json_and_say_what_happened() {
    let refused = |url: String| async move {
        let ws = url.replacen("http", "ws", 1);
        let (mut s, _) = tokio_tungstenite::connect_async(format!("{ws}/ws/general"))
            .await
            .unwrap();
        let _ = crate::common::recv_json(&mut s).await;
        crate::common::send_json(&mut s, serde_json::json!({"action": "subscribe", "channel": "user.42"})).await;
        let _ = crate::common::recv_json(&mut s).await;
    };
    let (_, text) = run_and_collect(&[("RUST_LOG", "debug")], refused).await;
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI codes when stderr is not a terminal:\n{text}"
    );
    let refusal = text
        .lines()
        .find(|l| l.contains("subscription refused"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(refusal.contains("user.42") && refusal.contains("Native"), "{refusal}");
    let done = text
        .lines()
        .find(|l| l.contains("shut down"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(done.contains("sockets_closed") && done.contains("elapsed_ms"), "{done}");

    let (stdout, stderr) = run_and_collect(&[("LOG_FORMAT", "json")], refused).await;
    // Every line on both streams: an object with a timestamp and a level (issue 35).
    for line in stdout.lines().chain(stderr.lines()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(
            v["timestamp"]
                .as_str()
                .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
                && v["level"].is_string(),
            "{line}"
        );
    }
    assert!(stdout.contains("rustaxum listening on"));
}

#[tokio::test]
async fn an_invalid_rust_log_stops_start_up_and_a_closed_stdout_is_no_panic() {
    let out = server().env("RUST_LOG", "verbose").output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("RUST_LOG") && err.contains("verbose"), "{err}");
    // `rustaxum --show-env-vars | head -1`: the reader goes away after one line.
    let mut child = server()
        .arg("--show-env-vars")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().await.unwrap();
    assert_ne!(status.code(), Some(101), "no panic on a closed stdout");
    // A JSON error when start-up fails with LOG_FORMAT=json.
    let out = server()
        .env("LOG_FORMAT", "json")
        .env("BROADCAST_WEBSOCKET_PORT", "80x0")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line: serde_json::Value = serde_json::from_str(err.trim()).unwrap_or_else(|_| panic!("{err}"));
    assert!(line["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("BROADCAST_WEBSOCKET_PORT"));
    assert_eq!(line["level"], "ERROR");
    assert!(line["timestamp"].is_string(), "{line}");
    // A mistyped option too.
    let out = server().env("LOG_FORMAT", "json").arg("--prot").output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for l in err.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {err}"));
        assert_eq!(v["level"], "ERROR", "{l}");
    }
    assert!(err.contains("--prot"), "{err}");
}

// Issue 35: a rolling restart must not drop what a load balancer can route elsewhere. On
// SIGTERM the node drains: it keeps serving (a publish is still delivered), `/ready`
// answers 503 `draining` and HTTP responses close their connection, so nginx and the
// orchestrator stop sending it work; after BROADCAST_DRAIN_SECONDS every socket is asked
// to reconnect elsewhere (1012; Pusher 4200) and the process exits 0. Under systemd
// (`Type=notify`) it says READY=1 once its ports are bound and STOPPING=1 as it drains:
// checked with a datagram socket standing in for systemd's.
#[tokio::test]
async fn sigterm_drains_then_asks_every_socket_to_reconnect_elsewhere() {
    let dir = std::env::temp_dir().join(format!("rustaxum-notify-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify");
    let systemd = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let (key, secret) = ("drain-key", "drain-secret");
    let notify = notify_path.to_str().unwrap();
    let (mut child, url) = crate::common::spawn_server(&[
        ("BROADCAST_DRAIN_SECONDS", "1500ms"),
        ("NOTIFY_SOCKET", notify),
        ("PUSHER_APP_ID", "1"),
        ("PUSHER_APP_KEY", key),
        ("PUSHER_APP_SECRET", secret),
    ])
    .await;
    let mut said = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), systemd.recv(&mut said))
        .await
        .expect("READY=1 sent")
        .unwrap();
    assert_eq!(&said[..n], b"READY=1");

    let ws_base = url.replacen("http", "ws", 1);
    let (mut native, _) = tokio_tungstenite::connect_async(format!("{ws_base}/ws?channel=general"))
        .await
        .unwrap();
    crate::common::recv_json(&mut native).await;
    let (mut pusher, _) = tokio_tungstenite::connect_async(format!("{ws_base}/app/{key}?protocol=7"))
        .await
        .unwrap();
    let hello = crate::common::recv_json(&mut pusher).await;
    assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{url}/ready")).send().await.unwrap().status(), 200);

    let pid = child.id().unwrap().to_string();
    let term = std::time::Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let n = tokio::time::timeout(Duration::from_secs(5), systemd.recv(&mut said))
        .await
        .expect("STOPPING=1 sent")
        .unwrap();
    assert_eq!(&said[..n], b"STOPPING=1");

    // Draining: still serving, but out of rotation.
    let ready = http.get(format!("{url}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.headers()["connection"], "close");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "draining", "{body}");
    let health = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "alive while draining");
    let published = http
        .post(format!("{url}/api/broadcast"))
        .json(&serde_json::json!({"channel": "general", "event": "late", "data": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200);
    let got = crate::common::recv_json(&mut native).await;
    assert_eq!(got["event"], "late", "{got}");
    // A new socket is sent elsewhere (nginx retries a 503 upgrade on the next node).
    for path in ["/ws?channel=general", &format!("/app/{key}?protocol=7")] {
        match tokio_tungstenite::connect_async(format!("{ws_base}{path}")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(refused)) => {
                assert_eq!(refused.status(), 503, "{path}")
            }
            other => panic!(
                "{path}: a new socket while draining: {:?}",
                other.map(|(_, r)| r.status())
            ),
        }
    }

    // Then the sockets are asked to reconnect, not before the drain is over.
    let frame = crate::common::expect_close(&mut native).await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1012, "{frame:?}");
    assert!(term.elapsed() >= Duration::from_millis(1400), "{:?}", term.elapsed());
    let frame = crate::common::expect_close(&mut pusher).await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4200, "{frame:?}");
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

// A second signal during a long drain ends it: Ctrl-C twice does not wait a minute.
#[tokio::test]
async fn a_second_signal_ends_the_drain() {
    let (mut child, url) = crate::common::spawn_server(&[("BROADCAST_DRAIN_SECONDS", "60")]).await;
    let pid = child.id().unwrap().to_string();
    let term = || {
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success())
    };
    term();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reqwest::get(format!("{url}/ready"))
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(503)
    {
        assert!(std::time::Instant::now() < deadline, "never draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    term();
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the second signal ended the drain")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}
