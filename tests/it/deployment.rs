//! Deployment smoke test: nginx with the repository's own nginx.conf (upstream addresses
//! and listen port substituted) in front of two instances sharing a real Redis.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::redis::{unique_prefix, RedisServer};
use crate::common::*;
use serde_json::json;

struct Nginx {
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// nginx with the repository's config; `apps` are the (application, WebSocket) ports of
/// the two instances.
fn start_nginx(apps: [(u16, u16); 2], port: u16) -> Nginx {
    let conf = std::fs::read_to_string("nginx.conf").expect("the repository's nginx.conf");
    let needles = [
        "server app1:3000",
        "server app2:3000",
        "server app1:8080",
        "server app2:8080",
        "listen 80;",
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
    let dir = std::env::temp_dir().join(format!("rustaxum-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let globals = format!(
        "daemon off; pid {0}/nginx.pid; error_log {0}/logs/error.log;{1}",
        dir.display(),
        // As root, workers would switch to "nobody", who cannot use this temp dir.
        if is_root() { " user root;" } else { "" }
    );
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

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
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
