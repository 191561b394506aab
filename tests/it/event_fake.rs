//! EventFacade::fake(): record instead of running (process-wide; nextest runs this file's
//! test in its own process).

use std::time::Duration;

use crate::common::*;
use rustaxum::broadcasting;
use rustaxum::events::{Event, EventFacade, ShouldBroadcast};
use serde::Serialize;

#[derive(Serialize)]
struct UserRegistered {
    user_id: String,
}

impl Event for UserRegistered {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl ShouldBroadcast for UserRegistered {
    fn broadcast_on(&self) -> Vec<String> {
        vec!["general".into()]
    }
}

#[tokio::test]
async fn faked_events_are_recorded_not_broadcast() {
    let server = start().await;
    broadcasting::install(server.app.manager().clone());
    let (mut ws, _) = server.connect("/ws/general").await;

    let fake = EventFacade::fake().await;
    UserRegistered { user_id: "u1".into() }.dispatch().await.unwrap();
    UserRegistered { user_id: "u2".into() }.dispatch().await.unwrap();
    assert!(EventFacade::assert_dispatched("UserRegistered").await);
    assert!(EventFacade::assert_dispatched_times("UserRegistered", 2).await);
    assert!(EventFacade::assert_not_dispatched("OrderShipped").await);
    assert!(!EventFacade::assert_dispatched("OrderShipped").await);
    assert_eq!(fake.dispatched(), vec!["UserRegistered", "UserRegistered"]);
    expect_silence(&mut ws, Duration::from_millis(200)).await;

    EventFacade::restore().await;
    UserRegistered { user_id: "u3".into() }.dispatch().await.unwrap();
    let msg = recv_json(&mut ws).await;
    assert_eq!(msg["event"], "UserRegistered");
    assert_eq!(msg["data"]["user_id"], "u3");
}
