//! The WebSocket protocol to the letter on every WebSocket route (RFC 6455, RFC 7692),
//! with frames written and read by hand, with and without permessage-deflate: the close
//! handshake and its codes, reserved bits, UTF-8, limits. These are the behaviours the
//! Autobahn TestSuite checks that need no echo (`scripts/autobahn` runs the suite itself
//! against an echo server on the same stack); here they hold on the real endpoints.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// A WebSocket client that writes and reads raw frames.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    deflate: bool,
    /// What this socket is and last sent (for failure messages).
    label: String,
}

/// A frame as the server sent it.
#[derive(Debug)]
struct ServerFrame {
    first: u8,
    payload: Vec<u8>,
}

impl ServerFrame {
    fn opcode(&self) -> u8 {
        self.first & 0x0f
    }
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: `first` (FIN, RSV bits, opcode), masked.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend((n as u64).to_be_bytes());
        }
    }
    out.extend(KEY);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    out
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

impl Raw {
    /// Upgrades `path` (offering permessage-deflate when `deflate`); panics unless 101.
    async fn open(addr: SocketAddr, path: &str, deflate: bool) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let offer = if deflate {
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{path}: {head}");
        assert_eq!(
            head.to_ascii_lowercase().contains("permessage-deflate"),
            deflate,
            "{head}"
        );
        buf.drain(..head_end);
        Self {
            stream,
            buf,
            deflate,
            label: format!("{path} deflate={deflate}"),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.label = format!("{} after {:02x?}", self.label, &bytes[..bytes.len().min(2)]);
        // The server may already have failed the connection; a write error is fine then.
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next frame, `None` at end of stream.
    async fn next(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            let n = match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
                Err(_) => panic!("no frame and no end within {WAIT:?}"),
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads up to the server's Close frame and returns its payload; asserts the server
    /// then ends the TCP connection.
    async fn close_frame(&mut self) -> Vec<u8> {
        loop {
            let label = self.label.clone();
            let frame = self
                .next()
                .await
                .unwrap_or_else(|| panic!("{label}: the connection ended without a Close frame"));
            if frame.opcode() == 0x8 {
                assert_eq!(frame.first & 0x70, 0, "a control frame is never compressed");
                assert!(self.next().await.is_none(), "the server ends TCP after its Close");
                return frame.payload;
            }
        }
    }

    /// The code of the server's Close frame (`None`: empty Close).
    async fn close_code(&mut self) -> Option<u16> {
        let payload = self.close_frame().await;
        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
    }
}

/// One frame from the start of `buf` (server frames are not masked).
fn parse(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    assert_eq!(buf[1] & 0x80, 0, "server frames are not masked");
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    Some((ServerFrame { first: buf[0], payload }, at))
}

/// Every WebSocket route of the server, ready for frames.
async fn endpoints(server: &TestServer) -> Vec<String> {
    let (status, created) = server
        .post(
            "/api/v1/channels",
            r#"{"name": "rfc", "settings": {"allow_client_messages": true}}"#,
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let started = reqwest::Client::new()
        .put(server.url(&format!("/api/v1/channels/{id}/start")))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    vec![
        "/ws?channel=news".to_string(),
        "/app/rfc-key?protocol=7".to_string(),
        "/rtc/ws".to_string(),
        format!("/api/v1/channels/{id}/ws"),
        "/dashboard/ws".to_string(),
    ]
}

async fn server() -> TestServer {
    let mut config = config_from(|k| match k {
        "BROADCAST_PUBLIC_CHANNELS" => Some("news".into()),
        "BROADCAST_MAX_MESSAGE_SIZE" => Some("4096".into()),
        _ => None,
    });
    config.pusher.apps = rustaxum::services::pusher::Apps::new(vec![rustaxum::services::pusher::PusherApp::new(
        "rfc",
        "rfc-key",
        "rfc-secret",
    )]);
    start_with(config).await
}

// Issue 34: a client's Close got no Close back on any route (the server dropped TCP), so
// every client-initiated close was unclean; invalid codes got no 1002.
#[tokio::test]
async fn a_client_s_close_is_answered_with_a_close_on_every_route() {
    let server = server().await;
    for path in endpoints(&server).await {
        for deflate in [false, true] {
            let case = format!("{path} deflate={deflate}");
            // A normal close: its code comes back, then TCP ends.
            let mut ws = Raw::open(server.addr, &path, deflate).await;
            ws.send(&frame(0x88, &close_payload(1000, b"bye"))).await;
            assert_eq!(ws.close_code().await, Some(1000), "{case}");
            let mut ws = Raw::open(server.addr, &path, deflate).await;
            ws.send(&frame(0x88, &close_payload(1001, b""))).await;
            assert_eq!(ws.close_code().await, Some(1001), "{case}");
            let mut ws = Raw::open(server.addr, &path, deflate).await;
            ws.send(&frame(0x88, &close_payload(4321, b"app code"))).await;
            assert_eq!(ws.close_code().await, Some(4321), "{case}");
            // An empty close gets a Close (empty too: RFC 6455 §5.5.1, as tungstenite answers).
            let mut ws = Raw::open(server.addr, &path, deflate).await;
            ws.send(&frame(0x88, b"")).await;
            let payload = ws.close_frame().await;
            assert!(
                payload.is_empty() || payload[..2] == 1000u16.to_be_bytes(),
                "{case}: {payload:?}"
            );
            assert_eq!(ws.deflate, deflate);
        }
    }
}

#[tokio::test]
async fn invalid_close_frames_are_answered_with_1002_or_1007() {
    let server = server().await;
    for path in endpoints(&server).await {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999] {
            let mut ws = Raw::open(server.addr, &path, false).await;
            ws.send(&frame(0x88, &close_payload(code, b""))).await;
            assert_eq!(ws.close_code().await, Some(1002), "{path}: close code {code}");
        }
        // One byte is no close code.
        let mut ws = Raw::open(server.addr, &path, false).await;
        ws.send(&frame(0x88, &[0x03])).await;
        assert_eq!(ws.close_code().await, Some(1002), "{path}: a 1-byte close");
        // A reason that is not UTF-8.
        let mut ws = Raw::open(server.addr, &path, false).await;
        ws.send(&frame(
            0x88,
            &close_payload(
                1000,
                &[
                    0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
                ],
            ),
        ))
        .await;
        assert_eq!(ws.close_code().await, Some(1007), "{path}: invalid UTF-8 reason");
    }
}

// Issue 34: once permessage-deflate was agreed, RSV2/RSV3 on a compressed frame were
// accepted; and /dashboard/ws failed connections with a bare FIN.
#[tokio::test]
async fn reserved_bits_utf8_and_limits_fail_the_connection_with_their_code() {
    let server = server().await;
    let text = format!(r#"{{"event":"client-x","data":"{}"}}"#, "repeat ".repeat(40));
    let compressed = deflate_message(text.as_bytes());
    for path in endpoints(&server).await {
        for deflate in [false, true] {
            let case = format!("{path} deflate={deflate}");
            // RSV2, RSV3 on a plain text frame.
            for first in [0xa1u8, 0x91] {
                let mut ws = Raw::open(server.addr, &path, deflate).await;
                ws.send(&frame(first, b"{}")).await;
                assert_eq!(ws.close_code().await, Some(1002), "{case}: first byte {first:#x}");
            }
            if deflate {
                // RSV1 + RSV2 / RSV3 on a compressed frame; RSV2 on a compressed message's continuation.
                for first in [0xe1u8, 0xd1] {
                    let mut ws = Raw::open(server.addr, &path, true).await;
                    ws.send(&frame(first, &compressed)).await;
                    assert_eq!(ws.close_code().await, Some(1002), "{case}: first byte {first:#x}");
                }
                let mut ws = Raw::open(server.addr, &path, true).await;
                let (a, b) = compressed.split_at(compressed.len() / 2);
                ws.send(&[frame(0x41, a), frame(0xa0, b)].concat()).await;
                assert_eq!(ws.close_code().await, Some(1002), "{case}: RSV2 on a continuation");
            } else {
                // RSV1 without the extension.
                let mut ws = Raw::open(server.addr, &path, false).await;
                ws.send(&frame(0xc1, &compressed)).await;
                assert_eq!(ws.close_code().await, Some(1002), "{case}: RSV1 without deflate");
            }
            // A text frame that is not UTF-8.
            let mut ws = Raw::open(server.addr, &path, deflate).await;
            ws.send(&frame(0x81, &[0xce, 0xba, 0xff, 0xfe])).await;
            assert_eq!(ws.close_code().await, Some(1007), "{case}: invalid UTF-8");
            // A message over BROADCAST_MAX_MESSAGE_SIZE (4 KiB).
            let mut ws = Raw::open(server.addr, &path, deflate).await;
            ws.send(&frame(0x81, &vec![b'x'; 5000])).await;
            assert_eq!(ws.close_code().await, Some(1009), "{case}: too big");
            // A reserved opcode.
            let mut ws = Raw::open(server.addr, &path, deflate).await;
            ws.send(&frame(0x83, b"x")).await;
            assert_eq!(ws.close_code().await, Some(1002), "{case}: opcode 3");
            // A ping is answered with its payload.
            let mut ws = Raw::open(server.addr, &path, deflate).await;
            ws.send(&frame(0x89, b"are you there")).await;
            let pong = loop {
                let f = ws.next().await.expect("a pong");
                if f.opcode() == 0xa {
                    break f;
                }
            };
            assert_eq!(pong.payload, b"are you there", "{case}");
        }
    }
}

#[tokio::test]
async fn server_initiated_closes_still_send_their_close_first() {
    let server = server().await;
    let mut ws = Raw::open(server.addr, "/ws?channel=news", false).await;
    // Let the subscription settle, then shut the server down: 1001 to native clients.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(async move { server.stop().await });
    assert_eq!(ws.close_code().await, Some(1001));
    stopping.await.unwrap().unwrap();
}

// Issue 34: an empty, short, long or duplicated Sec-WebSocket-Key got 101.
#[tokio::test]
async fn a_malformed_sec_websocket_key_is_a_400() {
    let server = server().await;
    let long = "A".repeat(4096);
    for keys in [
        vec![""],
        vec!["abc"],
        vec![long.as_str()],
        vec!["dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=="],
        vec!["dGhlIHNhbXBsZSBub25jZSE="],
    ] {
        for path in [
            "/ws?channel=news",
            "/app/rfc-key?protocol=7",
            "/rtc/ws",
            "/dashboard/ws",
        ] {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            let headers: String = keys.iter().map(|k| format!("Sec-WebSocket-Key: {k}\r\n")).collect();
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\n{headers}\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut head = vec![0u8; 512];
            let n = tokio::time::timeout(WAIT, stream.read(&mut head))
                .await
                .unwrap()
                .unwrap();
            let head = String::from_utf8_lossy(&head[..n]);
            assert!(
                head.starts_with("HTTP/1.1 400"),
                "{path} with {:?}: {head}",
                keys.iter().map(|k| k.len()).collect::<Vec<_>>()
            );
        }
    }
}
