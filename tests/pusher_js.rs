//! Runs the Pusher compatibility suite (tests/pusher/*.test.mjs) with the published
//! pusher-js, laravel-echo and pusher packages against a real rustaxum server.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn published_pusher_packages_work_unchanged() {
    let modules = std::path::Path::new("tests/pusher/node_modules");
    assert!(
        modules.exists(),
        "run `npm ci` in tests/pusher first (scripts/test does)"
    );
    let mut config = config();
    config.pusher.apps = rustaxum::pusher::Apps::new(vec![rustaxum::pusher::PusherApp {
        id: "app-1".into(),
        key: "app-key".into(),
        secret: "app-secret".into(),
        enabled: true,
        max_connections: 0,
        webhooks: Vec::new(),
    }]);
    config.auth.public_channels.push("nobody-here".into());
    config.auth.public_channels.push("probe".into());
    let server = start_with(config).await;
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-force-exit", "tests/pusher/"])
        .env("RX_HOST", "127.0.0.1")
        .env("RX_PORT", server.addr.port().to_string())
        .env("RX_APP_ID", "app-1")
        .env("RX_KEY", "app-key")
        .env("RX_SECRET", "app-secret")
        .env("RX_JWT_SECRET", SECRET)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the node suite finishes within 2 minutes")
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pusher compatibility tests failed (output above)");
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
