//! The RustAxum broadcasting document's Rust examples (`../shared/seeds/003_*.txt`), as
//! a user copies them: changed only in their import paths (`crate::app::` →
//! `rustaxum::`). What the document uses without showing (constructors, application
//! types such as `User`) is supplied below, marked `// supplied:`. Each example is then
//! run and checked for what the document says it does.
//!
//! Not included: the chat controller (`send_message`), whose body uses `?` in a function
//! returning `impl IntoResponse` and cannot compile in any crate; its `dispatch` call is
//! exercised by `chat_message_event_is_broadcast_on_dispatch`.
// The document's items are `pub` and undocumented, as it writes them.
#![allow(missing_docs, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::common::{recv_json, TestServer, Ws};
use rustaxum::broadcasting::helpers::*;
use rustaxum::broadcasting::{BroadcastDriver, Result};
use rustaxum::events::{Broadcastable, ShouldQueue};
use rustaxum::events::{Event, EventFacade, ShouldBroadcast};
use rustaxum::{broadcast, broadcast_to_user, notify_user};

/// The document's code, kept as it is written (rustfmt leaves it alone).
#[rustfmt::skip]
mod document {
    use super::*;

    // ---- "Events and Broadcasting: ShouldBroadcast Trait" ----

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct UserRegisteredEvent {
        pub user_id: String,
        pub email: String,
        pub name: String,
        // ... other fields
    }

