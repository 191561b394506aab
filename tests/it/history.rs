//! Channel history and recovery: a client that drops for a moment misses nothing, on one
//! node (memory), across two nodes (Redis streams) and across a restart (redb).

use std::time::Duration;

use crate::common::redis::{unique_prefix, Backend, RedisCluster, RedisServer};
use crate::common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// A one-node configuration where `feed` keeps history (and `plain` does not).
fn lookup(extra: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        extra
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
            .or(match k {
                "JWT_SECRET" => Some(SECRET.into()),
                "BROADCAST_PUBLIC_CHANNELS" => Some("feed,plain,orders.*".into()),
                "BROADCAST_HISTORY_CHANNELS" => Some("feed,orders.*".into()),
                _ => None,
            })
    }
}

async fn ws(base: &str, path: &str) -> Ws {
    let url = format!("{}{path}", base.replacen("http", "ws", 1));
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect");
    ws
}

async fn publish(http: &reqwest::Client, base: &str, channel: &str, n: u64) {
    let body = json!({"channel": channel, "event": "tick", "data": {"n": n}});
    let resp = http
        .post(format!("{base}/api/broadcast"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("publish");
    assert_eq!(resp.status(), 200, "publish {n}");
}

/// Publishes `tick` 1..=count on `channel` at `per_second`, through `bases` in turn.
fn publisher(bases: Vec<String>, channel: &'static str, count: u64, per_second: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
        for n in 1..=count {
            tick.tick().await;
            let base = &bases[usize::try_from(n).unwrap() % bases.len()];
            publish(&http, base, channel, n).await;
        }
    })
}

/// What a client saw: the `n` of every tick, in order, and the last position.
#[derive(Default)]
struct Seen {
    ns: Vec<u64>,
    last: Option<Value>,
}

impl Seen {
    fn take(&mut self, frame: &Value) {
        if frame["event"] == "tick" {
            self.ns.push(frame["data"]["n"].as_u64().expect("n"));
            assert!(frame["position"]["offset"].is_u64(), "{frame}");
            if let Some(last) = &self.last {
                assert_eq!(
                    frame["position"]["offset"].as_u64(),
                    last["offset"].as_u64().map(|o| o + 1),
                    "offsets follow each other: {frame}"
                );
            }
            self.last = Some(frame["position"].clone());
        }
    }

    fn since(&self) -> String {
        let p = self.last.as_ref().expect("a position");
        format!("{}:{}", p["epoch"].as_str().unwrap(), p["offset"])
    }
}

/// Reads until `until` holds or the socket has been quiet for a while.
async fn read_until(ws: &mut Ws, seen: &mut Seen, until: impl Fn(&Seen) -> bool) -> Vec<Value> {
    let mut others = Vec::new();
    while !until(seen) {
        let frame = recv_json(ws).await;
        if frame["event"] == "tick" {
            seen.take(&frame);
        } else {
            others.push(frame);
        }
    }
    others
}

