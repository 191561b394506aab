use std::sync::Arc;
use std::time::Duration;

use super::*;

fn message(channel: &str, n: u64) -> Message {
    let data = serde_json::value::to_raw_value(&serde_json::json!({ "n": n })).unwrap();
    Message::event(Channel::parse(channel).unwrap(), "tick", Arc::from(data))
}

fn ns(messages: &[Message]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| {
            serde_json::from_str::<serde_json::Value>(m.data.get()).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// What the publish pipeline does with a kept message on one node: its position, then
/// the hub.
async fn publish(history: &History, hub: &crate::hub::Hub, mut message: Message) {
    message.position = Some(history.append(&message).await.unwrap());
    hub.deliver(message);
}

fn offsets(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.position.as_ref().unwrap().offset).collect()
}

const KEEP: Retention = Retention {
    size: 5,
    ttl: Duration::from_secs(600),
};

/// What every store promises: offsets from 1 per channel, the newest `size` kept, reads
/// from either end, and where the channel stands.
async fn contract(store: &dyn HistoryStore) {
    let a = Channel::parse("orders.a").unwrap();
    let empty = store.read(&a, 0, 10, End::Oldest, KEEP).await.unwrap();
    assert_eq!((empty.top, empty.first, empty.messages.len()), (0, 1, 0));
    for n in 1..=8 {
        let p = store.append(&message("orders.a", n), KEEP).await.unwrap();
        assert_eq!(p.offset, n);
        assert_eq!(p.epoch, empty.epoch, "one epoch while nothing is lost");
    }
    store.append(&message("orders.b", 100), KEEP).await.unwrap();
    let all = store.read(&a, 0, 10, End::Oldest, KEEP).await.unwrap();
    assert_eq!((all.top, all.first), (8, 4), "the newest 5 are kept");
    assert_eq!(ns(&all.messages), [4, 5, 6, 7, 8]);
    assert_eq!(offsets(&all.messages), [4, 5, 6, 7, 8]);
    let after = store.read(&a, 5, 2, End::Oldest, KEEP).await.unwrap();
    assert_eq!(offsets(&after.messages), [6, 7]);
    let newest = store.read(&a, 5, 2, End::Newest, KEEP).await.unwrap();
    assert_eq!(offsets(&newest.messages), [7, 8]);
    let none = store.read(&a, u64::MAX, 1, End::Oldest, KEEP).await.unwrap();
    assert!(none.messages.is_empty());
    assert_eq!(none.top, 8);
    let b = store
        .read(&Channel::parse("orders.b").unwrap(), 0, 10, End::Oldest, KEEP)
        .await
        .unwrap();
    assert_eq!(offsets(&b.messages), [1], "offsets are per channel");
    // Messages older than the TTL are not returned.
    let short = Retention {
        size: 5,
        ttl: Duration::from_millis(50),
    };
    tokio::time::sleep(Duration::from_millis(120)).await;
    store.append(&message("orders.a", 9), short).await.unwrap();
    let fresh = store.read(&a, 0, 10, End::Oldest, short).await.unwrap();
    assert_eq!((fresh.top, fresh.first), (9, 9));
    assert_eq!(ns(&fresh.messages), [9]);
    store.sweep(short).await.unwrap();
    let swept = store.read(&a, 0, 10, End::Oldest, KEEP).await.unwrap();
    assert_eq!(ns(&swept.messages), [9], "the sweep removed the expired ones");
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract_and_its_byte_bound() {
    contract(&MemoryHistory::new(1 << 20)).await;
    // 20 messages of ~150 bytes each in a 1 KiB store: the oldest of any channel go.
    let small = MemoryHistory::new(1024);
    let keep = Retention {
        size: 100,
        ttl: Duration::from_secs(60),
    };
    for n in 1..=20 {
        small
            .append(&message(if n % 2 == 0 { "x" } else { "y" }, n), keep)
            .await
            .unwrap();
    }
    let usage = small.usage();
    assert!(usage.bytes <= 1024, "{usage:?}");
    assert!(usage.messages >= 4 && usage.messages < 20, "{usage:?}");
    let x = small
        .read(&Channel::parse("x").unwrap(), 0, 100, End::Oldest, keep)
        .await
        .unwrap();
    assert_eq!(x.top, 10);
    assert_eq!(*ns(&x.messages).last().unwrap(), 20, "the newest stays");
    // Trimming by size leaves no stale bookkeeping behind for long.
    let busy = MemoryHistory::new(1 << 30);
    for n in 0..10_000 {
        busy.append(&message("busy", n), KEEP).await.unwrap();
    }
    assert!(busy.order_len() < 2_000, "{}", busy.order_len());
    assert_eq!(busy.usage().messages, 5);
}

// Hardening round two (issue 21, defect 4): a 1 MB publish into a 1 MB store was kept
// (1,000,139 bytes) and evicted every other channel's history.
#[tokio::test]
async fn one_large_message_neither_exceeds_the_bound_nor_evicts_other_channels() {
    let limit = 1 << 20;
    let store = MemoryHistory::new(limit);
    let keep = Retention {
        size: 100,
        ttl: Duration::from_secs(60),
    };
    for n in 1..=3 {
        store.append(&message("small", n), keep).await.unwrap();
    }
    let huge = serde_json::value::to_raw_value(&"x".repeat(1_000_000)).unwrap();
    let big = Message::event(Channel::parse("big").unwrap(), "blob", Arc::from(huge));
    let position = store.append(&big, keep).await.unwrap();
    assert_eq!(position.offset, 1, "it still has its place in the channel");
    let usage = store.usage();
    assert!(usage.bytes <= limit as u64, "{usage:?}");
    assert_eq!((usage.messages, usage.too_large), (3, 1), "{usage:?}");
    let small = store
        .read(&Channel::parse("small").unwrap(), 0, 10, End::Oldest, keep)
        .await
        .unwrap();
    assert_eq!(ns(&small.messages), [1, 2, 3], "the other channel's history stays");
    // The next message of the big channel is kept and is 2: a recovery across 1 says so.
    let next = store.append(&message("big", 2), keep).await.unwrap();
    let read = store
        .read(&Channel::parse("big").unwrap(), 0, 10, End::Oldest, keep)
        .await
        .unwrap();
    assert_eq!((next.offset, read.first, offsets(&read.messages)), (2, 2, vec![2]));
}

#[cfg(feature = "redb")]
#[tokio::test]
async fn the_redb_store_keeps_the_contract_and_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("rustaxum-history-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("h.redb");
    let epoch = {
        let db = Arc::new(::redb::Database::create(&path).unwrap());
        let store = RedbHistory::open(db).unwrap();
        contract(&store).await;
        store.append(&message("orders.c", 1), KEEP).await.unwrap().epoch
    };
    let db = Arc::new(::redb::Database::create(&path).unwrap());
    let store = RedbHistory::open(db).unwrap();
    let c = Channel::parse("orders.c").unwrap();
    let slice = store.read(&c, 0, 10, End::Oldest, KEEP).await.unwrap();
    assert_eq!(slice.epoch, epoch, "the file's epoch survives");
    assert_eq!(ns(&slice.messages), [1]);
    assert_eq!(store.append(&message("orders.c", 2), KEEP).await.unwrap().offset, 2);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn history(size: usize, recovery_limit: usize) -> History {
    let config = HistoryConfig {
        channels: vec!["orders.*".into()],
        size,
        recovery_limit,
        ..HistoryConfig::default()
    };
    History::new(&config, Arc::new(MemoryHistory::new(1 << 20))).unwrap()
}

#[tokio::test]
async fn recovery_sends_what_was_missed_or_says_it_cannot() {
    let hub = crate::hub::Hub::default();
    let h = history(10, 3);
    let orders = Channel::parse("orders.1").unwrap();
    assert!(h.keeps(&orders));
    assert!(!h.keeps(&Channel::parse("chat").unwrap()), "off unless configured");
    let mut seen = Vec::new();
    for n in 1..=12 {
        publish(&h, &hub, message("orders.1", n)).await;
        seen.push(n);
    }
    let now = h.position(&orders).await.unwrap();
    assert_eq!(now.offset, 12);
    let at = |offset| Position {
        epoch: now.epoch.clone(),
        offset,
    };

    let r = h.recover(&orders, &at(10)).await.unwrap();
    assert!(r.recovered && !r.capped);
    assert_eq!(ns(&r.messages), [11, 12]);
    assert_eq!(r.position, now);

    let r = h.recover(&orders, &at(12)).await.unwrap();
    assert!(r.recovered && r.messages.is_empty(), "nothing missed");

    let r = h.recover(&orders, &at(6)).await.unwrap();
    assert!(!r.recovered && r.capped, "6 missed, 3 per recovery");
    assert_eq!(ns(&r.messages), [10, 11, 12], "the newest, in order");

    let r = h.recover(&orders, &at(1)).await.unwrap();
    assert!(
        !r.recovered && r.capped,
        "11 missed: capped, and 2 and 3 are gone anyway"
    );

    let r = h
        .recover(
            &orders,
            &Position {
                epoch: "other".into(),
                offset: 11,
            },
        )
        .await
        .unwrap();
    assert!(
        !r.recovered && r.messages.is_empty(),
        "another epoch: the history was lost"
    );

    let r = h.recover(&orders, &at(99)).await.unwrap();
    assert!(!r.recovered && r.messages.is_empty(), "a position from the future");

    // A restarted memory store is a new epoch.
    let restarted = history(10, 3);
    let r = restarted.recover(&orders, &at(12)).await.unwrap();
    assert!(!r.recovered);
    assert_ne!(r.position.epoch, now.epoch);

    let stats = h.stats();
    assert_eq!(
        (stats.appended, stats.recoveries, stats.recovered, stats.capped),
        (12, 6, 2, 2)
    );
    assert_eq!(stats.usage.messages, 10);

    // Older than what is kept, within the recovery limit: nothing sent, not recovered.
    let roomy = history(10, 100);
    for n in 1..=12 {
        publish(&roomy, &hub, message("orders.1", n)).await;
    }
    let epoch = roomy.position(&orders).await.unwrap().epoch;
    let r = roomy
        .recover(
            &orders,
            &Position {
                epoch: epoch.clone(),
                offset: 1,
            },
        )
        .await
        .unwrap();
    assert!(!r.recovered && !r.capped && r.messages.is_empty());
    let r = roomy.recover(&orders, &Position { epoch, offset: 2 }).await.unwrap();
    assert!(r.recovered, "3 to 12 are all kept");
    assert_eq!(ns(&r.messages), (3..=12).collect::<Vec<_>>());
}

#[test]
fn positions_parse_from_query_strings() {
    let p = parse_position("a1b2c3:42").unwrap();
    assert_eq!((p.epoch.as_ref(), p.offset), ("a1b2c3", 42));
    for bad in ["", "42", ":1", "e:", "e:x", "e:-1", "e v:1", "e:18446744073709551616"] {
        assert!(parse_position(bad).is_none(), "{bad}");
    }
}
