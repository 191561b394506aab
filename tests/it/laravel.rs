//! A Laravel project switches to rustaxum by its `.env` alone. For the three ways Laravel
//! writes it (10 with Pusher, 11+ with Reverb, 11+ with Pusher; `tests/laravel/*.env`),
//! the real binary is started in a directory holding that `.env` and nothing else, and
//! Laravel Echo (the `pusher` or `reverb` broadcaster) and the `pusher` server SDK,
//! configured from the same `.env` as Laravel configures them (tests/pusher/laravel.mjs),
//! exchange events on a public, a private and a presence channel, and a whisper.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

/// Starts rustaxum in a fresh directory holding `fixture` (with `__PORT__` replaced by a
/// free port) and nothing else, waits until it listens where the `.env` says, runs the
/// Laravel half with `broadcaster`, and returns what the server logged. With `scaling`,
/// the same `.env` plus `REVERB_SCALING_ENABLED=true` (and the test's Redis port in
/// `REDIS_PORT`) starts two servers; Bob's Echo connects to the second one.
async fn laravel_project(fixture: &str, broadcaster: &str, scaling: bool) -> String {
    let modules = std::path::Path::new("tests/pusher/node_modules");
    assert!(
        modules.exists(),
        "run `npm ci` in tests/pusher first (scripts/test does)"
    );
    let dir = std::env::temp_dir().join(format!("rustaxum-laravel-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut text = std::fs::read_to_string(format!("tests/laravel/{fixture}"))
        .unwrap()
        .replace("__PORT__", &port.to_string());
    let redis = scaling.then(crate::common::redis::RedisServer::start);
    if let Some(redis) = &redis {
        text = text.replace("REDIS_PORT=6379", &format!("REDIS_PORT={}", redis.port));
        text.push_str("\nREVERB_SCALING_ENABLED=true\n");
    }
    let env_file = dir.join(".env");
    std::fs::write(&env_file, text).unwrap();

    // Nothing but the .env: rustaxum listens on REVERB_SERVER_PORT, or on PUSHER_PORT
    // because PUSHER_HOST is this machine.
    let (child, url, logged) = node_in(&dir, &[]).await;
    assert_eq!(url, format!("http://127.0.0.1:{port}"));
    // The second server: same directory, same .env; on another machine it would have the
    // same port, here it needs its own.
    let second = match scaling {
        false => None,
        true => {
            let port2 = free_port().to_string();
            let (child, _, _) = node_in(&dir, &[("BROADCAST_WEBSOCKET_PORT", &port2)]).await;
            Some((child, port2))
        }
    };

    let mut run = tokio::process::Command::new("node");
    run.args(["--test", "--test-force-exit", "tests/pusher/laravel.mjs"])
        .env("RX_ENV_FILE", &env_file)
        .env("RX_BROADCASTER", broadcaster)
        .kill_on_drop(true);
    if let Some((_, port2)) = &second {
        run.env("RX_PORT2", port2);
    }
    let node = tokio::time::timeout(Duration::from_secs(60), run.output())
        .await
        .expect("the Laravel half finishes within a minute")
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&node.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&node.stderr));
    terminate(child).await;
    if let Some((child, _)) = second {
        terminate(child).await;
    }
    let logged = logged.await.unwrap();
    eprintln!("{logged}");
    assert!(
        node.status.success() && stdout.contains("# fail 0"),
        "{fixture} with Echo's {broadcaster} broadcaster"
    );
    let _ = std::fs::remove_dir_all(&dir);
    logged
}

#[tokio::test]
async fn a_laravel_10_pusher_env_is_served_as_is() {
    let logged = laravel_project("laravel10-pusher.env", "pusher", false).await;
    assert!(
        logged.contains("BROADCAST_DRIVER=pusher is Laravel's setting"),
        "{logged}"
    );
    assert!(logged.contains("app 1700001"), "{logged}");
}

#[tokio::test]
async fn a_laravel_11_reverb_env_is_served_as_is() {
    // Echo's reverb broadcaster; rustaxum listens on REVERB_SERVER_PORT.
    let logged = laravel_project("laravel11-reverb.env", "reverb", false).await;
    assert!(
        logged.contains("BROADCAST_CONNECTION=reverb is Laravel's setting"),
        "{logged}"
    );
    assert!(logged.contains("app 512345"), "{logged}");
}

