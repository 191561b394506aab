//! Deployment smoke test: nginx with the repository's own nginx.conf (upstream addresses
//! and listen port substituted) in front of two instances sharing a real Redis.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::redis::{unique_prefix, RedisServer};
use crate::common::*;
use serde_json::json;

pub(crate) struct Nginx {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("KEEP_NGINX").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// nginx with the repository's config; `apps` are the (application, WebSocket) ports of
/// the two instances, `port` the front port (and the typed-frame service's front port
/// with its instances' ports, when given).
pub(crate) fn start_nginx(apps: [(u16, u16); 2], port: u16) -> Nginx {
    start_nginx_with_rtc(apps, port, None)
}

fn start_nginx_with_rtc(apps: [(u16, u16); 2], port: u16, rtc: Option<(u16, [u16; 2])>) -> Nginx {
    let conf = std::fs::read_to_string("nginx.conf").expect("the repository's nginx.conf");
    let (dir, globals) = nginx_conf(conf, apps, port, rtc);
    run_nginx(dir, globals, port)
}

/// `conf` with the test's addresses in place of the nodes' names and ports, written to a
/// fresh prefix directory; returns it and the `-g` globals to run nginx with.
fn nginx_conf(
    conf: String,
    apps: [(u16, u16); 2],
    port: u16,
    rtc: Option<(u16, [u16; 2])>,
) -> (std::path::PathBuf, String) {
    let needles = [
        "server app1:3000",
        "server app2:3000",
        "server app1:8080",
        "server app2:8080",
        "server app1:8081",
        "server app2:8081",
        "listen 80;",
        "listen 8081;",
    ];
    for needle in needles {
        assert!(conf.contains(needle), "nginx.conf no longer contains {needle:?}");
    }
    let conf = conf
        .replace("server app1:3000", &format!("server 127.0.0.1:{}", apps[0].0))
        .replace("server app2:3000", &format!("server 127.0.0.1:{}", apps[1].0))
        .replace("server app1:8080", &format!("server 127.0.0.1:{}", apps[0].1))
        .replace("server app2:8080", &format!("server 127.0.0.1:{}", apps[1].1))
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("worker_processes auto;", "worker_processes 1;");
    let conf = match rtc {
        Some((front, [a, b])) => conf
            .replace("server app1:8081", &format!("server 127.0.0.1:{a}"))
            .replace("server app2:8081", &format!("server 127.0.0.1:{b}"))
            .replace("listen 8081;", &format!("listen 127.0.0.1:{front};")),
        // No typed-frame port in this test: its server block listens where nobody looks.
        None => conf
            .replace("server app1:8081", &format!("server 127.0.0.1:{}", apps[0].1))
            .replace("server app2:8081", &format!("server 127.0.0.1:{}", apps[1].1))
            .replace("listen 8081;", &format!("listen 127.0.0.1:{};", free_port())),
    };
    let dir = std::env::temp_dir().join(format!("rustaxum-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let globals = format!(
        "daemon off; pid {0}/nginx.pid; error_log {0}/logs/error.log;{1}",
        dir.display(),
        // As root, workers would switch to "nobody", who cannot use this temp dir.
        if is_root() { " user root;" } else { "" }
    );
    (dir, globals)
}

fn run_nginx(dir: std::path::PathBuf, globals: String, port: u16) -> Nginx {
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-g")
        .arg(globals)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nginx must be installed (apt-get install nginx)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start; see {}/logs/error.log",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx { child, dir }
}

#[tokio::test]
async fn clients_through_nginx_receive_events_published_through_either_instance() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let app1 = start_two_ports(cluster_config(&redis, &prefix)).await;
    let app2 = start_two_ports(cluster_config(&redis, &prefix)).await;
    let port = free_port();
    let ports = |s: &TestServer| (s.app_addr.expect("an application port").port(), s.addr.port());
    let _nginx = start_nginx([ports(&app1), ports(&app2)], port);
    let front = format!("127.0.0.1:{port}");

    // Ready through nginx.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = reqwest::get(format!("http://{front}/ready"))
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if ready == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "not ready through nginx: {ready:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut clients = Vec::new();
    for _ in 0..4 {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{front}/ws/general"))
            .await
            .unwrap();
        assert_eq!(recv_json(&mut ws).await["event"], "subscription_succeeded");
        clients.push(ws);
    }
    // least_conn spread the sockets over both instances.
    assert!(app1.app.hub().connection_count() > 0 && app2.app.hub().connection_count() > 0);

    app1.publish("general", "via.app1", json!({"n": 1})).await;
    app2.publish("general", "via.app2", json!({"n": 2})).await;
    let (status, _) = reqwest::Client::new()
        .post(format!("http://{front}/api/broadcast"))
        .json(&json!({"channel": "general", "event": "via.nginx", "data": {"n": 3}}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200);
    for ws in &mut clients {
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(recv_json(ws).await["event"].as_str().unwrap().to_string());
        }
        got.sort();
        assert_eq!(got, ["via.app1", "via.app2", "via.nginx"]);
        expect_silence(ws, Duration::from_millis(200)).await;
    }
}

/// An instance with the binary's three listeners: the WebSocket port, the application
/// port (same routes) and the typed-frame service's port.
async fn start_deployed(config: rustaxum::Config) -> (rustaxum::Rustaxum, [std::net::SocketAddr; 3]) {
    let app = rustaxum::Rustaxum::new(config).expect("app");
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        listeners.push(l);
    }
    let rtc = listeners.pop().unwrap();
    let mut routed: Vec<_> = listeners.into_iter().map(|l| (l, app.router().unwrap())).collect();
    routed.push((rtc, app.rtc_router().unwrap()));
    tokio::spawn(app.clone().serve(routed, std::future::pending()));
    (app, [addrs[0], addrs[1], addrs[2]])
}

