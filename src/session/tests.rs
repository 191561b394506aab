use super::testing::fixtures::{in_an_hour, node, node_with, token, token_until};
use super::*;
use crate::channel::ChannelKind;
use crate::presence::{MemoryPresence, PresenceError, PresenceStore};
use async_trait::async_trait;
use serde_json::json;

struct Down;

#[async_trait]
impl PresenceStore for Down {
    async fn join(&self, _: &str, _: &Member, _: SocketId) -> Result<bool, PresenceError> {
        Err(PresenceError::new("down for the test"))
    }
    async fn leave(&self, _: &str, _: &str, _: SocketId) -> Result<Option<Member>, PresenceError> {
        Err(PresenceError::new("down for the test"))
    }
    async fn members(&self, _: &str) -> Result<Vec<Member>, PresenceError> {
        Err(PresenceError::new("down for the test"))
    }
}

fn open(node: &Arc<Node>, sub: Option<&str>) -> (Session, crate::hub::OutboxReceiver) {
    let identity = sub.map(|u| node.verify(&token(u)).unwrap());
    node.admit(identity, None).unwrap().open(Protocol::Native)
}

fn ch(name: &str) -> Channel {
    Channel::parse(name).unwrap()
}

fn raw(v: serde_json::Value) -> Arc<RawValue> {
    Arc::from(serde_json::value::to_raw_value(&v).unwrap())
}

#[tokio::test]
async fn a_join_is_all_or_nothing() {
    let node = node_with(Arc::new(Down), Limits::default());
    let mut lifecycle = node.lifecycle().subscribe(16);
    let (mut s, _rx) = open(&node, Some("1"));
    let err = s.join(&ch("presence.room"), JoinAs::User).await.unwrap_err();
    assert!(matches!(err, JoinError::PresenceUnavailable(_)), "{err:?}");
    assert_eq!(err.code(), "presence_unavailable");
    assert!(s.subscription("presence.room").is_none());
    assert_eq!(node.hub().subscriber_count(&ch("presence.room")), 0, "rolled back");
    let events: Vec<_> = std::iter::from_fn(|| lifecycle.try_recv().ok()).collect();
    assert!(matches!(events[0], LifecycleEvent::ConnectionOpened { .. }));
    assert!(matches!(events[1], LifecycleEvent::ChannelOccupied { .. }));
    assert!(matches!(
        events[2],
        LifecycleEvent::SubscriptionCount { subscribers: 1, .. }
    ));
    assert!(matches!(
        events[3],
        LifecycleEvent::SubscriptionCount { subscribers: 0, .. }
    ));
    assert!(matches!(events[4], LifecycleEvent::ChannelVacated { .. }));
}

#[tokio::test]
async fn what_a_recovery_sent_is_not_sent_again_live() {
    let node = node();
    let config = crate::history::HistoryConfig {
        channels: vec!["general".into()],
        ..Default::default()
    };
    let store = Arc::new(crate::history::MemoryHistory::new(1 << 20));
    node.fanout()
        .set_history(Arc::new(crate::history::History::new(&config, store).unwrap()));
    let publish = |n: u32| {
        node.fanout()
            .publish(Message::event(ch("general"), "tick", raw(json!({ "n": n }))))
    };
    publish(1).await.unwrap();
    let (mut s, mut rx) = open(&node, None);
    s.join(&ch("general"), JoinAs::User).await.unwrap();
    let start = s.catch_up(&ch("general"), None).await.position.unwrap();
    assert_eq!(start.offset, 1);
    // Published after the subscription, before the recovery read: in the socket's
    // queue and in the history both.
    publish(2).await.unwrap();
    publish(3).await.unwrap();
    let up = s.catch_up(&ch("general"), Some(&start)).await;
    assert_eq!(up.recovered, Some(true));
    assert_eq!(up.messages.len(), 2);
    let queued: Vec<bool> = (0..2).map(|_| s.already_sent(&rx.try_recv().unwrap())).collect();
    assert_eq!(queued, [true, true], "sent from history: skipped live");
    publish(4).await.unwrap();
    assert!(!s.already_sent(&rx.try_recv().unwrap()), "newer ones are sent");
    s.leave("general").await.unwrap();
    assert!(s.floors.is_empty());
}