    impl Event for UserRegisteredEvent {
        fn event_name(&self) -> &'static str {
            "UserRegistered"
        }

        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
    }

    impl ShouldBroadcast for UserRegisteredEvent {
        fn broadcast_on(&self) -> Vec<String> {
            vec!["user.registered".to_string()]
        }

        fn broadcast_as(&self) -> Option<String> {
            Some("UserRegistered".to_string())
        }

        fn broadcast_with(&self) -> serde_json::Value {
            serde_json::json!({
                "user_id": self.user_id,
                "name": self.name,
                "timestamp": chrono::Utc::now()
            })
        }
    }

    impl Broadcastable for UserRegisteredEvent {
        fn broadcast_channel(&self) -> String {
            "user.registered".to_string()
        }

        fn broadcast_data(&self) -> serde_json::Value {
            self.broadcast_with()
        }
    }

    // supplied: the document calls `UserRegisteredEvent::new(..)` with &str and String.
    impl UserRegisteredEvent {
        pub fn new(user_id: impl Into<String>, email: impl Into<String>, name: impl Into<String>) -> Self {
            Self {
                user_id: user_id.into(),
                email: email.into(),
                name: name.into(),
            }
        }
    }

    // ---- "Usage Examples: Live Chat Implementation" ----

    #[derive(Debug, Clone, Serialize)]
    pub struct ChatMessageEvent {
        pub room_id: String,
        pub user_id: String,
        pub username: String,
        pub message: String,
        pub timestamp: DateTime<Utc>,
    }

    impl Event for ChatMessageEvent {
        fn event_name(&self) -> &'static str { "ChatMessage" }
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
    }

    impl Broadcastable for ChatMessageEvent {
        fn broadcast_channel(&self) -> String {
            format!("chat.{}", self.room_id)
        }

        fn broadcast_data(&self) -> serde_json::Value {
            serde_json::json!({
                "user_id": self.user_id,
                "username": self.username,
                "message": self.message,
                "timestamp": self.timestamp
            })
        }
    }

    // ---- "Advanced Features: Custom Drivers" ----

    pub struct CustomDriver {
        // Driver-specific configuration
        // supplied: where this test's driver keeps what it was given.
        pub seen: Arc<Mutex<Vec<(String, bool, serde_json::Value)>>>,
    }

    #[async_trait]
    impl BroadcastDriver for CustomDriver {
        async fn broadcast(&self, channel: &str, data: serde_json::Value) -> Result<()> {
            // Custom broadcasting logic
            self.seen.lock().unwrap().push((channel.to_string(), false, data));
            Ok(())
        }

        async fn broadcast_private(&self, channel: &str, data: serde_json::Value) -> Result<()> {
            // Custom private broadcasting logic
            self.seen.lock().unwrap().push((channel.to_string(), true, data));
            Ok(())
        }

        fn driver_name(&self) -> &'static str {
            "custom"
        }
    }

    // ---- "Advanced Features: Message Queuing" ----

    // supplied: the document queues a `BroadcastableEvent` it does not define.
    #[derive(Debug, Clone, Serialize)]
    pub struct BroadcastableEvent {
        pub n: u32,
    }

    impl Event for BroadcastableEvent {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
    }

    impl ShouldBroadcast for BroadcastableEvent {
        fn broadcast_on(&self) -> Vec<String> {
            vec!["jobs".to_string()]
        }

        fn broadcast_connection(&self) -> Option<String> {
            Some("flaky".to_string())
        }
    }

    impl ShouldQueue for BroadcastableEvent {
        fn queue_connection(&self) -> Option<&str> {
            Some("broadcasts")
        }

        fn queue(&self) -> Option<&str> {
            Some("high_priority")
        }

        fn tries(&self) -> Option<u32> {
            Some(3)
        }

        fn timeout(&self) -> Option<chrono::Duration> {
            Some(chrono::Duration::minutes(5))
        }
    }

    // ---- "Usage Examples": services ----

    // supplied: the application types the services use.
    #[derive(Debug, Clone)]
    pub struct User {
        pub id: String,
        pub email: String,
        pub name: String,
    }

    pub struct CreateUserRequest {
        pub email: String,
        pub name: String,
    }

    pub struct UserService;

    impl UserService {
        async fn create_user(&self, data: CreateUserRequest) -> Result<User> {
            Ok(User {
                id: "u-1".into(),
                email: data.email,
                name: data.name,
            })
        }
    }

    impl UserService {
        pub async fn register_user(&self, user_data: CreateUserRequest) -> Result<User> {
            // Create user in database
            let user = self.create_user(user_data).await?;

            // Dispatch event (automatically broadcasts)
            UserRegisteredEvent::new(
                user.id.clone(),
                user.email.clone(),
                user.name.clone()
            ).dispatch().await?;

            // Send welcome notification
            BroadcastFacade::notify_user(
                &user.id,
                "Welcome!",
                "Your account has been created successfully",
                Some("/dashboard")
            ).await?;

            Ok(user)
        }
    }

    pub struct SystemMonitorService;

    // supplied: readings the monitor acts on.
    impl SystemMonitorService {
        async fn get_cpu_usage(&self) -> Result<f64> {
            Ok(85.0)
        }
        async fn get_memory_usage(&self) -> Result<f64> {
            Ok(95.5)
        }
    }

    impl SystemMonitorService {
        pub async fn check_system_health(&self) -> Result<()> {
            let cpu_usage = self.get_cpu_usage().await?;
            let memory_usage = self.get_memory_usage().await?;

            if cpu_usage > 80.0 {
                BroadcastFacade::system_alert(
                    "warning",
                    &format!("High CPU usage: {:.1}%", cpu_usage),
                    false
                ).await?;
            }

            if memory_usage > 90.0 {
                BroadcastFacade::system_alert(
                    "critical",
                    &format!("Critical memory usage: {:.1}%", memory_usage),
                    true
                ).await?;
            }

            Ok(())
        }
    }

    // supplied: what the dashboard reports.
    pub struct Metrics {
        pub cpu_usage: f64,
        pub memory_usage: f64,
        pub disk_usage: f64,
        pub active_users: u64,
        pub requests_per_minute: u64,
    }

    pub async fn collect_metrics() -> Result<Metrics> {
        Ok(Metrics {
            cpu_usage: 12.5,
            memory_usage: 40.0,
            disk_usage: 70.0,
            active_users: 3,
            requests_per_minute: 120,
        })
    }

    pub async fn update_dashboard_metrics() -> Result<()> {
        let metrics = collect_metrics().await?;

        // Broadcast to admin dashboard
        broadcast()
            .channel("admin.dashboard")
            .event("metrics_update")
            .with(serde_json::json!({
                "cpu": metrics.cpu_usage,
                "memory": metrics.memory_usage,
                "disk": metrics.disk_usage,
                "active_users": metrics.active_users,
                "requests_per_minute": metrics.requests_per_minute,
                "timestamp": Utc::now()
            }))
            .send().await?;

        Ok(())
    }

    // ---- "API Reference": helpers, fluent API, facade, macros, as one function ----

    pub async fn api_reference(event: UserRegisteredEvent, notification_data: serde_json::Value) -> Result<()> {
        // Broadcast to specific channel
        broadcast_to_channel("general", "announcement", serde_json::json!({
            "message": "System maintenance in 5 minutes"
        })).await?;

        // Broadcast to user
        broadcast_to_user("user123", "notification", serde_json::json!({
            "title": "Welcome!",
            "message": "Registration successful"
        })).await?;

        // Broadcast to organization
        broadcast_to_organization("org456", "update", serde_json::json!({
            "type": "policy_change",
            "message": "New privacy policy available"
        })).await?;

        // Using fluent interface
        broadcast()
            .to_user("user123")
            .event("notification")
            .with(serde_json::json!({
                "title": "Order Status",
                "message": "Your order has been shipped!"
            }))
            .send().await?;

        // Multiple channels
        broadcast()
            .channels(vec!["admin".to_string(), "moderators".to_string()])
            .event("alert")
            .with(serde_json::json!({
                "level": "warning",
                "message": "High CPU usage detected"
            }))
            .send().await?;

        // Laravel-style facade
        BroadcastFacade::to_user("user123")
            .event("notification")
            .with(notification_data)
            .send().await?;

        BroadcastFacade::system_alert("critical", "Database connection lost", true).await?;

        // supplied: the macros' `data`, a reference so it can be used three times.
        let data = &serde_json::json!({"macro": true});

        // Broadcast macro
        broadcast!(event).await?;

        // Broadcast to channel
        broadcast!("general", "announcement", data).await?;

        // Broadcast to user
        broadcast_to_user!("user123", "notification", data).await?;

        // Notify user
        notify_user!("user123", "Welcome", "Registration successful").await?;
        notify_user!("user123", "Order Update", "Shipped", "https://track.example.com").await?;
        Ok(())
    }

    // ---- "Testing: Unit Tests" (the document's tests, as written) ----

    #[tokio::test]
    async fn test_event_broadcasting() {
        // Enable event faking
        EventFacade::fake().await;

        // Dispatch event
        let event = UserRegisteredEvent::new(
            "test_user".to_string(),
            "test@example.com".to_string(),
            "Test User".to_string()
        );
        event.dispatch().await.unwrap();

        // Assert event was dispatched
        assert!(EventFacade::assert_dispatched("UserRegistered").await);
    }

    #[tokio::test]
    async fn test_broadcast_helper() {
        let result = broadcast_to_channel(
            "test_channel",
            "test_event",
            serde_json::json!({"message": "test"})
        ).await;

        assert!(result.is_ok());
    }
}

