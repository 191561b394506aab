use super::*;
use serde_json::value::RawValue;

fn raw(v: serde_json::Value) -> Arc<RawValue> {
    Arc::from(serde_json::value::to_raw_value(&v).unwrap())
}

#[tokio::test]
async fn publish_reaches_subscribers_of_that_channel_only() {
    let hub = Hub::default();
    let general = Channel::parse("general").unwrap();
    let other = Channel::parse("other").unwrap();
    let (a, mut ra) = hub.connect(Protocol::Native);
    let (b, mut rb) = hub.connect(Protocol::Native);
    hub.subscribe(&a, &general).unwrap();
    hub.subscribe(&b, &other).unwrap();
    let report = hub.deliver(Message::event(general.clone(), "hello", raw(serde_json::json!({"x":1}))).except(None));
    assert_eq!(report.delivered, 1);
    let got = ra.try_recv().unwrap();
    assert_eq!(&*got.event, "hello");
    assert_eq!(got.data.get(), r#"{"x":1}"#);
    assert!(rb.try_recv().is_err());
}

#[tokio::test]
async fn except_skips_the_sender_and_full_queue_closes_only_the_slow_one() {
    let hub = Hub::new(HubConfig {
        send_queue_size: 2,
        max_channels_per_connection: 10,
    });
    let ch = Channel::parse("general").unwrap();
    let (fast, mut rf) = hub.connect(Protocol::Native);
    let (slow, _rs) = hub.connect(Protocol::Native);
    hub.subscribe(&fast, &ch).unwrap();
    hub.subscribe(&slow, &ch).unwrap();
    let r = hub.deliver(Message::event(ch.clone(), "e", raw(serde_json::json!(1))).except(Some(fast.id())));
    assert_eq!(r.delivered, 1);
    assert!(rf.try_recv().is_err());
    for _ in 0..2 {
        hub.deliver(Message::event(ch.clone(), "e", raw(serde_json::json!(2))).except(None));
        assert!(rf.try_recv().is_ok());
    }
    assert!(slow.is_closing());
    assert_eq!(slow.close_reason(), CloseReason::SLOW_CONSUMER);
    assert!(!fast.is_closing());
    assert_eq!(hub.snapshot().slow_disconnects, 1);
}

#[tokio::test]
async fn disconnect_cleans_up_channels_and_counts() {
    let hub = Hub::default();
    let ch = Channel::parse("general").unwrap();
    let (a, _ra) = hub.connect(Protocol::Native);
    let first = hub.subscribe(&a, &ch).unwrap();
    assert_eq!((first.subscribers, first.occupied), (1, true));
    let again = hub.subscribe(&a, &ch).unwrap();
    assert_eq!((again.subscribers, again.occupied), (1, false));
    assert_eq!(hub.snapshot().channels["general"].subscribers, 1);
    assert_eq!(hub.disconnect(&a), vec![(ch.clone(), 0)], "the channel emptied");
    assert!(hub.disconnect(&a).is_empty());
    let s = hub.snapshot();
    assert!(s.channels.is_empty());
    assert_eq!(s.connections, 0);
    assert_eq!(s.connections_total, 1);
}

#[test]
fn connection_slots_never_exceed_the_limit_and_come_back_when_dropped() {
    let hub = Arc::new(Hub::default());
    let held: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| (0..50).filter_map(|_| hub.reserve_connection(10)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(held.len(), 10);
    assert!(hub.reserve_connection(10).is_none());
    drop(held);
    assert!(hub.reserve_connection(10).is_some());
    assert!(hub.reserve_connection(0).is_some(), "0 = no limit");
}

#[tokio::test]
async fn channel_limit_per_connection() {
    let hub = Hub::new(HubConfig {
        send_queue_size: 4,
        max_channels_per_connection: 2,
    });
    let (a, _ra) = hub.connect(Protocol::Native);
    for name in ["a", "b"] {
        hub.subscribe(&a, &Channel::parse(name).unwrap()).unwrap();
    }
    let err = hub.subscribe(&a, &Channel::parse("c").unwrap()).unwrap_err();
    assert_eq!(err, SubscribeError::TooManyChannels(2));
}

#[tokio::test]
async fn frames_are_encoded_once_per_protocol() {
    let hub = Hub::default();
    let ch = Channel::parse("general").unwrap();
    let mut rxs = Vec::new();
    for _ in 0..5 {
        let (c, rx) = hub.connect(Protocol::Native);
        hub.subscribe(&c, &ch).unwrap();
        rxs.push((c, rx));
    }
    hub.deliver(Message::event(ch.clone(), "e", raw(serde_json::json!({"a":1}))).except(None));
    let mut frames = Vec::new();
    for (_, rx) in &mut rxs {
        let env = rx.try_recv().unwrap();
        frames.push(env.frame(Protocol::Native, |e| Arc::<str>::from(e.data.get())));
        env.frame(Protocol::Pusher, |e| Arc::<str>::from(e.event.as_ref()));
    }
    assert!(frames.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])), "one shared frame");
    assert_eq!(hub.snapshot().messages.encoded, 2, "once per protocol");
}

