//! permessage-deflate (RFC 7692) as clients meet it: a client that offers it gets the
//! extension in the handshake, large events compressed (and decodes them), small ones
//! plain, and may compress what it sends; a client that does not offer it is served as
//! before; `BROADCAST_COMPRESSION` turns it off or moves the threshold; hostile compressed
//! frames close only their own socket. Checked with our own RFC 7692 client and with
//! Python `websockets` (a third-party implementation that compresses what it sends).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustaxum::cli::websocket::{self as client, DeflateClient};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const LIMIT: usize = 1 << 20;

/// An order as an application would broadcast it: about 2 KB of JSON.
fn order() -> Value {
    const NAMES: [&str; 4] = ["Espresso beans 1kg", "Milk frother", "Ceramic mug", "Grinder burr set"];
    const WAREHOUSES: [&str; 2] = ["AMS-2", "FRA-1"];
    let items: Vec<Value> = (0..12)
        .map(|i| {
            json!({
                "sku": format!("SKU-{:05}", 1000 + i * 37),
                "name": NAMES[i % 4],
                "quantity": 1 + i % 3,
                "unit_price": {"amount": 1299 + i * 150, "currency": "EUR"},
                "warehouse": WAREHOUSES[i % 2],
            })
        })
        .collect();
    json!({
        "order_id": "ord_8f2c4a19e3",
        "customer": {"id": 48213, "name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold"},
        "status": "shipped",
        "items": items,
        "shipping": {"carrier": "DHL", "tracking": "JD014600006281230704", "eta": "2026-12-05T14:00:00Z"},
        "updated_at": "2026-12-03T10:15:30.123Z",
    })
}

/// `payload` sent compressed (RSV1), as a browser sends it (tungstenite masks it).
async fn send_compressed(ws: &mut DeflateClient, payload: Bytes) {
    ws.send(Message::Frame(compressed_text_frame(payload)))
        .await
        .expect("send");
}

async fn deflate_client(server: &TestServer, path: &str) -> (DeflateClient, Option<String>) {
    tokio::time::timeout(WAIT, client::connect(&server.ws_url(path), LIMIT, true))
        .await
        .expect("connect timed out")
        .expect("connect")
}

#[tokio::test]
async fn a_client_offering_deflate_gets_large_events_compressed_and_small_ones_plain() {
    let server = start().await;
    let (mut zipped, agreed) = deflate_client(&server, "/ws/news").await;
    assert_eq!(agreed.as_deref(), Some(AGREED));
    assert_eq!(recv_json(&mut zipped).await["event"], "subscription_succeeded");
    // A second one shares the compressed frame; one that offers nothing (tungstenite's)
    // shares the channel, uncompressed.
    let (mut zipped2, _) = deflate_client(&server, "/ws/news").await;
    recv_json(&mut zipped2).await;
    let (mut plain, _) = server.connect("/ws/news").await;

    let data = order();
    let before = zipped.get_ref().bytes_read();
    server.publish("news", "order.shipped", data.clone()).await;
    let got = recv_json(&mut zipped).await;
    let plain_got = until_event(&mut plain, "order.shipped").await;
    assert_eq!(got["data"], data);
    assert_eq!(got, plain_got, "both clients decode the same frame");
    assert_eq!(zipped.get_ref().inflated(), 1, "the event came compressed (RSV1)");
    assert_eq!(recv_json(&mut zipped2).await, got);
    assert_eq!(zipped2.get_ref().inflated(), 1);
    // Compressed once for both sockets, and counted in /metrics.
    let metrics = server.metrics().await;
    assert!(metrics.contains("\nrustaxum_frames_compressed_total 1\n"), "{metrics}");
    let bytes = |stage: &str| -> u64 {
        let prefix = format!("rustaxum_compression_bytes_total{{stage=\"{stage}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} in {metrics}"))
    };
    // The encoded frame (its JSON as the server wrote it, about the size of ours).
    let text = plain_got.to_string().len() as u64;
    assert!(bytes("before").abs_diff(text) < 64, "{} vs {text}", bytes("before"));
    assert!(bytes("after") * 2 < bytes("before"));
    let (_, stats) = server.get("/api/broadcast/stats").await;
    assert_eq!(stats["compression"]["threshold"], 1024);
    assert_eq!(stats["compression"]["frames"], 1);
    assert_eq!(stats["compression"]["bytes_after"], bytes("after"));
    let on_wire = zipped.get_ref().bytes_read() - before;
    assert!(
        on_wire * 2 < text,
        "{on_wire} bytes on the wire for {text} bytes of JSON"
    );

    // Under the 1024-byte threshold a message goes as it is.
    server.publish("news", "tick", json!({"n": 1})).await;
    assert_eq!(recv_json(&mut zipped).await["data"], json!({"n": 1}));
    assert_eq!(zipped.get_ref().inflated(), 1);

    // The client may compress what it sends: the server inflates it.
    let ping = json!({"action": "ping", "data": {"note": "compressed ".repeat(120)}}).to_string();
    send_compressed(&mut zipped, deflate_message(ping.as_bytes())).await;
    let pong = recv_json(&mut zipped).await;
    assert_eq!(pong["event"], "pong");
    assert_eq!(pong["data"]["note"], "compressed ".repeat(120));
    assert_eq!(
        zipped.get_ref().inflated(),
        2,
        "the pong (over 1 KiB) came compressed too"
    );
}