// Issue 23: with the shipped nginx.conf, /dashboard/ws, /rtc/ws and the EmitHub channel
// sockets got 426 (no Upgrade header forwarded), and the typed-frame port had no proxy.
#[tokio::test]
async fn every_websocket_endpoint_and_the_http_apis_work_through_nginx() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let node = || {
        let mut c = cluster_config(&redis, &prefix);
        c.pusher.apps =
            rustaxum::services::pusher::Apps::new(vec![pusher_app("front", "front-key", "front-secret-0123456789")]);
        start_deployed(c)
    };
    let (app1, a) = node().await;
    let (_app2, b) = node().await;
    let (port, rtc_port) = (free_port(), free_port());
    let _nginx = start_nginx_with_rtc(
        [(a[1].port(), a[0].port()), (b[1].port(), b[0].port())],
        port,
        Some((rtc_port, [a[2].port(), b[2].port()])),
    );
    let front = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::get(format!("http://{front}/ready"))
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "not ready through nginx");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ws = |path: &str| format!("ws://{front}{path}");
    let connect = |url: String| async move {
        let (mut socket, response) = tokio_tungstenite::connect_async(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(response.status().as_u16(), 101, "{url}");
        let first = recv_json(&mut socket).await;
        (socket, first)
    };

    // Native.
    let (_native, first) = connect(ws("/ws/general")).await;
    assert_eq!(first["event"], "subscription_succeeded");
    // Pusher.
    let (_pusher, first) = connect(ws("/app/front-key?protocol=7")).await;
    assert_eq!(first["event"], "pusher:connection_established");
    // A client offering permessage-deflate gets the extension through nginx, and a large
    // event compressed.
    let (mut zipped, agreed) = rustaxum::cli::websocket::connect(&ws("/ws/general"), 1 << 20, true)
        .await
        .expect("deflate client through nginx");
    assert_eq!(agreed.as_deref(), Some(rustaxum::cli::websocket::OFFER));
    assert_eq!(recv_json(&mut zipped).await["event"], "subscription_succeeded");
    let big = json!({"text": "through nginx, compressed ".repeat(80)});
    let body = json!({"channel": "general", "event": "big", "data": big}).to_string();
    let answer = reqwest::Client::new()
        .post(format!("http://{front}/api/broadcast"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("publish through nginx");
    assert_eq!(answer.status().as_u16(), 200);
    let event = recv_json(&mut zipped).await;
    assert_eq!(event["data"], big);
    assert_eq!(zipped.get_ref().inflated(), 1);
    // Typed frames on the main ports and on the service's own port.
    let jwt = token("7", json!({}));
    let (_typed, first) = connect(ws(&format!("/rtc/ws?token={jwt}"))).await;
    assert_eq!(first["data"]["status"], "connected", "{first}");
    let (_typed_port, first) = connect(format!("ws://127.0.0.1:{rtc_port}/ws?token={jwt}")).await;
    assert_eq!(first["data"]["status"], "connected", "{first}");
    // The dashboard's live feed.
    let (_dashboard, first) = connect(ws("/dashboard/ws")).await;
    assert!(
        first.get("connections").is_some() || first.get("stats").is_some(),
        "{first}"
    );
    // An EmitHub channel, created and started through nginx.
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("http://{front}/api/v1/channels"))
        .json(&json!({"name": "Through nginx"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();
    let started = http
        .put(format!("http://{front}/api/v1/channels/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 200);
    // The other instance learns of the start through Redis a moment later: retry while
    // nginx sends the socket there first.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_managed, first) = connect(ws(&format!("/api/v1/channels/{id}/ws"))).await;
        if first["status"] == "connected" {
            break;
        }
        assert!(Instant::now() < deadline, "{first}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // HTTP: docs, metrics, the native API and the Pusher REST API.
    for path in [
        "/docs",
        "/docs/openapi.json",
        "/metrics",
        "/api/broadcast/stats",
        "/dashboard",
    ] {
        let status = reqwest::get(format!("http://{front}{path}")).await.unwrap().status();
        assert_eq!(status.as_u16(), 200, "{path}");
    }
    let app = pusher_app("front", "front-key", "front-secret-0123456789");
    let body = json!({"name": "e", "channels": ["general"], "data": "{}"}).to_string();
    let path = signed_path(&app, "POST", "/apps/front/events", &body);
    let status = http
        .post(format!("http://{front}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    assert!(app1.hub().connection_count() > 0);
}

// Issue 34: behind the shipped nginx.conf wrong tokens were counted per TCP peer (nginx),
// so 10 wrong tokens from anyone locked the operator out. With nginx trusted
// (BROADCAST_TRUSTED_PROXIES), each client is counted under its own address: here two
// clients on two loopback addresses (127.0.0.2 guesses, 127.0.0.3 is the operator).
#[tokio::test]
async fn behind_nginx_a_guesser_is_slowed_and_the_operator_is_not_locked_out() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let node = || {
        let mut c = cluster_config(&redis, &prefix);
        c.server.api_token = Some("operator-token-0123456789".into());
        c.server.trusted_proxies = rustaxum::config::TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        start_two_ports(c)
    };
    let (app1, app2) = (node().await, node().await);
    let port = free_port();
    let ports = |s: &TestServer| (s.app_addr.expect("an application port").port(), s.addr.port());
    let _nginx = start_nginx([ports(&app1), ports(&app2)], port);
    let client = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (guesser, operator) = (client([127, 0, 0, 2]), client([127, 0, 0, 3]));
    let stats = |c: &reqwest::Client, token: &str| {
        c.get(format!("http://127.0.0.1:{port}/api/broadcast/stats"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        stats(&operator, "operator-token-0123456789").await.unwrap().status(),
        200
    );
    // Wrong tokens until both nodes (least_conn spreads the guesses) refuse the guesser.
    let mut statuses = Vec::new();
    for i in 0..40 {
        statuses.push(stats(&guesser, &format!("guess-{i}")).await.unwrap().status().as_u16());
    }
    assert!(statuses.iter().take(10).all(|s| *s == 401), "{statuses:?}");
    assert!(statuses.iter().rev().take(10).all(|s| *s == 429), "{statuses:?}");
    // The guesser's right token answers 429 too: the answer says nothing about the token.
    let right = stats(&guesser, "operator-token-0123456789").await.unwrap();
    assert_eq!(right.status(), 429);
    assert!(right.headers().contains_key("retry-after"));
    // The operator, another client behind the same nginx, is not locked out.
    for _ in 0..4 {
        assert_eq!(
            stats(&operator, "operator-token-0123456789").await.unwrap().status(),
            200
        );
    }
    // The metrics and dashboard tokens share the guesser's budget.
    let metrics = guesser
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .bearer_auth("operator-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 429);
    let dashboard = guesser
        .get(format!(
            "http://127.0.0.1:{port}/dashboard/ws?token=operator-token-0123456789"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 429);
}

/// The TLS server block as nginx.conf documents it, uncommented; `tls` is its port, the
/// certificate and key replace the Let's Encrypt paths.
fn with_tls_block(conf: &str, tls: u16, cert: &std::path::Path, key: &std::path::Path) -> String {
    let start = conf
        .find("    # TLS at nginx")
        .expect("nginx.conf documents a TLS block");
    let (before, block) = conf.split_at(start);
    let mut uncommented = String::new();
    let mut inside = false;
    for line in block.lines() {
        inside |= line.trim() == "# server {";
        match line.strip_prefix("    # ").or_else(|| (line == "    #").then_some("")) {
            Some(code) if inside => uncommented.push_str(&format!("    {code}\n")),
            _ => uncommented.push_str(&format!("{line}\n")),
        }
    }
    assert!(inside, "no `# server {{` in nginx.conf's TLS block");
    let live = "/etc/letsencrypt/live/realtime.example.com";
    assert!(uncommented.contains(&format!("{live}/fullchain.pem")) && uncommented.contains("listen 443 ssl;"));
    format!("{before}{uncommented}")
        .replace(&format!("{live}/fullchain.pem"), &cert.display().to_string())
        .replace(&format!("{live}/privkey.pem"), &key.display().to_string())
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{tls} ssl;"))
        .replace("server_name realtime.example.com;", "server_name localhost 127.0.0.1;")
}

// Issue 35: the documented TLS block used `http2 off;`, which nginx 1.22 (Debian 12) does
// not know: it did not load. Uncommented as documented it passes `nginx -t` on this
// machine's nginx and serves https and wss through the same upstreams.
#[tokio::test]
async fn the_documented_tls_block_loads_on_this_nginx_and_serves_wss() {
    let pki = crate::tls::Pki::new();
    let (cert, key) = pki.leaf("nginx");
    let node = start_two_ports(config()).await;
    let (app, ws) = (node.app_addr.expect("application port").port(), node.addr.port());
    let (port, tls) = (free_port(), free_port());
    let conf = with_tls_block(&std::fs::read_to_string("nginx.conf").unwrap(), tls, &cert, &key);
    let (dir, globals) = nginx_conf(conf, [(app, ws), (app, ws)], port, None);
    let test = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-g")
        .arg(&globals)
        .output()
        .expect("nginx");
    assert!(
        test.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let _nginx = run_nginx(dir, globals, port);

    let client = crate::tls::https(&pki.ca());
    let front = format!("https://127.0.0.1:{tls}");
    let ready = client.get(format!("{front}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let connector = {
        use rustls_pki_types::pem::PemObject;
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(pki.ca()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(config))
    };
    let (mut socket, _) = tokio_tungstenite::connect_async_tls_with_config(
        format!("wss://127.0.0.1:{tls}/ws/general"),
        None,
        false,
        Some(connector),
    )
    .await
    .expect("wss through nginx's TLS block");
    assert_eq!(recv_json(&mut socket).await["event"], "subscription_succeeded");
    let published = client
        .post(format!("{front}/api/broadcast"))
        .json(&json!({"channel": "general", "event": "over.tls", "data": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200);
    assert_eq!(recv_json(&mut socket).await["event"], "over.tls");
}
