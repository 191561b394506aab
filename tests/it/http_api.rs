//! The HTTP API: publishing, every error status, stats and health.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn publish_errors_are_json_with_fitting_statuses() {
    let mut config = config();
    config.server.max_payload_size = 2048;
    let server = start_with(config).await;
    let long_event = "e".repeat(201);
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let cases: Vec<(String, u16, &str)> = vec![
        ("{oops".into(), 400, "invalid_json"),
        ("".into(), 400, "invalid_json"),
        (json!({"event": "e"}).to_string(), 422, "validation_failed"),
        (json!({"channel": "general"}).to_string(), 422, "validation_failed"),
        (
            json!({"channel": "general", "event": ""}).to_string(),
            422,
            "validation_failed",
        ),
        (
            json!({"channel": "general", "event": long_event}).to_string(),
            422,
            "validation_failed",
        ),
        (
            json!({"channel": "bad channel", "event": "e"}).to_string(),
            422,
            "validation_failed",
        ),
        (
            json!({"channels": [], "event": "e"}).to_string(),
            422,
            "validation_failed",
        ),
        (
            json!({"channels": many, "event": "e"}).to_string(),
            422,
            "validation_failed",
        ),
        (
            json!({"channel": "general", "event": "e", "socket_id": "nope"}).to_string(),
            422,
            "validation_failed",
        ),
        (
            json!({"channel": "general", "event": "e", "unknown": 1}).to_string(),
            422,
            "validation_failed",
        ),
        (
            json!({"channel": 5, "event": "e"}).to_string(),
            422,
            "validation_failed",
        ),
        (
            json!({"channel": "general", "event": "e", "data": "x".repeat(4096)}).to_string(),
            413,
            "payload_too_large",
        ),
    ];
    for (body, status, error) in cases {
        let (got, answer) = server.post("/api/broadcast", &body).await;
        assert_eq!(got, status, "{body:.80}: {answer}");
        assert_eq!(answer["error"], error, "{body:.80}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }
    let (status, answer) = server.get("/api/nothing/here").await;
    assert_eq!((status, answer["error"].as_str()), (404, Some("not_found")));
    let (status, _) = server.get("/api/broadcast").await;
    assert_eq!(status, 405);
    // The server is still serving.
    assert_eq!(server.get("/health").await.0, 200);
}

#[tokio::test]
async fn api_token_guards_publishing() {
    let mut config = config();
    config.server.api_token = Some("s3cret-token".into());
    let server = start_with(config).await;
    let (mut ws, _) = server.connect("/ws?channel=general").await;
    let body = json!({"channel": "general", "event": "e", "data": {}}).to_string();
    for token in [None, Some("wrong"), Some("s3cret-token-and-more")] {
        let (status, answer) = server.post_with("/api/broadcast", &body, token).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(answer["error"], "unauthorized");
    }
    expect_silence(&mut ws, std::time::Duration::from_millis(200)).await;
    let (status, answer) = server.post_with("/api/broadcast", &body, Some("s3cret-token")).await;
    assert_eq!(status, 200);
    assert_eq!(answer["recipients"], 1);
    assert_eq!(recv_json(&mut ws).await["event"], "e");
}

#[tokio::test]
async fn channels_array_and_stats() {
    let server = start().await;
    let (mut a, _) = server.connect("/ws?channel=alpha").await;
    let (mut b, _) = server.connect("/ws?channel=beta").await;
    let (_c, _) = server.connect("/ws?channel=beta").await;
    let body = json!({"channels": ["alpha", "beta"], "event": "multi", "data": {"k": "v"}});
    let (status, answer) = server.post("/api/broadcast", &body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(answer["recipients"], 3);
    assert_eq!(recv_json(&mut a).await["channel"], "alpha");
    assert_eq!(recv_json(&mut b).await["channel"], "beta");
    send_json(&mut a, json!({"action": "ping"})).await;
    recv_json(&mut a).await;

    let (status, stats) = server.get("/api/broadcast/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["connections"], 3);
    assert_eq!(stats["channels"]["alpha"]["subscribers"], 1);
    assert_eq!(stats["channels"]["beta"]["subscribers"], 2);
    assert_eq!(stats["channels"]["beta"]["kind"], "public");
    assert_eq!(stats["messages"]["published"], 2);
    assert_eq!(stats["messages"]["delivered"], 3);
    assert_eq!(stats["messages"]["received"], 1);
    assert_eq!(stats["driver"], "websocket");
    assert!(stats["uptime_seconds"].is_u64());

    let (_, channels) = server.get("/api/broadcast/channels").await;
    assert_eq!(channels["count"], 2);
    assert_eq!(
        channels["channels"][1],
        json!({"name": "beta", "kind": "public", "subscribers": 2})
    );
}

#[tokio::test]
async fn prometheus_metrics_follow_the_hub() {
    let mut config = config();
    config.websocket.send_queue_size = 1;
    let server = start_with(config).await;
    let (_a, _) = server.connect("/ws?channel=general").await;
    let (_b, _) = server.connect("/ws?channel=news").await;
    server.publish("general", "e", json!({})).await;
    let scrape = || async {
        let resp = reqwest::get(server.url("/metrics")).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        resp.text().await.unwrap()
    };
    let text = scrape().await;
    for line in [
        "rustaxum_connections 2",
        "rustaxum_channels 2",
        "rustaxum_messages_published_total 1",
        "rustaxum_messages_delivered_total 1",
        "rustaxum_slow_consumer_disconnects_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    // Counters move with the hub between scrapes.
    server.publish("news", "e", json!({})).await;
    let text = scrape().await;
    assert!(
        text.lines().any(|l| l == "rustaxum_messages_published_total 2"),
        "{text}"
    );
    // Publish-to-write latency: one observation per written batch (both sockets wrote).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = scrape().await;
        if text.lines().any(|l| l == "rustaxum_write_latency_seconds_count 2") {
            assert!(
                text.contains("# TYPE rustaxum_write_latency_seconds histogram"),
                "{text}"
            );
            assert!(
                text.lines()
                    .any(|l| l == r#"rustaxum_write_latency_seconds_bucket{le="+Inf"} 2"#),
                "{text}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_ready_and_index() {
    let server = start().await;
    assert_eq!(server.get("/health").await, (200, json!({"status": "ok"})));
    let (status, ready) = server.get("/ready").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (_, index) = server.get("/").await;
    assert_eq!(index["name"], "rustaxum");
    assert_eq!(index["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn plain_get_on_ws_endpoint_asks_for_upgrade() {
    let server = start().await;
    let (status, body) = server.get("/ws?channel=general").await;
    assert_eq!(status, 426);
    assert_eq!(body["error"], "upgrade_required");
}

// Issue 10: the Log driver writes to a file when BROADCAST_LOG_FILE is set (JSON lines).
#[tokio::test]
async fn the_log_driver_writes_json_lines_to_its_file() {
    let path = std::env::temp_dir().join(format!("rustaxum-log-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut c = config();
    c.driver = rustaxum::config::Driver::Log;
    c.log_file = Some(path.clone());
    let server = start_with(c).await;
    let (mut ws, _) = server.connect("/ws/general").await;
    for n in 1..=2 {
        let recipients = server
            .app
            .manager()
            .broadcast()
            .channels(["general", "news"])
            .event("logged")
            .with(json!({"n": n}))
            .send()
            .await
            .unwrap();
        assert_eq!(recipients, 0, "the log driver delivers nothing");
    }
    expect_silence(&mut ws, std::time::Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["event"], "logged");
    assert_eq!(lines[0]["channels"], json!(["general", "news"]));
    assert_eq!(lines[1]["data"], json!({"n": 2}));
    assert!(lines[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    std::fs::remove_file(&path).unwrap();
}

// Hardening round two (issue 21, item 10): the RustAxum document's monitoring section
// names `websocket_connections_total` and `broadcast_duration_seconds`.
#[tokio::test]
async fn the_documents_metric_names_are_exposed() {
    let server = start().await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(server.connect("/ws?channel=general").await.0);
    }
    server.publish("general", "e", json!({"n": 1})).await;
    server.publish("news", "nobody-listens", json!({})).await;
    for ws in &mut sockets {
        assert_eq!(recv_json(ws).await["event"], "e");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = server.metrics().await;
        let has = |line: &str| text.lines().any(|l| l == line);
        if has("broadcast_duration_seconds_count 1") {
            assert!(text.contains("# TYPE broadcast_duration_seconds histogram"), "{text}");
            assert!(has(r#"broadcast_duration_seconds_bucket{le="+Inf"} 1"#), "{text}");
            assert!(text.contains("# TYPE websocket_connections_total counter"), "{text}");
            assert!(has("websocket_connections_total 3"), "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "one message reached sockets: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

// Issue 22: the server's own inbound APIs publish through the publish pipeline; with
// `BROADCAST_DRIVER=log` (Laravel's default value) `POST /api/broadcast` used to log the
// event and deliver nothing.
#[tokio::test]
async fn the_inbound_api_delivers_whatever_driver_the_application_side_uses() {
    for driver in ["log", "null"] {
        let server = start_with(config_from(|k| (k == "BROADCAST_DRIVER").then(|| driver.into()))).await;
        let (mut ws, _) = server.connect("/ws/general").await;
        let answer = server.publish("general", "delivered", json!({"driver": driver})).await;
        assert_eq!(answer["recipients"], 1, "{driver}: {answer}");
        let got = recv_json(&mut ws).await;
        assert_eq!(
            (got["event"].as_str(), &got["data"]),
            (Some("delivered"), &json!({"driver": driver}))
        );
    }
}

// Issue 25: every family has HELP and TYPE, the exposition parses with the Prometheus
// client's own parser, one app label per app, process and build metrics, and a
// read-only metrics token that cannot publish.
#[tokio::test]
async fn metrics_parse_with_prometheus_own_parser_and_need_only_a_read_only_token() {
    let mut config = config();
    config.server.api_token = Some("publish-token-0123456789".into());
    config.server.metrics_token = Some("scrape-token-0123456789".into());
    config.pusher.apps =
        rustaxum::services::pusher::Apps::new(vec![pusher_app("shop", "shop-key", "shop-secret-0123456789")]);
    let server = start_with(config).await;
    let (_a, _) = server.connect("/ws?channel=general").await;
    let (_p, _) = server.connect("/app/shop-key?protocol=7").await;
    let http = reqwest::Client::new();
    let scrape = |token: Option<&'static str>| {
        let mut req = http.get(server.url("/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap() }
    };
    assert_eq!(scrape(None).await.status().as_u16(), 401);
    assert_eq!(scrape(Some("wrong-token-0123456789")).await.status().as_u16(), 401);
    assert_eq!(scrape(Some("publish-token-0123456789")).await.status().as_u16(), 200);
    let text = scrape(Some("scrape-token-0123456789")).await.text().await.unwrap();
    // The metrics token reads, it does not publish.
    let published = http
        .post(server.url("/api/broadcast"))
        .bearer_auth("scrape-token-0123456789")
        .json(&json!({"channel": "general", "event": "e", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 401);

    // Every family: HELP and TYPE.
    let mut families = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
            })
            .unwrap_or(name);
        families.insert(family.to_string());
    }
    for family in &families {
        assert!(text.contains(&format!("# HELP {family} ")), "no HELP for {family}");
        assert!(text.contains(&format!("# TYPE {family} ")), "no TYPE for {family}");
    }
    for expected in [
        "rustaxum_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "rustaxum_protocol_connections",
        "broadcast_duration_seconds",
    ] {
        assert!(families.contains(expected), "{expected} missing from {families:?}");
    }
    assert!(text.contains(&format!(
        "rustaxum_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    // The two refused scrapes above are counted (issue 35: refusals per node).
    assert!(
        text.contains("rustaxum_http_refusals_total{status=\"401\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("rustaxum_http_refusals_total{status=\"429\"} 0"),
        "{text}"
    );
    assert!(text.contains("rustaxum_http_server_errors_total 0"), "{text}");
    assert!(
        text.contains("rustaxum_protocol_connections{protocol=\"pusher\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("rustaxum_protocol_connections{protocol=\"native\"} 1"),
        "{text}"
    );
    // One label value per app: the default app's channels are labelled with its id.
    assert!(text.contains("rustaxum_app_connections{app=\"shop\"}"), "{text}");
    assert!(
        text.contains("rustaxum_channels_occupied_total{app=\"shop\"}"),
        "{text}"
    );
    assert!(!text.contains("app=\"default\""), "{text}");

    // The Prometheus client's own parser reads it all.
    let python = "target/emithub-venv/bin/python";
    let mut parser = tokio::process::Command::new(python)
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as parse\n\
             fams = list(parse(sys.stdin.read()))\nprint(len(fams), sum(len(f.samples) for f in fams))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("scripts/test makes the venv");
    use tokio::io::AsyncWriteExt;
    parser.stdin.take().unwrap().write_all(text.as_bytes()).await.unwrap();
    let out = parser.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed = String::from_utf8_lossy(&out.stdout);
    let count: usize = parsed.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        count >= families.len() - 3,
        "parsed {parsed} of {} families",
        families.len()
    );
}

// Issue 35: the Grafana dashboard queried families a fresh node does not export (gaps in
// rate(), false alarms in absent()), and CPU time counted whole seconds.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_families_a_fresh_node_exports() {
    // A clustered node with an app, nothing published yet: no webhooks configured, no
    // history, so those families exist only because they are registered at start.
    let redis = crate::common::redis::RedisServer::start();
    let mut config = cluster_config(&redis, &crate::common::redis::unique_prefix());
    config.pusher.apps = rustaxum::services::pusher::Apps::new(vec![pusher_app("g", "g-key", "g-secret-0123456789")]);
    let server = start_with(config).await;
    wait_ready(&server).await;
    let metrics = server.metrics().await;
    let dashboard = std::fs::read_to_string("deploy/grafana-dashboard.json").unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&json, &mut exprs);
    assert!(exprs.len() > 5, "{exprs:?}");
    let mut families = std::collections::BTreeSet::new();
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if ["rustaxum_", "process_", "broadcast_", "websocket_"]
                .iter()
                .any(|p| word.starts_with(p))
            {
                families.insert(word.to_string());
            }
        }
    }
    assert!(families.len() >= 12, "{families:?}");
    for family in &families {
        let exported = metrics.lines().any(|l| {
            !l.starts_with('#') && (l.starts_with(&format!("{family} ")) || l.starts_with(&format!("{family}{{")))
        });
        assert!(
            exported,
            "the dashboard queries {family}, which a fresh node does not export:\n{metrics}"
        );
    }
    // CPU time is a fraction, not whole seconds.
    let cpu = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .expect("process_cpu_seconds_total");
    assert!(cpu.parse::<f64>().is_ok(), "{cpu}");
    // Counters are there before their first event.
    for line in [
        "rustaxum_webhook_events_total{outcome=\"failed\"} 0",
        "rustaxum_history_recoveries_total{outcome=\"capped\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}