#[tokio::test]
async fn a_laravel_11_pusher_env_is_served_as_is() {
    let logged = laravel_project("laravel11-pusher.env", "pusher", false).await;
    assert!(logged.contains("app 1800002"), "{logged}");
    assert!(logged.contains("listening on PUSHER_PORT="), "{logged}");
}

// Issue 33: two servers, the same .env plus Reverb's scaling switch, Laravel's broadcaster
// unchanged (reverb; pusher for Laravel 10): they share Laravel's Redis (REDIS_* from the
// .env) and a client on either gets what is published on the other.
#[tokio::test]
async fn the_same_reverb_env_plus_reverb_scaling_enabled_runs_two_servers() {
    let logged = laravel_project("laravel11-reverb.env", "reverb", true).await;
    assert!(
        logged.contains("REVERB_SCALING_ENABLED=true: this server shares Redis"),
        "{logged}"
    );
    assert!(logged.contains("from REDIS_PORT"), "{logged}");
}

#[tokio::test]
async fn the_same_laravel_10_env_plus_reverb_scaling_enabled_runs_two_servers() {
    let logged = laravel_project("laravel10-pusher.env", "pusher", true).await;
    assert!(logged.contains("rustaxum's own driver is redis"), "{logged}");
}

// A Reverb-only .env used to start silently without serving its app; with no app at all
// the refusal of the first Pusher client now says why.
#[tokio::test]
async fn a_pusher_client_refused_for_want_of_any_app_is_explained_in_the_log() {
    let mut child = server_command().args(["--port", "0"]).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line
        .strip_prefix("rustaxum listening on ")
        .unwrap()
        .replacen("http", "ws", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}/app/some-key?protocol=7"))
        .await
        .unwrap();
    let first = recv_json(&mut ws).await;
    assert_eq!(first["data"]["code"], 4001, "{first}");
    let explained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(l)) = err.next_line().await {
            if l.contains("no Pusher app is configured") {
                return l;
            }
        }
        String::new()
    })
    .await
    .expect("the refusal is logged");
    assert!(explained.contains("REVERB_APP_"), "{explained}");
    child.kill().await.unwrap();
}

