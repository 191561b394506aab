//! Runs the Pusher compatibility suite (tests/pusher/*.test.mjs) with the published
//! pusher-js, laravel-echo and pusher packages against a real rustaxum server.

use std::time::Duration;

use crate::common::redis::{unique_prefix, Backend, RedisCluster, RedisServer};
use crate::common::*;

/// base64 of 32 bytes: the first app's encryption master key.
const MASTER_KEY: &str = "K0UzPUbNBEq6f2lSpYJcDhvXo4ZXO6G5yW9nVp0iHvM=";

/// Five tenants: the default app (encrypted channels, subscription counts), a second
/// app, one with tight limits, one with client events off and authorized connections,
/// and one of at most 3 connections.
fn apps() -> Vec<rustaxum::services::pusher::PusherApp> {
    use rustaxum::services::pusher::PusherApp;
    vec![
        PusherApp {
            encryption_master_key: Some(MASTER_KEY.into()),
            enable_subscription_count: true,
            ..PusherApp::new("app-1", "app-key", "app-secret")
        },
        PusherApp::new("app-2", "app2-key", "app2-secret"),
        PusherApp {
            max_presence_members_per_channel: 2,
            max_presence_member_size: 64,
            max_event_name_length: 20,
            max_channels_per_event: Some(2),
            max_api_requests_per_second: 3,
            ..PusherApp::new("app-3", "app3-key", "app3-secret")
        },
        PusherApp {
            enable_client_events: false,
            user_authentication_timeout: 1,
            ..PusherApp::new("app-4", "app4-key", "app4-secret")
        },
        PusherApp {
            max_connections: 3,
            ..PusherApp::new("app-5", "app5-key", "app5-secret")
        },
    ]
}

/// What the Node suites read: the node(s) and the apps' credentials.
fn node_env(port: u16, port2: Option<u16>) -> Vec<(String, String)> {
    let mut env = vec![
        ("RX_HOST", "127.0.0.1".to_string()),
        ("RX_PORT", port.to_string()),
        ("RX_APP_ID", "app-1".into()),
        ("RX_KEY", "app-key".into()),
        ("RX_SECRET", "app-secret".into()),
        ("RX_APP_ID2", "app-2".into()),
        ("RX_KEY2", "app2-key".into()),
        ("RX_SECRET2", "app2-secret".into()),
        ("RX_APP_ID3", "app-3".into()),
        ("RX_KEY3", "app3-key".into()),
        ("RX_SECRET3", "app3-secret".into()),
        ("RX_APP_ID4", "app-4".into()),
        ("RX_KEY4", "app4-key".into()),
        ("RX_SECRET4", "app4-secret".into()),
        ("RX_KEY5", "app5-key".into()),
        ("RX_MASTER_KEY", MASTER_KEY.into()),
        ("RX_JWT_SECRET", SECRET.into()),
    ];
    if let Some(p) = port2 {
        env.push(("RX_PORT2", p.to_string()));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[tokio::test]
async fn published_pusher_packages_work_unchanged() {
    let modules = std::path::Path::new("tests/pusher/node_modules");
    assert!(
        modules.exists(),
        "run `npm ci` in tests/pusher first (scripts/test does)"
    );
    let mut config = config();
    config.pusher.apps = rustaxum::services::pusher::Apps::new(apps());
    for public in ["nobody-here", "probe", "orders", "counted", "cache-*", "kept-*"] {
        config.auth.public_channels.push(public.into());
    }
    config.history.channels = vec!["kept-*".into()];
    // The Pusher apps guard their presence channels; JWT clients (rustaxum's own
    // /broadcasting/auth) join them by a rule that says so.
    config.auth.rules_file = Some(rules_file(PRESENCE_FOR_TOKENS));
    let server = start_with(config).await;
    run_node_suite("tests/pusher/", server.addr.port(), None).await;
}

/// Runs `suite` under node against the given node(s); asserts it passes.
async fn run_node_suite(suite: &str, port: u16, port2: Option<u16>) {
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-force-exit", suite])
        .envs(node_env(port, port2))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the node suite finishes within 2 minutes")
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{suite} failed (output above)");
    assert!(stdout.contains("# fail 0"), "{stdout}");
}

#[tokio::test]
async fn pusher_features_work_across_two_nodes_with_redis() {
    pusher_features_across_nodes(&RedisServer::start()).await;
}

#[tokio::test]
async fn pusher_features_work_across_two_nodes_on_a_redis_cluster() {
    pusher_features_across_nodes(&RedisCluster::start()).await;
}

async fn pusher_features_across_nodes(redis: &impl Backend) {
    let prefix = unique_prefix();
    let node = || {
        let mut c = cluster_config(redis, &prefix);
        c.pusher.apps = rustaxum::services::pusher::Apps::new(apps());
        for public in ["orders", "counted", "cache-*", "kept-*"] {
            c.auth.public_channels.push(public.into());
        }
        c.history.channels = vec!["kept-*".into()];
        c
    };
    let a = start_with(node()).await;
    let b = start_with(node()).await;
    for n in [&a, &b] {
        wait_ready(n).await;
    }
    run_node_suite("tests/pusher/cluster.mjs", a.addr.port(), Some(b.addr.port())).await;
}

/// The Python Pusher SDK's `trigger` and `trigger_batch`: what it sends as `data` reaches a
/// Pusher client byte for byte (tests/pusher/python/sdk_bytes.py).
#[tokio::test]
async fn the_python_pusher_sdk_s_data_arrives_byte_for_byte() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/emithub-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test makes it",
        python.display()
    );
    let mut config = config();
    // The Python SDK wants a numeric app id, as Pusher issues them.
    config.pusher.apps = rustaxum::services::pusher::Apps::new(vec![rustaxum::services::pusher::PusherApp::new(
        "1700001",
        "py-key",
        "py-secret",
    )]);
    config.auth.public_channels.push("orders".into());
    let server = start_with(config).await;
    let run = tokio::process::Command::new(&python)
        .arg("tests/pusher/python/sdk_bytes.py")
        .args([
            "127.0.0.1",
            &server.addr.port().to_string(),
            "1700001",
            "py-key",
            "py-secret",
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the Python SDK finishes")
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), 7, "{stdout}");
}
