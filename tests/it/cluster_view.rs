//! One view of the cluster (issue 35): `GET /api/broadcast/nodes` answers the same on
//! every node, and artisan's `stats`, `channels` and `monitor` show the cluster's totals
//! (or one node with `--node`), through the real binary against two nodes sharing Redis.

use std::process::Output;

use crate::artisan::artisan;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::redis::RedisServer;
use crate::common::*;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `GET /api/broadcast/nodes` on `node` until `want` holds.
async fn nodes_until(node: &TestServer, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, view) = node.get("/api/broadcast/nodes").await;
        assert_eq!(status, 200, "{view}");
        if want(&view) {
            return view;
        }
        assert!(std::time::Instant::now() < deadline, "{view:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_node_shows_the_whole_cluster_and_artisan_its_totals() {
    let redis = RedisServer::start();
    let (a, b, _) = two_nodes(&redis).await;
    let mut sockets = Vec::new();
    for (node, channel, n) in [(&a, "orders", 3), (&b, "orders", 2), (&b, "news", 1)] {
        for _ in 0..n {
            sockets.push(node.connect(&format!("/ws/{channel}")).await.0);
        }
    }
    // Both nodes see both cards and the same totals.
    let total = |v: &Value| v["totals"]["nodes"] == 2 && v["totals"]["connections"] == 6;
    let on_a = nodes_until(&a, total).await;
    let on_b = nodes_until(&b, total).await;
    let ids = |v: &Value| -> Vec<String> {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&on_a), ids(&on_b));
    assert_ne!(on_a["node"], on_b["node"]);
    let b_id = on_b["node"].as_str().unwrap().to_string();
    let card = on_a["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == b_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (card["connections"].as_u64(), card["channels"].as_u64()),
        (Some(3), Some(2)),
        "{card:#}"
    );
    assert_eq!(card["protocols"]["native"], 3);
    assert_eq!(card["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        (card["draining"].as_bool(), card["redis"].as_str()),
        (Some(false), Some("healthy"))
    );
    assert!(card["memory_bytes"].as_u64().unwrap() > 0 && card["open_files"].as_u64().unwrap() > 0);
    let (status, one) = a.get(&format!("/api/broadcast/nodes?node={b_id}")).await;
    assert_eq!((status, one["nodes"].as_array().map(Vec::len)), (200, Some(1)));
    assert_eq!(a.get("/api/broadcast/nodes?node=nobody").await.0, 404);

    // Publishes at a steady rate through A: the rates are the same whichever node answers
    // (a load balancer's pick), and a monitor through either shows them.
    let publisher = {
        let url = a.url("/api/broadcast");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..200 {
                let body = json!({"channel": "orders", "event": "tick", "data": {"i": i}});
                http.post(&url).json(&body).send().await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Every card has moved (the others' arrive with their heartbeats, every 2 s).
    let busy = |v: &Value| {
        let r = &v["totals"]["rates"];
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["rates"]["delivered"].as_f64().unwrap_or(0.0) > 10.0)
            && r["published"].as_f64().unwrap_or(0.0) > 12.0
            && r["delivered"].as_f64().unwrap_or(0.0) > 60.0
    };
    let on_a = nodes_until(&a, busy).await;
    let on_b = nodes_until(&b, busy).await;
    for v in [&on_a, &on_b] {
        let r = &v["totals"]["rates"];
        let (published, delivered) = (r["published"].as_f64().unwrap(), r["delivered"].as_f64().unwrap());
        // 20 publishes a second, each delivered to 5 sockets (3 on A, 2 on B).
        assert!((10.0..=30.0).contains(&published), "{r}");
        assert!((50.0..=150.0).contains(&delivered), "{v:#}");
    }
    let out = artisan(&b, &["broadcast", "monitor", "--duration", "3", "--interval", "1"]).await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let samples: Vec<&str> = said.lines().filter(|l| l.contains("published/s")).collect();
    assert!(samples.len() >= 2, "{said}");
    for line in &samples {
        assert!(line.contains("connections: 6"), "{said}");
        let rate: f64 = line
            .split("published/s: ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|r| r.parse().ok())
            .unwrap();
        assert!(rate > 5.0, "a rate read through another node: {said}");
    }
    publisher.abort();

    // stats: the cluster's totals and a line per node; --node: one node.
    let out = artisan(&b, &["broadcast", "stats"]).await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("cluster of 2 nodes") && said.contains("Connections: 6"),
        "{said}"
    );
    assert!(
        said.contains("orders: 5 connections") && said.contains("news: 1 connection"),
        "{said}"
    );
    for id in ids(&on_a) {
        assert!(said.contains(&id), "{said}");
    }
    let out = artisan(&a, &["broadcast", "stats", "--node", &b_id]).await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("Node {b_id}")) && said.contains("3 connections"),
        "{said}"
    );
    let out = artisan(&a, &["broadcast", "stats", "--node", "nobody"]).await;
    assert!(!out.status.success() && text(&out).contains(&b_id), "{}", text(&out));
    // channels: summed over the nodes; --node of another node says where to ask.
    let out = artisan(&a, &["broadcast", "channels"]).await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let orders = said
        .lines()
        .find(|l| l.starts_with("orders"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(orders.trim_end().ends_with(" 5"), "{said}");
    assert!(said.contains("2 channel(s) on 2 nodes"), "{said}");
    let out = artisan(&a, &["broadcast", "channels", "--node", &b_id]).await;
    assert!(
        !out.status.success() && text(&out).contains("--server"),
        "{}",
        text(&out)
    );
    drop(sockets);
}