#[tokio::test]
async fn refusals_carry_codes() {
    let node = node();
    let (mut anon, _rx) = open(&node, None);
    let cases = [
        ("user.42", JoinAs::User, "unauthorized"),
        ("random", JoinAs::User, "forbidden"),
        ("user.42", JoinAs::Public, "not_public"),
        ("presence-x", JoinAs::Signed { member: None }, "invalid_member"),
        // A prefix asks for a kind the rules must agree with (`general` is public).
        ("private-general", JoinAs::User, "wrong_kind"),
    ];
    for (name, how, code) in cases {
        let err = anon.join(&ch(name), how).await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err}");
    }
    // An app-signed channel no rule names keeps its spelled kind.
    let joined = anon
        .join(&ch("private-orders.1"), JoinAs::Signed { member: None })
        .await
        .unwrap();
    assert_eq!(joined.channel.kind(), ChannelKind::Private);
    // The prefix is the kind (issue 27): an app-signed `private-general` is its own
    // channel, never the public `general` (so nothing whispered there reaches it).
    let joined = anon
        .join(&ch("private-general"), JoinAs::Signed { member: None })
        .await
        .unwrap();
    assert_eq!(joined.channel.name(), "private-general");
    assert_ne!(joined.channel, ch("general"));
    assert_eq!(anon.leave("nope").await.unwrap_err().code(), "not_subscribed");
}

#[tokio::test]
async fn client_events_reach_the_others_within_limits() {
    let node = node_with(
        Arc::new(MemoryPresence::new()),
        Limits {
            client_events_per_second: 2,
            ..Limits::default()
        },
    );
    let (mut a, mut ra) = open(&node, Some("1"));
    let (mut b, mut rb) = open(&node, Some("2"));
    for s in [&mut a, &mut b] {
        s.join(&ch("presence.room"), JoinAs::User).await.unwrap();
        s.join(&ch("lobby"), JoinAs::User).await.unwrap();
    }
    while ra.try_recv().is_ok() {}
    let e = |r: Result<Channel, ClientEventError>| r.map(|_| ()).map_err(|e| e.code().as_str());
    assert_eq!(
        e(a.client_event("lobby", "client-x", raw(json!({}))).await),
        Err("client_events_forbidden")
    );
    assert_eq!(
        e(a.client_event("elsewhere", "client-x", raw(json!({}))).await),
        Err("not_subscribed")
    );
    assert_eq!(
        e(a.client_event("presence.room", "typing", raw(json!({}))).await),
        Err("invalid_event")
    );
    assert_eq!(
        e(a.client_event("presence.room", "client-", raw(json!({}))).await),
        Err("invalid_event")
    );
    assert_eq!(
        e(b.client_event("presence.room", "client-t", raw(json!({"n": 1}))).await),
        Ok(())
    );
    assert_eq!(
        e(b.client_event("presence.room", "client-t", raw(json!({"n": 2}))).await),
        Ok(())
    );
    assert_eq!(
        e(b.client_event("presence.room", "client-t", raw(json!({"n": 3}))).await),
        Err("rate_limited")
    );
    for n in [1, 2] {
        let got = ra.try_recv().unwrap();
        assert_eq!(
            (got.event.as_ref(), got.data.get()),
            ("client-t", format!("{{\"n\":{n}}}").as_str())
        );
    }
    assert!(ra.try_recv().is_err(), "the refused one went nowhere");
    while let Ok(env) = rb.try_recv() {
        assert_ne!(env.event.as_ref(), "client-t", "never to the sender");
    }
}

