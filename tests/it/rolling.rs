//! Issue 35: a rolling restart through the repository's nginx.conf, as docs/deployment.md
//! describes it. Two real nodes share a real Redis behind nginx; a publisher posts every
//! 50 ms through nginx while native and Pusher clients (history on, recovering from their
//! last position when asked to reconnect) receive. Each node in turn gets SIGTERM,
//! drains, exits and is started again on the same ports. Nothing may fail: no publish
//! refused or lost, no upgrade refused, every client back, every message received once,
//! in order.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use crate::common::redis::{unique_prefix, RedisServer};
use crate::common::*;

const KEY: &str = "rolling-key";

/// One node of the pair: the binary on its two fixed ports.
struct Node {
    ports: (u16, u16),
    env: Vec<(String, String)>,
    child: Option<tokio::process::Child>,
}

impl Node {
    async fn start(&mut self) {
        let mut cmd = server_command();
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("BROADCAST_APP_PORT", self.ports.0.to_string())
            .env("BROADCAST_WEBSOCKET_PORT", self.ports.1.to_string());
        let mut child = cmd.spawn().expect("spawn rustaxum");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = reqwest::get(format!("http://127.0.0.1:{}/ready", self.ports.0)).await;
            if ready.map(|r| r.status() == 200).unwrap_or(false) {
                break;
            }
            assert!(Instant::now() < deadline, "node on {:?} never became ready", self.ports);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the drain, then a clean exit.
    async fn stop(&mut self) {
        let child = self.child.take().expect("running");
        terminate(child).await;
    }
}

#[derive(Default)]
struct Seen {
    ticks: Vec<u64>,
    reconnects: u32,
    refused_upgrades: Vec<String>,
    not_recovered: u32,
    subscribed: bool,
}

fn tick_of(data: &Value) -> Option<u64> {
    data["n"].as_u64()
}

/// A native client of `general` through nginx that recovers from its last position.
async fn native_client(front: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let mut last: Option<(String, u64)> = None;
    while !stop.load(Ordering::Acquire) {
        let since = last
            .as_ref()
            .map(|(e, o)| format!("&since={e}:{o}"))
            .unwrap_or_default();
        let mut ws = match tokio_tungstenite::connect_async(format!("ws://{front}/ws?channel=general{since}")).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                seen.lock().unwrap().refused_upgrades.push(format!("native: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            let m: Value = serde_json::from_str(&text).unwrap();
            if m["event"] == "subscription_succeeded" {
                seen.lock().unwrap().subscribed = true;
                if last.is_some() && m["data"]["recovered"] != true {
                    seen.lock().unwrap().not_recovered += 1;
                }
                continue;
            }
            if let (Some(n), Some(e), Some(o)) = (
                tick_of(&m["data"]),
                m["position"]["epoch"].as_str(),
                m["position"]["offset"].as_u64(),
            ) {
                last = Some((e.to_string(), o));
                seen.lock().unwrap().ticks.push(n);
            }
        }
        seen.lock().unwrap().reconnects += 1;
    }
}

/// A Pusher protocol 7 client of `general` through nginx, recovering with rustaxum's
/// opt-in `since` (pusher-js itself would resubscribe without it).
async fn pusher_client(front: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let mut last: Option<Value> = None;
    while !stop.load(Ordering::Acquire) {
        let mut ws = match tokio_tungstenite::connect_async(format!("ws://{front}/app/{KEY}?protocol=7")).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                seen.lock().unwrap().refused_upgrades.push(format!("pusher: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            let m: Value = serde_json::from_str(&text).unwrap();
            match m["event"].as_str() {
                Some("pusher:connection_established") => {
                    let mut data = json!({"channel": "general"});
                    if let Some(position) = &last {
                        data["since"] = position.clone();
                    }
                    let subscribe = json!({"event": "pusher:subscribe", "data": data});
                    if ws.send(Message::text(subscribe.to_string())).await.is_err() {
                        break;
                    }
                }
                Some("pusher_internal:subscription_succeeded") => seen.lock().unwrap().subscribed = true,
                Some("rustaxum:recovered") => {
                    let data: Value = serde_json::from_str(m["data"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
                    if data["recovered"] != true {
                        seen.lock().unwrap().not_recovered += 1;
                    }
                }
                Some("tick") => {
                    let data: Value = serde_json::from_str(m["data"].as_str().unwrap()).unwrap();
                    if let Some(n) = tick_of(&data) {
                        last = Some(m["position"].clone());
                        seen.lock().unwrap().ticks.push(n);
                    }
                }
                _ => {
                    if std::env::var_os("ROLLING_DEBUG").is_some() {
                        eprintln!("pusher got {m}");
                    }
                }
            }
        }
        seen.lock().unwrap().reconnects += 1;
    }
}

#[tokio::test]
async fn a_rolling_restart_behind_nginx_fails_nothing_and_loses_nothing() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let env: Vec<(String, String)> = [
        ("BROADCAST_DRIVER", "redis"),
        ("REDIS_URL", redis.url().as_str()),
        ("BROADCAST_CHANNELS_PREFIX", prefix.as_str()),
        ("BROADCAST_HISTORY_CHANNELS", "general"),
        ("BROADCAST_DRAIN_SECONDS", "1"),
        ("PUSHER_APP_ID", "1"),
        ("PUSHER_APP_KEY", KEY),
        ("PUSHER_APP_SECRET", "rolling-secret"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut nodes = [(free_port(), free_port()), (free_port(), free_port())].map(|ports| Node {
        ports,
        env: env.clone(),
        child: None,
    });
    for node in &mut nodes {
        node.start().await;
    }
    let port = free_port();
    let _nginx = crate::deployment::start_nginx([nodes[0].ports, nodes[1].ports], port);
    let front = format!("127.0.0.1:{port}");

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..6 {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = if i % 2 == 0 {
            tokio::spawn(native_client(front.clone(), seen.clone(), stop.clone()))
        } else {
            tokio::spawn(pusher_client(front.clone(), seen.clone(), stop.clone()))
        };
        clients.push((if i % 2 == 0 { "native" } else { "pusher" }, seen, task));
    }
    // Every client subscribed before publishing starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !clients.iter().all(|(_, seen, _)| seen.lock().unwrap().subscribed) {
        assert!(Instant::now() < deadline, "clients never subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let published = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (front, published, failed, publishing) =
            (front.clone(), published.clone(), failed.clone(), publishing.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut every = tokio::time::interval(Duration::from_millis(50));
            let mut n = 0u64;
            while publishing.load(Ordering::Acquire) {
                every.tick().await;
                let body = json!({"channel": "general", "event": "tick", "data": {"n": n}});
                match http
                    .post(format!("http://{front}/api/broadcast"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        n += 1;
                        published.store(n, Ordering::Release);
                    }
                    Ok(r) => failed.lock().unwrap().push(format!("#{n}: {}", r.status())),
                    Err(e) => failed.lock().unwrap().push(format!("#{n}: {e}")),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in nodes.iter_mut() {
        node.stop().await;
        node.start().await;
        // As the procedure says: nginx's fail_timeout (5 s) passes before the next node.
        tokio::time::sleep(Duration::from_millis(5500)).await;
    }
    publishing.store(false, Ordering::Release);
    publisher.await.unwrap();
    let total = published.load(Ordering::Acquire);
    assert!(total > 150, "only {total} publishes");
    let failed = failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "{} failed publishes: {failed:?}", failed.len());

    let deadline = Instant::now() + Duration::from_secs(10);
    for (protocol, seen, _) in &clients {
        loop {
            let (count, last, state) = {
                let seen = seen.lock().unwrap();
                let state = format!(
                    "{} reconnects, {} not recovered, refused upgrades {:?}",
                    seen.reconnects, seen.not_recovered, seen.refused_upgrades
                );
                (seen.ticks.len(), seen.ticks.last().copied(), state)
            };
            if last == Some(total - 1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{protocol} client never got #{}: {count} ticks, last {last:?}; {state}",
                total - 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.store(true, Ordering::Release);
    for (protocol, seen, task) in &clients {
        task.abort();
        let seen = seen.lock().unwrap();
        let expected: Vec<u64> = (0..total).collect();
        let distinct: BTreeSet<u64> = seen.ticks.iter().copied().collect();
        let missing: Vec<u64> = expected.iter().copied().filter(|n| !distinct.contains(n)).collect();
        assert!(missing.is_empty(), "{protocol} client missed {missing:?}");
        assert_eq!(seen.ticks, expected, "{protocol} client: a duplicate or out of order");
        assert!(seen.reconnects >= 1, "{protocol} client was never asked to reconnect");
        assert!(
            seen.refused_upgrades.is_empty(),
            "{protocol}: {:?}",
            seen.refused_upgrades
        );
        assert_eq!(seen.not_recovered, 0, "{protocol} client could not recover");
    }
}
