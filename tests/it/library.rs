//! The Rust library: events, the manager, helpers, facades, macros, queue, router mounting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use rustaxum::broadcasting::testing::RecordingDriver;
use rustaxum::broadcasting::{
    self, broadcast, broadcast_to_channel, broadcast_to_organization, broadcast_to_user, BroadcastError,
    BroadcastFacade, QueueOptions,
};
use rustaxum::events::{Event, ShouldBroadcast};
use serde::Serialize;
use serde_json::json;

#[derive(Serialize)]
struct OrderShipped {
    order_id: u64,
    user_id: u64,
}

/// The event serialised as itself, the document's `to_json`.
macro_rules! json_event {
    ($t:ty) => {
        impl Event for $t {
            fn to_json(&self) -> serde_json::Value {
                serde_json::to_value(self).unwrap_or_default()
            }
        }
    };
}

json_event!(OrderShipped);
json_event!(Renamed);
json_event!(Queued);

impl ShouldBroadcast for OrderShipped {
    fn broadcast_on(&self) -> Vec<String> {
        vec![format!("user.{}", self.user_id), "orders".into()]
    }
}

#[derive(Serialize)]
struct Renamed;

impl ShouldBroadcast for Renamed {
    fn broadcast_on(&self) -> Vec<String> {
        vec!["general".into()]
    }
    fn broadcast_as(&self) -> Option<String> {
        Some("custom.name".into())
    }
    fn broadcast_with(&self) -> serde_json::Value {
        json!({"only": "this"})
    }
}

#[derive(serde::Serialize)]
struct UserLoggedIn;
impl Event for UserLoggedIn {}