#[tokio::test]
async fn refresh_keeps_the_user_and_registers_an_anonymous_socket() {
    let node = node();
    let (mut anon, _r1) = open(&node, None);
    assert_eq!(anon.refresh("garbage").unwrap_err().code(), "unauthorized");
    // One exp for the token and the expectation (two clock reads could straddle a second).
    let exp = in_an_hour();
    assert_eq!(anon.refresh(&token_until("5", exp)).unwrap(), Some(exp));
    assert_eq!(anon.user().as_deref(), Some("5"));
    assert!(anon.expires_at().is_some());
    assert_eq!(anon.refresh(&token("6")).unwrap_err(), RefreshError::DifferentUser);
    assert_eq!(anon.user().as_deref(), Some("5"), "a refused refresh changes nothing");
    // An absurd exp means "never": no overflow, no panic.
    anon.refresh(&token_until("5", u64::MAX)).unwrap();
    assert_eq!(anon.expires_at(), None);
}

#[tokio::test]
async fn connection_limits_and_app_quotas_are_reserved_at_admission() {
    let node = node_with(
        Arc::new(MemoryPresence::new()),
        Limits {
            max_connections: 2,
            ..Limits::default()
        },
    );
    let app = AppQuota {
        id: "a",
        max_connections: 1,
    };
    let first = node.admit(None, Some(app)).unwrap();
    assert_eq!(node.admit(None, Some(app)).unwrap_err().code(), "over_quota");
    let second = node.admit(None, None).unwrap();
    assert_eq!(node.admit(None, None).unwrap_err(), ConnectError::OverCapacity(2));
    drop(first);
    let (session, _rx) = second.open(Protocol::Pusher);
    assert!(node.admit(None, Some(app)).is_ok(), "the app's place came back");
    drop(session);
}

struct Managed;

impl GrantSource for Managed {
    fn grant(&self, _: Option<&Identity>, channel: &Channel) -> Option<Result<Grant, JoinError>> {
        let name = channel.name().strip_prefix("managed.")?;
        if name == "stopped" {
            return Some(Err(JoinError::Forbidden(channel.name().into())));
        }
        let mut grant = Grant::for_channel(channel.with_kind(ChannelKind::Private), None);
        grant.max_connections = Some(1);
        Some(Ok(grant))
    }
}

#[tokio::test]
async fn grant_sources_decide_their_channels_and_limit_them() {
    let node = Arc::new((*node()).clone().with_grant_source(Arc::new(Managed)));
    let (mut a, _ra) = open(&node, None);
    let (mut b, _rb) = open(&node, None);
    let joined = a.join(&ch("managed.one"), JoinAs::User).await.unwrap();
    assert_eq!(
        joined.channel.kind(),
        ChannelKind::Private,
        "the source's kind, without a rule"
    );
    let full = b.join(&ch("managed.one"), JoinAs::User).await.unwrap_err();
    assert_eq!(full.code(), "channel_full");
    assert_eq!(
        b.join(&ch("managed.stopped"), JoinAs::User).await.unwrap_err().code(),
        "forbidden"
    );
    a.leave("managed.one").await.unwrap();
    b.join(&ch("managed.one"), JoinAs::User)
        .await
        .expect("the place came back");
}

#[tokio::test]
async fn a_dropped_session_still_leaves_the_hub_and_presence() {
    let node = node();
    let mut lifecycle = node.lifecycle().subscribe(32);
    let (mut watcher, mut rw) = open(&node, Some("1"));
    watcher.join(&ch("presence.room"), JoinAs::User).await.unwrap();
    let (mut s, _rx) = open(&node, Some("2"));
    s.join(&ch("presence.room"), JoinAs::User).await.unwrap();
    drop(s); // as if its task panicked or was cancelled
    assert_eq!(node.hub().connection_count(), 1);
    let removed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match rw.recv().await {
                Some(env) if env.event.as_ref() == crate::presence::MEMBER_REMOVED => return env,
                Some(_) => continue,
                None => panic!("queue closed"),
            }
        }
    })
    .await
    .expect("member_removed");
    assert!(removed.data.get().contains("\"2\""));
    watcher.close().await;
    let events: Vec<_> = std::iter::from_fn(|| lifecycle.try_recv().ok()).collect();
    let closed = events
        .iter()
        .filter(|e| matches!(e, LifecycleEvent::ConnectionClosed { .. }))
        .count();
    assert_eq!(closed, 2);
    assert!(matches!(events.last(), Some(LifecycleEvent::ConnectionClosed { .. })));
    assert!(node.presence().members("presence.room").await.unwrap().is_empty());
}
