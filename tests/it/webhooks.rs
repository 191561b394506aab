//! Webhooks in Pusher's format, received by a real HTTP server on loopback and checked
//! with the published `pusher` Node SDK's webhook validator.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::redis::{unique_prefix, Backend, RedisCluster, RedisServer};
use crate::common::*;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use tokio::time::Instant;

/// What the receiver got: (X-Pusher-Key, X-Pusher-Signature, Content-Type, body).
type Received = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A listener on a port the system chose, and its address (no race with another process
/// for a port picked in advance).
async fn local() -> (SocketAddr, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (listener.local_addr().unwrap(), listener)
}

/// A webhook receiver on `listener` answering 200.
async fn receiver(listener: tokio::net::TcpListener, received: Received) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let received = received.clone();
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                received
                    .lock()
                    .unwrap()
                    .push((h("x-pusher-key"), h("x-pusher-signature"), h("content-type"), body));
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

/// Every event received so far, in order.
fn events(received: &Received) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, _, _, body)| {
            let v: Value = serde_json::from_str(body).unwrap();
            v["events"].as_array().unwrap().clone()
        })
        .collect()
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{} {}", e["name"].as_str().unwrap(), e["channel"].as_str().unwrap()))
        .collect()
}

async fn wait_until(received: &Received, what: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    // Long enough for a dead node's liveness key to expire (8 s) and be reaped (every 2 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = events(received);
        if what(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "webhooks so far: {:#?}", got);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lookup(hook: String) -> impl Fn(&str) -> Option<String> {
    let rules = rules_file(PRESENCE_FOR_TOKENS).display().to_string();
    move |k| match k {
        "BROADCAST_RULES_FILE" => Some(rules.clone()),
        "JWT_SECRET" => Some(SECRET.into()),
        "BROADCAST_PUBLIC_CHANNELS" => Some("orders".into()),
        "PUSHER_APP_ID" => Some("42".into()),
        "PUSHER_APP_KEY" => Some("hook-key".into()),
        "PUSHER_APP_SECRET" => Some("hook-secret".into()),
        "BROADCAST_WEBHOOK_URLS" => Some(hook.clone()),
        "BROADCAST_WEBHOOK_MEMBER_DELAY" => Some("300ms".into()),
        _ => None,
    }
}

/// Asks the published `pusher` SDK whether a webhook is valid; returns its events.
async fn sdk_validates(key: &str, signature: &str, content_type: &str, body: &str) -> Value {
    let script = r#"
const Pusher = require('pusher');
const [key, signature, contentType, body] = process.argv.slice(1);
const pusher = new Pusher({ appId: '42', key: 'hook-key', secret: 'hook-secret' });
const webhook = pusher.webhook({ headers: { 'x-pusher-key': key, 'x-pusher-signature': signature, 'content-type': contentType }, rawBody: body });
console.log(JSON.stringify({ valid: webhook.isValid(), events: webhook.isValid() ? webhook.getEvents() : null }));
"#;
    let out = tokio::process::Command::new("node")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pusher"))
        .args(["-e", script, key, signature, content_type, body])
        .output()
        .await
        .expect("node");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from node")
}

#[tokio::test]
async fn each_event_once_signed_as_the_pusher_sdk_expects() {
    let (addr, addr_listener) = local().await;
    let received: Received = Arc::default();
    let _r = receiver(addr_listener, received.clone()).await;
    let server = start_with(config_from(lookup(format!("http://{addr}/hook")))).await;

    // occupied, then vacated when the last subscriber leaves.
    let (a, _) = server.connect("/ws/orders").await;
    let (b, _) = server.connect("/ws/orders").await;
    wait_until(&received, |e| !e.is_empty()).await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(b);
    let got = wait_until(&received, |e| e.len() >= 2).await;
    assert_eq!(names(&got), ["channel_occupied orders", "channel_vacated orders"]);

    // Presence: member_added once per user, client_event with its data, member_removed
    // after the delay, and a page reload within the delay sends nothing.
    let alice = token("alice", json!({"user_info": {"name": "Alice"}}));
    let bob = token("bob", json!({}));
    let (mut a, _) = server.connect(&format!("/ws/presence.room.1?auth_token={alice}")).await;
    let (_a2, _) = server.connect(&format!("/ws/presence.room.1?auth_token={alice}")).await;
    let (b, _) = server.connect(&format!("/ws/presence.room.1?auth_token={bob}")).await;
    send_json(
        &mut a,
        json!({"action": "whisper", "channel": "presence.room.1", "event": "typing", "data": {"on": true}}),
    )
    .await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_b, _) = server.connect(&format!("/ws/presence.room.1?auth_token={bob}")).await;
    drop(a);
    wait_until(&received, |e| e.iter().any(|e| e["name"] == "client_event")).await;
    // Past the member delay: bob's reload and alice's closed second tab sent nothing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let all = events(&received);
    let presence: Vec<&Value> = all.iter().skip(2).collect();
    let summary: Vec<String> = presence
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["name"].as_str().unwrap(),
                e["user_id"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "channel_occupied ",
            "member_added alice",
            "member_added bob",
            "client_event alice"
        ],
        "{all:#?}"
    );
    let client = presence.iter().find(|e| e["name"] == "client_event").unwrap();
    assert_eq!(client["channel"], "presence-room.1", "Pusher spelling");
    assert_eq!(client["event"], "client-typing");
    assert_eq!(client["data"], r#"{"on":true}"#);
    assert!(client["socket_id"].is_string());

    // Every request is signed so that the SDK's validator accepts it.
    let requests = received.lock().unwrap().clone();
    for (key, signature, content_type, body) in &requests {
        assert_eq!(key, "hook-key");
        let checked = sdk_validates(key, signature, content_type, body).await;
        assert_eq!(checked["valid"], true, "{body}");
        assert_eq!(
            checked["events"],
            serde_json::from_str::<Value>(body).unwrap()["events"]
        );
    }
    let (key, signature, content_type, body) = &requests[0];
    let forged = body.replace("orders", "orderz");
    assert_eq!(
        sdk_validates(key, signature, content_type, &forged).await["valid"],
        false
    );
    let (_, stats) = server.get("/api/broadcast/stats").await;
    assert_eq!(stats["webhooks"]["failed"], 0);
    assert_eq!(stats["webhooks"]["delivered"].as_u64(), Some(all.len() as u64));
}

