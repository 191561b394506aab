//! The library with only the `redis` feature, as an application that publishes to
//! rustaxum servers elsewhere builds it (`default-features = false, features =
//! ["redis"]`; CI runs this file that way too): an event dispatched through the `redis`
//! driver reaches Redis in Laravel's payload format on `{prefix}{channel}`, where the
//! servers' nodes (and Laravel Echo Server-style consumers) pick it up, and this process's
//! hub. A real `redis-server` on a free port.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rustaxum::broadcasting::{install, BroadcastManager, DriverSettings, Fanout, RedisConfig};
use rustaxum::hub::{Hub, Protocol};
use rustaxum::prelude::*;

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(serde::Serialize)]
struct OrderShipped {
    order_id: u64,
    total: f64,
}

impl Event for OrderShipped {}

impl ShouldBroadcast for OrderShipped {
    fn broadcast_on(&self) -> Vec<String> {
        vec!["orders".to_string()]
    }
}

#[tokio::test]
async fn an_event_through_the_redis_driver_reaches_redis_in_laravels_format_and_this_hub() {
    let redis = RedisServer::start();
    let prefix = format!("lib{}_", std::process::id());
    let mut pubsub = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.port))
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(format!("{prefix}orders")).await.unwrap();

    let settings = DriverSettings {
        redis: RedisConfig {
            port: redis.port,
            channels_prefix: prefix.clone(),
            ..RedisConfig::default()
        },
        ..DriverSettings::default()
    };
    let hub = Arc::new(Hub::default());
    install(Arc::new(BroadcastManager::over(
        "redis",
        Fanout::local(hub.clone()),
        settings,
    )));
    let (me, mut inbox) = hub.connect(Protocol::Native);
    hub.subscribe(&me, &Channel::parse("orders").unwrap()).unwrap();

    OrderShipped {
        order_id: 1001,
        total: 99.5,
    }
    .dispatch()
    .await
    .unwrap();

    let message = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .expect("published to Redis")
        .expect("the subscription is open");
    let text: String = message.get_payload().unwrap();
    let published: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(published["event"], "OrderShipped", "{text}");
    assert_eq!(
        published["data"],
        serde_json::json!({"order_id": 1001, "total": 99.5}),
        "{text}"
    );
    assert!(published["socket"].is_null(), "{text}");

    let local = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("delivered in this process too")
        .expect("the hub is open");
    assert_eq!(local.event.as_ref(), "OrderShipped");
    assert_eq!(local.data.get(), r#"{"order_id":1001,"total":99.5}"#);
}
