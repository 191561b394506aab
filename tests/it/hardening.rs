//! Attacks on the server, each reproducing a defect found by trying to break it (issue 8):
//! channel-kind tricks through the Pusher side, connections that never finish their
//! request, tokens with absurd claims, endpoints that leaked or accepted too much,
//! connection-limit races, close codes that never arrived. The Redis-fault attacks live
//! in `cluster.rs` next to the other Redis tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::*;
use rustaxum::services::pusher::PusherApp;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn app() -> PusherApp {
    pusher_app("app", "key", "app-secret")
}

fn pusher_config() -> rustaxum::Config {
    let mut c = config();
    c.pusher.apps = rustaxum::services::pusher::Apps::new(vec![app()]);
    c
}

async fn pusher_socket(server: &TestServer) -> (Ws, String) {
    let (ws, first) = server.connect("/app/key?protocol=7").await;
    assert_eq!(first["event"], "pusher:connection_established");
    let data: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
    (ws, data["socket_id"].as_str().unwrap().to_string())
}

// Defect 2: a token holder whispered on public `general` through the Pusher side, and the
// first subscriber's `private-` spelling made the hub treat `general` as private.
#[tokio::test]
async fn pusher_side_cannot_make_a_public_channel_private_or_whisper_on_it() {
    let server = start_with(pusher_config()).await;
    let (mut attacker, socket_id) = pusher_socket(&server).await;

    // The auth endpoint refuses to sign a private- name for a public channel.
    let resp = reqwest::Client::new()
        .post(server.url("/broadcasting/auth"))
        .bearer_auth(token("666", json!({})))
        .form(&[("socket_id", socket_id.as_str()), ("channel_name", "private-general")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "wrong_kind", "{body}");

    // A signature made with the app secret (a backend's own auth endpoint signing
    // blindly) subscribes to `private-general`: in Pusher the prefix is the kind, so that
    // is a channel of its own, never the public `general` (issue 27).
    let auth = rustaxum::services::pusher::channel_auth(&app(), &socket_id, "private-general", None);
    send_json(
        &mut attacker,
        json!({"event": "pusher:subscribe", "data": {"channel": "private-general", "auth": auth}}),
    )
    .await;
    let ok = until_event(&mut attacker, "pusher_internal:subscription_succeeded").await;
    assert_eq!(ok["channel"], "private-general");

    // Native and Pusher subscribers of the public channel.
    let (mut native, _) = server.connect("/ws/general").await;
    let (mut listener, _) = pusher_socket(&server).await;
    send_json(
        &mut listener,
        json!({"event": "pusher:subscribe", "data": {"channel": "general"}}),
    )
    .await;
    until_event(&mut listener, "pusher_internal:subscription_succeeded").await;

    // A client event on the public channel is refused; one on `private-general` stays
    // there: neither reaches the public channel's subscribers.
    send_json(
        &mut attacker,
        json!({"event": "client-spoof", "channel": "general", "data": {"fake": true}}),
    )
    .await;
    let answer = until_event(&mut attacker, "pusher:error").await;
    assert!(
        answer["data"]["message"].as_str().unwrap().contains("rejected"),
        "{answer}"
    );
    send_json(
        &mut attacker,
        json!({"event": "client-spoof", "channel": "private-general", "data": {"fake": true}}),
    )
    .await;
    expect_silence(&mut native, Duration::from_millis(300)).await;
    expect_silence(&mut listener, Duration::from_millis(100)).await;

    // The channel stayed public: both subscribers receive it under its public name, and
    // the private namesake gets nothing.
    server.publish("general", "announcement", json!({"n": 1})).await;
    let got = until_event(&mut listener, "announcement").await;
    assert_eq!(got["channel"], "general", "{got}");
    assert_eq!(recv_json(&mut native).await["event"], "announcement");
    expect_silence(&mut attacker, Duration::from_millis(200)).await;
    let (_, channels) = server.get("/api/broadcast/channels").await;
    let general = channels["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "general")
        .unwrap_or_else(|| panic!("{channels}"));
    assert_eq!(general["kind"], "public", "{channels}");
}

// Defect 2, continued: a private- name that no rule knows stays usable with an app-signed
// auth (Laravel apps with their own auth endpoint), and whispers work there.
#[tokio::test]
async fn app_signed_private_channels_outside_the_rules_still_work() {
    let server = start_with(pusher_config()).await;
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let (mut ws, socket_id) = pusher_socket(&server).await;
        let auth = rustaxum::services::pusher::channel_auth(&app(), &socket_id, "private-App.Models.User.1", None);
        send_json(
            &mut ws,
            json!({"event": "pusher:subscribe", "data": {"channel": "private-App.Models.User.1", "auth": auth}}),
        )
        .await;
        until_event(&mut ws, "pusher_internal:subscription_succeeded").await;
        sockets.push(ws);
    }
    send_json(
        &mut sockets[0],
        json!({"event": "client-typing", "channel": "private-App.Models.User.1", "data": {"t": 1}}),
    )
    .await;
    let got = until_event(&mut sockets[1], "client-typing").await;
    assert_eq!(got["channel"], "private-App.Models.User.1");
}

/// Opens a TCP connection that sends `prefix` and then nothing.
async fn stalled(server: &TestServer, prefix: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(prefix).await.unwrap();
    s
}

/// Reads until EOF or `limit`; returns what arrived and whether the server closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

// Defect 3: connections that never finish their HTTP request were held forever.
#[tokio::test]
async fn connections_that_never_finish_their_request_are_dropped() {
    let mut c = config();
    c.server.http_header_timeout = Duration::from_secs(1);
    c.server.http_request_timeout = Duration::from_secs(1);
    let server = start_with(c).await;
    let started = Instant::now();
    let mut idle = stalled(&server, b"").await;
    let mut slowloris = stalled(&server, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    let body = "{\"channel\":\"general\",\"event\":\"e\",\"data\":{}}";
    let head = format!(
        "POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut slow_body = stalled(&server, format!("{head}{{\"chan").as_bytes()).await;

    for s in [&mut idle, &mut slowloris] {
        let (_, closed) = read_until_closed(s, Duration::from_secs(5)).await;
        assert!(closed, "held open for {:?}", started.elapsed());
    }
    let (answer, closed) = read_until_closed(&mut slow_body, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(closed);
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert_eq!(server.get("/health").await.0, 200);
}

// Defect 3: a Content-Length over the limit is answered 413 before any body is sent.
#[tokio::test]
async fn oversized_content_length_is_refused_at_once() {
    let server = start_with(pusher_config()).await;
    for path in ["/api/broadcast", "/apps/app/events", "/broadcasting/auth"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
        );
        let mut s = stalled(&server, head.as_bytes()).await;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer before the body"))
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains("payload_too_large"), "{path}: {answer}");
    }
}

// Defect 5: a validly signed token with a huge `exp` panicked the session and left a ghost
// connection and presence member behind.
#[tokio::test]
async fn huge_exp_neither_panics_nor_leaves_ghosts() {
    let server = start().await;
    let claims = json!({"sub": "9", "aud": ["websocket"], "exp": u64::MAX, "user_info": {"name": "Max"}});
    let jwt = sign(&claims);
    let (mut ws, first) = server.connect(&format!("/ws/presence.room?auth_token={jwt}")).await;
    assert_eq!(first["event"], "subscription_succeeded", "{first}");
    send_json(&mut ws, json!({"action": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await["event"], "pong", "the session is alive");
    drop(ws);
    wait_for(&server, |s| s.connections == 0).await;
    let (_, users) = server.get("/api/broadcast/channels/presence.room/users").await;
    assert_eq!(users["count"], 0, "{users}");
}

// Defect 6: a socket that authenticated with `refresh` was not registered as the user, so
// terminate_connections missed it.
#[tokio::test]
async fn refresh_into_a_user_registers_the_socket_as_that_user() {
    let server = start_with(pusher_config()).await;
    let (mut ws, first) = server.connect("/ws/general").await;
    assert_eq!(first["event"], "subscription_succeeded");
    send_json(&mut ws, json!({"action": "refresh", "token": token("77", json!({}))})).await;
    assert_eq!(recv_json(&mut ws).await["event"], "token_refreshed");
    let path = "/apps/app/users/77/terminate_connections";
    let resp = reqwest::Client::new()
        .post(server.url(&signed_path(&app(), "POST", path, "")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let frame = expect_close(&mut ws).await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4009);
}

// Defect 7: with BROADCAST_API_TOKEN set, the read endpoints still told anyone who is online.
#[tokio::test]
async fn read_endpoints_need_the_api_token_when_one_is_set() {
    let mut c = config();
    c.server.api_token = Some("read-token-0123456789".into());
    let server = start_with(c).await;
    let jwt = token("5", json!({"user_info": {"email": "five@example.com"}}));
    let (_ws, _) = server.connect(&format!("/ws/presence.team?auth_token={jwt}")).await;
    let client = reqwest::Client::new();
    for path in [
        "/api/broadcast/stats",
        "/api/broadcast/stats?scope=cluster",
        "/api/broadcast/channels",
        "/api/broadcast/channels/presence.team/users",
        "/metrics",
    ] {
        let resp = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        let text = resp.text().await.unwrap();
        assert!(!text.contains("five@example.com"), "{path}: {text}");
        let resp = client
            .get(server.url(path))
            .bearer_auth("read-token-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    for path in ["/health", "/ready", "/"] {
        assert_eq!(server.get(path).await.0, 200, "{path}");
    }
}

async fn post_raw(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HashMap<String, String>) {
    let mut req = reqwest::Client::new().post(server.url(path)).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    (resp.status().as_u16(), headers)
}

// Defect 8: any web page could publish into a default server on the user's machine.
#[tokio::test]
async fn browsers_cannot_write_cross_origin_and_the_api_wants_json() {
    let server = start_with(pusher_config()).await;
    let (mut ws, _) = server.connect("/ws/general").await;
    let body = json!({"channel": "general", "event": "forged", "data": {}}).to_string();
    let evil = [("origin", "http://evil.example"), ("content-type", "application/json")];
    assert_eq!(post_raw(&server, "/api/broadcast", &evil, &body).await.0, 403);
    // The form-like content type a page can send without a preflight is refused too.
    let plain = [("content-type", "text/plain")];
    assert_eq!(post_raw(&server, "/api/broadcast", &plain, &body).await.0, 415);
    let none: [(&str, &str); 0] = [];
    assert_eq!(post_raw(&server, "/api/broadcast", &none, &body).await.0, 415);
    // The preflight does not invite the page either.
    let resp = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, server.url("/api/broadcast"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // Every other state-changing endpoint refuses the foreign origin before any effect.
    let events = json!({"name": "forged", "channel": "general", "data": "{}"}).to_string();
    let path = signed_path(&app(), "POST", "/apps/app/events", &events);
    assert_eq!(post_raw(&server, &path, &evil, &events).await.0, 403);
    let form = [
        ("origin", "http://evil.example"),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    assert_eq!(
        post_raw(
            &server,
            "/broadcasting/auth",
            &form,
            "socket_id=1.1&channel_name=private-user.1"
        )
        .await
        .0,
        403
    );
    expect_silence(&mut ws, Duration::from_millis(300)).await;

    // A page served by this server itself (same origin) and tools without Origin still work.
    let host = server.addr.to_string();
    let own = format!("http://{host}");
    let same = [("origin", own.as_str()), ("content-type", "application/json")];
    assert_eq!(post_raw(&server, "/api/broadcast", &same, &body).await.0, 200);
    assert_eq!(recv_json(&mut ws).await["event"], "forged");
    let json_only = [("content-type", "application/json; charset=utf-8")];
    assert_eq!(post_raw(&server, "/api/broadcast", &json_only, &body).await.0, 200);
    recv_json(&mut ws).await;
}

// Defect 8: an origin the operator allows may write (and gets CORS headers).
#[tokio::test]
async fn configured_origins_may_write() {
    let mut c = config();
    c.server.cors_allowed_origins = vec!["https://app.example".into()];
    let server = start_with(c).await;
    let body = json!({"channel": "general", "event": "e", "data": {}}).to_string();
    let ok = [("origin", "https://app.example"), ("content-type", "application/json")];
    let (status, headers) = post_raw(&server, "/api/broadcast", &ok, &body).await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], "https://app.example");
    let other = [
        ("origin", "https://other.example"),
        ("content-type", "application/json"),
    ];
    assert_eq!(post_raw(&server, "/api/broadcast", &other, &body).await.0, 403);
}

/// The HTTP status of a native upgrade (101 when it succeeded).
async fn upgrade_status(url: String) -> (u16, Option<Ws>) {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => (101, Some(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (resp.status().as_u16(), None),
        Err(e) => panic!("{e}"),
    }
}

// Defect 9: both protocols refuse the (max+1)-th connection, also when 200 upgrades race.
#[tokio::test]
async fn connection_limit_holds_under_concurrent_upgrades() {
    let mut c = pusher_config();
    c.websocket.max_connections = 5;
    let server = start_with(c).await;

    let attempts = (0..200).map(|_| upgrade_status(server.ws_url("/ws/general")));
    let results = futures_util::future::join_all(attempts).await;
    let admitted = results.iter().filter(|(s, _)| *s == 101).count();
    let refused = results.iter().filter(|(s, _)| *s == 503).count();
    assert_eq!((admitted, refused), (5, 195));
    assert_eq!(server.app.hub().connection_count(), 5);
    drop(results);
    wait_for(&server, |s| s.connections == 0).await;

    let attempts = (0..200).map(|_| async {
        let mut ws = server.connect_raw("/app/key?protocol=7").await;
        let first = recv_json(&mut ws).await;
        (first, ws)
    });
    let results = futures_util::future::join_all(attempts).await;
    let (established, refused): (Vec<_>, Vec<_>) = results
        .into_iter()
        .partition(|(f, _)| f["event"] == "pusher:connection_established");
    assert_eq!(established.len(), 5);
    for (first, mut ws) in refused {
        assert_eq!(first["event"], "pusher:error");
        assert_eq!(first["data"]["code"], 4100);
        assert_eq!(u16::from(expect_close(&mut ws).await.unwrap().code), 4100);
    }
    // One more, sequentially, while five are open: refused too (it used to be admitted).
    let mut extra = server.connect_raw("/app/key?protocol=7").await;
    assert_eq!(recv_json(&mut extra).await["data"]["code"], 4100);
}

// Defect 10: a slow consumer got EOF instead of its 4100 close frame.
#[tokio::test]
async fn a_slow_consumer_learns_why_it_was_closed() {
    let mut c = config();
    c.websocket.send_queue_size = 4;
    let server = start_with(c).await;
    let (mut slow, _) = server.connect("/ws/general").await;
    let big = "x".repeat(64 * 1024);
    let general = rustaxum::Channel::parse("general").unwrap();
    for _ in 0..2000 {
        let data: std::sync::Arc<serde_json::value::RawValue> =
            serde_json::value::to_raw_value(&json!({"blob": big})).unwrap().into();
        server
            .app
            .hub()
            .deliver(rustaxum::hub::Message::event(general.clone(), "big", data));
        if server.app.hub().snapshot().slow_disconnects > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(server.app.hub().snapshot().slow_disconnects, 1);
    // The client is busy for a while longer before it reads again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let frame = expect_close(&mut slow).await.expect("a close frame, not EOF");
    assert_eq!(u16::from(frame.code), 4100);
}

/// A WebSocket handshake over a raw TCP stream, so tests can send frames no client
/// library would produce.
async fn raw_ws(server: &TestServer, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

/// A masked client frame with the given first byte (FIN, RSV bits, opcode).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads server frames until a close frame; returns its code (None on EOF first).
async fn close_code(s: &mut TcpStream) -> Option<u16> {
    loop {
        let mut head = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
            .await
            .expect("timed out")
            .ok()?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.ok()?;
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).await.ok()?;
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        if head[0] & 0x0f == 0x8 {
            return Some(u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

// Defect 10: protocol violations ended the connection without 1002 / 1007.
#[tokio::test]
async fn protocol_violations_get_their_close_codes() {
    let server = start().await;
    let cases: [(&str, Vec<u8>, u16); 3] = [
        (
            "invalid UTF-8 in a text frame",
            client_frame(0x81, &[0xff, 0xfe, 0xfd]),
            1007,
        ),
        ("reserved bits set", client_frame(0xC1, b"{}"), 1002),
        ("unknown opcode", client_frame(0x83, b"{}"), 1002),
    ];
    for (what, frame, code) in cases {
        let mut s = raw_ws(&server, "/ws").await;
        s.write_all(&frame).await.unwrap();
        assert_eq!(close_code(&mut s).await, Some(code), "{what}");
    }
    let (mut ws, _) = server.connect("/ws/general").await;
    send_json(&mut ws, json!({"action": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await["event"], "pong", "others keep being served");
}

// Hardening round two (issue 21, defect 1): with a 1-character dashboard token on a
// public address the server started and `/dashboard/ws?token=a` streamed channels,
// members and user names.
#[tokio::test]
async fn a_short_dashboard_token_on_a_public_address_is_refused_at_start() {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        server_command()
            .args(["--host", "0.0.0.0", "--port", "0"])
            .env("BROADCAST_API_TOKEN", "0123456789abcdefghij")
            .env("BROADCAST_DASHBOARD_TOKEN", "a")
            .output(),
    )
    .await
    .expect("the server refused to start, it did not serve")
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BROADCAST_DASHBOARD_TOKEN") && err.contains("16"), "{err}");
}

#[tokio::test]
async fn a_reload_cannot_shorten_a_guarding_secret_on_a_public_address() {
    let public = |dashboard: Option<&'static str>| {
        config_from(move |k| match k {
            "BROADCAST_HOST" => Some("0.0.0.0".into()),
            "BROADCAST_API_TOKEN" => Some("0123456789abcdefghij".into()),
            "BROADCAST_DASHBOARD_TOKEN" => dashboard.map(str::to_string),
            _ => None,
        })
    };
    let app = rustaxum::Rustaxum::new(public(Some("a-long-dashboard-token"))).unwrap();
    let err = app.reload(&public(Some("a"))).unwrap_err().to_string();
    assert!(err.contains("BROADCAST_DASHBOARD_TOKEN"), "{err}");
    assert_eq!(
        app.config().server.dashboard_token.as_deref(),
        Some("a-long-dashboard-token"),
        "nothing was applied"
    );
}

#[tokio::test]
async fn wrong_dashboard_tokens_are_slowed_down_per_address() {
    let right = "the-right-dashboard-token";
    let server = start_with(config_from(|k| {
        (k == "BROADCAST_DASHBOARD_TOKEN").then(|| right.into())
    }))
    .await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let attacker = from([127, 0, 0, 1]);
    let status = |client: &reqwest::Client, token: &str| {
        let req = client.get(server.url(&format!("/dashboard/ws?token={token}")));
        async move { req.send().await.unwrap() }
    };
    for i in 0..10 {
        assert_eq!(status(&attacker, &format!("guess{i}")).await.status().as_u16(), 401);
    }
    // The budget is spent: even the right token is refused, so answers tell nothing.
    let refused = status(&attacker, right).await;
    assert_eq!(refused.status().as_u16(), 429);
    let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Another address is not affected (426: the token was accepted, the upgrade is missing).
    assert_eq!(status(&from([127, 0, 0, 2]), right).await.status().as_u16(), 426);
}

// Hardening round two (issue 21, defect 6): `BROADCAST_PUBLIC_CHANNELS=*` made private and
// presence channels public without a word.
#[tokio::test]
async fn a_public_pattern_covering_private_rules_is_warned_about_at_start() {
    use tokio::io::AsyncBufReadExt;
    let mut child = server_command()
        .args(["--port", "0"])
        .env("BROADCAST_PUBLIC_CHANNELS", "*")
        .env("JWT_SECRET", SECRET)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("WARN") && line.contains("user.{id}") {
                return line;
            }
            seen.push(line);
        }
        panic!("no warning: {seen:?}");
    })
    .await
    .expect("the warning at start");
    assert!(
        found.contains("BROADCAST_PUBLIC_CHANNELS") && found.contains('*'),
        "{found}"
    );
    let _ = child.kill().await;
}

/// The code of the Close frame among the server frames in `buf` (unmasked, short ones).
fn close_code_in(buf: &[u8]) -> Option<u16> {
    let mut at = 0;
    while at + 2 <= buf.len() {
        let (first, len) = (buf[at], usize::from(buf[at + 1] & 0x7f));
        let (header, len) = match len {
            126 => (
                4,
                usize::from(u16::from_be_bytes([*buf.get(at + 2)?, *buf.get(at + 3)?])),
            ),
            127 => return None,
            n => (2, n),
        };
        let payload = buf.get(at + header..at + header + len)?;
        if first & 0x0f == 0x8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
        at += header + len;
    }
    None
}

/// The server process's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("Linux /proc");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

// Issue 34: memory followed the length a frame header announces: 300 sockets announcing
// 4 MiB frames and sending 10 bytes each added 602 MB, and most stayed after they closed.
// Now it follows the bytes received, and a frame that stalls is closed (1008).
#[tokio::test]
async fn memory_follows_the_bytes_received_not_the_length_announced() {
    let (child, url) = spawn_server(&[
        ("BROADCAST_PUBLIC_CHANNELS", "news"),
        ("BROADCAST_MAX_MESSAGE_SIZE", "4194304"),
        ("BROADCAST_FRAME_TIMEOUT", "3s"),
    ])
    .await;
    let pid = child.id().expect("running");
    let addr = url.strip_prefix("http://").unwrap().to_string();
    let upgrade = format!(
        "GET /ws?channel=news HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    // Settle the allocator with a first round of plain sockets.
    let mut warm = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(upgrade.as_bytes()).await.unwrap();
        warm.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = rss(pid);
    // A masked text frame announcing 4 MiB (64-bit length), and ten bytes of it.
    let mut announce = vec![0x81u8, 0x80 | 127];
    announce.extend((4u64 << 20).to_be_bytes());
    announce.extend([1, 2, 3, 4]);
    announce.extend_from_slice(b"0123456789");
    let mut sockets = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(upgrade.as_bytes()).await.unwrap();
        let mut head = [0u8; 1024];
        let n = s.read(&mut head).await.unwrap();
        assert!(head[..n].starts_with(b"HTTP/1.1 101"));
        s.write_all(&announce).await.unwrap();
        sockets.push(s);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let during = rss(pid);
    let added = during.saturating_sub(before);
    eprintln!(
        "RSS before {} MB, with 300 announcing sockets {} MB (+{} MB)",
        before >> 20,
        during >> 20,
        added >> 20
    );
    assert!(
        added <= 60 << 20,
        "300 sockets announcing 4 MiB frames added {} MB",
        added >> 20
    );
    // The stalled frames are closed after BROADCAST_FRAME_TIMEOUT with 1008.
    let mut closed = 0;
    for s in &mut sockets {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        if read.is_ok() && close_code_in(&buf) == Some(1008) {
            closed += 1;
        }
    }
    assert_eq!(closed, sockets.len(), "every stalled socket got a Close (1008)");
    drop(sockets);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = rss(pid);
    eprintln!("RSS after they closed {} MB", after >> 20);
    assert!(
        after <= before + (20 << 20),
        "memory returns: before {} MB, after {} MB",
        before >> 20,
        after >> 20
    );
    terminate(child).await;
}
