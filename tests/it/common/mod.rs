//! Test helpers: a real server on 127.0.0.1:0 and real WebSocket clients.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustaxum::{Config, Rustaxum};
use serde_json::Value;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestServer {
    /// The WebSocket port.
    pub addr: SocketAddr,
    /// The application port, when the server has one (see [`start_two_ports`]).
    pub app_addr: Option<SocketAddr>,
    /// The typed-frame service's port, when the server has one (see [`start_with_rtc`]).
    pub rtc_addr: Option<SocketAddr>,
    pub app: Rustaxum,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), rustaxum::StartError>>,
}

pub const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";

/// Defaults, plus a JWT secret (so the private rules are active) and the ad-hoc channel
/// names these tests use declared public, as an operator would with BROADCAST_PUBLIC_CHANNELS.
pub fn config() -> Config {
    Config::from_lookup(|k| match k {
        "JWT_SECRET" => Some(SECRET.into()),
        "EMIT_HUB_DB_PATH" => Some(":memory:".into()),
        "BROADCAST_DRAIN_SECONDS" => Some("0".into()),
        "BROADCAST_PUBLIC_CHANNELS" => Some("other,news,alpha,beta,chat,firehose,orders,jobs,heartbeat,updates".into()),
        _ => None,
    })
    .expect("test config")
}