#[tokio::test]
async fn a_waiting_socket_task_wakes_on_close_and_on_shutdown() {
    let hub = Hub::default();
    let (a, _ra) = hub.connect(Protocol::Native);
    let (b, _rb) = hub.connect(Protocol::Native);
    let waiting_a = tokio::spawn({
        let a = a.clone();
        async move { a.closed().await }
    });
    let waiting_b = tokio::spawn({
        let b = b.clone();
        async move { b.closed().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(!waiting_a.is_finished() && !waiting_b.is_finished());
    a.close(CloseReason::TERMINATED);
    tokio::time::timeout(std::time::Duration::from_secs(1), waiting_a)
        .await
        .expect("woken by close")
        .unwrap();
    assert_eq!(a.close_reason(), CloseReason::TERMINATED);
    assert!(!b.is_closing());
    hub.shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(1), waiting_b)
        .await
        .expect("woken by the shutdown")
        .unwrap();
    assert_eq!(b.close_reason(), CloseReason::SHUTDOWN);
    let (late, _rl) = hub.connect(Protocol::Native);
    assert!(late.is_closing(), "a connection made during shutdown closes at once");
}

#[cfg(feature = "server")]
#[test]
fn text_payloads_come_back_byte_for_byte() {
    use super::{payload_from_text, payload_text};
    // What Laravel's json_encode writes, a pretty-printed body, a JSON string payload,
    // plain text, and JSON with whitespace around it.
    let laravel = r#"{"order":{"id":1,"total":99.50,"items":["caf\u00e9"],"url":"https:\/\/x.test\/a"}}"#;
    let cases = [
        laravel,
        "{\n  \"b\": 1,\n  \"a\": [1e2, -0.0]\n}",
        r#""shipped""#,
        "plain text, not JSON",
        " {\"a\":1}\n",
        "",
        "42",
    ];
    for text in cases {
        let (data, kept) = payload_from_text(text.to_string());
        assert_eq!(payload_text(&data, kept.as_deref()), text, "{text:?}");
        // The JSON side is still JSON, of the same value.
        serde_json::from_str::<serde_json::Value>(data.get()).unwrap();
    }
    let (data, kept) = payload_from_text(laravel.to_string());
    assert_eq!(
        data.get(),
        laravel,
        "JSON text is kept as it came (key order, escapes, 99.50)"
    );
    assert!(kept.is_none(), "nothing to keep beside it");
    let (data, kept) = payload_from_text(r#""shipped""#.to_string());
    assert_eq!(data.get(), r#""shipped""#, "JSON clients get the string");
    assert_eq!(
        kept.as_deref(),
        Some(r#""shipped""#),
        "Pusher clients get the quotes too"
    );
    let (data, kept) = payload_from_text("plain".to_string());
    assert_eq!((data.get(), kept), (r#""plain""#, None));
    // A payload that came as JSON: a string's contents, anything else its JSON.
    let raw = |v: &str| serde_json::value::RawValue::from_string(v.to_string()).unwrap();
    assert_eq!(payload_text(&raw(r#"{"a":1}"#), None), r#"{"a":1}"#);
    assert_eq!(payload_text(&raw(r#""plain""#), None), "plain");
}
