//! Several nodes sharing a real redis-server: exactly-once delivery, Laravel payloads,
//! presence across nodes, a node dying, Redis dying and coming back.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::redis::{unique_prefix, Backend, RedisCluster, RedisServer};
use crate::common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

/// Every text frame that arrives within `dur`.
async fn collect(ws: &mut Ws, dur: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + dur;
    let mut out = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(t) = msg {
            out.push(serde_json::from_str(&t).unwrap());
        }
    }
    out
}

fn events(frames: &[Value], event: &str) -> usize {
    frames.iter().filter(|f| f["event"] == event).count()
}

/// A link like the nodes' (same cluster, same prefix), to compute their shard channels.
fn link_to(redis: &RedisCluster, prefix: &str) -> rustaxum::server::cluster::RedisLink {
    let mut settings = rustaxum::config::RedisConfig::default();
    redis.configure_redis(&mut settings);
    settings.channels_prefix = prefix.to_string();
    rustaxum::server::cluster::RedisLink::new(&settings).unwrap()
}

#[tokio::test]
async fn an_event_published_anywhere_reaches_every_subscriber_exactly_once() {
    exactly_once(&RedisServer::start()).await;
}

async fn exactly_once(redis: &impl Backend) {
    let (a, b, prefix) = two_nodes(redis).await;
    let (mut on_a, _) = a.connect("/ws/general").await;
    let (mut on_b, _) = b.connect("/ws/general").await;
    let (mut elsewhere, _) = a.connect("/ws/news").await;

    let answer = b.publish("general", "from.b", json!({"n": 1})).await;
    assert_eq!(answer["recipients"], 1, "B's own socket, counted locally");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"))
        .args(["--server", &a.url(""), "broadcast", "test", "--message", "via artisan"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());

    // A Rust application in another process would use the redis driver without a server.
    let app_config = std::sync::Arc::new(cluster_config(redis, &prefix));
    let hub = std::sync::Arc::new(rustaxum::hub::Hub::default());
    let manager = std::sync::Arc::new(rustaxum::broadcasting::BroadcastManager::from_config(app_config, hub));
    manager
        .broadcast()
        .channel("general")
        .event("from.app")
        .with(json!({}))
        .send()
        .await
        .unwrap();

    for ws in [&mut on_a, &mut on_b] {
        let frames = collect(ws, Duration::from_millis(800)).await;
        assert_eq!(events(&frames, "from.b"), 1, "{frames:?}");
        assert_eq!(events(&frames, "test"), 1, "{frames:?}");
        assert_eq!(events(&frames, "from.app"), 1, "{frames:?}");
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(
            frames.iter().find(|f| f["event"] == "test").unwrap()["data"]["message"],
            "via artisan"
        );
    }
    assert!(collect(&mut elsewhere, Duration::from_millis(100)).await.is_empty());
}

#[tokio::test]
async fn laravel_redis_broadcaster_payloads_are_delivered() {
    laravel_payloads(&RedisServer::start()).await;
}

async fn laravel_payloads(redis: &impl Backend) {
    let (a, b, prefix) = two_nodes(redis).await;
    let (mut on_a, _) = a.connect("/ws/orders.1").await;
    let (mut on_b, first) = b.connect("/ws/orders.1").await;
    let sender = first["data"]["socket_id"].as_str().unwrap().to_string();
    // Laravel's PrivateChannel('user.7') reaches the native subscribers of `user.7`,
    // which the rules make private, on both nodes.
    let user = token("7", json!({}));
    let (mut private_a, _) = a.connect(&format!("/ws/user.7?auth_token={user}")).await;
    let (mut private_b, _) = b.connect(&format!("/ws/user.7?auth_token={user}")).await;
    let payload = r#"{"event":"App\\Events\\OrderShipped","data":{"order_id":1},"socket":null}"#;
    redis.publish(&format!("{prefix}private-user.7"), payload);
    for ws in [&mut private_a, &mut private_b] {
        let frames = collect(ws, Duration::from_millis(500)).await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0]["channel"], "user.7");
        assert_eq!(frames[0]["event"], "App\\Events\\OrderShipped");
        assert_eq!(frames[0]["data"], json!({"order_id": 1}));
    }
    // Laravel's public Channel('orders.1') reaches the public channel; its private
    // namesake `private-orders.1` is another channel (the prefix is the kind).
    redis.publish(&format!("{prefix}private-orders.1"), payload);
    redis.publish(&format!("{prefix}orders.1"), payload);
    for ws in [&mut on_a, &mut on_b] {
        let frames = collect(ws, Duration::from_millis(500)).await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0]["channel"], "orders.1");
        assert_eq!(frames[0]["event"], "App\\Events\\OrderShipped");
    }
    // Laravel's toOthers(): the socket in the payload is skipped, wherever it is.
    let payload = json!({"event": "x", "data": {}, "socket": sender}).to_string();
    redis.publish(&format!("{prefix}orders.1"), &payload);
    assert_eq!(collect(&mut on_a, Duration::from_millis(400)).await.len(), 1);
    assert!(collect(&mut on_b, Duration::from_millis(100)).await.is_empty());
    // Garbage on the prefix is ignored and counted, nothing crashes.
    redis.publish(&format!("{prefix}orders.1"), "not json");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, stats) = a.get("/api/broadcast/stats").await;
        if stats["redis"]["invalid"].as_u64().unwrap() >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.get("/ready").await.0, 200);
}

fn presence_token(user: &str, name: &str) -> String {
    token(user, json!({"user_info": {"name": name}}))
}

#[tokio::test]
async fn presence_is_one_list_across_nodes_and_tabs() {
    presence_across_nodes(&RedisServer::start()).await;
}