#[tokio::test]
async fn a_receiver_down_for_three_seconds_loses_nothing() {
    // A port picked in advance: nothing listens on it until the receiver comes up.
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let received: Received = Arc::default();
    let server = start_with(config_from(lookup(format!("http://{addr}/hook")))).await;
    let mut sockets = Vec::new();
    for name in ["orders"] {
        sockets.push(server.connect(&format!("/ws/{name}")).await.0);
    }
    sockets.clear();
    // Polled: the receiver is down, so deliveries are retried (with backoff).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = server.get("/api/broadcast/stats").await;
        if stats["webhooks"]["retries"].as_u64().unwrap() >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _r = receiver(tokio::net::TcpListener::bind(addr).await.unwrap(), received.clone()).await;
    let got = wait_until(&received, |e| e.len() >= 2).await;
    assert_eq!(names(&got), ["channel_occupied orders", "channel_vacated orders"]);
    let (_, stats) = server.get("/api/broadcast/stats").await;
    assert_eq!(
        (
            stats["webhooks"]["failed"].as_u64(),
            stats["webhooks"]["delivered"].as_u64()
        ),
        (Some(0), Some(2))
    );
}

#[tokio::test]
async fn two_nodes_send_one_occupied_and_one_vacated() {
    one_occupied_one_vacated(&RedisServer::start()).await;
}

#[tokio::test]
async fn two_nodes_on_a_redis_cluster_send_one_occupied_and_one_vacated() {
    one_occupied_one_vacated(&RedisCluster::start()).await;
}

