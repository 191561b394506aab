//! The native WebSocket protocol through real sockets.

use std::time::Duration;

use crate::common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn joining_on_connect_gets_subscription_succeeded() {
    let server = start().await;
    for path in ["/ws?channel=general", "/ws/general"] {
        let (_ws, first) = server.connect(path).await;
        assert_eq!(first["channel"], "general", "{path}");
        assert_eq!(first["event"], "subscription_succeeded", "{path}");
        assert!(first["data"]["socket_id"].as_str().is_some_and(|s| s.contains('.')));
        let ts = first["timestamp"].as_str().expect("timestamp");
        chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 timestamp");
    }
    let (_ws, first) = server.connect("/ws").await;
    assert_eq!(first["event"], "connection_established");
}

#[tokio::test]
async fn fan_out_reaches_every_subscriber_of_the_channel_and_no_other() {
    let server = start().await;
    let (mut a, _) = server.connect("/ws?channel=general").await;
    let (mut b, _) = server.connect("/ws/general").await;
    let (mut other, _) = server.connect("/ws?channel=other").await;
    let answer = server
        .publish("general", "announcement", json!({"message": "hi"}))
        .await;
    assert_eq!(answer["recipients"], 2);
    for ws in [&mut a, &mut b] {
        let msg = recv_json(ws).await;
        assert_eq!(msg["channel"], "general");
        assert_eq!(msg["event"], "announcement");
        assert_eq!(msg["data"], json!({"message": "hi"}));
        assert!(msg["timestamp"].is_string());
    }
    expect_silence(&mut other, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn subscribe_and_unsubscribe_on_an_open_socket() {
    let server = start().await;
    let (mut ws, _) = server.connect("/ws").await;
    send_json(&mut ws, json!({"action": "subscribe", "channel": "news"})).await;
    let ok = recv_json(&mut ws).await;
    assert_eq!(
        (ok["channel"].as_str(), ok["event"].as_str()),
        (Some("news"), Some("subscription_succeeded"))
    );
    server.publish("news", "story", json!({"n": 1})).await;
    assert_eq!(recv_json(&mut ws).await["data"]["n"], 1);

    send_json(&mut ws, json!({"action": "unsubscribe", "channel": "news"})).await;
    let bye = recv_json(&mut ws).await;
    assert_eq!(bye["event"], "unsubscribed");
    let answer = server.publish("news", "story", json!({"n": 2})).await;
    assert_eq!(answer["recipients"], 0);
    expect_silence(&mut ws, Duration::from_millis(300)).await;

    send_json(&mut ws, json!({"action": "unsubscribe", "channel": "news"})).await;
    let err = recv_json(&mut ws).await;
    assert_eq!(err["event"], "error");
    assert_eq!(err["data"]["code"], 404);
}

#[tokio::test]
async fn ping_is_answered_with_pong_echoing_data() {
    let server = start().await;
    let (mut ws, _) = server.connect("/ws?channel=general").await;
    send_json(&mut ws, json!({"action": "ping", "data": {"timestamp": 12345}})).await;
    let pong = recv_json(&mut ws).await;
    assert_eq!(pong["event"], "pong");
    assert_eq!(pong["data"]["timestamp"], 12345);
    send_text(&mut ws, r#"{"action":"ping"}"#).await;
    assert_eq!(recv_json(&mut ws).await["event"], "pong");
}

#[tokio::test]
async fn bad_frames_get_error_events_and_the_socket_stays_open() {
    let server = start().await;
    let (mut ws, _) = server.connect("/ws?channel=general").await;
    let cases: &[(&str, u16, &str)] = &[
        ("{not json", 400, "invalid_json"),
        (r#"{"action":"dance"}"#, 422, "invalid_frame"),
        (r#"{"action":"subscribe"}"#, 422, "invalid_frame"),
        (r#"[1,2,3]"#, 422, "invalid_frame"),
    ];
    for (frame, code, error) in cases {
        send_text(&mut ws, frame).await;
        let msg = recv_json(&mut ws).await;
        assert_eq!(msg["event"], "error", "{frame}");
        assert_eq!(msg["data"]["code"], *code, "{frame}");
        assert_eq!(msg["data"]["error"], *error, "{frame}");
        assert!(msg["data"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["data"]["code"], 415);

    send_json(&mut ws, json!({"action": "subscribe", "channel": "bad name!"})).await;
    let err = recv_json(&mut ws).await;
    assert_eq!(err["event"], "subscription_error");
    assert_eq!(err["data"]["error"], "invalid_channel");

    // Still subscribed and served.
    server.publish("general", "after", json!({})).await;
    assert_eq!(recv_json(&mut ws).await["event"], "after");
}

#[tokio::test]
async fn oversized_frame_closes_with_1009_and_others_keep_working() {
    let mut config = config();
    config.websocket.max_message_size = 1024;
    let server = start_with(config).await;
    let (mut big, _) = server.connect("/ws?channel=general").await;
    let (mut bystander, _) = server.connect("/ws?channel=general").await;
    let huge = format!(r#"{{"action":"ping","data":"{}"}}"#, "x".repeat(4096));
    send_text(&mut big, &huge).await;
    let frame = expect_close(&mut big).await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1009);
    let answer = server.publish("general", "still", json!({})).await;
    assert_eq!(answer["recipients"], 1);
    assert_eq!(recv_json(&mut bystander).await["event"], "still");
}

#[tokio::test]
async fn socket_id_excludes_the_sender() {
    let server = start().await;
    let (mut sender, first) = server.connect("/ws?channel=chat").await;
    let (mut other, _) = server.connect("/ws?channel=chat").await;
    let socket_id = first["data"]["socket_id"].as_str().unwrap().to_string();
    let body = json!({"channel": "chat", "event": "said", "data": {"t": "hi"}, "socket_id": socket_id});
    let (status, answer) = server.post("/api/broadcast", &body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(answer["recipients"], 1);
    assert_eq!(recv_json(&mut other).await["event"], "said");
    expect_silence(&mut sender, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn invalid_channel_on_connect_is_refused_before_upgrade() {
    let server = start().await;
    let err = tokio_tungstenite::connect_async(server.ws_url("/ws?channel=no%20spaces"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status().as_u16(), 422)
        }
        other => panic!("expected HTTP 422, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_limit_refuses_with_503() {
    let mut config = config();
    config.websocket.max_connections = 1;
    let server = start_with(config).await;
    let (_first, _) = server.connect("/ws").await;
    let err = tokio_tungstenite::connect_async(server.ws_url("/ws"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status().as_u16(), 503)
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
}

#[tokio::test]
async fn stalled_client_is_disconnected_while_others_still_receive() {
    let mut config = config();
    config.websocket.send_queue_size = 64;
    let server = start_with(config).await;
    // The stalled client never reads after the greeting: kernel buffers fill, then its queue.
    let (mut stalled, _) = server.connect("/ws?channel=firehose").await;
    let (mut healthy, _) = server.connect("/ws?channel=firehose").await;
    let reader = tokio::spawn(async move {
        let mut ticks = 0usize;
        loop {
            let msg = recv_json(&mut healthy).await;
            match msg["event"].as_str() {
                Some("tick") => ticks += 1,
                Some("done") => return (ticks, msg["data"]["sent"].as_u64().unwrap_or(0) as usize),
                _ => {}
            }
        }
    });
    // Publish until the server gives up on the stalled client (bounded: 3000 x 64 KiB).
    let blob = "y".repeat(64 * 1024);
    let mut sent = 0;
    while server.app.hub().snapshot().slow_disconnects == 0 && sent < 3000 {
        server
            .publish("firehose", "tick", json!({"i": sent, "blob": blob}))
            .await;
        sent += 1;
    }
    assert_eq!(
        server.app.hub().snapshot().slow_disconnects,
        1,
        "stalled client disconnected after {sent} messages"
    );
    server.publish("firehose", "done", json!({"sent": sent})).await;
    let (ticks, reported) = tokio::time::timeout(WAIT * 4, reader).await.unwrap().unwrap();
    assert_eq!((ticks, reported), (sent, sent), "the healthy client got every message");
    wait_for(&server, |s| s.connections == 1).await;
    // The stalled client, when it finally reads, finds its stream ended (close code 4100
    // if the close frame fit in the buffer, or just the end of the stream).
    let mut got_close = None;
    loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut stalled)).await {
            Ok(Some(Ok(Message::Close(f)))) => {
                got_close = f;
                break;
            }
            Ok(Some(Ok(_))) => continue,
            _ => break,
        }
    }
    if let Some(f) = got_close {
        assert_eq!(u16::from(f.code), 4100);
    }
}

#[tokio::test]
async fn silent_client_is_pinged_then_dropped_with_4201() {
    let mut config = config();
    config.websocket.ping_interval = Duration::from_millis(200);
    config.websocket.ping_timeout = Duration::from_millis(200);
    let server = start_with(config).await;
    // A raw TCP client that completes the handshake and then never answers pings.
    let mut ws = server.connect_raw("/ws?channel=general").await;
    let (mut live, _) = server.connect("/ws?channel=general").await;
    // Keep `live` answering pings by reading continuously in the background.
    let live_task = tokio::spawn(async move {
        loop {
            if futures_util::StreamExt::next(&mut live).await.is_none() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // tungstenite answers pings only while reading; we did not read, so no pong went out.
    wait_for(&server, |s| s.connections == 1).await;
    let frame = expect_close(&mut ws).await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4201);
    assert!(!live_task.is_finished(), "the live client was kept");
    live_task.abort();
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001_and_returns() {
    let server = start().await;
    let (mut a, _) = server.connect("/ws?channel=general").await;
    let (mut b, _) = server.connect("/ws").await;
    let stopping = tokio::spawn(server.stop());
    for ws in [&mut a, &mut b] {
        let frame = expect_close(ws).await.expect("close frame");
        assert_eq!(u16::from(frame.code), 1001);
    }
    stopping.await.unwrap().expect("clean shutdown");
}

#[tokio::test]
async fn frames_are_encoded_once_per_message_not_per_socket() {
    let server = start().await;
    let mut sockets = Vec::new();
    for _ in 0..20 {
        sockets.push(server.connect("/ws?channel=general").await.0);
    }
    let before = server.app.hub().snapshot().messages.encoded;
    server.publish("general", "e", json!({"x": 1})).await;
    for ws in &mut sockets {
        assert_eq!(recv_json(ws).await["event"], "e");
    }
    assert_eq!(server.app.hub().snapshot().messages.encoded - before, 1);
}
