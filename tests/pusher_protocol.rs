//! Pusher protocol edges through a raw WebSocket client: refusals with their codes,
//! per-app quotas, several apps from a file, double-encoded data.

mod common;

use common::*;
use futures_util::SinkExt;
use rustaxum::pusher::{Apps, PusherApp};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn app(id: &str, key: &str, enabled: bool, max_connections: usize) -> PusherApp {
    PusherApp {
        enabled,
        max_connections,
        ..PusherApp::new(id, key, format!("{id}-secret"))
    }
}

async fn server_with(apps: Vec<PusherApp>) -> TestServer {
    let mut c = config();
    c.pusher.apps = Apps::new(apps);
    start_with(c).await
}

/// Connects to `/app/{key}{query}` and returns the first message and the close code.
async fn refused(server: &TestServer, path: &str) -> (Value, u16) {
    let mut ws = server.connect_raw(path).await;
    let first = recv_json(&mut ws).await;
    let close = expect_close(&mut ws).await.expect("close frame");
    (first, u16::from(close.code))
}

#[tokio::test]
async fn refusals_carry_pusher_codes() {
    let server = server_with(vec![app("1", "k1", true, 0), app("2", "off", false, 0)]).await;
    let cases = [
        ("/app/nope?protocol=7", 4001),
        ("/app/off?protocol=7", 4003),
        ("/app/k1?protocol=abc", 4006),
        ("/app/k1?protocol=9", 4007),
        ("/app/k1", 4008),
    ];
    for (path, code) in cases {
        let (first, close) = refused(&server, path).await;
        assert_eq!(first["event"], "pusher:error", "{path}");
        assert_eq!(first["data"]["code"], code, "{path}");
        assert_eq!(close, code, "{path}");
    }
    // The server keeps serving good clients.
    let (_ws, first) = server.connect("/app/k1?protocol=7").await;
    assert_eq!(first["event"], "pusher:connection_established");
}

#[tokio::test]
async fn shutdown_closes_pusher_sockets_with_4200_and_native_with_1001() {
    let server = server_with(vec![app("1", "k1", true, 0)]).await;
    let (mut pusher, _) = server.connect("/app/k1?protocol=7").await;
    let (mut native, _) = server.connect("/ws").await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(u16::from(expect_close(&mut pusher).await.unwrap().code), 4200);
    assert_eq!(u16::from(expect_close(&mut native).await.unwrap().code), 1001);
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn per_app_connection_quota_gives_4004_and_frees_on_close() {
    let server = server_with(vec![app("1", "k1", true, 1)]).await;
    let (mut first, msg) = server.connect("/app/k1?protocol=7").await;
    assert_eq!(msg["event"], "pusher:connection_established");
    let (err, close) = refused(&server, "/app/k1?protocol=7").await;
    assert_eq!((err["data"]["code"].as_u64(), close), (Some(4004), 4004));
    first.close(None).await.unwrap();
    wait_for(&server, |s| s.connections == 0).await;
    let (_again, msg) = server.connect("/app/k1?protocol=7").await;
    assert_eq!(msg["event"], "pusher:connection_established");
}

#[tokio::test]
async fn data_is_double_encoded_and_bad_frames_get_pusher_errors() {
    let server = server_with(vec![app("1", "k1", true, 0)]).await;
    let (mut ws, established) = server.connect("/app/k1?protocol=7").await;
    let data: Value = serde_json::from_str(established["data"].as_str().expect("data is a string")).unwrap();
    assert!(data["socket_id"].as_str().unwrap().contains('.'));

    send_json(
        &mut ws,
        json!({"event": "pusher:subscribe", "data": {"channel": "general"}}),
    )
    .await;
    let ok = recv_json(&mut ws).await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(ok["channel"], "general");

    server.publish("general", "news", json!({"a": [1, 2]})).await;
    let msg = recv_json(&mut ws).await;
    assert_eq!(
        (msg["event"].as_str(), msg["channel"].as_str()),
        (Some("news"), Some("general"))
    );
    let inner: Value = serde_json::from_str(msg["data"].as_str().expect("data is a JSON string")).unwrap();
    assert_eq!(inner, json!({"a": [1, 2]}));

    for bad in ["{nope", r#"{"event":"pusher:subscribe"}"#, r#"{"event":"whatever"}"#] {
        ws.send(Message::Text(bad.into())).await.unwrap();
        let err = recv_json(&mut ws).await;
        assert_eq!(err["event"], "pusher:error", "{bad}");
        assert!(err["data"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    send_json(
        &mut ws,
        json!({"event": "client-typing", "channel": "general", "data": {}}),
    )
    .await;
    assert_eq!(
        recv_json(&mut ws).await["event"],
        "pusher:error",
        "client events need a private channel"
    );
}

#[tokio::test]
async fn several_apps_from_a_file_and_disabled_apps_refuse_rest() {
    let dir = std::env::temp_dir().join(format!("rustaxum-apps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("apps.toml");
    std::fs::write(
        &file,
        "[[apps]]\nid = \"a\"\nkey = \"ka\"\nsecret = \"sa\"\n\n[[apps]]\nid = \"b\"\nkey = \"kb\"\nsecret = \"sb\"\nenabled = false\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let c = common::config_from(|k| match k {
        "PUSHER_APP_ID" => Some("main".into()),
        "PUSHER_APP_KEY" => Some("kmain".into()),
        "PUSHER_APP_SECRET" => Some("smain".into()),
        "PUSHER_APPS_FILE" => Some(path.clone()),
        _ => None,
    });
    assert_eq!(c.pusher.apps.default_app().unwrap().id, "main");
    assert_eq!(c.pusher.apps.by_key("ka").unwrap().id, "a");
    assert!(!c.pusher.apps.by_id("b").unwrap().enabled);
    let server = start_with(c).await;
    let (_ws, first) = server.connect("/app/ka?protocol=7").await;
    assert_eq!(first["event"], "pusher:connection_established");
    let (status, body) = server.post("/apps/b/events", "{}").await;
    assert_eq!((status, body["error"].as_str()), (403, Some("app_disabled")));
    let (status, _) = server.post("/apps/a/events", "{}").await;
    assert_eq!(status, 401, "unsigned request");

    let err = rustaxum::Config::from_lookup(|k| (k == "PUSHER_APP_ID").then(|| "only-id".to_string())).unwrap_err();
    assert!(err.to_string().contains("PUSHER_APP_KEY"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