use document::*;

// ---- "Testing: Integration Tests" ----

// supplied: the document's `create_test_server` and `connect_websocket_client`.
async fn create_test_server() -> TestServer {
    crate::common::start().await
}

struct Client(Ws);

impl Client {
    async fn send_text(&mut self, text: &str) {
        crate::common::send_text(&mut self.0, text).await;
    }
    async fn receive_text(&mut self) -> String {
        recv_json(&mut self.0).await.to_string()
    }
}

async fn connect_websocket_client(addr: &std::net::SocketAddr) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let mut client = Client(ws);
    client.receive_text().await; // connection_established
    client
}

#[tokio::test]
async fn test_websocket_connection() {
    let server = create_test_server().await;
    let mut client = connect_websocket_client(&server.addr).await;

    // Send test message
    client.send_text(r#"{"action": "ping"}"#).await;

    // Receive response
    let response = client.receive_text().await;
    let parsed: serde_json::Value = serde_json::from_str(&response).unwrap();

    assert_eq!(parsed["event"], "pong");
}

// ---- Behaviour: the examples do what the document says ----

/// A server whose channels the examples use are public, its manager installed for the
/// helpers, as an application embedding rustaxum would have it.
async fn server() -> TestServer {
    let mut config = crate::common::config();
    config
        .auth
        .public_channels
        .extend(["user.registered", "chat.*", "admin.dashboard", "jobs"].map(String::from));
    let server = crate::common::start_with(config).await;
    rustaxum::broadcasting::install(server.app.manager().clone());
    server
}

async fn subscriber(server: &TestServer, channel: &str) -> Ws {
    server.connect(&format!("/ws/{channel}")).await.0
}

#[tokio::test]
async fn user_registered_event_is_broadcast_on_dispatch() {
    let server = server().await;
    let mut ws = subscriber(&server, "user.registered").await;
    let event = UserRegisteredEvent::new("user123", "user@example.com", "John Doe");
    event.dispatch().await.unwrap();
    let got = recv_json(&mut ws).await;
    assert_eq!(got["event"], "UserRegistered");
    assert_eq!(got["channel"], "user.registered");
    assert_eq!(got["data"]["user_id"], "user123");
    assert_eq!(got["data"]["name"], "John Doe");
    assert!(got["data"]["timestamp"].is_string(), "{got}");
    assert!(got["data"].get("email").is_none(), "broadcast_with, not to_json");
}

#[tokio::test]
async fn chat_message_event_is_broadcast_on_dispatch() {
    let server = server().await;
    let mut room = subscriber(&server, "chat.room1").await;
    let mut other = subscriber(&server, "chat.room2").await;
    ChatMessageEvent {
        room_id: "room1".into(),
        user_id: "7".into(),
        username: "ann".into(),
        message: "hello".into(),
        timestamp: Utc::now(),
    }
    .dispatch()
    .await
    .unwrap();
    let got = recv_json(&mut room).await;
    assert_eq!(
        (got["event"].as_str(), got["channel"].as_str()),
        (Some("ChatMessage"), Some("chat.room1"))
    );
    assert_eq!(got["data"]["message"], "hello");
    assert_eq!(got["data"]["username"], "ann");
    crate::common::expect_silence(&mut other, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_services_broadcast_what_they_say() {
    let server = server().await;
    let mut user_registered = subscriber(&server, "user.registered").await;
    let mut dashboard = subscriber(&server, "admin.dashboard").await;
    let user = UserService
        .register_user(CreateUserRequest {
            email: "ann@example.com".into(),
            name: "Ann".into(),
        })
        .await
        .unwrap();
    assert_eq!(user.id, "u-1");
    assert_eq!(recv_json(&mut user_registered).await["data"]["name"], "Ann");
    SystemMonitorService.check_system_health().await.unwrap();
    update_dashboard_metrics().await.unwrap();
    let got = recv_json(&mut dashboard).await;
    assert_eq!(got["event"], "metrics_update");
    assert_eq!(got["data"]["requests_per_minute"], 120);
}

#[tokio::test]
async fn the_api_reference_runs_end_to_end() {
    let server = server().await;
    let mut general = subscriber(&server, "general").await;
    let mut registered = subscriber(&server, "user.registered").await;
    let event = UserRegisteredEvent::new("u9", "u9@example.com", "Nine");
    api_reference(event, serde_json::json!({"title": "Hi"})).await.unwrap();
    let announcement = recv_json(&mut general).await;
    assert_eq!(announcement["data"]["message"], "System maintenance in 5 minutes");
    assert_eq!(
        recv_json(&mut registered).await["event"],
        "UserRegistered",
        "broadcast!(event)"
    );
    let by_macro = recv_json(&mut general).await;
    assert_eq!(by_macro["data"], serde_json::json!({"macro": true}));
}

#[tokio::test]
async fn the_custom_driver_is_registered_with_extend_and_used() {
    let server = server().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    server
        .app
        .manager()
        .extend("custom", move |_, _| Ok(Arc::new(CustomDriver { seen: s.clone() })));
    broadcast()
        .channels(["general", "private-orders.1"])
        .event("shipped")
        .with(serde_json::json!({"id": 1}))
        .via("custom")
        .send()
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].0.as_str(), seen[0].1), ("general", false));
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1),
        ("orders.1", true),
        "private channels go to broadcast_private"
    );
    assert_eq!(
        seen[0].2,
        serde_json::json!({"event": "shipped", "data": {"id": 1}, "socket": null})
    );
    assert_eq!(server.app.manager().driver("custom").unwrap().driver_name(), "custom");
}