/// The client of the issue: subscribed while 200 messages a second are published, it
/// drops for 2 s and comes back (through `rejoin`) with its last position.
async fn drop_for_two_seconds_and_recover(first: &str, rejoin: &str, publish_via: Vec<String>) {
    const COUNT: u64 = 800;
    let mut socket = ws(first, "/ws/feed").await;
    let joined = recv_json(&mut socket).await;
    assert_eq!(joined["event"], "subscription_succeeded", "{joined}");
    assert!(joined["data"]["position"]["epoch"].is_string(), "{joined}");
    let publishing = publisher(publish_via, "feed", COUNT, 200);
    let mut seen = Seen::default();
    read_until(&mut socket, &mut seen, |s| s.ns.len() >= 150).await;
    socket.close(None).await.unwrap();
    drop(socket);
    let dropped_at = seen.ns.len();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut socket = ws(rejoin, &format!("/ws?channel=feed&since={}", seen.since())).await;
    let others = read_until(&mut socket, &mut seen, |s| s.ns.last() == Some(&COUNT)).await;
    publishing.await.unwrap();
    assert_eq!(
        seen.ns,
        (1..=COUNT).collect::<Vec<_>>(),
        "every message exactly once, in order"
    );
    let marker = others
        .iter()
        .find(|f| f["event"] == "subscription_succeeded")
        .expect("the marker");
    assert_eq!(marker["data"]["recovered"], true, "{marker}");
    assert!(
        seen.ns.len() - dropped_at > 300,
        "about 400 were published during the 2 s away"
    );
    expect_silence(&mut socket, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_client_that_drops_for_two_seconds_misses_nothing() {
    let server = start_with(config_from(lookup(&[]))).await;
    let base = server.url("");
    drop_for_two_seconds_and_recover(&base, &base, vec![base.clone()]).await;
    let (_, stats) = server.get("/api/broadcast/stats").await;
    assert_eq!(stats["history"]["store"], "memory");
    assert_eq!(stats["history"]["recovered"], 1);
    assert_eq!(stats["history"]["appended"], 800);
    assert!(stats["history"]["bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn across_two_nodes_with_redis_offsets_agree_and_nothing_is_missed() {
    offsets_agree_across_nodes(&RedisServer::start()).await;
}

#[tokio::test]
async fn on_a_redis_cluster_offsets_agree_and_nothing_is_missed() {
    offsets_agree_across_nodes(&RedisCluster::start()).await;
}

async fn offsets_agree_across_nodes(redis: &impl Backend) {
    let prefix = unique_prefix();
    let mut a = cluster_config(redis, &prefix);
    a.history.channels = vec!["feed".into()];
    a.auth.public_channels.push("feed".into());
    let a = start_with(a.clone()).await;
    let mut b = cluster_config(redis, &prefix);
    b.history.channels = vec!["feed".into()];
    b.auth.public_channels.push("feed".into());
    let b = start_with(b).await;
    for node in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.get("/ready").await.0 != 200 {
            assert!(Instant::now() < deadline, "node never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Published through both nodes at once; read on B, then recovered on A.
    let (ua, ub) = (a.url(""), b.url(""));
    drop_for_two_seconds_and_recover(&ub, &ua, vec![ua.clone(), ub.clone()]).await;
    let (_, stats) = a.get("/api/broadcast/stats").await;
    assert_eq!(stats["history"]["store"], "redis");
}

#[tokio::test]
async fn positions_and_history_survive_a_restart_with_redb() {
    let dir = std::env::temp_dir().join(format!("rustaxum-history-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("emit_hub.redb").display().to_string();
    let env = [
        ("EMIT_HUB_DB_PATH", db.as_str()),
        ("BROADCAST_HISTORY_STORE", "redb"),
        ("BROADCAST_HISTORY_CHANNELS", "feed"),
        ("BROADCAST_PUBLIC_CHANNELS", "feed"),
    ];
    let http = reqwest::Client::new();
    let (child, base) = spawn_server(&env).await;
    let mut socket = ws(&base, "/ws/feed").await;
    assert_eq!(recv_json(&mut socket).await["event"], "subscription_succeeded");
    for n in 1..=30 {
        publish(&http, &base, "feed", n).await;
    }
    let mut seen = Seen::default();
    read_until(&mut socket, &mut seen, |s| s.ns.len() == 20).await;
    drop(socket);
    terminate(child).await;

    let (child, base) = spawn_server(&env).await;
    for n in 31..=40 {
        publish(&http, &base, "feed", n).await;
    }
    let mut socket = ws(&base, &format!("/ws?channel=feed&since={}", seen.since())).await;
    read_until(&mut socket, &mut seen, |s| s.ns.last() == Some(&40)).await;
    assert_eq!(seen.ns, (1..=40).collect::<Vec<_>>());
    let marker = recv_json(&mut socket).await;
    assert_eq!(marker["event"], "subscription_succeeded", "after the missed messages");
    assert_eq!(marker["data"]["recovered"], true);
    let (status, page) = get_json(&http, &format!("{base}/api/broadcast/channels/feed/history?limit=5")).await;
    assert_eq!(status, 200, "{page}");
    let ns: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [36, 37, 38, 39, 40]);
    assert_eq!(page["position"]["offset"], 40);
    terminate(child).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = http.get(url).send().await.expect("http");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn subscribe(ws: &mut Ws, channel: &str, since: Option<Value>) -> Vec<Value> {
    let mut frame = json!({"action": "subscribe", "channel": channel});
    if let Some(since) = since {
        frame["since"] = since;
    }
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    let mut frames = Vec::new();
    loop {
        let f = recv_json(ws).await;
        let done = f["event"] == "subscription_succeeded" || f["event"] == "subscription_error";
        frames.push(f);
        if done {
            return frames;
        }
    }
}

fn ticks(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["event"] == "tick")
        .map(|f| f["data"]["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn lost_histories_old_positions_and_big_gaps_say_recovered_false() {
    let server = start_with(config_from(lookup(&[
        ("BROADCAST_HISTORY_SIZE", "20"),
        ("BROADCAST_HISTORY_RECOVERY_LIMIT", "5"),
    ])))
    .await;
    let base = server.url("");
    for n in 1..=30 {
        server.publish("orders.1", "tick", json!({"n": n})).await;
    }
    let (mut c, _) = server.connect("/ws").await;
    let joined = subscribe(&mut c, "orders.1", None).await;
    let epoch = joined[0]["data"]["position"]["epoch"].clone();
    assert_eq!(joined[0]["data"]["position"]["offset"], 30);
    assert!(joined[0]["data"].get("recovered").is_none(), "no since, no recovered");

    // Within the history and the limit: recovered.
    let (mut c, _) = server.connect("/ws").await;
    let frames = subscribe(&mut c, "orders.1", Some(json!({"epoch": epoch, "offset": 27}))).await;
    assert_eq!(ticks(&frames), [28, 29, 30]);
    assert_eq!(frames.last().unwrap()["data"]["recovered"], true);

    // More missed than one recovery sends: the newest 5, capped, not recovered.
    let (mut c, _) = server.connect("/ws").await;
    let frames = subscribe(&mut c, "orders.1", Some(json!({"epoch": epoch, "offset": 20}))).await;
    assert_eq!(ticks(&frames), [26, 27, 28, 29, 30]);
    let marker = &frames.last().unwrap()["data"];
    assert_eq!(
        (marker["recovered"].clone(), marker["capped"].clone()),
        (json!(false), json!(true))
    );

    // Older than what is kept (the newest 20 are 11..=30): nothing, not recovered.
    let server2 = start_with(config_from(lookup(&[("BROADCAST_HISTORY_SIZE", "20")]))).await;
    for n in 1..=30 {
        server2.publish("orders.1", "tick", json!({"n": n})).await;
    }
    let (mut c, _) = server2.connect("/ws").await;
    let e2 = subscribe(&mut c, "orders.1", None).await[0]["data"]["position"]["epoch"].clone();
    let (mut c, _) = server2.connect("/ws").await;
    let frames = subscribe(&mut c, "orders.1", Some(json!({"epoch": e2, "offset": 5}))).await;
    assert_eq!(ticks(&frames), Vec::<u64>::new());
    assert_eq!(frames.last().unwrap()["data"]["recovered"], false);

    // The memory store restarted (another server): a new epoch, so not recovered.
    assert_ne!(epoch, e2);
    let (mut c, _) = server2.connect("/ws").await;
    let frames = subscribe(&mut c, "orders.1", Some(json!({"epoch": epoch, "offset": 29}))).await;
    assert_eq!(ticks(&frames), Vec::<u64>::new());
    assert_eq!(frames.last().unwrap()["data"]["recovered"], false);
    assert_eq!(frames.last().unwrap()["data"]["position"]["epoch"], e2);

    // A malformed since in the URL is refused before the upgrade.
    let url = format!("{}/ws?channel=feed&since=nonsense", base.replacen("http", "ws", 1));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 422),
        other => panic!("expected 422, got {other:?}"),
    }
}

#[tokio::test]
async fn history_is_off_unless_configured_and_the_api_pages_through_it() {
    let server = start_with(config_from(lookup(&[]))).await;
    // `plain` keeps no history: no positions, no marker fields, 404 from the API.
    let (mut c, joined) = server.connect("/ws/plain").await;
    assert!(joined["data"].get("position").is_none(), "{joined}");
    server.publish("plain", "tick", json!({"n": 1})).await;
    let frame = recv_json(&mut c).await;
    assert!(frame.get("position").is_none(), "{frame}");
    let (status, body) = server.get("/api/broadcast/channels/plain/history").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("history_off")));
    let (mut c, _) = server.connect("/ws").await;
    let frames = subscribe(&mut c, "plain", Some(json!({"epoch": "x", "offset": 1}))).await;
    assert_eq!(
        frames.last().unwrap()["data"]["recovered"],
        false,
        "asked, but no history"
    );

    for n in 1..=25 {
        server.publish("feed", "tick", json!({"n": n})).await;
    }
    let (status, newest) = server.get("/api/broadcast/channels/feed/history?limit=3").await;
    assert_eq!(status, 200, "{newest}");
    assert_eq!(ticks_of(&newest), [23, 24, 25]);
    assert_eq!(newest["more"], false);
    let epoch = newest["position"]["epoch"].as_str().unwrap().to_string();
    let (_, page) = server
        .get(&format!(
            "/api/broadcast/channels/feed/history?since={epoch}:10&limit=10"
        ))
        .await;
    assert_eq!(ticks_of(&page), (11..=20).collect::<Vec<_>>());
    assert_eq!(
        (page["more"].clone(), page["continuous"].clone()),
        (json!(true), json!(true))
    );
    let (_, page) = server
        .get("/api/broadcast/channels/feed/history?since=other:10&limit=2")
        .await;
    assert_eq!(page["continuous"], false, "another epoch");
    assert_eq!(ticks_of(&page), [1, 2], "answered from the start of this epoch");
    let (_, page) = server
        .get(&format!(
            "/api/broadcast/channels/feed/history?since={epoch}:0&limit=5000"
        ))
        .await;
    assert_eq!(page["limit"], 1000, "capped, and says so");
    for bad in ["since=x", "limit=0", "since=e:-1"] {
        let (status, _) = server.get(&format!("/api/broadcast/channels/feed/history?{bad}")).await;
        assert_eq!(status, 422, "{bad}");
    }
    let metrics = server.metrics().await;
    assert!(metrics.contains("rustaxum_history_messages 25"), "{metrics}");
    assert!(metrics.contains("rustaxum_history_bytes"), "{metrics}");
}

fn ticks_of(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn typed_frame_clients_recover_too() {
    let server = start_with_rtc(config_from(lookup(&[]))).await;
    let rtc = format!("http://{}", server.rtc_addr.unwrap());
    for n in 1..=5 {
        server.publish("feed", "tick", json!({"n": n})).await;
    }
    let mut c = ws(&rtc, &format!("/ws?token={}", token("1", json!({})))).await;
    let connected = recv_json(&mut c).await;
    assert_eq!(connected["type"], "Status", "{connected}");
    let (_, page) = server.get("/api/broadcast/channels/feed/history?limit=1").await;
    let epoch = page["position"]["epoch"].clone();
    let frame =
        json!({"type": "Subscribe", "data": {"topics": ["feed"], "since": {"feed": {"epoch": epoch, "offset": 2}}}});
    c.send(Message::Text(frame.to_string().into())).await.unwrap();
    let subscribed = recv_json(&mut c).await;
    assert_eq!(subscribed["data"]["status"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["data"]["positions"]["feed"]["offset"], 5);
    let mut got = Vec::new();
    for _ in 0..3 {
        let f = recv_json(&mut c).await;
        assert_eq!(f["type"], "Broadcast", "{f}");
        assert_eq!(f["data"]["topic"], "feed");
        got.push((
            f["data"]["payload"]["n"].as_u64().unwrap(),
            f["data"]["position"]["offset"].as_u64().unwrap(),
        ));
    }
    assert_eq!(got, [(3, 3), (4, 4), (5, 5)]);
    let marker = recv_json(&mut c).await;
    assert_eq!(marker["data"]["status"], "recovered", "{marker}");
    assert_eq!(marker["data"]["recovered"], true);
    server.publish("feed", "tick", json!({"n": 6})).await;
    let live = recv_json(&mut c).await;
    assert_eq!(live["data"]["position"]["offset"], 6, "{live}");
}

#[tokio::test]
async fn pusher_clients_may_opt_in_with_since() {
    let server = start_with(config_from(lookup(&[
        ("PUSHER_APP_ID", "1"),
        ("PUSHER_APP_KEY", "key"),
        ("PUSHER_APP_SECRET", "secret"),
    ])))
    .await;
    for n in 1..=4 {
        server.publish("feed", "tick", json!({"n": n})).await;
    }
    let (_, page) = server.get("/api/broadcast/channels/feed/history?limit=1").await;
    let epoch = page["position"]["epoch"].clone();
    let (mut c, hello) = server.connect("/app/key?protocol=7").await;
    assert_eq!(hello["event"], "pusher:connection_established");
    // A standard subscription: nothing replayed, events carry a position pusher-js ignores.
    let sub = json!({"event": "pusher:subscribe", "data": {"channel": "feed"}});
    c.send(Message::Text(sub.to_string().into())).await.unwrap();
    assert_eq!(
        recv_json(&mut c).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    server.publish("feed", "tick", json!({"n": 5})).await;
    let live = recv_json(&mut c).await;
    assert_eq!(
        (live["event"].as_str(), live["position"]["offset"].as_u64()),
        (Some("tick"), Some(5))
    );
    assert_eq!(live["data"], r#"{"n":5}"#, "data double-encoded as Pusher sends it");

    let (mut c, _) = server.connect("/app/key?protocol=7").await;
    let sub = json!({"event": "pusher:subscribe", "data": {"channel": "feed", "since": {"epoch": epoch, "offset": 3}}});
    c.send(Message::Text(sub.to_string().into())).await.unwrap();
    assert_eq!(
        recv_json(&mut c).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let missed: Vec<Value> = vec![recv_json(&mut c).await, recv_json(&mut c).await];
    let ns: Vec<&str> = missed.iter().map(|m| m["data"].as_str().unwrap()).collect();
    assert_eq!(ns, [r#"{"n":4}"#, r#"{"n":5}"#]);
    let marker = recv_json(&mut c).await;
    assert_eq!(marker["event"], "rustaxum:recovered");
    let data: Value = serde_json::from_str(marker["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["recovered"], true);
    assert_eq!(data["position"]["offset"], 5);
}

#[tokio::test]
async fn a_rules_file_can_mark_channels_that_keep_history() {
    let dir = std::env::temp_dir().join(format!("rustaxum-history-rules-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[[rules]]\npattern = \"ledger.{id}\"\nkind = \"public\"\nhistory = true\n\n\
         [[rules]]\npattern = \"scratch\"\nkind = \"public\"\n",
    )
    .unwrap();
    let path = rules.display().to_string();
    let server = start_with(config_from(move |k| match k {
        "BROADCAST_RULES_FILE" => Some(path.clone()),
        "JWT_SECRET" => Some(SECRET.into()),
        _ => None,
    }))
    .await;
    let (mut c, joined) = server.connect("/ws/ledger.7").await;
    assert_eq!(joined["data"]["position"]["offset"], 0, "{joined}");
    server.publish("ledger.7", "entry", json!({"n": 1})).await;
    assert_eq!(recv_json(&mut c).await["position"]["offset"], 1);
    let (status, page) = server.get("/api/broadcast/channels/ledger.7/history").await;
    assert_eq!((status, page["count"].as_u64()), (200, Some(1)), "{page}");
    let (status, _) = server.get("/api/broadcast/channels/scratch/history").await;
    assert_eq!(status, 404, "history only where the rule says so");
    let _ = std::fs::remove_dir_all(&dir);
}