#[tokio::test]
async fn compression_is_off_or_starts_higher_as_broadcast_compression_says() {
    for (setting, offered, compressed) in [("off", false, false), ("100000", true, false), ("on", true, true)] {
        let server = start_with(config_from(|k| match k {
            "BROADCAST_COMPRESSION" => Some(setting.into()),
            "BROADCAST_PUBLIC_CHANNELS" => Some("news".into()),
            _ => None,
        }))
        .await;
        let (mut ws, agreed) = deflate_client(&server, "/ws/news").await;
        assert_eq!(agreed.is_some(), offered, "{setting}");
        recv_json(&mut ws).await;
        server.publish("news", "order.shipped", order()).await;
        assert_eq!(recv_json(&mut ws).await["data"], order(), "{setting}");
        assert_eq!(ws.get_ref().inflated() == 1, compressed, "{setting}");
    }
}

#[tokio::test]
async fn hostile_compressed_frames_close_only_their_own_socket() {
    let server = start().await;
    let (mut bystander, _) = deflate_client(&server, "/ws/news").await;
    recv_json(&mut bystander).await;

    // 1 MiB of JSON-ish text in about 4 KiB: inflating it would pass the 64 KiB limit.
    let (mut bomb, _) = deflate_client(&server, "/ws").await;
    recv_json(&mut bomb).await;
    let huge = format!("{{\"action\":\"ping\",\"data\":\"{}\"}}", "a".repeat(1 << 20));
    let payload = deflate_message(huge.as_bytes());
    assert!(payload.len() < 64 * 1024);
    send_compressed(&mut bomb, payload).await;

    // Not DEFLATE at all.
    let (mut garbage, _) = deflate_client(&server, "/ws").await;
    recv_json(&mut garbage).await;
    send_compressed(&mut garbage, Bytes::from_static(&[0xff; 32])).await;

    for (ws, code) in [(&mut bomb, 1009), (&mut garbage, 1002)] {
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(close.map(|c| u16::from(c.code)), Some(code));
    }
    server.publish("news", "order.shipped", order()).await;
    assert_eq!(recv_json(&mut bystander).await["data"], order());
}

/// The client's next line of output.
async fn line(out: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .expect("the client printed")
        .expect("stdout")
        .expect("a line")
}

#[tokio::test]
async fn python_websockets_negotiates_compresses_and_decodes() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/emithub-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test creates it",
        python.display()
    );
    let server = start().await;
    let mut child = Command::new(&python)
        .arg("tests/compression/client.py")
        .arg(server.ws_url("/ws/news"))
        .arg("order.shipped")
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(line(&mut out).await, format!("extensions: {AGREED}"));
    assert_eq!(line(&mut out).await, "client extensions: ['PerMessageDeflate']");
    // Its ping was compressed by websockets; the server inflated it and answered.
    let pong: Value = serde_json::from_str(line(&mut out).await.strip_prefix("pong: ").expect("pong")).expect("json");
    assert_eq!(pong["note"], "compressed by the client ".repeat(20));
    assert_eq!(line(&mut out).await, "ready");
    server.publish("news", "order.shipped", order()).await;
    let event: Value =
        serde_json::from_str(line(&mut out).await.strip_prefix("event: ").expect("event")).expect("json");
    assert_eq!(event, order());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exited")
        .expect("status");
    assert!(status.success());
}
