//! The dashboard in a real headless Chromium (Debian's `chromium`, driven by
//! `puppeteer-core`; no browser download), and its access rules over HTTP.

use crate::common::*;

const TOKEN: &str = "dashboard-token-0123456789";

fn lookup(k: &str) -> Option<String> {
    match k {
        "BROADCAST_API_TOKEN" => Some(TOKEN.into()),
        "BROADCAST_PUBLIC_CHANNELS" => Some("dash-demo".into()),
        // Low enough that the page's own snapshots (under 1 KiB on an idle server) go
        // compressed, so its compression figure has something to show.
        "BROADCAST_COMPRESSION" => Some("200".into()),
        _ => None,
    }
}

#[tokio::test]
async fn an_operator_logs_in_watches_and_manages_emithub_channels_in_chromium() {
    let server = start_with(config_from(lookup)).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = tokio::process::Command::new("node")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard"))
        .args(["drive.mjs", &server.url(""), TOKEN, &shot.display().to_string()])
        .output()
        .await
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{stdout}\n{stderr}"));
    assert_eq!(result["ok"], true, "{result:#}\n{stderr}");
    // Chromium offered permessage-deflate and the page decoded the compressed snapshots.
    assert_eq!(
        result["extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(
        result["steps"],
        serde_json::json!([
            "wrong token refused",
            "logged in",
            "version, uptime, favicon",
            "compression N % smaller",
            "channel appeared",
            "counter moved",
            "looked up and sent",
            "apps listed",
            "emithub Created -> Active",
            "screenshot"
        ])
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // What the page did went through the real API.
    let list = reqwest::Client::new()
        .get(server.url("/api/v1/channels"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(list["channels"][0]["status"], "Active", "{list}");
}

#[tokio::test]
async fn the_feed_needs_the_token_and_the_page_is_self_contained() {
    let server = start_with(config_from(lookup)).await;
    let page = reqwest::get(server.url("/dashboard")).await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/dashboard/ws") && !html.contains("https://"), "no CDN");
    let refused = tokio_tungstenite::connect_async(server.ws_url("/dashboard/ws?token=wrong")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let mut ws = server.connect_raw(&format!("/dashboard/ws?token={TOKEN}")).await;
    let snapshot = recv_json(&mut ws).await;
    assert_eq!(snapshot["interval_ms"], 1000);
    assert!(snapshot["stats"]["connections"].is_u64(), "{snapshot}");
    assert!(snapshot["events"].is_array() && snapshot["emithub"].is_array());
    // The latency chart's histogram: cumulative [le, count] buckets ending with +Inf (null).
    let buckets = snapshot["latency"].as_array().expect("latency buckets");
    assert!(buckets.len() > 2 && buckets.last().unwrap()[0].is_null(), "{snapshot}");
    assert_eq!(snapshot["version"], env!("CARGO_PKG_VERSION"));
}

// Issue 35: through a load balancer the dashboard showed the node it landed on. Now it
// shows every node and the cluster's totals, a picked node's figures, refusals per node,
// and charts that survive a reload (checked in Chromium with two nodes sharing Redis).
#[tokio::test]
async fn the_dashboard_shows_every_node_and_the_cluster_in_chromium() {
    use crate::common::redis::{unique_prefix, RedisServer};
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let with_token = |mut c: rustaxum::Config| {
        c.server.api_token = Some(TOKEN.into());
        c
    };
    let a = start_with(with_token(cluster_config(&redis, &prefix))).await;
    let b = start_with(with_token(cluster_config(&redis, &prefix))).await;
    for node in [&a, &b] {
        wait_ready(node).await;
    }
    let mut sockets = Vec::new();
    for (node, n) in [(&a, 3), (&b, 2)] {
        for _ in 0..n {
            sockets.push(node.connect("/ws/general").await.0);
        }
    }
    let wrong = reqwest::Client::new()
        .get(b.url("/api/broadcast/stats"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let stats: serde_json::Value = reqwest::Client::new()
        .get(b.url("/api/broadcast/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b_id = stats["redis"]["node_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{stats}"))
        .to_string();

    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-cluster.png");
    let _ = std::fs::remove_file(&shot);
    let out = tokio::process::Command::new("node")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard"))
        .args(["cluster.mjs", &a.url(""), TOKEN, &b_id, &shot.display().to_string()])
        .output()
        .await
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(result["ok"], true, "{result:#}");
    assert_eq!(
        result["steps"],
        serde_json::json!([
            "two nodes and the totals",
            "now shows the cluster",
            "picked node B",
            "picked the cluster",
            "refusal counted on B",
            "charts kept across a reload",
            "screenshot"
        ])
    );
    drop(sockets);
}