/// A copy of the Laravel app of `tests/laravel/app` in a fresh directory with `env` as its
/// `.env` (Laravel writes its provider manifest under bootstrap/cache).
fn laravel_app(env: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rustaxum-laravel-app-{}", uuid::Uuid::new_v4()));
    let status = std::process::Command::new("cp")
        .args(["-r", "tests/laravel/app"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir_all(dir.join("bootstrap/cache")).unwrap();
    std::fs::write(dir.join(".env"), env).unwrap();
    dir
}

/// `php -S` serving the app in `dir` on a free port; waits until it answers.
async fn serve_php(dir: &std::path::Path) -> (tokio::process::Child, String) {
    assert!(
        std::process::Command::new("php")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success()),
        "php is missing: scripts/test installs php-cli, php-laravel-framework and php-redis"
    );
    let port = free_port();
    let child = tokio::process::Command::new("php")
        .args(["-S", &format!("127.0.0.1:{port}"), "public/index.php"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("php -S");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "php -S did not start");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (child, url)
}

/// A rustaxum node started in `dir` (reading its `.env`) with `env`; its URL (the first
/// line it prints) and what it logs.
async fn node_in(
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String, tokio::task::JoinHandle<String>) {
    let mut cmd = server_command();
    cmd.current_dir(dir).envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn rustaxum");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .expect("the node starts")
        .unwrap()
        .expect("a first line");
    let url = line
        .strip_prefix("rustaxum listening on ")
        .expect("its address")
        .to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let logged = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(l)) = err.next_line().await {
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    (child, url, logged)
}

/// The Laravel `.env` of the Redis-broadcaster path: Laravel 8's defaults, its Redis, the
/// app Echo connects with, and where rustaxum forwards authorization.
fn redis_broadcaster_env(redis_port: u16, app_url: &str) -> String {
    format!(
        "APP_NAME=\"Shop Test\"\nAPP_KEY=base64:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nAPP_URL={app_url}\n\
         BROADCAST_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PASSWORD=null\nREDIS_PORT={redis_port}\n\
         PUSHER_APP_ID=shop\nPUSHER_APP_KEY=shop-key\nPUSHER_APP_SECRET=shop-secret-0123456789\nPUSHER_APP_CLUSTER=mt1\n\
         BROADCAST_AUTH_FORWARD_URL={app_url}/broadcasting/auth\n"
    )
}

// Issue 33: events Laravel's own Redis broadcaster publishes reach Laravel Echo through two
// nodes that read nothing but Laravel's .env (its REDIS_* settings and the prefix Laravel
// derives from APP_NAME), and Laravel's channel callbacks guard private and presence
// channels through the forwarding mode.
#[tokio::test]
async fn a_real_laravel_app_s_redis_broadcaster_reaches_echo_through_two_nodes() {
    let redis = crate::common::redis::RedisServer::start();
    let php_port_dir = laravel_app("");
    let (mut php, app_url) = serve_php(&php_port_dir).await;
    std::fs::write(php_port_dir.join(".env"), redis_broadcaster_env(redis.port, &app_url)).unwrap();
    let (a, url_a, logged_a) = node_in(&php_port_dir, &[("BROADCAST_WEBSOCKET_PORT", "0")]).await;
    let (b, url_b, _logged_b) = node_in(&php_port_dir, &[("BROADCAST_WEBSOCKET_PORT", "0")]).await;
    let port = |url: &str| url.rsplit(':').next().unwrap().to_string();

    let run = tokio::process::Command::new("node")
        .args([
            "--test",
            "--test-concurrency=1",
            "--test-force-exit",
            "tests/pusher/laravel-app.mjs",
        ])
        .env("RX_PORT_A", port(&url_a))
        .env("RX_PORT_B", port(&url_b))
        .env("RX_APP", &app_url)
        .env("RX_KEY", "shop-key")
        .kill_on_drop(true)
        .output();
    let node = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the Echo half finishes")
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&node.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&node.stderr));

    // The forwarding mode passes the session cookie on (what a browser's Laravel session is).
    let http = reqwest::Client::new();
    let auth = |cookie: &'static str, channel: &'static str| {
        http.post(format!("{url_a}/broadcasting/auth"))
            .header("cookie", cookie)
            .form(&[("socket_id", "123.456"), ("channel_name", channel)])
            .send()
    };
    let ok = auth("demo_token=token-bob", "private-orders.2").await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    let expected = rustaxum::services::pusher::channel_auth(
        &rustaxum::services::pusher::PusherApp::new("shop", "shop-key", "shop-secret-0123456789"),
        "123.456",
        "private-orders.2",
        None,
    );
    assert_eq!(body["auth"], expected);
    assert_eq!(
        auth("demo_token=token-bob", "private-orders.1").await.unwrap().status(),
        403
    );

    terminate(a).await;
    terminate(b).await;
    php.kill().await.unwrap();
    let logged = logged_a.await.unwrap();
    eprintln!("{logged}");
    assert!(
        node.status.success() && stdout.contains("# fail 0"),
        "the Echo half failed (above)"
    );
    // The start-up says where Redis is (from Laravel's names) and what it listens to.
    assert!(
        logged.contains(&format!("Redis at redis://127.0.0.1:{}/0", redis.port))
            && logged.contains(&format!("port {} from REDIS_PORT", redis.port))
            && logged.contains("shop_test_database_<channel>"),
        "{logged}"
    );
    let _ = std::fs::remove_dir_all(&php_port_dir);
}

// The prefix derived from APP_NAME is the one Laravel itself derives (Debian's Laravel:
// Str::slug(env('APP_NAME'), '_') . '_database_' in config/database.php).
#[test]
fn the_redis_prefix_is_the_one_laravel_derives() {
    let names = [
        "Laravel",
        "My Shop",
        "my-shop 2",
        "  Acme  Corp!! ",
        "mail@home",
        "a__b",
        "Café Ünïcode",
        "Shop_Test",
    ];
    let php = std::process::Command::new("php")
        .args([
            "-r",
            "require '/usr/share/php/Illuminate/autoload.php'; foreach (array_slice($argv, 1) as $n) { echo Illuminate\\Support\\Str::slug($n, '_'), \"\\n\"; }",
            "--",
        ])
        .args(names)
        .output()
        .expect("php (scripts/test installs php-cli and php-laravel-framework)");
    assert!(php.status.success(), "{}", String::from_utf8_lossy(&php.stderr));
    let laravel: Vec<String> = String::from_utf8(php.stdout)
        .unwrap()
        .lines()
        .map(|l| format!("{l}_database_"))
        .collect();
    let ours: Vec<String> = names
        .iter()
        .map(|n| {
            rustaxum::config::Config::from_lookup(|k| (k == "APP_NAME").then(|| n.to_string()))
                .unwrap()
                .redis
                .channels_prefix
        })
        .collect();
    assert_eq!(ours, laravel);
}
