//! Pusher protocol edges through a raw WebSocket client: refusals with their codes,
//! per-app quotas, several apps from a file, double-encoded data.

use crate::common::*;
use futures_util::SinkExt;
use rustaxum::services::pusher::{Apps, PusherApp};
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
    let c = crate::common::config_from(|k| match k {
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

/// A raw Pusher client of `key`: its socket and socket id.
async fn pusher_client(server: &TestServer, key: &str) -> (Ws, String) {
    let (ws, first) = server.connect(&format!("/app/{key}?protocol=7")).await;
    let data: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
    (ws, data["socket_id"].as_str().unwrap().to_string())
}

async fn pusher_subscribe(ws: &mut Ws, channel: &str) {
    send_json(ws, json!({"event": "pusher:subscribe", "data": {"channel": channel}})).await;
    let ok = recv_json(ws).await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded", "{ok}");
}

#[tokio::test]
async fn native_clients_share_the_default_apps_channels_and_stats_are_per_app() {
    let server = server_with(vec![app("one", "k1", true, 0), app("two", "k2", true, 0)]).await;
    let (mut native, _) = server.connect("/ws/general").await;
    let (mut one, _) = pusher_client(&server, "k1").await;
    let (mut two, _) = pusher_client(&server, "k2").await;
    pusher_subscribe(&mut one, "general").await;
    pusher_subscribe(&mut two, "general").await;

    server.publish("general", "news", json!({"n": 1})).await;
    assert_eq!(recv_json(&mut native).await["event"], "news");
    assert_eq!(
        recv_json(&mut one).await["event"],
        "news",
        "the default app shares native channels"
    );
    expect_silence(&mut two, std::time::Duration::from_millis(300)).await;

    let (status, stats) = server.get("/api/broadcast/stats").await;
    assert_eq!(status, 200);
    let apps = &stats["apps"];
    assert_eq!(
        apps["one"]["connections"], 2,
        "the Pusher socket and the native one: {stats}"
    );
    assert_eq!(apps["two"]["connections"], 1, "{stats}");
    assert_eq!(
        (apps["one"]["channels"].as_u64(), apps["one"]["subscriptions"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        (apps["one"]["published"].as_u64(), apps["one"]["delivered"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        (apps["two"]["channels"].as_u64(), apps["two"]["delivered"].as_u64()),
        (Some(1), Some(0))
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"rustaxum_app_connections{app="two"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"rustaxum_app_messages_delivered_total{app="one"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn users_are_per_app_for_terminate_connections() {
    let apps = vec![app("one", "k1", true, 0), app("two", "k2", true, 0)];
    let server = server_with(apps.clone()).await;
    let mut sockets = Vec::new();
    for a in &apps {
        let (mut ws, socket_id) = pusher_client(&server, &a.key).await;
        let user_data = r#"{"id":"9"}"#;
        let auth = rustaxum::services::pusher::user_auth(a, &socket_id, user_data);
        send_json(
            &mut ws,
            json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}),
        )
        .await;
        assert_eq!(recv_json(&mut ws).await["event"], "pusher:signin_success");
        sockets.push(ws);
    }
    let path = "/apps/two/users/9/terminate_connections";
    let url = server.url(&signed_path(&apps[1], "POST", path, ""));
    let resp = reqwest::Client::new().post(url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let close = expect_close(&mut sockets[1]).await.expect("app two's user 9 is closed");
    assert_eq!(u16::from(close.code), 4009);
    send_json(&mut sockets[0], json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        recv_json(&mut sockets[0]).await["event"],
        "pusher:pong",
        "app one's user 9 is someone else"
    );
}

// Issue 27: the prefix is the kind. A native client on `user.42` (private by the rules)
// and a Pusher client on `private-user.42` are on one channel; a Pusher client on the
// public spelling is refused; `private-orders` and `orders` are two channels.
#[tokio::test]
async fn native_names_meet_pusher_prefixes_and_kinds_stay_apart() {
    let app = app("1", "k1", true, 0);
    let server = server_with(vec![app.clone()]).await;
    let (mut native, _) = server
        .connect(&format!("/ws/user.42?auth_token={}", token("42", json!({}))))
        .await;
    let (mut pusher, established) = server.connect("/app/k1?protocol=7").await;
    let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
    let socket_id = data["socket_id"].as_str().unwrap().to_string();
    for channel in ["private-user.42", "private-orders", "orders"] {
        let auth = channel
            .starts_with("private-")
            .then(|| rustaxum::services::pusher::channel_auth(&app, &socket_id, channel, None));
        send_json(
            &mut pusher,
            json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}}),
        )
        .await;
        let ok = until_event(&mut pusher, "pusher_internal:subscription_succeeded").await;
        assert_eq!(ok["channel"], channel);
    }
    // `user.42` without the prefix: a rule names it private, so not as a public channel.
    send_json(
        &mut pusher,
        json!({"event": "pusher:subscribe", "data": {"channel": "user.42"}}),
    )
    .await;
    let refused = until_event(&mut pusher, "pusher:subscription_error").await;
    assert_eq!(refused["data"]["status"], 403, "{refused}");

    // The native API's `user.42` reaches both; each sees its own spelling.
    server.publish("user.42", "shipped", json!({"n": 1})).await;
    let got = until_event(&mut pusher, "shipped").await;
    assert_eq!(got["channel"], "private-user.42");
    let got = recv_json(&mut native).await;
    assert_eq!(
        (got["channel"].as_str(), got["event"].as_str()),
        (Some("user.42"), Some("shipped"))
    );

    // `orders` and `private-orders` are two channels: each event reaches its own only.
    for (channel, event) in [("orders", "public.one"), ("private-orders", "private.one")] {
        server.publish(channel, event, json!({})).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = recv_json(&mut pusher).await;
        if let Some(event) = msg["event"].as_str().filter(|e| e.contains(".one")) {
            seen.push((msg["channel"].as_str().unwrap().to_string(), event.to_string()));
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("orders".to_string(), "public.one".to_string()),
            ("private-orders".to_string(), "private.one".to_string())
        ]
    );
    expect_silence(&mut pusher, std::time::Duration::from_millis(200)).await;
    expect_silence(&mut native, std::time::Duration::from_millis(100)).await;
}