#[tokio::test]
async fn dispatching_a_should_broadcast_event_reaches_sockets_and_runs_listeners() {
    let server = start().await;
    broadcasting::install(server.app.manager().clone());
    let (mut user, _) = server
        .connect(&format!("/ws/user.7?auth_token={}", token("7", json!({}))))
        .await;
    let (mut orders, _) = server.connect("/ws/orders").await;
    let (mut general, _) = server.connect("/ws/general").await;

    let heard = Arc::new(AtomicUsize::new(0));
    let h = heard.clone();
    rustaxum::events::listen(move |e: &OrderShipped| {
        h.fetch_add(e.order_id as usize, Ordering::SeqCst);
    });

    OrderShipped {
        order_id: 99,
        user_id: 7,
    }
    .dispatch()
    .await
    .unwrap();
    for ws in [&mut user, &mut orders] {
        let msg = recv_json(ws).await;
        assert_eq!(msg["event"], "OrderShipped");
        assert_eq!(msg["data"], json!({"order_id": 99, "user_id": 7}));
    }
    assert_eq!(heard.load(Ordering::SeqCst), 99);

    rustaxum::broadcast!(Renamed).await.unwrap();
    let msg = recv_json(&mut general).await;
    assert_eq!(msg["event"], "custom.name");
    assert_eq!(msg["data"], json!({"only": "this"}));

    // A plain event runs listeners and broadcasts nothing.
    rustaxum::events::dispatch(UserLoggedIn).await.unwrap();
    expect_silence(&mut general, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn builder_helpers_facade_and_macros() {
    let server = start().await;
    broadcasting::install(server.app.manager().clone());
    let (mut general, _) = server.connect("/ws/general").await;
    let (mut user, _) = server
        .connect(&format!("/ws/user.42?auth_token={}", token("42", json!({}))))
        .await;
    let (mut org, _) = server
        .connect(&format!("/ws/org.5?auth_token={}", token("9", json!({"orgs": [5]}))))
        .await;
    let (mut alerts, _) = server
        .connect(&format!(
            "/ws/admin.alerts?auth_token={}",
            token("1", json!({"roles": ["admin"]}))
        ))
        .await;

    let n = broadcast()
        .channel("general")
        .event("announcement")
        .with(json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(recv_json(&mut general).await["data"]["message"], "hi");

    broadcast_to_channel("general", "a", json!({"v": 1})).await.unwrap();
    assert_eq!(recv_json(&mut general).await["event"], "a");
    broadcast_to_user(42, "b", json!({"v": 2})).await.unwrap();
    assert_eq!(recv_json(&mut user).await["event"], "b");
    broadcast_to_organization("5", "c", json!({})).await.unwrap();
    assert_eq!(recv_json(&mut org).await["event"], "c");

    BroadcastFacade::to_user(42)
        .event("d")
        .with(json!({"x": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(recv_json(&mut user).await["data"]["x"], true);

    BroadcastFacade::notify_user(42, "Welcome!", "Registration successful", Some("/dashboard"))
        .await
        .unwrap();
    let note = recv_json(&mut user).await;
    assert_eq!(note["event"], "notification");
    assert_eq!(note["data"]["title"], "Welcome!");
    assert_eq!(note["data"]["message"], "Registration successful");
    assert_eq!(note["data"]["action_url"], "/dashboard");

    BroadcastFacade::system_alert("critical", "Database connection lost", true)
        .await
        .unwrap();
    let alert = recv_json(&mut alerts).await;
    assert_eq!(alert["event"], "system.alert");
    assert_eq!(alert["data"]["level"], "critical");
    assert_eq!(alert["data"]["action_required"], true);

    rustaxum::broadcast!("general", "via.macro", json!({"m": 1}))
        .await
        .unwrap();
    assert_eq!(recv_json(&mut general).await["event"], "via.macro");
    rustaxum::broadcast_to_user!("42", "macro.user", json!({}))
        .await
        .unwrap();
    assert_eq!(recv_json(&mut user).await["event"], "macro.user");
    rustaxum::notify_user!("42", "T", "M").await.unwrap();
    assert_eq!(
        recv_json(&mut user).await["data"]["action_url"],
        serde_json::Value::Null
    );
    rustaxum::notify_user!("42", "T", "M", "https://track.example.com")
        .await
        .unwrap();
    assert_eq!(
        recv_json(&mut user).await["data"]["action_url"],
        "https://track.example.com"
    );

    let err = broadcast().event("x").send().await.unwrap_err();
    assert!(matches!(err, BroadcastError::NoChannels));
    let err = broadcast().channel("bad name").event("x").send().await.unwrap_err();
    assert!(matches!(err, BroadcastError::InvalidChannel { .. }), "{err}");
    let err = broadcast().channel("general").send().await.unwrap_err();
    assert!(matches!(err, BroadcastError::InvalidEvent(_)), "{err}");
}

#[tokio::test]
async fn custom_driver_through_extend_and_typed_errors() {
    let server = start().await;
    let manager = server.app.manager().clone();
    let recorder = RecordingDriver::new();
    let r = recorder.clone();
    manager.extend("audit", move |_, _| Ok(r.clone()));
    manager
        .broadcast()
        .channel("general")
        .event("audited")
        .with(json!({"who": "me"}))
        .via("audit")
        .send()
        .await
        .unwrap();
    assert!(recorder.was_broadcast("general", "audited"));
    assert_eq!(recorder.records()[0].data, json!({"who": "me"}));

    // Make it the default: the application's broadcasts now go through it; the server's
    // own HTTP API keeps delivering through the publish pipeline.
    manager.set_default_driver("audit");
    manager
        .broadcast()
        .channel("news")
        .event("via.default")
        .with(json!({}))
        .send()
        .await
        .unwrap();
    assert!(recorder.was_broadcast("news", "via.default"));
    let (mut ws, _) = server.connect("/ws/general").await;
    server.publish("general", "via.api", json!({})).await;
    assert_eq!(recv_json(&mut ws).await["event"], "via.api");
    assert!(!recorder.was_broadcast("general", "via.api"));

    assert!(matches!(manager.driver("nope").err(), Some(BroadcastError::ConnectionNotDefined(n)) if n == "nope"));
    manager.add_connection(
        "weird",
        rustaxum::broadcasting::ConnectionConfig::driver("carrier-pigeon"),
    );
    assert!(
        matches!(manager.driver("weird").err(), Some(BroadcastError::DriverNotSupported(d)) if d == "carrier-pigeon")
    );
    assert_eq!(manager.driver("log").unwrap().driver_name(), "log");
    assert_eq!(manager.driver("null").unwrap().driver_name(), "null");
    assert!(
        Arc::ptr_eq(&manager.driver("log").unwrap(), &manager.driver("log").unwrap()),
        "drivers are cached"
    );
}

#[derive(Serialize)]
struct Queued {
    n: u32,
}

impl ShouldBroadcast for Queued {
    fn broadcast_on(&self) -> Vec<String> {
        vec!["jobs".into()]
    }
    fn broadcast_connection(&self) -> Option<String> {
        Some("flaky".into())
    }
    fn broadcast_queue(&self) -> Option<QueueOptions> {
        Some(QueueOptions {
            tries: 3,
            backoff: Duration::from_millis(20),
            ..QueueOptions::default()
        })
    }
}

#[tokio::test]
async fn queued_broadcast_is_retried_after_a_failing_driver() {
    let server = start().await;
    broadcasting::install(server.app.manager().clone());
    let manager = server.app.manager().clone();
    let flaky = RecordingDriver::failing_first(2);
    let f = flaky.clone();
    manager.extend("flaky", move |_, _| Ok(f.clone()));

    Queued { n: 1 }.dispatch().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while flaky.records().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(flaky.calls(), 3, "two failures then success");
    assert_eq!(flaky.records()[0].data, json!({"n": 1}));
    assert!(manager.failed_broadcasts().is_empty());

    // A driver that never succeeds: the job ends up in failed_broadcasts, not lost.
    let dead = RecordingDriver::failing_first(usize::MAX);
    let d = dead.clone();
    manager.extend("flaky", move |_, _| Ok(d.clone()));
    Queued { n: 2 }.dispatch().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while manager.failed_broadcasts().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failed = manager.failed_broadcasts();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 3);
    assert_eq!(failed[0].channels, vec!["jobs".to_string()]);
    assert!(failed[0].error.contains("simulated failure"), "{}", failed[0].error);
    assert_eq!(dead.calls(), 3);
    assert_eq!(manager.pending_broadcasts(), 0);
}

#[tokio::test]
async fn router_mounts_inside_an_application() {
    let app = rustaxum::Rustaxum::new(config()).unwrap();
    let router = axum::Router::new()
        .route("/my/own", axum::routing::get(|| async { "mine" }))
        .merge(app.router().unwrap());
    // Served by another server than the app's own: start its background work.
    app.start().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    assert_eq!(
        reqwest::get(format!("http://{addr}/my/own"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "mine"
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/general"))
        .await
        .unwrap();
    assert_eq!(recv_json(&mut ws).await["event"], "subscription_succeeded");
    app.manager()
        .broadcast()
        .channel("general")
        .event("from.app")
        .send()
        .await
        .unwrap();
    assert_eq!(recv_json(&mut ws).await["event"], "from.app");
}

#[tokio::test]
async fn helpers_work_without_manual_setup() {
    // Nothing installed in this test process: the first use installs a default manager
    // built from the environment, as Laravel's facades resolve from the container.
    let reached = broadcast().channel("general").event("x").send().await.unwrap();
    assert_eq!(reached, 0, "nobody is connected to this process's own hub");
    let manager = broadcasting::global().unwrap();
    assert_eq!(manager.default_driver_name(), "websocket");
    assert!(matches!(
        broadcast().channel("bad name").event("x").send().await,
        Err(BroadcastError::InvalidChannel { .. })
    ));
}

#[derive(serde::Serialize)]
struct InvoicePaid {
    invoice: u64,
    amount: f64,
}
impl Event for InvoicePaid {}
impl ShouldBroadcast for InvoicePaid {
    fn broadcast_on(&self) -> Vec<String> {
        vec!["general".into()]
    }
}

// Issue 36: `Event::to_json` defaulted to `null`, so an event that forgot to override it
// broadcast `null` silently. Its payload is now its `Serialize` form.
#[tokio::test]
async fn an_events_payload_is_its_serialize_form_by_default() {
    let server = start().await;
    broadcasting::install(server.app.manager().clone());
    let (mut ws, _) = server.connect("/ws/general").await;
    InvoicePaid {
        invoice: 7,
        amount: 12.5,
    }
    .dispatch()
    .await
    .unwrap();
    let got = recv_json(&mut ws).await;
    assert_eq!(got["event"], "InvoicePaid", "{got}");
    assert_eq!(got["data"], json!({"invoice": 7, "amount": 12.5}), "{got}");
}

// Issue 36: `build()` starts nothing (no task, no connection); `serve`/`start` do. A
// clustered app's first connection to "Redis" (a bare TCP listener standing in for it,
// so the test sees the very first attempt) comes only after `start`.
#[tokio::test]
async fn building_an_app_starts_nothing_until_it_is_started() {
    let redis = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", redis.local_addr().unwrap());
    let built = rustaxum::Rustaxum::builder(config_from(|k| match k {
        "BROADCAST_DRIVER" => Some("redis".into()),
        "REDIS_URL" => Some(url.clone()),
        _ => None,
    }))
    .build()
    .expect("a clustered app builds without reaching Redis");
    let early = tokio::time::timeout(Duration::from_millis(500), redis.accept()).await;
    assert!(early.is_err(), "built, not started, yet it connected to Redis");
    built.start().unwrap();
    let connected = tokio::time::timeout(Duration::from_secs(5), redis.accept()).await;
    assert!(connected.is_ok(), "started, but no connection to Redis");
    // A second start does nothing more (and does not fail).
    built.start().unwrap();
}

// Issue 36: no process-wide state a second app inherits: the facade is the app's that
// asks for it, from when it starts.
#[tokio::test]
async fn only_the_app_built_with_the_facade_serves_the_helpers() {
    let other = start_with(config()).await; // no facade
    let mine = rustaxum::Rustaxum::builder(config()).facade().build().unwrap();
    assert!(
        !std::ptr::eq(
            broadcasting::manager::global().unwrap().as_ref(),
            mine.manager().as_ref()
        ),
        "built but not started: the facade is not this app's yet"
    );
    let mine = start_app(mine).await;
    let (mut on_mine, _) = mine.connect("/ws/general").await;
    let (mut on_other, _) = other.connect("/ws/general").await;
    broadcast()
        .channel("general")
        .event("hello")
        .with(json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(recv_json(&mut on_mine).await["event"], "hello");
    expect_silence(&mut on_other, Duration::from_millis(300)).await;
}

/// Runs one of `examples/` (built beside this test binary by `cargo test` and
/// `cargo nextest run --all-targets`); its standard output.
async fn run_example(name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built (cargo build --examples)",
        path.display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&path)
            .env_remove("BROADCAST_DRIVER")
            .env("EMIT_HUB_DB_PATH", ":memory:")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the example finished")
    .unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

// The README and docs/library.md point to these programs: they run and print what they say.
#[tokio::test]
async fn the_examples_run_and_do_what_they_say() {
    let built = run_example("builder").await;
    let lines: Vec<&str> = built.lines().collect();
    assert_eq!(lines.len(), 3, "{built}");
    let joined: serde_json::Value = serde_json::from_str(lines[0].trim_start_matches("client: ")).unwrap();
    assert_eq!(joined["event"], "subscription_succeeded");
    let goal: serde_json::Value = serde_json::from_str(lines[1].trim_start_matches("client: ")).unwrap();
    assert_eq!(
        (goal["event"].as_str(), goal["data"]["minute"].as_u64()),
        (Some("goal"), Some(87))
    );
    assert_eq!(
        lines[2],
        r#"audit: news.sport {"data":{"minute":88},"event":"goal","socket":null}"#
    );

    let shipped = run_example("dispatch_from_handler").await;
    assert!(shipped.contains("handler: shipped"), "{shipped}");
    let event = shipped.lines().last().unwrap().trim_start_matches("client: ");
    let event: serde_json::Value = serde_json::from_str(event).unwrap();
    assert_eq!(event["event"], "OrderShipped");
    assert_eq!(event["data"], json!({"customer_id": 42, "order_id": 1001}));

    let custom = run_example("custom_driver").await;
    let seen: Vec<serde_json::Value> = custom.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(seen.len(), 3, "{custom}");
    assert_eq!(seen[1]["channel"], "user.42");
    assert_eq!(seen[1]["private"], true);
    assert_eq!(seen[2]["message"]["event"], "shipped");

    let alone = run_example("library").await;
    assert_eq!(alone, "orders OrderShipped {\"order_id\":1001}\n");
}

/// The crates of the library's build with `features` (none: `default-features = false`),
/// as `cargo tree` resolves them from the lock file.
fn crates_with(features: &[&str]) -> Vec<String> {
    let mut args = vec!["tree", "--locked", "--offline", "--edges", "normal", "--prefix", "none"];
    args.extend(["--format", "{p}", "--no-default-features"]);
    let joined = features.join(",");
    if !features.is_empty() {
        args.extend(["--features", &joined]);
    }
    let out = std::process::Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

// Issue 36: `default-features = false` still pulled redis, reqwest, utoipa, rustls and the
// Prometheus exporter. The library alone is events, the manager and the local, log and
// null drivers; `redis` adds the Redis driver and nothing of the server.
#[test]
fn the_library_alone_builds_without_the_servers_crates() {
    const SERVER: [&str; 8] = [
        "axum",
        "hyper",
        "reqwest",
        "utoipa",
        "rustls",
        "tokio-tungstenite",
        "metrics-exporter-prometheus",
        "clap",
    ];
    let alone = crates_with(&[]);
    for name in SERVER.iter().chain(&["redis"]) {
        assert!(
            !alone.iter().any(|c| c == name),
            "{name} in the library alone: {alone:?}"
        );
    }
    let with_redis = crates_with(&["redis"]);
    assert!(with_redis.iter().any(|c| c == "redis"), "{with_redis:?}");
    for name in SERVER {
        assert!(
            !with_redis.iter().any(|c| c == name),
            "{name} with only the redis feature: {with_redis:?}"
        );
    }
    let everything = crates_with(&["server"]);
    for name in SERVER.iter().filter(|n| **n != "clap").chain(&["redis"]) {
        assert!(everything.iter().any(|c| c == name), "the server without {name}?");
    }
    assert!(
        alone.len() * 2 < everything.len(),
        "{} crates alone, {} with the server",
        alone.len(),
        everything.len()
    );
}