/// The configuration of `lookup` (and, unless `lookup` names them, an EmitHub database in
/// memory and no drain on shutdown), as `Config::from_lookup` would read it from the
/// environment.
pub fn config_from(lookup: impl Fn(&str) -> Option<String>) -> Config {
    Config::from_lookup(|k| {
        lookup(k).or_else(|| match k {
            "EMIT_HUB_DB_PATH" => Some(":memory:".into()),
            "BROADCAST_DRAIN_SECONDS" => Some("0".into()),
            _ => None,
        })
    })
    .expect("test config")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// An HS256 token for `sub` valid for an hour; `extra` claims are merged in.
pub fn token(sub: &str, extra: Value) -> String {
    let mut claims = serde_json::json!({
        "sub": sub,
        "aud": ["websocket"],
        "iat": now(),
        "exp": now() + 3600,
        "roles": [],
        "permissions": [],
    });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    sign(&claims)
}

/// Signs arbitrary claims with the test secret (HS256).
pub fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

pub async fn start() -> TestServer {
    start_with(config()).await
}

pub async fn start_with(config: Config) -> TestServer {
    start_app(Rustaxum::new(config).expect("app")).await
}

pub async fn start_app(app: Rustaxum) -> TestServer {
    serve_on(app, 1).await
}

/// A server with the typed-frame service's own port too (`rtc_addr`, where `/ws` speaks
/// typed frames).
pub async fn start_with_rtc(config: Config) -> TestServer {
    let app = Rustaxum::new(config).expect("app");
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let rtc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = main.local_addr().expect("addr");
    let rtc_addr = rtc.local_addr().expect("addr");
    let routed = vec![
        (main, app.router().expect("router")),
        (rtc, app.rtc_router().expect("rtc router")),
    ];
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(app.clone().serve(routed, async {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        app_addr: None,
        rtc_addr: Some(rtc_addr),
        app,
        stop: Some(tx),
        handle,
    }
}

/// A server listening on a WebSocket port and an application port, as the binary does.
pub async fn start_two_ports(config: Config) -> TestServer {
    serve_on(Rustaxum::new(config).expect("app"), 2).await
}

async fn serve_on(app: Rustaxum, ports: usize) -> TestServer {
    let mut listeners = Vec::new();
    for _ in 0..ports {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let addr = listeners[0].local_addr().expect("addr");
    let app_addr = listeners.get(1).map(|l| l.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(app.clone().serve(listeners, async {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        app_addr,
        rtc_addr: None,
        app,
        stop: Some(tx),
        handle,
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Connects and returns the socket after its first message (connection_established
    /// or subscription_succeeded), which is returned too.
    pub async fn connect(&self, path: &str) -> (Ws, Value) {
        let mut ws = self.connect_raw(path).await;
        let first = recv_json(&mut ws).await;
        (ws, first)
    }

    pub async fn connect_raw(&self, path: &str) -> Ws {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(self.ws_url(path)))
            .await
            .expect("connect timed out")
            .expect("connect");
        ws
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), rustaxum::StartError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("server did not stop in time")
            .expect("server task panicked")
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.post_with(path, body, None).await
    }

    pub async fn post_with(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("http");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::get(self.url(path)).await.expect("http");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn publish(&self, channel: &str, event: &str, data: Value) -> Value {
        let body = serde_json::json!({"channel": channel, "event": event, "data": data});
        let (status, answer) = self.post("/api/broadcast", &body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

/// The next text frame as JSON, skipping control frames. Panics on timeout or close.
/// Any client socket: tungstenite's, or one that inflates compressed messages.
pub async fn recv_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("socket ended")
            .expect("socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("server sent JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Asserts no text frame arrives within `dur`.
pub async fn expect_silence(ws: &mut Ws, dur: Duration) {
    let deadline = tokio::time::Instant::now() + dur;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected silence, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame and returns it.
pub async fn expect_close(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("timed out waiting for close")
        {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before close frame: {e}"),
            None => return None,
        }
    }
}

pub async fn send_json(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into())).await.expect("send");
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string().into())).await.expect("send");
}

/// Waits until `cond` holds for the server's stats (polling), or panics.
pub async fn wait_for<F: Fn(&rustaxum::hub::StatsSnapshot) -> bool>(server: &TestServer, cond: F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if cond(&server.app.hub().snapshot()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached; stats: {:?}", server.app.hub().snapshot());
}

/// A node of a cluster on `redis` with key prefix `prefix`.
/// Waits until `node` answers `/ready` (its Redis subscription is up), for at most 10 s.
pub async fn wait_ready(node: &TestServer) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.get("/ready").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "node never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two nodes sharing `redis` under a fresh key prefix, both ready; and the prefix.
pub async fn two_nodes(redis: &(impl redis::Backend + ?Sized)) -> (TestServer, TestServer, String) {
    let prefix = redis::unique_prefix();
    let a = start_with(cluster_config(redis, &prefix)).await;
    let b = start_with(cluster_config(redis, &prefix)).await;
    for node in [&a, &b] {
        wait_ready(node).await;
    }
    (a, b, prefix)
}

pub fn cluster_config(redis: &(impl redis::Backend + ?Sized), prefix: &str) -> Config {
    let mut c = config();
    c.driver = rustaxum::config::Driver::Redis;
    redis.configure(&mut c);
    c.redis.channels_prefix = prefix.to_string();
    c.auth.public_channels.push("orders.*".into());
    c
}

/// The Pusher app the hardening and Pusher tests configure.
pub fn pusher_app(id: &str, key: &str, secret: &str) -> rustaxum::services::pusher::PusherApp {
    rustaxum::services::pusher::PusherApp::new(id, key, secret)
}

/// `path` with the query of a signed Pusher REST request (auth_key, auth_timestamp,
/// auth_version, body_md5 when there is a body, auth_signature).
pub fn signed_path(app: &rustaxum::services::pusher::PusherApp, method: &str, path: &str, body: &str) -> String {
    use md5::Digest;
    let mut params: std::collections::BTreeMap<String, String> = [
        ("auth_key", app.key.clone()),
        ("auth_timestamp", now().to_string()),
        ("auth_version", "1.0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if !body.is_empty() {
        params.insert("body_md5".into(), hex::encode(md5::Md5::digest(body.as_bytes())));
    }
    let signature = rustaxum::services::pusher::sign_request(&app.secret, method, path, &params);
    params.insert("auth_signature".into(), signature);
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{path}?{}", query.join("&"))
}

/// The server binary with none of the test runner's settings: no variable of ours, none
/// of the generic names other documents use, no default port but the one a test picks,
/// the EmitHub database in memory; stdout and stderr piped; killed when dropped.
pub fn server_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rustaxum"));
    for (k, _) in std::env::vars() {
        let ours = [
            "BROADCAST_",
            "EMIT_HUB_",
            "CORS_",
            "JWT_",
            "PUSHER_",
            "REDIS",
            "REVERB_",
        ];
        if ours.iter().any(|p| k.starts_with(p)) || ["RUST_LOG", "LOG_FORMAT", "APP_NAME"].contains(&k.as_str()) {
            cmd.env_remove(k);
        }
    }
    for generic in [
        "HOST",
        "PORT",
        "MAX_CONNECTIONS",
        "HEARTBEAT_INTERVAL",
        "CLIENT_TIMEOUT",
        "RATE_LIMIT_ENABLED",
        "LOG_LEVEL",
    ] {
        cmd.env_remove(generic);
    }
    cmd.env("BROADCAST_APP_PORT", "off")
        .env("BROADCAST_RTC_PORT", "off")
        .env("EMIT_HUB_DB_PATH", ":memory:")
        .env("BROADCAST_DRAIN_SECONDS", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The `rustaxum` binary with `env`, on a free port; returns it and its base URL.
pub async fn spawn_server(env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = server_command();
    cmd.args(["--port", "0"]).envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn rustaxum");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the server printed its address")
        .expect("stdout")
        .expect("a line");
    let url = line
        .strip_prefix("rustaxum listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line}"))
        .to_string();
    // Keep draining stdout so the server never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// SIGTERM, then waits for a clean exit.
pub async fn terminate(mut child: Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the server exits")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

/// Whether the tests run as root (nginx workers and the image's user need it known).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Reads frames until one whose `event` is `event` arrives (the others are skipped).
pub async fn until_event(ws: &mut Ws, event: &str) -> Value {
    loop {
        let msg = recv_json(ws).await;
        if msg["event"] == event {
            return msg;
        }
    }
}

/// A rules file (TOML, as `BROADCAST_RULES_FILE` takes) holding `text`, in a fresh temp dir.
pub fn rules_file(text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rustaxum-rules-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("rules.toml");
    std::fs::write(&path, text).expect("rules file");
    path
}

/// The rule an operator writes to let JWT clients join presence channels that a Pusher app
/// shares (the built-in "any valid token" rule does not cover those).
pub const PRESENCE_FOR_TOKENS: &str =
    "[[rules]]\npattern = \"presence.*\"\nkind = \"presence\"\nallow = [\"authenticated\"]\n";

/// `text` compressed as RFC 7692 §7.2.1 tells a sender to: raw DEFLATE ended with a sync
/// flush, whose trailing `00 00 ff ff` is removed. flate2 directly, not the server's own
/// compressor, so the server's inflating is checked against an independent encoder.
pub fn deflate_message(text: &[u8]) -> bytes::Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text).expect("deflate");
    encoder.flush().expect("sync flush");
    let mut out = encoder.get_ref().clone();
    assert!(
        out.ends_with(&[0, 0, 0xff, 0xff]),
        "a sync flush ends with an empty stored block"
    );
    out.truncate(out.len() - 4);
    bytes::Bytes::from(out)
}

/// A compressed message's payload as one final text frame with RSV1 set (RFC 7692 §6),
/// for tungstenite to write as it is (`Message::Frame`; a client's frame is masked).
pub fn compressed_text_frame(payload: bytes::Bytes) -> tokio_tungstenite::tungstenite::protocol::frame::Frame {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    let header = FrameHeader {
        is_final: true,
        rsv1: true,
        rsv2: false,
        rsv3: false,
        opcode: OpCode::Data(Data::Text),
        mask: None,
    };
    Frame::from_payload(header, payload)
}
