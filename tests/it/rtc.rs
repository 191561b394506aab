//! The typed-frame service (issue 12): the document's client unchanged, topics shared with
//! the other protocols, direct messages (also across two nodes), rooms, every rate-limit
//! level, refresh, bad frames, routing rules, `/info`, the service's own port.

use std::process::Stdio;
use std::time::Duration;

use crate::common::redis::{unique_prefix, Backend, RedisCluster, RedisServer};
use crate::common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// The next frame the document's client handled whose type (or status) is `want`.
async fn printed_frame(lines: &mut Lines, printed: &mut Vec<String>, want: &str) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("the client is running");
            printed.push(line.clone());
            if let Some(json) = line.strip_prefix("FRAME ") {
                let frame: Value = serde_json::from_str(json).unwrap();
                if frame["type"] == want || frame["data"]["status"] == want {
                    return frame;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {want} frame"))
}

async fn join_team(ws: &mut Ws) {
    send(ws, "Subscribe", json!({"topics": ["presence.team"]})).await;
    status(ws, "subscribed").await;
}

/// A typed-frame connection to the service's own port, after its `connected` status.
async fn rtc(server: &TestServer, user: Option<&str>) -> (Ws, Value) {
    let addr = server.rtc_addr.expect("started with start_with_rtc");
    let url = match user {
        Some(u) => format!("ws://{addr}/ws?token={}", token(u, json!({}))),
        None => format!("ws://{addr}/ws"),
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    let hello = recv_json(&mut ws).await;
    assert_eq!(
        (hello["type"].as_str(), hello["data"]["status"].as_str()),
        (Some("Status"), Some("connected")),
        "{hello}"
    );
    (ws, hello)
}

async fn send(ws: &mut Ws, kind: &str, data: Value) {
    send_json(ws, json!({"type": kind, "data": data})).await;
}

/// The next frame of `kind` (skipping others, e.g. presence statuses).
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = recv_json(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// The next Status frame with `status`.
async fn status(ws: &mut Ws, status: &str) -> Value {
    loop {
        let frame = recv_json(ws).await;
        if frame["type"] == "Status" && frame["data"]["status"] == status {
            return frame["data"].clone();
        }
        assert_ne!(frame["type"], "Error", "waiting for {status}, got {frame}");
    }
}

async fn error(ws: &mut Ws) -> Value {
    let frame = next_of(ws, "Error").await;
    frame["data"].clone()
}

/// The document's `RealtimeClient` (tests/rtc/run-client.mjs) as user 1 against `server`'s
/// typed-frame port: the process, its stdin (commands) and its printed lines.
fn document_client(server: &TestServer) -> (tokio::process::Child, tokio::process::ChildStdin, Lines) {
    assert!(
        std::path::Path::new("tests/pusher/node_modules/ws").exists(),
        "run `npm ci` in tests/pusher first (scripts/test does)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg("tests/rtc/run-client.mjs")
        .env(
            "RX_RTC_PORT",
            server.rtc_addr.expect("started with start_with_rtc").port().to_string(),
        )
        .env("RX_TOKEN", token("1", json!({})))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let stdin = child.stdin.take().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, stdin, lines)
}

#[tokio::test]
async fn the_documents_realtime_client_runs_unchanged() {
    let server = start_with_rtc(config()).await;
    let (mut child, mut stdin, mut lines) = document_client(&server);
    let mut printed = Vec::new();
    let connected = printed_frame(&mut lines, &mut printed, "connected").await;
    assert_eq!(connected["data"]["user_id"], "1");
    // The client subscribes to ['notifications', 'updates'] on open.
    let subscribed = printed_frame(&mut lines, &mut printed, "subscribed").await;
    assert_eq!(subscribed["data"]["topics"], json!(["notifications", "updates"]));

    // A broadcast from the HTTP API.
    server.publish("updates", "release", json!({"version": "2.0"})).await;
    let broadcast = printed_frame(&mut lines, &mut printed, "Broadcast").await;
    assert_eq!(broadcast["data"]["topic"], "updates");
    assert_eq!(broadcast["data"]["event"], "release");
    assert_eq!(broadcast["data"]["payload"], json!({"version": "2.0"}));
    assert_eq!(broadcast["data"]["from"], Value::Null);

    // A client event from a native client on the same topic.
    let (mut native, _) = server
        .connect(&format!("/ws/notifications?auth_token={}", token("2", json!({}))))
        .await;
    send_json(
        &mut native,
        json!({"action": "whisper", "channel": "notifications", "event": "typing", "data": {"who": "2"}}),
    )
    .await;
    let whisper = printed_frame(&mut lines, &mut printed, "Broadcast").await;
    assert_eq!(
        (whisper["data"]["event"].as_str(), whisper["data"]["from"].as_str()),
        (Some("client-typing"), Some("2"))
    );
    assert_eq!(whisper["data"]["payload"], json!({"who": "2"}));

    // Direct messages both ways with a typed-frame client of user 2.
    let (mut two, _) = rtc(&server, Some("2")).await;
    send(
        &mut two,
        "DirectMessage",
        json!({"target_user": "1", "payload": {"text": "hi 1"}}),
    )
    .await;
    assert_eq!(status(&mut two, "sent").await["target_user"], "1");
    let dm = printed_frame(&mut lines, &mut printed, "DirectMessage").await;
    assert_eq!(
        (dm["data"]["from"].as_str(), &dm["data"]["payload"]),
        (Some("2"), &json!({"text": "hi 1"}))
    );
    stdin
        .write_all(b"{\"do\":\"dm\",\"to\":\"2\",\"payload\":{\"text\":\"hi 2\"}}\n")
        .await
        .unwrap();
    let reply = next_of(&mut two, "DirectMessage").await;
    assert_eq!(
        (reply["data"]["from"].as_str(), &reply["data"]["payload"]),
        (Some("1"), &json!({"text": "hi 2"}))
    );
    // And the client's own broadcast reaches the native client.
    stdin
        .write_all(b"{\"do\":\"broadcast\",\"topic\":\"notifications\",\"payload\":{\"n\":1}}\n")
        .await
        .unwrap();
    let seen = loop {
        let f = recv_json(&mut native).await;
        if f["event"] == "client-broadcast" {
            break f;
        }
    };
    assert_eq!(seen["data"], json!({"n": 1}));
    stdin.write_all(b"{\"do\":\"exit\"}\n").await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());
    let text = printed.join("\n");
    assert!(
        text.contains("Connected to real-time service"),
        "the class's own logging ran:\n{text}"
    );
}

#[tokio::test]
async fn topics_are_shared_with_every_protocol_and_bad_frames_keep_the_socket() {
    let mut c = config();
    c.rtc.allow_anonymous = true;
    let server = start_with_rtc(c).await;
    let (mut a, hello) = rtc(&server, Some("1")).await;
    assert!(hello["data"]["connection_id"].is_string());
    let (mut anon, hello) = rtc(&server, None).await;
    assert_eq!(hello["data"]["user_id"], Value::Null);

    // Subscribe answers the topics it joined and an Error for each refused one.
    send(&mut a, "Subscribe", json!({"topics": ["chat", "user.2", "bad name!"]})).await;
    assert_eq!(status(&mut a, "subscribed").await["topics"], json!(["chat"]));
    let refused = error(&mut a).await;
    assert_eq!(
        (refused["code"].as_str(), refused["topic"].as_str()),
        (Some("forbidden"), Some("user.2"))
    );
    let invalid = error(&mut a).await;
    assert_eq!(
        (invalid["code"].as_str(), invalid["topic"].as_str()),
        (Some("invalid_topic"), Some("bad name!"))
    );
    send(&mut anon, "Subscribe", json!({"topics": ["notifications", "chat"]})).await;
    assert_eq!(status(&mut anon, "subscribed").await["topics"], json!(["chat"]));
    assert_eq!(error(&mut anon).await["code"], "unauthorized");

    // A broadcast from the API reaches typed-frame and native subscribers alike.
    let (mut native, _) = server.connect("/ws/chat").await;
    server.publish("chat", "news", json!({"n": 1})).await;
    let b = next_of(&mut a, "Broadcast").await;
    assert_eq!(b["data"]["topic"], "chat");
    assert!(b["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        next_of(&mut anon, "Broadcast").await["data"]["payload"],
        json!({"n": 1})
    );
    assert_eq!(recv_json(&mut native).await["event"], "news");

    // Client broadcasts follow the channel's grant: not on a public topic.
    send(&mut a, "Broadcast", json!({"topic": "chat", "payload": {"x": 1}})).await;
    assert_eq!(error(&mut a).await["code"], "client_events_forbidden");

    // Bad frames: an Error each, the socket stays open.
    for (frame, code) in [
        ("not json", "invalid_json"),
        (r#"{"type":"Teleport","data":{}}"#, "unknown_type"),
        (r#"{"type":"Subscribe"}"#, "invalid_frame"),
        (r#"{"type":"Subscribe","data":{"topics":"chat"}}"#, "invalid_frame"),
        (r#"{"type":"DirectMessage","data":{"payload":1}}"#, "invalid_frame"),
        (
            r#"{"type":"Broadcast","data":{"topic":5,"payload":1}}"#,
            "invalid_frame",
        ),
        (r#"[1,2]"#, "invalid_frame"),
    ] {
        send_text(&mut a, frame).await;
        let e = error(&mut a).await;
        assert_eq!(e["code"], code, "{frame}: {e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    send(&mut anon, "DirectMessage", json!({"target_user": "1", "payload": 1})).await;
    assert_eq!(error(&mut anon).await["code"], "unauthorized");
    send_json(&mut a, json!({"type": "Ping"})).await;
    let pong = next_of(&mut a, "Pong").await;
    assert!(pong["data"]["timestamp"].is_string());

    // Unsubscribe, then nothing more arrives from the topic.
    send(&mut a, "Unsubscribe", json!({"topics": ["chat"]})).await;
    assert_eq!(status(&mut a, "unsubscribed").await["topics"], json!(["chat"]));
    server.publish("chat", "later", json!({})).await;
    expect_silence(&mut a, Duration::from_millis(200)).await;

    // Presence on a presence topic lists its members.
    send(&mut a, "Subscribe", json!({"topics": ["presence.lobby"]})).await;
    status(&mut a, "subscribed").await;
    send(&mut a, "Presence", json!({"topic": "presence.lobby"})).await;
    let p = status(&mut a, "presence").await;
    assert_eq!(
        (p["count"].as_u64(), p["users"][0]["user_id"].as_str()),
        (Some(1), Some("1"))
    );
    let (mut b2, _) = rtc(&server, Some("2")).await;
    send(&mut b2, "Subscribe", json!({"topics": ["presence.lobby"]})).await;
    let joined = status(&mut a, "member_joined").await;
    assert_eq!(
        (joined["topic"].as_str(), joined["user_id"].as_str()),
        (Some("presence.lobby"), Some("2"))
    );

    // Refresh: a fresh token for the same user; another user's is refused.
    send(&mut a, "RefreshToken", json!({"token": token("1", json!({}))})).await;
    let refreshed = status(&mut a, "refreshed").await;
    assert_eq!(refreshed["user_id"], "1");
    assert!(refreshed["expires_at"].is_u64());
    send(&mut a, "RefreshToken", json!({"token": token("9", json!({}))})).await;
    assert_eq!(error(&mut a).await["code"], "forbidden", "another user's token");
    // An anonymous connection can sign in by refreshing: then it gets direct messages.
    send(&mut anon, "RefreshToken", json!({"token": token("3", json!({}))})).await;
    assert_eq!(status(&mut anon, "refreshed").await["user_id"], "3");
    send(&mut b2, "DirectMessage", json!({"target_user": "3", "payload": "psst"})).await;
    assert_eq!(next_of(&mut anon, "DirectMessage").await["data"]["payload"], "psst");
}

#[tokio::test]
async fn direct_messages_reach_every_connection_of_the_user_and_nobody_else() {
    let server = start_with_rtc(config()).await;
    let (mut phone, _) = rtc(&server, Some("1")).await;
    let (mut laptop, _) = rtc(&server, Some("1")).await;
    let (mut other, _) = rtc(&server, Some("3")).await;
    let (mut sender, _) = rtc(&server, Some("2")).await;
    // A native client of user 1 on their channel gets it too; user 3 on nothing of theirs.
    let (mut native, _) = server
        .connect(&format!("/ws/user.1?auth_token={}", token("1", json!({}))))
        .await;
    send(
        &mut sender,
        "DirectMessage",
        json!({"target_user": "1", "payload": {"m": 1}}),
    )
    .await;
    status(&mut sender, "sent").await;
    for ws in [&mut phone, &mut laptop] {
        let dm = next_of(ws, "DirectMessage").await;
        assert_eq!(
            (dm["data"]["from"].as_str(), &dm["data"]["payload"]),
            (Some("2"), &json!({"m": 1}))
        );
    }
    let n = recv_json(&mut native).await;
    assert_eq!(
        (n["channel"].as_str(), n["event"].as_str()),
        (Some("user.1"), Some("direct-message"))
    );
    assert_eq!(n["data"], json!({"from": "2", "payload": {"m": 1}}));
    expect_silence(&mut other, Duration::from_millis(200)).await;
    expect_silence(&mut sender, Duration::from_millis(50)).await;
    // Nobody can read another user's messages by subscribing to their channel.
    send(&mut other, "Subscribe", json!({"topics": ["user.1"]})).await;
    assert_eq!(error(&mut other).await["code"], "forbidden");
    // An offline user: a documented answer, nothing sent.
    send(
        &mut sender,
        "DirectMessage",
        json!({"target_user": "404", "payload": 1}),
    )
    .await;
    let e = error(&mut sender).await;
    assert_eq!(
        (e["code"].as_str(), e["target_user"].as_str()),
        (Some("user_offline"), Some("404"))
    );
    // Once the user's connections close, they are offline.
    drop((phone, laptop));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        send(&mut sender, "DirectMessage", json!({"target_user": "1", "payload": 2})).await;
        let answer = loop {
            let f = recv_json(&mut sender).await;
            if f["type"] == "Error" || f["data"]["status"] == "sent" {
                break f;
            }
        };
        if answer["data"]["code"] == "user_offline" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still online: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn direct_messages_cross_nodes_through_redis() {
    direct_messages_across_nodes(&RedisServer::start()).await;
}

#[tokio::test]
async fn direct_messages_cross_nodes_through_a_redis_cluster() {
    direct_messages_across_nodes(&RedisCluster::start()).await;
}

async fn direct_messages_across_nodes(redis: &impl Backend) {
    let prefix = unique_prefix();
    let a = start_with_rtc(cluster_config(redis, &prefix)).await;
    let b = start_with_rtc(cluster_config(redis, &prefix)).await;
    for node in [&a, &b] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while node.get("/ready").await.0 != 200 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (mut one_on_a, _) = rtc(&a, Some("1")).await;
    let (mut one_on_b, _) = rtc(&b, Some("1")).await;
    let (mut two_on_b, _) = rtc(&b, Some("2")).await;
    let (mut three_on_a, _) = rtc(&a, Some("3")).await;
    send(
        &mut two_on_b,
        "DirectMessage",
        json!({"target_user": "1", "payload": "across"}),
    )
    .await;
    status(&mut two_on_b, "sent").await;
    for ws in [&mut one_on_a, &mut one_on_b] {
        let dm = next_of(ws, "DirectMessage").await;
        assert_eq!(
            (dm["data"]["from"].as_str(), dm["data"]["payload"].as_str()),
            (Some("2"), Some("across"))
        );
    }
    expect_silence(&mut three_on_a, Duration::from_millis(200)).await;
    // A message to yourself reaches your connection on the other node, not the sender's.
    send(
        &mut one_on_a,
        "DirectMessage",
        json!({"target_user": "1", "payload": "note"}),
    )
    .await;
    status(&mut one_on_a, "sent").await;
    let dm = next_of(&mut one_on_b, "DirectMessage").await;
    assert_eq!(
        (dm["data"]["from"].as_str(), dm["data"]["payload"].as_str()),
        (Some("1"), Some("note"))
    );
    expect_silence(&mut one_on_a, Duration::from_millis(200)).await;
    // User 2 is online only on node B; node A knows.
    send(
        &mut three_on_a,
        "DirectMessage",
        json!({"target_user": "2", "payload": "hello"}),
    )
    .await;
    status(&mut three_on_a, "sent").await;
    assert_eq!(next_of(&mut two_on_b, "DirectMessage").await["data"]["from"], "3");
    send(
        &mut three_on_a,
        "DirectMessage",
        json!({"target_user": "77", "payload": 1}),
    )
    .await;
    assert_eq!(error(&mut three_on_a).await["code"], "user_offline");
    // Rooms are shared: created on A, joined on B.
    send(&mut one_on_a, "CreateRoom", json!({"room": "crossing"})).await;
    status(&mut one_on_a, "room_joined").await;
    send(&mut two_on_b, "JoinRoom", json!({"room": "crossing"})).await;
    assert_eq!(status(&mut two_on_b, "room_joined").await["members"], json!(["1", "2"]));
    let joined = status(&mut one_on_a, "member_joined").await;
    assert_eq!(
        (joined["room"].as_str(), joined["user_id"].as_str()),
        (Some("crossing"), Some("2"))
    );
}

#[tokio::test]
async fn rooms_have_owners_limits_privacy_members_and_a_grace_period() {
    let mut c = config();
    c.rtc.room_grace = Duration::from_millis(600);
    let server = start_with_rtc(c).await;
    let (mut alice, _) = rtc(&server, Some("alice")).await;
    let (mut bob, _) = rtc(&server, Some("bob")).await;
    let (mut carol, _) = rtc(&server, Some("carol")).await;

    send(&mut alice, "CreateRoom", json!({"room": "standup", "max_members": 2})).await;
    let created = status(&mut alice, "room_created").await;
    assert_eq!(
        (created["owner"].as_str(), created["max_members"].as_u64()),
        (Some("alice"), Some(2))
    );
    let joined = status(&mut alice, "room_joined").await;
    assert_eq!(
        (joined["members"].clone(), joined["topic"].as_str()),
        (json!(["alice"]), Some("presence.rtc-room.standup"))
    );
    send(&mut bob, "CreateRoom", json!({"room": "standup"})).await;
    assert_eq!(error(&mut bob).await["code"], "room_exists");
    send(&mut bob, "JoinRoom", json!({"room": "standup"})).await;
    assert_eq!(
        status(&mut bob, "room_joined").await["members"],
        json!(["alice", "bob"])
    );
    assert_eq!(status(&mut alice, "member_joined").await["user_id"], "bob");
    send(&mut carol, "JoinRoom", json!({"room": "standup"})).await;
    let full = error(&mut carol).await;
    assert_eq!(
        (full["code"].as_str(), full["room"].as_str()),
        (Some("room_full"), Some("standup"))
    );
    send(&mut carol, "JoinRoom", json!({"room": "nowhere"})).await;
    assert_eq!(error(&mut carol).await["code"], "room_not_found");
    // Nobody joins a room's channel without the room.
    send(
        &mut carol,
        "Subscribe",
        json!({"topics": ["presence.rtc-room.standup"]}),
    )
    .await;
    assert_eq!(error(&mut carol).await["code"], "forbidden");

    // Members talk in the room; members are listed.
    send(
        &mut bob,
        "Broadcast",
        json!({"topic": "presence.rtc-room.standup", "payload": "done yesterday"}),
    )
    .await;
    let said = next_of(&mut alice, "Broadcast").await;
    assert_eq!(
        (said["data"]["from"].as_str(), said["data"]["payload"].as_str()),
        (Some("bob"), Some("done yesterday"))
    );
    send(&mut alice, "Presence", json!({"room": "standup"})).await;
    assert_eq!(status(&mut alice, "presence").await["count"], 2);

    // Private rooms: by invitation.
    send(
        &mut alice,
        "CreateRoom",
        json!({"room": "secret", "private": true, "invite": ["bob"]}),
    )
    .await;
    status(&mut alice, "room_joined").await;
    send(&mut carol, "JoinRoom", json!({"room": "secret"})).await;
    assert_eq!(error(&mut carol).await["code"], "room_private");
    send(&mut bob, "JoinRoom", json!({"room": "secret"})).await;
    status(&mut bob, "room_joined").await;

    // Bob's connection drops and comes back within the grace period: still a member,
    // rejoined at once.
    drop(bob);
    let left = status(&mut alice, "member_left").await;
    assert_eq!(left["user_id"], "bob");
    let (mut bob, hello) = rtc(&server, Some("bob")).await;
    assert_eq!(hello["data"]["rooms"], json!(["secret", "standup"]));
    let back = status(&mut bob, "room_joined").await;
    assert_eq!(back["rejoined"], true);
    // Bob leaves the standup; Carol may now join it.
    send(&mut bob, "LeaveRoom", json!({"room": "standup"})).await;
    assert_eq!(status(&mut bob, "room_left").await["room"], "standup");
    send(&mut carol, "JoinRoom", json!({"room": "standup"})).await;
    status(&mut carol, "room_joined").await;

    // Gone longer than the grace period: removed; an empty room is removed too.
    drop(bob);
    // Polled: the grace period passes, then the next sweep removes him.
    let rooms = server.app.rtc().rooms();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let secret = rooms.get("secret").await.unwrap();
        if secret.members.keys().collect::<Vec<_>>() == ["alice"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob was away too long: {:?}",
            secret.members.keys()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&mut carol, "LeaveRoom", json!({"room": "standup"})).await;
    status(&mut carol, "room_left").await;
    send(&mut alice, "LeaveRoom", json!({"room": "standup"})).await;
    status(&mut alice, "room_left").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rooms.get("standup").await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the empty room stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut bob, hello) = rtc(&server, Some("bob")).await;
    assert_eq!(hello["data"]["rooms"], json!([]));
    send(&mut bob, "JoinRoom", json!({"room": "standup"})).await;
    assert_eq!(error(&mut bob).await["code"], "room_not_found");
}

#[tokio::test]
async fn every_rate_limit_level_refuses_with_its_own_code() {
    /// Sends `frames` broadcasts into `topic` back to back.
    async fn burst(ws: &mut Ws, frames: usize, topic: &str) {
        for i in 0..frames {
            send(ws, "Broadcast", json!({"topic": topic, "payload": i})).await;
        }
    }
    /// The error codes a socket got within a moment.
    async fn codes(ws: &mut Ws) -> Vec<String> {
        let mut codes = Vec::new();
        while let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(300), futures_util::StreamExt::next(ws)).await
        {
            let f: Value = serde_json::from_str(&t).unwrap();
            if f["type"] == "Error" {
                codes.push(f["data"]["code"].as_str().unwrap().to_string());
            }
        }
        codes
    }
    let limited = |per_connection: u32, per_user: u32, per_topic: u32, global: u32| {
        let mut c = config();
        c.rtc.limits = rustaxum::services::rtc::RateLimits {
            enabled: true,
            per_connection,
            per_user,
            per_topic,
            global,
        };
        c
    };

    // Per connection: frames of any kind.
    let server = start_with_rtc(limited(3, 0, 0, 0)).await;
    let (mut a, _) = rtc(&server, Some("1")).await;
    join_team(&mut a).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    burst(&mut a, 6, "presence.team").await;
    let got = codes(&mut a).await;
    assert!(
        got.len() >= 3 && got.iter().all(|c| c == "rate_limited_connection"),
        "{got:?}"
    );
    // The limiter never holds up another connection.
    let (mut b, _) = rtc(&server, Some("2")).await;
    send_json(&mut b, json!({"type": "Ping"})).await;
    next_of(&mut b, "Pong").await;

    // Per user: two connections of one user share the budget (4 per second).
    let server = start_with_rtc(limited(0, 4, 0, 0)).await;
    let (mut a1, _) = rtc(&server, Some("1")).await;
    let (mut a2, _) = rtc(&server, Some("1")).await;
    join_team(&mut a1).await;
    join_team(&mut a2).await;
    burst(&mut a1, 3, "presence.team").await;
    burst(&mut a2, 3, "presence.team").await;
    let mut got = codes(&mut a1).await;
    got.extend(codes(&mut a2).await);
    assert!(
        got.len() >= 2 && got.iter().all(|c| c == "rate_limited_user"),
        "{got:?}"
    );

    // Per topic (2 per second, whoever sends).
    let server = start_with_rtc(limited(0, 0, 2, 0)).await;
    let (mut a, _) = rtc(&server, Some("1")).await;
    let (mut b, _) = rtc(&server, Some("2")).await;
    join_team(&mut a).await;
    join_team(&mut b).await;
    burst(&mut a, 2, "presence.team").await;
    burst(&mut b, 2, "presence.team").await;
    let mut got = codes(&mut a).await;
    got.extend(codes(&mut b).await);
    assert!(
        got.len() >= 2 && got.iter().all(|c| c == "rate_limited_topic"),
        "{got:?}"
    );
    // Direct messages are not in a topic.
    send(
        &mut b,
        "DirectMessage",
        json!({"target_user": "1", "payload": "not a topic"}),
    )
    .await;
    status(&mut b, "sent").await;

    // Global (3 per second from everyone).
    let server = start_with_rtc(limited(0, 0, 0, 3)).await;
    let (mut a, _) = rtc(&server, Some("1")).await;
    let (mut b, _) = rtc(&server, Some("2")).await;
    join_team(&mut a).await;
    join_team(&mut b).await;
    burst(&mut a, 3, "presence.team").await;
    burst(&mut b, 3, "presence.team").await;
    let mut got = codes(&mut a).await;
    got.extend(codes(&mut b).await);
    assert!(
        got.len() >= 3 && got.iter().all(|c| c == "rate_limited_global"),
        "{got:?}"
    );

    // RATE_LIMIT_ENABLED=false turns every level off.
    let mut off = limited(1, 1, 1, 1);
    off.rtc.limits.enabled = false;
    let server = start_with_rtc(off).await;
    let (mut a, _) = rtc(&server, Some("1")).await;
    join_team(&mut a).await;
    burst(&mut a, 5, "presence.team").await;
    assert!(codes(&mut a).await.is_empty());
}

#[tokio::test]
async fn connections_are_limited_per_user() {
    let mut c = config();
    c.websocket.max_connections_per_user = 2;
    let server = start_with_rtc(c).await;
    let (_one, _) = rtc(&server, Some("1")).await;
    let (_two, _) = server
        .connect(&format!("/ws?auth_token={}", token("1", json!({}))))
        .await;
    let addr = server.rtc_addr.unwrap();
    let third = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={}", token("1", json!({})))).await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    // Other users are not affected.
    rtc(&server, Some("2")).await;
}

#[tokio::test]
async fn routing_rules_copy_drop_and_reshape_messages_for_every_protocol() {
    let dir = std::env::temp_dir().join(format!("rustaxum-routes-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("routes.toml");
    std::fs::write(
        &file,
        r#"
[[route]]
name = "audit every order"
topic = "orders"
copy_to = ["jobs"]
[[route]]
topic = "orders"
event = "paid"
remove_fields = ["card"]
rename_fields = { total = "amount" }
[[route]]
topic = "firehose"
event = "debug.*"
drop = true
"#,
    )
    .unwrap();
    let mut c = config();
    c.routes_file = Some(file.clone());
    c.rtc.allow_anonymous = true;
    let server = start_with_rtc(c).await;
    let (mut orders, _) = server.connect("/ws/orders").await;
    let (mut jobs, _) = server.connect("/ws/jobs").await;
    let (mut typed, _) = rtc(&server, None).await;
    send(&mut typed, "Subscribe", json!({"topics": ["orders", "firehose"]})).await;
    status(&mut typed, "subscribed").await;

    server
        .publish("orders", "paid", json!({"id": 1, "card": "4242", "total": 9}))
        .await;
    let native = recv_json(&mut orders).await;
    assert_eq!(native["data"], json!({"id": 1, "amount": 9}));
    let copy = recv_json(&mut jobs).await;
    assert_eq!(
        (copy["channel"].as_str(), copy["event"].as_str()),
        (Some("jobs"), Some("paid"))
    );
    assert_eq!(
        copy["data"],
        json!({"id": 1, "card": "4242", "total": 9}),
        "copied before the later rule"
    );
    let b = next_of(&mut typed, "Broadcast").await;
    assert_eq!(b["data"]["payload"], json!({"id": 1, "amount": 9}));

    server.publish("firehose", "debug.trace", json!({})).await;
    server.publish("firehose", "info", json!({"kept": true})).await;
    assert_eq!(
        next_of(&mut typed, "Broadcast").await["data"]["event"],
        "info",
        "debug.* was dropped"
    );

    // A rule that cannot work stops start-up naming it.
    std::fs::write(&file, "[[route]]\nname = \"broken\"\ntopic = \"x\"\n").unwrap();
    let mut c = config();
    c.routes_file = Some(file);
    let err = rustaxum::Rustaxum::new(c).unwrap_err().to_string();
    assert!(err.contains("broken") && err.contains("no action"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn info_describes_the_server_without_secrets() {
    let mut c = config();
    c.server.api_token = Some("a-secret-api-token-0123456789".into());
    let server = start_with_rtc(c).await;
    for base in [server.url(""), format!("http://{}", server.rtc_addr.unwrap())] {
        let info: Value = reqwest::get(format!("{base}/info"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(info["node_id"], "local");
        assert!(info["uptime_seconds"].is_u64());
        let names: Vec<&str> = info["protocols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["native", "pusher", "emithub", "typed-frames"]);
        assert!(info["limits"]["rate_limits"]["per_user"].is_u64());
        let text = info.to_string();
        assert!(!text.contains("a-secret-api-token") && !text.contains(SECRET));
    }
    // The service's port: /ws speaks typed frames; the main port's /ws stays native.
    let (_typed, hello) = rtc(&server, Some("1")).await;
    assert_eq!(hello["type"], "Status");
    let (mut native, first) = server.connect("/ws").await;
    assert_eq!(first["event"], "connection_established");
    drop(native.close(None).await);
    // And typed frames at /rtc/ws on the main port.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(server.ws_url(&format!("/rtc/ws?token={}", token("1", json!({})))))
            .await
            .unwrap();
    assert_eq!(recv_json(&mut ws).await["data"]["status"], "connected");
}

// Hardening round two (issue 21, item 7): with a JWT key configured, a typed-frame
// connection without a token was admitted as anonymous; the service's document
// authenticates every connection.
#[tokio::test]
async fn without_a_token_the_typed_frame_service_answers_401_unless_anonymous_is_allowed() {
    let server = start_with_rtc(config()).await;
    let addr = server.rtc_addr.unwrap();
    for url in [format!("ws://{addr}/ws"), server.ws_url("/rtc/ws")] {
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401, "{url}");
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
                assert!(body.contains("BROADCAST_RTC_ALLOW_ANONYMOUS"), "{body}");
            }
            other => panic!("{url}: expected 401, got {other:?}"),
        }
    }
    // A forged token is refused as before; a valid one is admitted.
    let forged = format!("ws://{addr}/ws?token=not.a.jwt");
    assert!(tokio_tungstenite::connect_async(&forged).await.is_err());
    rtc(&server, Some("1")).await;

    let mut c = config();
    c.rtc.allow_anonymous = true;
    let open = start_with_rtc(c).await;
    let (_anon, hello) = rtc(&open, None).await;
    assert_eq!(hello["data"]["user_id"], Value::Null);
}

// Hardening round two (issue 21, item 8): the document's client subscribes to
// ['notifications', 'updates'] and broadcasts to topics; with default settings and a JWT
// key, `updates` was refused and so was a broadcast to a topic no rule names.
#[tokio::test]
async fn the_documents_client_works_against_default_settings_with_a_jwt_key() {
    let server = start_with_rtc(config_from(|k| (k == "JWT_SECRET").then(|| SECRET.into()))).await;
    let (mut child, mut stdin, mut lines) = document_client(&server);
    let mut printed = Vec::new();
    printed_frame(&mut lines, &mut printed, "connected").await;
    let subscribed = printed_frame(&mut lines, &mut printed, "subscribed").await;
    assert_eq!(subscribed["data"]["topics"], json!(["notifications", "updates"]));
    assert!(!printed.iter().any(|l| l.contains("\"Error\"")), "{printed:?}");

    // A second client of another user on `updates` receives the document client's broadcast.
    let (mut second, _) = rtc(&server, Some("2")).await;
    send(&mut second, "Subscribe", json!({"topics": ["updates"]})).await;
    assert_eq!(status(&mut second, "subscribed").await["topics"], json!(["updates"]));
    stdin
        .write_all(b"{\"do\":\"broadcast\",\"topic\":\"updates\",\"payload\":{\"v\":2}}\n")
        .await
        .unwrap();
    let got = next_of(&mut second, "Broadcast").await;
    assert_eq!(
        (
            got["data"]["topic"].as_str(),
            got["data"]["from"].as_str(),
            &got["data"]["payload"]
        ),
        (Some("updates"), Some("1"), &json!({"v": 2}))
    );
    // And the other way round.
    send(
        &mut second,
        "Broadcast",
        json!({"topic": "updates", "payload": {"v": 3}}),
    )
    .await;
    let back = printed_frame(&mut lines, &mut printed, "Broadcast").await;
    assert_eq!(
        (back["data"]["from"].as_str(), &back["data"]["payload"]),
        (Some("2"), &json!({"v": 3}))
    );

    // Topics under rules keep their rules: public `general` takes no client broadcast,
    // another user's channel stays closed, and an open topic takes broadcasts only from
    // its subscribers.
    send(&mut second, "Subscribe", json!({"topics": ["general", "user.1"]})).await;
    assert_eq!(status(&mut second, "subscribed").await["topics"], json!(["general"]));
    assert_eq!(error(&mut second).await["code"], "forbidden");
    send(&mut second, "Broadcast", json!({"topic": "general", "payload": 1})).await;
    assert_eq!(error(&mut second).await["code"], "client_events_forbidden");
    send(&mut second, "Broadcast", json!({"topic": "elsewhere", "payload": 1})).await;
    assert_eq!(error(&mut second).await["code"], "not_subscribed");
    // Native clients cannot reach an open topic: the native protocol keeps its rules.
    let refused =
        tokio_tungstenite::connect_async(server.ws_url(&format!("/ws/updates?auth_token={}", token("3", json!({})))))
            .await;
    assert!(refused.is_err(), "native /ws/updates must be refused");
    stdin.write_all(b"{\"do\":\"exit\"}\n").await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

// Hardening round two (issue 21, item 9): a direct message to yourself answered
// `sent` but your other connections never received it.
#[tokio::test]
async fn a_direct_message_to_yourself_reaches_your_other_connections() {
    let server = start_with_rtc(config()).await;
    let (mut phone, _) = rtc(&server, Some("1")).await;
    let (mut laptop, _) = rtc(&server, Some("1")).await;
    let (mut other, _) = rtc(&server, Some("2")).await;
    send(
        &mut phone,
        "DirectMessage",
        json!({"target_user": "1", "payload": {"note": "to self"}}),
    )
    .await;
    status(&mut phone, "sent").await;
    let dm = next_of(&mut laptop, "DirectMessage").await;
    assert_eq!(
        (dm["data"]["from"].as_str(), &dm["data"]["payload"]),
        (Some("1"), &json!({"note": "to self"}))
    );
    expect_silence(&mut phone, Duration::from_millis(200)).await;
    expect_silence(&mut other, Duration::from_millis(50)).await;
}

// Hardening round two (issue 21, item 5): one user created 1,500 rooms, and CreateRoom
// answered room_created even when the creator's own join failed.
#[tokio::test]
async fn rooms_per_user_are_limited_and_a_room_its_creator_cannot_enter_is_not_kept() {
    let mut c = config();
    c.rtc.max_rooms_per_user = 2;
    c.websocket.max_channels_per_connection = 3;
    let server = start_with_rtc(c).await;
    let (mut alice, _) = rtc(&server, Some("alice")).await;
    for room in ["r1", "r2"] {
        send(&mut alice, "CreateRoom", json!({"room": room})).await;
        status(&mut alice, "room_created").await;
        status(&mut alice, "room_joined").await;
    }
    send(&mut alice, "CreateRoom", json!({"room": "r3"})).await;
    let e = error(&mut alice).await;
    assert_eq!(
        (e["code"].as_str(), e["room"].as_str()),
        (Some("too_many_rooms"), Some("r3")),
        "{e}"
    );
    // Another user is not affected by alice's count.
    let (mut bob, _) = rtc(&server, Some("bob")).await;
    send(&mut bob, "CreateRoom", json!({"room": "b1"})).await;
    status(&mut bob, "room_created").await;
    status(&mut bob, "room_joined").await;
    // Bob's socket holds his own channel and b1; two more channels fill it (3).
    send(&mut bob, "Subscribe", json!({"topics": ["general"]})).await;
    status(&mut bob, "subscribed").await;
    // His next room cannot be entered: the answer is the error alone, and no room stays.
    send(&mut bob, "CreateRoom", json!({"room": "b2"})).await;
    let frame = loop {
        let f = recv_json(&mut bob).await;
        if f["type"] == "Error" || f["data"]["status"] == "room_created" {
            break f;
        }
    };
    assert_eq!(frame["type"], "Error", "{frame}");
    assert_eq!(frame["data"]["code"], "too_many_channels", "{frame}");
    send(&mut alice, "JoinRoom", json!({"room": "b2"})).await;
    assert_eq!(error(&mut alice).await["code"], "room_not_found");
}