async fn presence_across_nodes(redis: &impl Backend) {
    let (a, b, _) = two_nodes(redis).await;
    let path = |u: &str, n: &str| format!("/ws/presence.chat.1?auth_token={}", presence_token(u, n));
    let (mut alice, _) = a.connect(&path("1", "Alice")).await;
    let (mut bob_b, first) = b.connect(&path("2", "Bob")).await;
    let ids: Vec<&str> = first["data"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2"], "Bob on B sees Alice who joined on A");
    let frames = collect(&mut alice, Duration::from_millis(500)).await;
    assert_eq!(events(&frames, "member_added"), 1, "{frames:?}");
    assert_eq!(frames[0]["data"], json!({"user_id": "2", "user_info": {"name": "Bob"}}));

    // Bob's second tab, on the other node: still one member, no event.
    let (mut bob_a, first) = a.connect(&path("2", "Bob")).await;
    assert_eq!(first["data"]["count"], 2);
    assert!(collect(&mut alice, Duration::from_millis(400)).await.is_empty());
    let (_, users) = b.get("/api/broadcast/channels/presence.chat.1/users").await;
    assert_eq!(users["count"], 2);

    bob_b.close(None).await.unwrap();
    assert!(
        collect(&mut alice, Duration::from_millis(400)).await.is_empty(),
        "Bob still has a tab"
    );
    bob_a.close(None).await.unwrap();
    let frames = collect(&mut alice, Duration::from_millis(800)).await;
    assert_eq!(events(&frames, "member_removed"), 1, "{frames:?}");
    assert_eq!(frames.len(), 1, "exactly once: {frames:?}");

    // Whispers cross nodes too.
    let (mut carol, _) = b.connect(&path("3", "Carol")).await;
    collect(&mut alice, Duration::from_millis(300)).await; // member_added
    send_json(
        &mut alice,
        json!({"action": "whisper", "channel": "presence.chat.1", "event": "typing", "data": {"x": 1}}),
    )
    .await;
    let frames = collect(&mut carol, Duration::from_millis(500)).await;
    assert_eq!(events(&frames, "client-typing"), 1, "{frames:?}");
}

#[tokio::test]
async fn members_of_a_node_that_dies_vanish_everywhere_within_15_seconds() {
    node_death(&RedisServer::start()).await;
}

async fn node_death(redis: &impl Backend) {
    let prefix = unique_prefix();
    let a = start_with(cluster_config(redis, &prefix)).await;
    wait_ready(&a).await;
    let mut node_b = server_command()
        .args(["--port", "0"])
        .env("BROADCAST_DRIVER", "redis")
        .envs(redis.env())
        .env("BROADCAST_CHANNELS_PREFIX", &prefix)
        .env("JWT_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(node_b.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let b_url = line.strip_prefix("rustaxum listening on http://").unwrap().to_string();

    let (mut alice, _) = a
        .connect(&format!(
            "/ws/presence.room.9?auth_token={}",
            presence_token("1", "Alice")
        ))
        .await;
    let bob_url = format!(
        "ws://{b_url}/ws/presence.room.9?auth_token={}",
        presence_token("2", "Bob")
    );
    let (mut bob, _) = tokio_tungstenite::connect_async(bob_url).await.unwrap();
    assert_eq!(recv_json(&mut bob).await["data"]["count"], 2);
    assert_eq!(recv_json(&mut alice).await["event"], "member_added");

    node_b.start_kill().unwrap(); // SIGKILL: no goodbye
    node_b.wait().await.unwrap();
    let killed = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let removed = loop {
        let msg = tokio::time::timeout_at(deadline, alice.next())
            .await
            .expect("member_removed within 20 s");
        let Some(Ok(Message::Text(t))) = msg else {
            continue;
        };
        let msg: Value = serde_json::from_str(&t).unwrap();
        if msg["event"] == "member_removed" {
            break msg;
        }
    };
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "took {:?}",
        killed.elapsed()
    );
    assert_eq!(removed["data"]["user_id"], "2");
    let (_, users) = a.get("/api/broadcast/channels/presence.room.9/users").await;
    assert_eq!(users["count"], 1);
}

#[tokio::test]
async fn redis_outage_degrades_then_recovers_without_restarts() {
    let mut redis = RedisServer::start();
    let (a, b, _) = two_nodes(&redis).await;
    let (mut on_a, _) = a.connect("/ws/general").await;

    redis.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = a.get("/ready").await;
        if status == 503 {
            assert_eq!(body["status"], "degraded");
            break;
        }
        assert!(Instant::now() < deadline, "never reported degraded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Publishing needs Redis: a fast, clear 503, never a hang.
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = a
            .post(
                "/api/broadcast",
                &json!({"channel": "general", "event": "e"}).to_string(),
            )
            .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "unavailable");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
    // The node still serves its sockets.
    send_json(&mut on_a, json!({"action": "ping"})).await;
    assert_eq!(recv_json(&mut on_a).await["event"], "pong");
    let (_, stats) = a.get("/api/broadcast/stats").await;
    assert!(stats["redis"]["publish_failures"].as_u64().unwrap() >= 1, "{stats}");

    redis.restart();
    for node in [&a, &b] {
        wait_ready(node).await;
    }
    // Cross-node delivery resumes (the circuit may need one probe to close).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = b
            .post(
                "/api/broadcast",
                &json!({"channel": "general", "event": "back"}).to_string(),
            )
            .await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "publishing never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let frames = collect(&mut on_a, Duration::from_millis(800)).await;
    assert_eq!(events(&frames, "back"), 1, "{frames:?}");
    let (_, stats) = a.get("/api/broadcast/stats").await;
    assert!(
        stats["redis"]["subscriptions"].as_u64().unwrap() >= 2,
        "resubscribed: {stats}"
    );
}

#[tokio::test]
async fn a_redis_that_stops_answering_is_detected_and_recovered_from() {
    let redis = RedisServer::start();
    let (a, b, _) = two_nodes(&redis).await;
    let (mut on_a, _) = a.connect("/ws/general").await;
    // SIGSTOP: the TCP connections stay open but nothing answers, like a silent partition.
    redis.signal("STOP");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ready, _) = a.get("/ready").await;
        let (_, stats) = a.get("/api/broadcast/stats").await;
        if ready == 503 && stats["redis"]["subscription_losses"].as_u64() >= Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "a frozen Redis was never noticed: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    let (status, _) = b
        .post(
            "/api/broadcast",
            &json!({"channel": "general", "event": "e"}).to_string(),
        )
        .await;
    assert_eq!(status, 503);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    redis.signal("CONT");
    for node in [&a, &b] {
        wait_ready(node).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while b
        .post(
            "/api/broadcast",
            &json!({"channel": "general", "event": "thawed"}).to_string(),
        )
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "publishing never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let frames = collect(&mut on_a, Duration::from_millis(800)).await;
    assert!(events(&frames, "thawed") >= 1, "{frames:?}");
    // Only the keep-alive PING notices a frozen subscription connection; without it the
    // node would keep listening on the stale connection.
    let (_, stats) = a.get("/api/broadcast/stats").await;
    assert!(stats["redis"]["subscription_losses"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["redis"]["subscriptions"].as_u64().unwrap() >= 2, "{stats}");
}

#[tokio::test]
async fn terminate_connections_reaches_every_node() {
    terminate_everywhere(&RedisServer::start()).await;
}

async fn terminate_everywhere(redis: &impl Backend) {
    let prefix = unique_prefix();
    let node = || {
        let mut c = cluster_config(redis, &prefix);
        c.pusher.apps = rustaxum::services::pusher::Apps::new(vec![rustaxum::services::pusher::PusherApp::new(
            "app", "key", "secret",
        )]);
        c
    };
    let a = start_with(node()).await;
    let b = start_with(node()).await;
    for n in [&a, &b] {
        wait_ready(n).await;
    }
    let five = token("5", json!({}));
    let (mut five_on_a, _) = a.connect(&format!("/ws/general?auth_token={five}")).await;
    let (mut five_on_b, _) = b.connect(&format!("/ws/general?auth_token={five}")).await;
    let (mut six_on_b, _) = b
        .connect(&format!("/ws/general?auth_token={}", token("6", json!({}))))
        .await;

    let path = "/apps/app/users/5/terminate_connections";
    let mut params: std::collections::BTreeMap<String, String> = [
        ("auth_key", "key".to_string()),
        ("auth_timestamp", now().to_string()),
        ("auth_version", "1.0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let signature = rustaxum::services::pusher::sign_request("secret", "POST", path, &params);
    params.insert("auth_signature".into(), signature);
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let resp = reqwest::Client::new()
        .post(a.url(&format!("{path}?{}", query.join("&"))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);

    for ws in [&mut five_on_a, &mut five_on_b] {
        let frame = expect_close(ws).await.expect("close frame");
        assert_eq!(u16::from(frame.code), 4009);
    }
    send_json(&mut six_on_b, json!({"action": "ping"})).await;
    assert_eq!(
        recv_json(&mut six_on_b).await["event"],
        "pong",
        "other users stay connected"
    );
}

#[tokio::test]
async fn stats_can_cover_the_whole_cluster() {
    let redis = RedisServer::start();
    let (a, b, _) = two_nodes(&redis).await;
    let (_a1, _) = a.connect("/ws/general").await;
    let (_a2, _) = a.connect("/ws/news").await;
    let (_b1, _) = b.connect("/ws/general").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, s) = a.get("/api/broadcast/stats?scope=cluster").await;
        assert_eq!(status, 200);
        if s["connections"] == 3 && s["nodes"].as_array().map(Vec::len) == Some(2) {
            assert_eq!(s["channels"]["general"]["subscribers"], 2);
            assert_eq!(s["channels"]["news"]["subscribers"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "cluster stats never added up: {s}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, local) = b.get("/api/broadcast/stats").await;
    assert_eq!(
        (local["scope"].as_str(), local["connections"].as_u64()),
        (Some("local"), Some(1))
    );
    assert_eq!(a.get("/api/broadcast/stats?scope=galaxy").await.0, 422);
    let metrics = reqwest::get(a.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "rustaxum_redis_healthy 1"), "{metrics}");
    assert!(
        metrics.contains("rustaxum_redis_events_total{kind=\"subscriptions\"} 1"),
        "{metrics}"
    );
}

// Hardening (issue 8, defect 1): a publish whose HTTP client gave up while it held the
// circuit breaker's half-open probe left the circuit open for good, while /ready said 200.
#[tokio::test]
async fn impatient_clients_cannot_wedge_the_circuit_breaker() {
    let redis = RedisServer::start();
    let (a, _b, _) = two_nodes(&redis).await;
    let (mut on_a, _) = a.connect("/ws/general").await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let body = json!({"channel": "general", "event": "e"}).to_string();
    redis.signal("STOP");
    // Three patient publishes time out (1 s each) and open the circuit.
    let patient = (0..3).map(|_| a.post("/api/broadcast", &body));
    for (status, _) in futures_util::future::join_all(patient).await {
        assert_eq!(status, 503);
    }
    let (_, stats) = a.get("/api/broadcast/stats").await;
    assert_eq!(stats["redis"]["circuit"], "open", "{stats}");
    assert_eq!(a.get("/ready").await.0, 503, "/ready reports the open circuit");
    // Publishes that give up after 0.3 s, fifty a second: when the circuit half-opens,
    // one of them takes the probe and abandons it.
    let frozen = Instant::now();
    while frozen.elapsed() < Duration::from_secs(4) {
        let (client, url, body) = (impatient.clone(), a.url("/api/broadcast"), body.clone());
        tokio::spawn(async move {
            let _ = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.signal("CONT");

    // Once Redis answers again, the node recovers by itself, and /ready never claims 200
    // while publishes still fail fast.
    let thawed = Instant::now();
    loop {
        let (ready, status) = a.get("/ready").await;
        let (code, answer) = a
            .post(
                "/api/broadcast",
                &json!({"channel": "general", "event": "thawed"}).to_string(),
            )
            .await;
        if code == 200 {
            break;
        }
        assert_ne!(
            ready, 200,
            "/ready said 200 ({status}) while publishing failed: {answer}"
        );
        assert!(
            thawed.elapsed() < Duration::from_secs(10),
            "publishing never recovered: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let frames = collect(&mut on_a, Duration::from_millis(800)).await;
    assert_eq!(events(&frames, "thawed"), 1, "{frames:?}");
}
/// Waits until `node` lists `count` members on `channel`.
async fn wait_members(node: &TestServer, channel: &str, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, users) = node.get(&format!("/api/broadcast/channels/{channel}/users")).await;
        if status == 200 && users["count"] == count {
            return;
        }
        assert!(Instant::now() < deadline, "never {count} members: {users}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// Hardening (issue 8, defect 4): presence was lost when Redis restarted: members from
// before were missing, and their later leave sent no member_removed.
#[tokio::test]
async fn presence_survives_a_redis_restart() {
    let mut redis = RedisServer::start();
    let (a, b, _) = two_nodes(&redis).await;
    let path = |u: &str, n: &str| format!("/ws/presence.lobby?auth_token={}", presence_token(u, n));
    let (mut alice, _) = a.connect(&path("1", "Alice")).await;
    let (mut bob, _) = b.connect(&path("2", "Bob")).await;
    let (dave, _) = b.connect(&path("4", "Dave")).await;
    wait_members(&a, "presence.lobby", 3).await;
    collect(&mut alice, Duration::from_millis(300)).await;
    collect(&mut bob, Duration::from_millis(100)).await;

    redis.kill();
    // Dave leaves while Redis is down: nobody can be told yet.
    drop(dave);
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    for node in [&a, &b] {
        wait_ready(node).await;
    }
    // Each node registers its live members again; Dave is not among them.
    wait_members(&a, "presence.lobby", 2).await;
    let frames = collect(&mut alice, Duration::from_millis(1500)).await;
    let removed: Vec<&Value> = frames.iter().filter(|f| f["event"] == "member_removed").collect();
    assert_eq!(removed.len(), 1, "Dave's departure is announced once: {frames:?}");
    assert_eq!(removed[0]["data"]["user_id"], "4");

    // A newcomer sees everyone, and everyone sees the newcomer.
    let (mut carol, first) = a.connect(&path("3", "Carol")).await;
    let ids: Vec<&str> = first["data"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "3"], "{first}");
    let frames = collect(&mut bob, Duration::from_millis(800)).await;
    assert!(
        frames
            .iter()
            .any(|f| f["event"] == "member_added" && f["data"]["user_id"] == "3"),
        "{frames:?}"
    );
    // A member from before the restart leaves: the others are told.
    drop(bob);
    for ws in [&mut alice, &mut carol] {
        let frames = collect(ws, Duration::from_millis(1000)).await;
        let removed: Vec<&Value> = frames.iter().filter(|f| f["event"] == "member_removed").collect();
        assert_eq!(removed.len(), 1, "{frames:?}");
        assert_eq!(removed[0]["data"]["user_id"], "2");
    }
    wait_members(&b, "presence.lobby", 2).await;
}

// Issue 10: the document's BROADCAST_REDIS_ENABLED=true is honoured.
#[tokio::test]
async fn broadcast_redis_enabled_makes_a_cluster_node() {
    let redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique_prefix();
    let mut c = rustaxum::Config::from_lookup(|k| match k {
        "BROADCAST_REDIS_ENABLED" => Some("true".into()),
        "REDIS_URL" => Some(url.clone()),
        "BROADCAST_CHANNELS_PREFIX" => Some(prefix.clone()),
        _ => None,
    })
    .unwrap();
    c.auth.public_channels.push("news".into());
    let node = start_with(c).await;
    wait_ready(&node).await;
    let (_, ready) = node.get("/ready").await;
    assert_eq!(ready["driver"], "redis", "{ready}");
    assert_eq!(ready["redis"]["subscribed"], true, "{ready}");
}

#[tokio::test]
async fn a_node_started_after_a_cache_channel_event_still_serves_it_from_redis() {
    late_cache(&RedisServer::start()).await;
}

async fn late_cache(redis: &impl Backend) {
    let prefix = unique_prefix();
    let node = |redis: &dyn Backend| {
        let mut c = cluster_config(redis, &prefix);
        c.pusher.apps = rustaxum::services::pusher::Apps::new(vec![rustaxum::services::pusher::PusherApp::new(
            "app", "key", "secret",
        )]);
        c.auth.public_channels.push("cache-*".into());
        c
    };
    let a = start_with(node(redis)).await;
    wait_ready(&a).await;
    a.publish("cache-scores", "score", json!({"home": 2})).await;
    let late = start_with(node(redis)).await;
    wait_ready(&late).await;
    let (mut ws, _) = late.connect("/app/key?protocol=7").await;
    send_json(
        &mut ws,
        json!({"event": "pusher:subscribe", "data": {"channel": "cache-scores"}}),
    )
    .await;
    assert_eq!(
        recv_json(&mut ws).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let cached = recv_json(&mut ws).await;
    assert_eq!(cached["event"], "score", "{cached}");
    assert_eq!(cached["channel"], "cache-scores");
    assert_eq!(cached["data"], r#"{"home":2}"#);
}

#[tokio::test]
async fn cluster_stats_sum_each_apps_figures_over_the_nodes() {
    app_stats(&RedisServer::start()).await;
}

async fn app_stats(redis: &impl Backend) {
    let prefix = unique_prefix();
    let node = |redis: &dyn Backend| {
        let mut c = cluster_config(redis, &prefix);
        c.pusher.apps = rustaxum::services::pusher::Apps::new(vec![
            rustaxum::services::pusher::PusherApp::new("one", "k1", "s1"),
            rustaxum::services::pusher::PusherApp::new("two", "k2", "s2"),
        ]);
        c
    };
    let a = start_with(node(redis)).await;
    let b = start_with(node(redis)).await;
    for n in [&a, &b] {
        wait_ready(n).await;
    }
    let (_native, _) = a.connect("/ws/general").await;
    let mut two_sockets = Vec::new();
    for n in [&a, &b] {
        let (mut ws, _) = n.connect("/app/k2?protocol=7").await;
        send_json(
            &mut ws,
            json!({"event": "pusher:subscribe", "data": {"channel": "general"}}),
        )
        .await;
        assert_eq!(
            recv_json(&mut ws).await["event"],
            "pusher_internal:subscription_succeeded"
        );
        two_sockets.push(ws);
    }
    // Nodes report their figures with each heartbeat (every 2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = a.get("/api/broadcast/stats?scope=cluster").await;
        let apps = &stats["apps"];
        if apps["two"]["subscriptions"] == 2 && apps["one"]["subscriptions"] == 1 {
            assert_eq!(apps["two"]["channels"], 2, "one `general` of app two per node: {stats}");
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The same guarantees on a Redis Cluster of three masters: keys hash-tagged into single
/// slots, channel traffic on sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`).
// Issue 27, item 9: with max_connections = 2 a third client got in through the other node.
#[tokio::test]
async fn an_apps_max_connections_holds_over_the_cluster() {
    app_quota_over_the_cluster(&RedisServer::start()).await;
}

async fn app_quota_over_the_cluster(redis: &impl Backend) {
    let prefix = unique_prefix();
    let node = || {
        let mut c = cluster_config(redis, &prefix);
        c.pusher.apps = rustaxum::services::pusher::Apps::new(vec![rustaxum::services::pusher::PusherApp {
            max_connections: 2,
            ..pusher_app("q", "q-key", "q-secret-0123456789")
        }]);
        start_with(c)
    };
    let (a, b) = (node().await, node().await);
    for n in [&a, &b] {
        wait_ready(n).await;
    }
    let (mut on_a, first) = a.connect("/app/q-key?protocol=7").await;
    assert_eq!(first["event"], "pusher:connection_established");
    let (_on_b, first) = b.connect("/app/q-key?protocol=7").await;
    assert_eq!(first["event"], "pusher:connection_established");
    // Node B has one socket of the app, under the limit of 2; the cluster has two.
    let mut refused = b.connect_raw("/app/q-key?protocol=7").await;
    let error = recv_json(&mut refused).await;
    assert_eq!(
        (error["event"].as_str(), error["data"]["code"].as_u64()),
        (Some("pusher:error"), Some(4004)),
        "{error}"
    );
    assert_eq!(expect_close(&mut refused).await.map(|c| u16::from(c.code)), Some(4004));
    // A closed socket gives its place back.
    on_a.close(None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut ws = b.connect_raw("/app/q-key?protocol=7").await;
        if recv_json(&mut ws).await["event"] == "pusher:connection_established" {
            break;
        }
        assert!(Instant::now() < deadline, "the place was not given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

mod on_a_redis_cluster {
    use super::*;

    #[tokio::test]
    async fn an_apps_max_connections_holds_over_the_cluster() {
        app_quota_over_the_cluster(&RedisCluster::start()).await;
    }

    #[tokio::test]
    async fn an_event_published_anywhere_reaches_every_subscriber_exactly_once() {
        exactly_once(&RedisCluster::start()).await;
    }

    #[tokio::test]
    async fn laravel_redis_broadcaster_payloads_are_delivered() {
        laravel_payloads(&RedisCluster::start()).await;
    }

    #[tokio::test]
    async fn presence_is_one_list_across_nodes_and_tabs() {
        presence_across_nodes(&RedisCluster::start()).await;
    }

    #[tokio::test]
    async fn members_of_a_node_that_dies_vanish_everywhere_within_15_seconds() {
        node_death(&RedisCluster::start()).await;
    }

    #[tokio::test]
    async fn terminate_connections_reaches_every_node() {
        terminate_everywhere(&RedisCluster::start()).await;
    }

    #[tokio::test]
    async fn a_node_started_after_a_cache_channel_event_still_serves_it_from_redis() {
        late_cache(&RedisCluster::start()).await;
    }

    #[tokio::test]
    async fn cluster_stats_sum_each_apps_figures_over_the_nodes() {
        app_stats(&RedisCluster::start()).await;
    }
}

#[tokio::test]
async fn on_a_redis_cluster_traffic_spreads_over_every_master_and_survives_a_slot_move() {
    let redis = RedisCluster::start();
    let (a, b, prefix) = two_nodes(&redis).await;
    let link = link_to(&redis, &prefix);
    // No subscribers yet: no node subscribes any shard but the one of the Pusher
    // watchlist channel (its messages go to watchers, whatever they subscribe).
    let subscribed = || -> Vec<Vec<String>> { redis.ports.iter().map(|p| redis.shard_channels_on(*p)).collect() };
    let watchlist = link.pubsub_channel(&rustaxum::Channel::from_key("#watch:users").unwrap());
    let before: Vec<String> = subscribed().into_iter().flatten().collect();
    assert_eq!(before, std::slice::from_ref(&watchlist));

    let mut sockets = Vec::new();
    for i in 0..24 {
        sockets.push(b.connect(&format!("/ws/orders.{i}")).await.0);
    }
    // A also serves orders.0 (it follows the slot move below too).
    let (mut on_a, _) = a.connect("/ws/orders.0").await;
    // B subscribes exactly the shards of its 24 channels, spread over every master.
    let used: std::collections::BTreeSet<String> = (0..24)
        .map(|i| link.pubsub_channel(&rustaxum::Channel::parse(&format!("orders.{i}")).unwrap()))
        .chain([watchlist])
        .collect();
    let per_master = subscribed();
    assert!(per_master.iter().all(|c| !c.is_empty()), "{per_master:?}");
    let all: std::collections::BTreeSet<String> = per_master.into_iter().flatten().collect();
    assert_eq!(all, used);
    for i in 0..24 {
        a.publish(&format!("orders.{i}"), "e", json!({"i": i})).await;
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        let frames = collect(ws, Duration::from_millis(150)).await;
        assert_eq!(frames.len(), 1, "orders.{i}: {frames:?}");
        assert_eq!(frames[0]["data"]["i"], i);
    }
    let calls: Vec<u64> = redis.ports.iter().map(|p| redis.spublish_calls_on(*p)).collect();
    assert!(calls.iter().all(|c| *c > 0), "every master published some: {calls:?}");
    assert_eq!(calls.iter().sum::<u64>(), 24, "{calls:?}");

    let frames = collect(&mut on_a, Duration::from_millis(150)).await;
    assert_eq!(frames.len(), 1, "A's orders.0: {frames:?}");
    // The slot of orders.0's shard moves to another master: both nodes are told (their
    // shard subscription is taken away), subscribe again, and orders.0 keeps working.
    let shard = link.pubsub_channel(&rustaxum::Channel::parse("orders.0").unwrap());
    let slot = redis.keyslot(&shard);
    let from = redis.master_of(&shard);
    let to = *redis.ports.iter().find(|p| **p != from).unwrap();
    let subscriptions = |stats: &Value| stats["redis"]["subscriptions"].as_u64().unwrap_or(0);
    let before = [
        subscriptions(&a.get("/api/broadcast/stats").await.1),
        subscriptions(&b.get("/api/broadcast/stats").await.1),
    ];
    redis.move_slot(slot, to);
    assert_eq!(redis.master_of(&shard), to);
    let deadline = Instant::now() + Duration::from_secs(10);
    for (node, before) in [&a, &b].into_iter().zip(before) {
        loop {
            let (ready, stats) = node.get("/api/broadcast/stats").await;
            if ready == 200 && subscriptions(&stats) > before && stats["redis"]["subscribed"] == true {
                break;
            }
            assert!(Instant::now() < deadline, "never subscribed again: {stats}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        redis.shard_channels_on(to).contains(&shard),
        "{:?}",
        redis.shard_channels_on(to)
    );
    a.publish("orders.0", "after.move", json!({})).await;
    let frames = collect(&mut sockets[0], Duration::from_millis(500)).await;
    assert_eq!(events(&frames, "after.move"), 1, "{frames:?}");
}

/// Nodes that find their Redis through Sentinel, and follow it through a failover.
mod through_sentinel {
    use super::*;
    use crate::common::redis::RedisSentinel;

    #[tokio::test]
    async fn an_event_published_anywhere_reaches_every_subscriber_exactly_once() {
        exactly_once(&RedisSentinel::start()).await;
    }

    #[tokio::test]
    async fn presence_is_one_list_across_nodes_and_tabs() {
        presence_across_nodes(&RedisSentinel::start()).await;
    }

    #[tokio::test]
    async fn nodes_follow_a_failover_to_the_new_master() {
        let mut redis = RedisSentinel::start();
        let (a, b, _) = two_nodes(&redis).await;
        let (mut on_a, _) = a.connect("/ws/general").await;
        b.publish("general", "before", json!({})).await;
        assert_eq!(
            events(&collect(&mut on_a, Duration::from_millis(400)).await, "before"),
            1
        );

        redis.fail_over();
        // Both nodes reconnect to the promoted replica; publishing through B reaches A again.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _) = b
                .post(
                    "/api/broadcast",
                    &json!({"channel": "general", "event": "after"}).to_string(),
                )
                .await;
            if status == 200 && a.get("/ready").await.0 == 200 {
                let frames = collect(&mut on_a, Duration::from_millis(400)).await;
                if events(&frames, "after") == 1 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the nodes never followed the failover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (_, ready) = a.get("/ready").await;
        assert_eq!(ready["redis"]["subscribed"], true, "{ready}");
    }
}

// Hardening round two (issue 21, defect 3): after Redis was frozen while a user's join got
// 503, the others received `member_removed` for a member they had never seen added. The
// join's script had run once Redis thawed, leaving an entry the node never announced;
// here that entry is written as the lost join left it, and the node is made to resync.
#[tokio::test]
async fn a_member_whose_join_never_completed_is_not_announced_as_leaving() {
    let redis = RedisServer::start();
    let (a, b, prefix) = two_nodes(&redis).await;
    let (_, stats) = a.get("/api/broadcast/stats").await;
    let node = stats["redis"]["node_id"].as_str().unwrap().to_string();
    let (mut watcher, _) = b
        .connect(&format!("/ws/presence.room?auth_token={}", token("watcher", json!({}))))
        .await;
    // A member of this node on the channel: node A's resync visits the channel.
    let (_resident, _) = a
        .connect(&format!(
            "/ws/presence.room?auth_token={}",
            token("resident", json!({}))
        ))
        .await;
    assert_eq!(recv_json(&mut watcher).await["event"], "member_added");
    let key = |rest: &str| format!("{prefix}rustaxum:{rest}");
    redis.cli(&[
        "HSET",
        &key("presence:presence.room:members"),
        "ghost",
        r#"{"user_id":"ghost","user_info":{}}"#,
    ]);
    redis.cli(&[
        "SADD",
        &key("presence:presence.room:sockets:ghost"),
        &format!("{node}|999.999"),
    ]);
    redis.cli(&["SADD", &key("presence:channels"), "presence.room"]);
    let (_, users) = a.get("/api/broadcast/channels/presence.room/users").await;
    assert!(
        users.to_string().contains("ghost"),
        "the entry is where the lost join left it: {users}"
    );
    // The subscriptions cut, as when Redis comes back: each node resubscribes and rewrites
    // its presence (a resync), as node A did when Redis thawed.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, users) = a.get("/api/broadcast/channels/presence.room/users").await;
        let ids: Vec<&str> = users["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["user_id"].as_str())
            .collect();
        if !ids.contains(&"ghost") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stale entry was never cleaned up: {users}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let frames = collect(&mut watcher, Duration::from_millis(500)).await;
    let removed: Vec<&Value> = frames.iter().filter(|f| f["event"] == "member_removed").collect();
    assert!(removed.is_empty(), "{frames:?}");
}

// Hardening round two (issue 21, defect 6): nodes on one Redis with different JWT keys ran
// side by side without a word.
#[tokio::test]
async fn nodes_with_different_security_settings_are_warned_about_and_shown() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = start_with(cluster_config(&redis, &prefix)).await;
    wait_ready(&a).await;
    let mut b = server_command()
        .args(["--port", "0"])
        .env("BROADCAST_DRIVER", "redis")
        .env("REDIS_URL", redis.url())
        .env("BROADCAST_CHANNELS_PREFIX", &prefix)
        .env("JWT_SECRET", "another-jwt-key-0123456789")
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(b.stderr.take().unwrap()).lines();
    let warning = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("other security settings") {
                return line;
            }
        }
        panic!("the node exited without the warning");
    })
    .await
    .expect("a warning about the other node's security settings");
    assert!(
        !warning.contains(SECRET) && !warning.contains("another-jwt-key"),
        "{warning}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = a.get("/api/broadcast/stats?scope=cluster").await;
        let prints = stats["security"]["fingerprints"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if prints.len() == 2 {
            assert_eq!(stats["security"]["consistent"], false, "{stats}");
            let values: Vec<&Value> = prints.values().collect();
            assert_ne!(values[0], values[1], "{stats}");
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(b);
}

// Issue 23: one master of three killed (no replicas, `cluster-require-full-coverage no`
// so the other masters keep serving their slots): channels whose shards live on the
// healthy masters must keep flowing between nodes; the dead shard's publishes answer 503.
// It fails today, every channel answering 503 within seconds of the kill: the node's
// subscription is all-or-nothing (one SSUBSCRIBE round and one PING to every master) and
// its circuit breaker is one for the whole cluster. Kept as the reproduction for the fix.
const DASHBOARD_TOKEN: &str = "cluster-dashboard-token-0123";

#[tokio::test]
async fn on_a_redis_cluster_losing_a_master_stops_only_its_shards() {
    let mut redis = RedisCluster::start_with(&["--cluster-require-full-coverage", "no"]);
    let prefix = unique_prefix();
    // A has a token, so its dashboard can be opened (below).
    let mut with_token = cluster_config(&redis, &prefix);
    with_token.server.api_token = Some(DASHBOARD_TOKEN.into());
    let a = start_with(with_token).await;
    let b = start_with(cluster_config(&redis, &prefix)).await;
    for node in [&a, &b] {
        wait_ready(node).await;
    }
    let link = link_to(&redis, &prefix);
    let dead = redis.ports[2];
    let on_dead = |i: usize| {
        let shard = link.pubsub_channel(&rustaxum::Channel::parse(&format!("orders.{i}")).unwrap());
        redis.master_of(&shard) == dead
    };
    let channels: Vec<(usize, bool)> = (0..24).map(|i| (i, on_dead(i))).collect();
    // The subscriptions the dead master carries: the shard channels of A's channels
    // there. (The plain subscription moves to another node if it was held there.)
    // Every node also needs the shard of the Pusher watchlist channel.
    let watchlist = link.pubsub_channel(&rustaxum::Channel::from_key("#watch:users").unwrap());
    let dead_lanes: std::collections::BTreeSet<String> = (0..24)
        .map(|i| link.pubsub_channel(&rustaxum::Channel::parse(&format!("orders.{i}")).unwrap()))
        .chain([watchlist.clone()])
        .filter(|c| redis.master_of(c) == dead)
        .collect();
    let dead_for_b: std::collections::BTreeSet<String> =
        [watchlist].into_iter().filter(|c| redis.master_of(c) == dead).collect();
    assert!(channels.iter().any(|(_, d)| *d) && channels.iter().any(|(_, d)| !*d));
    let mut sockets = Vec::new();
    for (i, _) in &channels {
        sockets.push(a.connect(&format!("/ws/orders.{i}")).await.0);
    }
    redis.kill(2);
    // The cluster notices (node timeout 2 s); then publishes through B keep reaching A on
    // every healthy shard, and a dead shard's publish is refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut round = 0;
    loop {
        round += 1;
        let mut missing = Vec::new();
        for (k, (i, dead_shard)) in channels.iter().enumerate() {
            let body = json!({"channel": format!("orders.{i}"), "event": "e", "data": {"round": round}});
            let (status, _) = b.post("/api/broadcast", &body.to_string()).await;
            let frames = collect(&mut sockets[k], Duration::from_millis(60)).await;
            let got = frames.iter().any(|f| f["data"]["round"] == round);
            if *dead_shard {
                if status != 503 {
                    missing.push(format!("orders.{i} (dead shard): status {status}, delivered {got}"));
                }
            } else if status != 200 || !got {
                missing.push(format!("orders.{i}: status {status}, delivered {got}"));
            }
        }
        if missing.is_empty() && round > 1 {
            break;
        }
        assert!(Instant::now() < deadline, "after killing a master: {missing:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A (the subscribers' node) names exactly the dead master's shards it needs, and stays
    // ready (partial): every node sees the same dead master, and taking them all out of a
    // load balancer would stop the healthy shards too. B serves no channel: it needs no
    // shard but the watchlist's.
    for (node, expected) in [(&a, dead_lanes.clone()), (&b, dead_for_b)] {
        let (code, ready) = node.get("/ready").await;
        let status = if expected.is_empty() { "ready" } else { "partial" };
        assert_eq!((code, ready["status"].as_str()), (200, Some(status)), "{ready}");
        let down: std::collections::BTreeSet<String> = ready["redis"]["shards_down"]
            .as_array()
            .map(|d| d.iter().filter_map(|c| c.as_str().map(String::from)).collect())
            .unwrap_or_default();
        assert_eq!(down, expected, "{ready}");
        let lanes = ready["redis"]["lanes"].as_array().cloned().unwrap_or_default();
        assert_eq!(lanes.len(), link.shard_channels().len() + 1, "{ready}");
        for lane in &lanes {
            let on_dead = lane["master"] == format!("127.0.0.1:{dead}");
            if lane["kind"] == "plain" {
                assert!(
                    !on_dead && lane["subscribed"] == true,
                    "the plain subscription moved off the dead node: {lane}"
                );
            } else {
                assert_eq!(lane["subscribed"], lane["wanted"] == true && !on_dead, "{lane}");
            }
        }
    }

    // The operator sees it on the dashboard (headless Chromium): the dead master's row
    // says how many of its shards are down, in red; the healthy masters' rows do not.
    let shards_on_dead = dead_lanes.len();
    let out = tokio::process::Command::new("node")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard"))
        .args([
            "redis.mjs",
            &a.url(""),
            DASHBOARD_TOKEN,
            &format!("master 127.0.0.1:{dead}"),
            &format!("{shards_on_dead} of {shards_on_dead} shards down"),
        ])
        .output()
        .await
        .expect("node");
    let page: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(page["ok"], true, "{page:#}");
    // The top of the page says the node is degraded (issue 35: the header stayed "live").
    assert_eq!(page["banner"]["shown"], true, "{page:#}");
    assert!(
        page["banner"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("shard(s) down"),
        "{page:#}"
    );
    let rows = page["rows"].as_array().cloned().unwrap_or_default();
    for port in &redis.ports {
        let row = rows
            .iter()
            .find(|r| r["cells"][0] == format!("master 127.0.0.1:{port}"))
            .unwrap_or_else(|| panic!("no row for master {port}: {page:#}"));
        assert_eq!(row["down"], *port == dead, "{row}");
    }

    // The master comes back: its shards are subscribed again, every channel is delivered,
    // and the nodes are fully ready.
    redis.restart(2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        round += 1;
        let mut missing = Vec::new();
        for (k, (i, _)) in channels.iter().enumerate() {
            let body = json!({"channel": format!("orders.{i}"), "event": "e", "data": {"round": round}});
            let (status, _) = b.post("/api/broadcast", &body.to_string()).await;
            let frames = collect(&mut sockets[k], Duration::from_millis(60)).await;
            if status != 200 || !frames.iter().any(|f| f["data"]["round"] == round) {
                missing.push(format!("orders.{i}: status {status}"));
            }
        }
        let (code, ready) = a.get("/ready").await;
        if missing.is_empty() && code == 200 && ready["status"] == "ready" {
            assert!(ready["redis"]["shards_down"].is_null(), "{ready}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the master came back: {missing:?} {ready}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How many clients are subscribed to Redis channel `name` (`PUBSUB NUMSUB`).
fn numsub(redis: &RedisServer, name: &str) -> u64 {
    let out = redis.cli(&["PUBSUB", "NUMSUB", name]);
    out.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or(0)
}

fn broker_counter(stats: &Value, name: &str) -> u64 {
    stats["redis"][name].as_u64().unwrap_or(0)
}

// Issue 26: every node received every message (PSUBSCRIBE of the whole prefix), so a
// node's intake was the whole cluster's publish rate whatever it served.
#[tokio::test]
async fn a_node_receives_only_the_channels_it_has_subscribers_for() {
    let redis = RedisServer::start();
    let (a, b, prefix) = two_nodes(&redis).await;
    let (mut on_a, _) = a.connect("/ws/orders.1").await;
    let (mut on_b, _) = b.connect("/ws/orders.2").await;
    let before = b.get("/api/broadcast/stats").await.1;
    // orders.1 (only A has subscribers) gets 40 messages through A and 40 from "Laravel".
    for i in 0..40 {
        a.publish("orders.1", "e", json!({"i": i})).await;
        redis.publish(
            &format!("{prefix}orders.1"),
            &json!({"event": "laravel", "data": {"i": i}}).to_string(),
        );
    }
    let frames = collect(&mut on_a, Duration::from_millis(600)).await;
    assert_eq!(events(&frames, "e") + events(&frames, "laravel"), 80, "{frames:?}");
    let after = b.get("/api/broadcast/stats").await.1;
    assert_eq!(
        broker_counter(&after, "received"),
        broker_counter(&before, "received"),
        "B received orders.1's messages: {after}"
    );
    // Redis agrees: one subscriber of orders.1 (A), one of orders.2 (B); nobody holds a
    // pattern over the prefix.
    assert_eq!(numsub(&redis, &format!("{prefix}orders.1")), 1);
    assert_eq!(numsub(&redis, &format!("{prefix}orders.2")), 1);
    assert_eq!(redis.cli(&["PUBSUB", "NUMPAT"]).trim(), "0");
    assert!(after["redis"]["listening"].as_u64().is_some_and(|n| n >= 1), "{after}");

    // What B serves still arrives from anywhere, and counts as useful intake.
    a.publish("orders.2", "to.b", json!({})).await;
    redis.publish(&format!("{prefix}orders.2"), r#"{"event":"laravel.to.b","data":{}}"#);
    let frames = collect(&mut on_b, Duration::from_millis(400)).await;
    assert_eq!(
        (events(&frames, "to.b"), events(&frames, "laravel.to.b")),
        (1, 1),
        "{frames:?}"
    );
    let now = b.get("/api/broadcast/stats").await.1;
    assert_eq!(
        broker_counter(&now, "received") - broker_counter(&after, "received"),
        2,
        "{now}"
    );
    assert_eq!(
        broker_counter(&now, "delivered_locally") - broker_counter(&after, "delivered_locally"),
        2,
        "{now}"
    );

    // A socket joining orders.1 on B gets what is published right after its join was
    // answered: the join waits for B's subscription.
    let (mut late, first) = b.connect("/ws/orders.1").await;
    assert_eq!(first["event"], "subscription_succeeded", "{first}");
    a.publish("orders.1", "after.join", json!({})).await;
    let frames = collect(&mut late, Duration::from_millis(400)).await;
    assert_eq!(events(&frames, "after.join"), 1, "{frames:?}");
    assert_eq!(numsub(&redis, &format!("{prefix}orders.1")), 2);

    // Its last subscriber gone, B lets go of orders.1 after the linger.
    drop(late);
    let deadline = Instant::now() + rustaxum::server::cluster::INTEREST_LINGER + Duration::from_secs(4);
    while numsub(&redis, &format!("{prefix}orders.1")) != 1 {
        assert!(Instant::now() < deadline, "B never unsubscribed orders.1");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        numsub(&redis, &format!("{prefix}orders.2")),
        1,
        "B still serves orders.2"
    );
}

// Issue 26: subscriptions are batched, so a reconnect storm costs a bounded number of
// Redis commands; and after Redis restarts, exactly the live set is subscribed again.
#[tokio::test]
async fn a_storm_of_joins_costs_a_few_subscribe_commands_and_a_restart_resubscribes_them() {
    let mut redis = RedisServer::start();
    let (a, b, prefix) = two_nodes(&redis).await;
    let subscribe_calls = |redis: &RedisServer| -> u64 {
        let info = redis.cli(&["INFO", "commandstats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_subscribe:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let before = subscribe_calls(&redis);
    let paths: Vec<String> = (0..300).map(|i| format!("/ws/orders.{i}")).collect();
    let mut sockets: Vec<Ws> = futures_util::future::join_all(paths.iter().map(|p| b.connect(p)))
        .await
        .into_iter()
        .map(|(ws, _)| ws)
        .collect();
    let calls = subscribe_calls(&redis) - before;
    assert!(calls <= 40, "300 joins took {calls} SUBSCRIBE commands");
    for i in [0, 150, 299] {
        assert_eq!(numsub(&redis, &format!("{prefix}orders.{i}")), 1, "orders.{i}");
    }

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, ready) = b.get("/ready").await;
        if code == 200 && (0..300).all(|i| numsub(&redis, &format!("{prefix}orders.{i}")) == 1) {
            assert!(
                ready["redis"]["listening"].as_u64().is_some_and(|n| n >= 300),
                "{ready}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B did not subscribe its channels again: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    a.publish("orders.7", "after.restart", json!({})).await;
    let frames = collect(&mut sockets[7], Duration::from_millis(500)).await;
    assert_eq!(events(&frames, "after.restart"), 1, "{frames:?}");
}

// Issue 26, on a Redis Cluster: a node subscribes only the shards of its channels, so a
// channel on a shard it does not need never reaches it.
#[tokio::test]
async fn on_a_redis_cluster_a_node_receives_only_the_shards_of_its_channels() {
    let redis = RedisCluster::start();
    let (a, b, prefix) = two_nodes(&redis).await;
    let link = link_to(&redis, &prefix);
    let shard = |name: &str| link.pubsub_channel(&rustaxum::Channel::from_key(name).unwrap());
    let watchlist = shard("#watch:users");
    // Two channels on two shards other than the watchlist's (every node needs that one).
    let mut names = (0..200).map(|i| format!("orders.{i}"));
    let only_a = names.find(|n| shard(n) != watchlist).unwrap();
    let only_b = names
        .find(|n| shard(n) != watchlist && shard(n) != shard(&only_a))
        .unwrap();
    let (mut on_a, _) = a.connect(&format!("/ws/{only_a}")).await;
    let (mut on_b, _) = b.connect(&format!("/ws/{only_b}")).await;
    let before = b.get("/api/broadcast/stats").await.1;
    for i in 0..40 {
        a.publish(&only_a, "e", json!({"i": i})).await;
    }
    let frames = collect(&mut on_a, Duration::from_millis(500)).await;
    assert_eq!(events(&frames, "e"), 40);
    let after = b.get("/api/broadcast/stats").await.1;
    assert_eq!(
        broker_counter(&after, "received"),
        broker_counter(&before, "received"),
        "B received {only_a}'s messages: {after}"
    );
    // Redis agrees: one subscriber (A) of only_a's shard.
    let master = redis.master_of(&shard(&only_a));
    let index = redis.ports.iter().position(|p| *p == master).unwrap();
    let numsub = redis.cli(index, &["PUBSUB", "SHARDNUMSUB", &shard(&only_a)]);
    assert_eq!(numsub.lines().last().map(str::trim), Some("1"), "{numsub}");
    // B's own channel still gets what A publishes.
    a.publish(&only_b, "to.b", json!({})).await;
    let frames = collect(&mut on_b, Duration::from_millis(400)).await;
    assert_eq!(events(&frames, "to.b"), 1, "{frames:?}");
    // A socket joining only_a on B gets what is published right after its join was
    // answered: the join waits for B's shard subscription.
    let (mut late, first) = b.connect(&format!("/ws/{only_a}")).await;
    assert_eq!(first["event"], "subscription_succeeded", "{first}");
    a.publish(&only_a, "after.join", json!({})).await;
    let frames = collect(&mut late, Duration::from_millis(400)).await;
    assert_eq!(events(&frames, "after.join"), 1, "{frames:?}");
}

// Issue 35: a Redis outage logged one WARN per failed publish and nothing when it ended.
// Now: one WARN when the circuit opens (naming the Redis), a summary at most once a
// minute while it stays open, one INFO when it closes again.
#[tokio::test]
async fn a_redis_outage_is_one_warning_and_its_end_one_line() {
    use tokio::io::AsyncBufReadExt;
    let mut redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique_prefix();
    let (mut child, base) = spawn_server(&[
        ("BROADCAST_DRIVER", "redis"),
        ("REDIS_URL", url.as_str()),
        ("BROADCAST_CHANNELS_PREFIX", prefix.as_str()),
    ])
    .await;
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let logged = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(l)) = err.next_line().await {
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    let http = reqwest::Client::new();
    let publish = || {
        http.post(format!("{base}/api/broadcast"))
            .json(&json!({"channel": "general", "event": "e", "data": {}}))
            .send()
    };
    let ready = Instant::now() + Duration::from_secs(10);
    while publish().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(Instant::now() < ready, "never published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.kill();
    let mut refused = 0;
    for _ in 0..40 {
        if publish().await.unwrap().status() == 503 {
            refused += 1;
        }
    }
    assert!(refused >= 35, "{refused} of 40 publishes refused while Redis was down");
    redis.restart();
    let back = Instant::now() + Duration::from_secs(20);
    while publish().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(Instant::now() < back, "publishing never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(child).await;
    let logged = logged.await.unwrap();
    let count = |what: &str| logged.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("is unavailable: circuit open"), 1, "{logged}");
    assert!(logged.contains(&format!("Redis at {url} is unavailable")), "{logged}");
    assert_eq!(count("answers again after"), 1, "{logged}");
    let per_publish = logged
        .lines()
        .filter(|l| {
            l.contains("WARN") && (l.contains("broadcast unavailable") || l.contains("cluster backend unavailable"))
        })
        .count();
    assert!(
        per_publish <= 3,
        "{per_publish} WARN lines for failed publishes:\n{logged}"
    );
}