#[tokio::test]
async fn should_queue_honours_its_queue_tries_and_timeout() {
    let server = server().await;
    let manager = server.app.manager().clone();
    let flaky = rustaxum::broadcasting::testing::RecordingDriver::failing_first(usize::MAX);
    let f = flaky.clone();
    manager.extend("flaky", move |_, _| Ok(f.clone()));
    // Queued, not sent during dispatch: the driver has not been called yet.
    BroadcastableEvent { n: 1 }.dispatch().await.unwrap();
    assert_eq!(manager.pending_broadcasts(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while manager.failed_broadcasts().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed = manager.failed_broadcasts();
    assert_eq!(failed.len(), 1, "three tries, then recorded as failed");
    assert_eq!(failed[0].attempts, 3);
    assert_eq!(flaky.calls(), 3);
    assert_eq!(failed[0].queue_connection, "broadcasts");
    assert_eq!(failed[0].queue, "high_priority");
}

#[tokio::test]
async fn queued_timeout_applies_to_each_try() {
    // The document's five-minute timeout would take too long to observe; the same
    // mechanism with a short one: a driver slower than the timeout fails by timeout.
    #[derive(Serialize)]
    struct Slow;
    impl Event for Slow {}
    impl ShouldBroadcast for Slow {
        fn broadcast_on(&self) -> Vec<String> {
            vec!["jobs".to_string()]
        }
        fn broadcast_connection(&self) -> Option<String> {
            Some("slow".to_string())
        }
    }
    impl ShouldQueue for Slow {
        fn tries(&self) -> Option<u32> {
            Some(1)
        }
        fn timeout(&self) -> Option<chrono::Duration> {
            Some(chrono::Duration::milliseconds(100))
        }
    }
    struct Sleepy;
    #[async_trait]
    impl BroadcastDriver for Sleepy {
        async fn broadcast(&self, _: &str, _: serde_json::Value) -> Result<()> {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        }
        fn driver_name(&self) -> &'static str {
            "slow"
        }
    }
    let server = server().await;
    let manager = server.app.manager().clone();
    manager.extend("slow", |_, _| Ok(Arc::new(Sleepy)));
    Slow.dispatch().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while manager.failed_broadcasts().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = manager.failed_broadcasts();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].error.contains("timed out"), "{}", failed[0].error);
}