async fn one_occupied_one_vacated(redis: &impl Backend) {
    let prefix = unique_prefix();
    let (addr, addr_listener) = local().await;
    let received: Received = Arc::default();
    let _r = receiver(addr_listener, received.clone()).await;
    let node = |prefix: String| {
        let hook = format!("http://{addr}/hook");
        let mut c = config_from(lookup(hook));
        c.driver = rustaxum::config::Driver::Redis;
        redis.configure(&mut c);
        c.redis.channels_prefix = prefix;
        c
    };
    let a = start_with(node(prefix.clone())).await;
    let b = start_with(node(prefix.clone())).await;
    for n in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while n.get("/ready").await.0 != 200 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (on_a, _) = a.connect("/ws/orders").await;
    let (on_b, _) = b.connect("/ws/orders").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(on_a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(on_b);
    wait_until(&received, |e| e.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        names(&events(&received)),
        ["channel_occupied orders", "channel_vacated orders"]
    );
}

#[tokio::test]
async fn emithub_state_changes_are_webhooks_too() {
    let (addr, addr_listener) = local().await;
    let received: Received = Arc::default();
    let _r = receiver(addr_listener, received.clone()).await;
    let server = start_with(config_from(lookup(format!("http://{addr}/hook")))).await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(server.url("/api/v1/channels"))
        .json(&json!({"name": "Queue"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    for action in ["start", "pause"] {
        let r = http
            .put(server.url(&format!("/api/v1/channels/{id}/{action}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .delete(server.url(&format!("/api/v1/channels/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let got = wait_until(&received, |e| e.len() >= 4).await;
    let statuses: Vec<&str> = got.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["Created", "Active", "Paused", "Deleted"]);
    assert!(got.iter().all(|e| e["name"] == "emithub_channel_changed"
        && e["channel_id"] == id.as_str()
        && e["channel_name"] == "Queue"
        && e["channel"] == format!("emithub.{id}")));
}

#[tokio::test]
async fn a_node_that_dies_still_ends_in_one_channel_vacated() {
    dead_node_vacates(&RedisServer::start()).await;
}

#[tokio::test]
async fn on_a_redis_cluster_a_node_that_dies_still_ends_in_one_channel_vacated() {
    dead_node_vacates(&RedisCluster::start()).await;
}

async fn dead_node_vacates(redis: &impl Backend) {
    let prefix = unique_prefix();
    let (addr, addr_listener) = local().await;
    let received: Received = Arc::default();
    let _r = receiver(addr_listener, received.clone()).await;
    let hook = format!("http://{addr}/hook");
    let mut config = config_from(lookup(hook.clone()));
    config.driver = rustaxum::config::Driver::Redis;
    redis.configure(&mut config);
    config.redis.channels_prefix = prefix.clone();
    let _a = start_with(config).await;
    // Node B, a real process that will be killed with its subscriber on it.
    let backend = redis.env();
    let mut env: Vec<(&str, &str)> = backend.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("BROADCAST_DRIVER", "redis"),
        ("BROADCAST_CHANNELS_PREFIX", prefix.as_str()),
        ("BROADCAST_PUBLIC_CHANNELS", "orders"),
        ("PUSHER_APP_ID", "42"),
        ("PUSHER_APP_KEY", "hook-key"),
        ("PUSHER_APP_SECRET", "hook-secret"),
        ("BROADCAST_WEBHOOK_URLS", hook.as_str()),
    ]);
    let (mut b, base) = spawn_server(&env).await;
    let ws_url = format!("{}/ws/orders", base.replacen("http", "ws", 1));
    let (_socket, _) = tokio_tungstenite::connect_async(ws_url).await.expect("connect to B");
    wait_until(&received, |e| !e.is_empty()).await;
    b.kill().await.expect("SIGKILL node B");
    let started = Instant::now();
    let got = wait_until(&received, |e| e.len() >= 2).await;
    assert_eq!(names(&got), ["channel_occupied orders", "channel_vacated orders"]);
    assert!(started.elapsed() < Duration::from_secs(18), "{:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(events(&received).len(), 2, "reaped once");
}

#[tokio::test]
async fn occupancy_is_written_again_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let (addr, addr_listener) = local().await;
    let received: Received = Arc::default();
    let _r = receiver(addr_listener, received.clone()).await;
    let mut config = config_from(lookup(format!("http://{addr}/hook")));
    config.driver = rustaxum::config::Driver::Redis;
    config.redis.url = Some(redis.url());
    config.redis.channels_prefix = prefix;
    let a = start_with(config).await;
    let ready = |n: &TestServer| {
        let url = n.url("/ready");
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            while reqwest::get(&url).await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
                assert!(Instant::now() < deadline, "never ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    ready(&a).await;
    let (socket, _) = a.connect("/ws/orders").await;
    wait_until(&received, |e| !e.is_empty()).await;
    // Redis loses everything (no persistence) and comes back.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    ready(&a).await;
    // The node notices within a heartbeat (2 s) that Redis forgot it, and writes again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(socket);
    let got = wait_until(&received, |e| e.len() >= 2).await;
    assert_eq!(names(&got), ["channel_occupied orders", "channel_vacated orders"]);
}

#[tokio::test]
async fn each_app_gets_its_own_channels_events_and_cache_misses() {
    let (addr1, addr1_listener) = local().await;
    let (addr2, addr2_listener) = local().await;
    let (one, two): (Received, Received) = (Arc::default(), Arc::default());
    let _r1 = receiver(addr1_listener, one.clone()).await;
    let _r2 = receiver(addr2_listener, two.clone()).await;
    let dir = std::env::temp_dir().join(format!("rustaxum-webhook-apps-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("apps.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[apps]]
id = "one"
key = "one-key"
secret = "one-secret"
[[apps.webhooks]]
url = "http://{addr1}/hook"

[[apps]]
id = "two"
key = "two-key"
secret = "two-secret"
[[apps.webhooks]]
url = "http://{addr2}/hook"
"#
        ),
    )
    .unwrap();
    let path = file.display().to_string();
    let server = start_with(config_from(move |k| match k {
        "JWT_SECRET" => Some(SECRET.into()),
        "BROADCAST_PUBLIC_CHANNELS" => Some("orders,cache-*".into()),
        "PUSHER_APPS_FILE" => Some(path.clone()),
        _ => None,
    }))
    .await;
    let subscribe = |channel: &str| json!({"event": "pusher:subscribe", "data": {"channel": channel}});
    let (mut on_two, _) = server.connect("/app/two-key?protocol=7").await;
    send_json(&mut on_two, subscribe("orders")).await;
    assert_eq!(
        recv_json(&mut on_two).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let got = wait_until(&two, |e| !e.is_empty()).await;
    assert_eq!(names(&got), ["channel_occupied orders"]);

    let (mut on_one, _) = server.connect("/app/one-key?protocol=7").await;
    send_json(&mut on_one, subscribe("cache-prices")).await;
    assert_eq!(
        recv_json(&mut on_one).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let miss = recv_json(&mut on_one).await;
    assert_eq!(
        (miss["event"].as_str(), miss["channel"].as_str()),
        (Some("pusher:cache_miss"), Some("cache-prices"))
    );
    let got = wait_until(&one, |e| e.len() >= 2).await;
    let mut seen = names(&got);
    seen.sort();
    assert_eq!(seen, ["cache_miss cache-prices", "channel_occupied cache-prices"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events(&two).len(), 1, "app two's receiver got only app two's event");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Laravel's members have number ids and Pusher clients' whispers arbitrary JSON: webhooks
/// carry the id as a number and the data as the client wrote it (issue 33).
#[tokio::test]
async fn webhooks_keep_number_user_ids_and_client_event_bytes() {
    let (addr, addr_listener) = local().await;
    let received: Received = Arc::default();
    let _r = receiver(addr_listener, received.clone()).await;
    let server = start_with(config_from(lookup(format!("http://{addr}/hook")))).await;
    let app = rustaxum::services::pusher::PusherApp::new("42", "hook-key", "hook-secret");
    let join = |id: u64| {
        let server = &server;
        let app = &app;
        async move {
            let (mut ws, established) = server.connect("/app/hook-key?protocol=7").await;
            let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
            let socket_id = data["socket_id"].as_str().unwrap().to_string();
            let channel_data = json!({"user_id": id, "user_info": {"id": id}}).to_string();
            let auth = rustaxum::services::pusher::channel_auth(app, &socket_id, "presence-desk", Some(&channel_data));
            let sub = json!({"event": "pusher:subscribe", "data": {"channel": "presence-desk", "auth": auth, "channel_data": channel_data}});
            send_json(&mut ws, sub).await;
            assert_eq!(
                recv_json(&mut ws).await["event"],
                "pusher_internal:subscription_succeeded"
            );
            ws
        }
    };
    let mut one = join(1).await;
    let _two = join(2).await;
    let whisper = r#"{"event":"client-note","channel":"presence-desk","data":{"z":1,"a":"caf\u00e9","n":1.50}}"#;
    use futures_util::SinkExt;
    one.send(tokio_tungstenite::tungstenite::Message::text(whisper))
        .await
        .unwrap();
    let got = wait_until(&received, |e| e.iter().any(|e| e["name"] == "client_event")).await;
    let added: Vec<&Value> = got
        .iter()
        .filter(|e| e["name"] == "member_added")
        .map(|e| &e["user_id"])
        .collect();
    assert_eq!(added, [&json!(1), &json!(2)], "{got:#?}");
    let client = got.iter().find(|e| e["name"] == "client_event").unwrap();
    assert_eq!(client["user_id"], json!(1), "the presence member who sent it");
    assert_eq!(
        client["data"], r#"{"z":1,"a":"caf\u00e9","n":1.50}"#,
        "as the client wrote it"
    );
}

// Issue 34: webhooks followed a receiver's redirect to another host (with a Referer
// carrying the original URL and its query-string secret).
#[tokio::test]
async fn a_receiver_s_redirect_is_not_followed_and_counts_as_failed() {
    let (elsewhere, elsewhere_listener) = local().await;
    let stolen: Received = Arc::default();
    let _thief = receiver(elsewhere_listener, stolen.clone()).await;
    // The configured receiver redirects (and records the headers it got).
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let (addr, addr_listener) = local().await;
    let recorded = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            recorded.lock().unwrap().push(headers);
            async move {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", format!("http://{elsewhere}/hook"))],
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(addr_listener, app).await.unwrap() });
    let server = start_with(config_from(lookup(format!("http://{addr}/hook?secret=abc")))).await;
    let (_ws, _) = server.connect("/ws/orders").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, stats) = server.get("/api/broadcast/stats").await;
        if stats["webhooks"]["failed"].as_u64() >= Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the redirected batch never counted as failed: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events(&stolen).is_empty(), "the redirect was followed");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "a redirect is not retried");
    assert!(seen[0].get("referer").is_none());
}

// Issue 34: webhook URLs with passwords and secrets were logged; link-local metadata
// addresses were accepted silently.
#[tokio::test]
async fn webhook_urls_on_internal_addresses_are_warned_about_and_never_logged_whole() {
    let run = |allow: &'static str| async move {
        let env = [
            ("PUSHER_APP_ID", "1"),
            ("PUSHER_APP_KEY", "k"),
            ("PUSHER_APP_SECRET", "s"),
            (
                "BROADCAST_WEBHOOK_URLS",
                "http://hook-user:hook-password@169.254.169.254/latest/hook?token=hook-secret",
            ),
            ("BROADCAST_WEBHOOK_ALLOW_PRIVATE", allow),
        ];
        let mut cmd = server_command();
        cmd.args(["--port", "0"]).envs(env);
        let mut child = cmd.spawn().unwrap();
        let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut logged = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while let Ok(Some(l)) = err.next_line().await {
                logged.push_str(&l);
                logged.push('\n');
                if l.contains("webhook URL points at") {
                    break;
                }
            }
        })
        .await;
        child.kill().await.unwrap();
        logged
    };
    use tokio::io::AsyncBufReadExt;
    let logged = run("false").await;
    assert!(
        logged.contains("a webhook URL points at a loopback, private or link-local address"),
        "{logged}"
    );
    assert!(logged.contains("http://169.254.169.254/latest/hook"), "{logged}");
    for secret in ["hook-password", "hook-user", "hook-secret"] {
        assert!(!logged.contains(secret), "{secret} in the log: {logged}");
    }
    let logged = run("true").await;
    assert!(!logged.contains("webhook URL points at"), "{logged}");
}
