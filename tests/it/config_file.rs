//! The configuration file, `--show-env-vars`, `--generate-config`, JSON logs and hot
//! reload (file change and SIGHUP), through the real binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

/// The server binary with none of the test runner's settings.
fn server() -> Command {
    crate::common::server_command()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rustaxum-config-{name}-{}",
        crate::common::redis::unique_prefix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the server; returns it, its base URL and its log lines.
async fn start(cmd: &mut Command) -> (Child, String, Lines<BufReader<ChildStderr>>) {
    let mut child = cmd.spawn().expect("spawn");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .expect("the server started")
        .unwrap()
        .expect("a line");
    // With LOG_FORMAT=json the line is a JSON object too.
    let line = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v["fields"]["message"].as_str().map(str::to_string))
        .unwrap_or(line);
    let url = line.strip_prefix("rustaxum listening on ").expect(&line).to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let err = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, url, err)
}

/// The next log line that satisfies `want`.
async fn log_line(lines: &mut Lines<BufReader<ChildStderr>>, want: impl Fn(&str) -> bool) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("the log ended");
            if want(&line) {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no log line as expected"))
}

/// A browser's preflight from `origin`: the allowed origin it was answered with.
async fn preflight(base: &str, origin: &str) -> Option<String> {
    let resp = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{base}/api/v1/channels"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    resp.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string())
}

/// A browser's write from `origin`.
async fn create_from(base: &str, origin: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/api/v1/channels"))
        .header("origin", origin)
        .header("content-type", "application/json")
        .body(r#"{"name":"From the browser"}"#)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Replaces the file's content without changing its modification time (written beside
/// it, dated, then renamed over it, so the server never sees a newer time).
fn write_keeping_mtime(path: &Path, text: &str) {
    let before = std::fs::metadata(path).unwrap().modified().unwrap();
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&staged)
        .unwrap()
        .set_modified(before)
        .unwrap();
    std::fs::rename(&staged, path).unwrap();
}

#[tokio::test]
async fn a_changed_file_or_sighup_reloads_cors_and_the_log_level_without_dropping_sockets() {
    let dir = temp_dir("reload");
    let file = dir.join("emit_hub.toml");
    std::fs::write(&file, "log_level = \"info\"\n[cors]\nallowed_origins = []\n").unwrap();
    let (child, base, mut log) = start(server().arg("--config").arg(&file).args(["--port", "0"])).await;
    let app = "https://app.example";
    assert_eq!(preflight(&base, app).await, None);
    assert_eq!(create_from(&base, app).await, 403);
    let ws_url = format!("{}/ws/general", base.replacen("http", "ws", 1));
    let (mut open_socket, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    crate::common::recv_json(&mut open_socket).await;

    // The file changes: the origin is allowed, the log level is debug; the port it names
    // needs a restart (and --port wins over the file anyway).
    std::fs::write(
        &file,
        format!("port = 1\nlog_level = \"debug\"\n[cors]\nallowed_origins = [\"{app}\"]\n"),
    )
    .unwrap();
    let applied = log_line(&mut log, |l| l.contains("configuration reloaded")).await;
    assert!(
        applied.contains("CORS_ALLOWED_ORIGINS") && applied.contains("RUST_LOG"),
        "{applied}"
    );
    assert!(
        !applied.contains("BROADCAST_WEBSOCKET_PORT"),
        "--port still wins: {applied}"
    );
    assert_eq!(preflight(&base, app).await.as_deref(), Some(app));
    assert_eq!(create_from(&base, app).await, 201);
    assert_eq!(create_from(&base, "https://other.example").await, 403);
    // Debug lines now appear (a socket's upgrade is logged at debug level).
    let (_second, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    log_line(&mut log, |l| l.contains("DEBUG")).await;

    // SIGHUP with a file whose modification time did not change: read again all the same.
    write_keeping_mtime(
        &file,
        "log_level = \"info\"\n[cors]\nallowed_origins = []\n[websocket]\nsend_queue_size = 100\n",
    );
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let restart = log_line(&mut log, |l| l.contains("apply only after a restart")).await;
    assert!(
        restart.contains("SIGHUP") && restart.contains("BROADCAST_SEND_QUEUE_SIZE"),
        "{restart}"
    );
    assert_eq!(preflight(&base, app).await, None);
    assert_eq!(create_from(&base, app).await, 403);

    // A broken file changes nothing and says why.
    std::fs::write(&file, "[cors]\nallowed_origins = \"https://x.example\"\nnonsense = 1\n").unwrap();
    let failed = log_line(&mut log, |l| l.contains("reload") && l.contains("failed")).await;
    assert!(failed.contains("cors.nonsense"), "{failed}");
    assert_eq!(create_from(&base, "https://x.example").await, 403);

    // The socket opened before all this is still being served.
    crate::common::send_json(&mut open_socket, serde_json::json!({"action": "ping"})).await;
    let answer = crate::common::recv_json(&mut open_socket).await;
    assert_eq!(answer["event"], "pong", "{answer}");
    drop(child);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn generate_config_prints_a_file_that_loads_back_unchanged() {
    let out = server()
        .args(["--generate-config"])
        .env("EMIT_HUB_PORT", "9123")
        .env("EMIT_HUB_CORS_ORIGINS", "https://a.example,https://b.example")
        .env("EMIT_HUB_WS_PING_INTERVAL", "45")
        .env("EMIT_HUB_PERSIST_MESSAGES", "true")
        .env("BROADCAST_API_TOKEN", "never-print-this-token-0123")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "port = 9123",
        "allowed_origins = [\"https://a.example\", \"https://b.example\"]",
        "ping_interval = 45",
        "persist_messages_default = true",
        "[cors]",
        "[websocket]",
        "[persistence]",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
    }
    assert!(!text.contains("never-print-this-token"));

    let dir = temp_dir("generate");
    let file = dir.join("emit_hub.toml");
    std::fs::write(&file, &text).unwrap();
    let again = server()
        .arg("--generate-config")
        .arg("--config")
        .arg(&file)
        .env("BROADCAST_API_TOKEN", "never-print-this-token-0123")
        .output()
        .await
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);

    // ./emit_hub.toml is read without being named.
    let again = server()
        .arg("--generate-config")
        .env("BROADCAST_API_TOKEN", "never-print-this-token-0123")
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn show_env_vars_lists_every_variable_and_its_emithub_name() {
    let out = server().arg("--show-env-vars").output().await.unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for var in rustaxum::config::vars::VARIABLES {
        assert!(text.contains(var.name), "{} missing", var.name);
        assert!(text.contains(var.key), "{} missing", var.key);
        for alias in var.aliases {
            assert!(text.contains(&format!("{alias:<38} same as {}", var.name)), "{alias}");
        }
    }
}

#[tokio::test]
async fn a_bad_file_stops_startup_naming_the_key() {
    let dir = temp_dir("bad");
    let file = dir.join("emit_hub.toml");
    for (text, key) in [
        ("[websocket]\nping_interval = \"soon\"\n", "websocket.ping_interval"),
        (
            "[persistence]\nbackup_intervall_hours = 2\n",
            "persistence.backup_intervall_hours",
        ),
        ("port = \"eighty\"\n", "port"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = server().arg("--config").arg(&file).output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&file.display().to_string()) && err.contains(key), "{err}");
    }
    let out = server()
        .arg("--config")
        .arg(dir.join("missing.toml"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn log_format_json_writes_one_object_per_line() {
    let (child, _base, mut log) = start(server().args(["--port", "0"]).env("LOG_FORMAT", "json")).await;
    let line = log_line(&mut log, |l| l.contains("listening")).await;
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(entry["level"], "INFO");
    assert!(entry["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("rustaxum listening on"));
    assert!(entry["timestamp"].is_string());
    drop(child);
}

#[tokio::test]
async fn a_reload_reaches_the_running_limits_and_emithub_defaults() {
    use rustaxum::config::ConfigFile;
    let read = |text: &str| {
        let file = ConfigFile::parse(Path::new("emit_hub.toml"), text).unwrap();
        rustaxum::Config::from_parts(&|k| (k == "EMIT_HUB_DB_PATH").then(|| ":memory:".into()), Some(file)).unwrap()
    };
    let app = rustaxum::Rustaxum::new(read("max_connections_per_channel = 10\n")).unwrap();
    let server = crate::common::start_app(app.clone()).await;
    let fresh = read(
        "max_connections_per_channel = 20\n[persistence]\nmessage_retention_days = 7\n\
         [websocket]\nmax_connections = 1\nping_interval = 45\nmax_channels_per_connection = 5\n",
    );
    let done = app.reload(&fresh).unwrap();
    let names: Vec<&str> = done.applied.iter().map(|v| v.name).collect();
    assert_eq!(
        names,
        [
            "EMIT_HUB_MAX_CONNECTIONS",
            "BROADCAST_PING_INTERVAL",
            "BROADCAST_MAX_CONNECTIONS",
            "EMIT_HUB_MESSAGE_RETENTION_DAYS"
        ]
    );
    assert_eq!(
        done.need_restart.iter().map(|v| v.name).collect::<Vec<_>>(),
        ["BROADCAST_MAX_CHANNELS_PER_CONNECTION"]
    );
    assert_eq!(app.node().limits().max_connections, 1);
    assert_eq!(app.node().limits().ping_interval, Duration::from_secs(45));
    assert_eq!(app.emithub().default_settings().max_connections, 20);
    assert_eq!(app.emithub().config().message_retention_days, 7);
    assert_eq!(
        app.config().websocket.max_channels_per_connection,
        100,
        "kept until a restart"
    );
    // The new connection limit holds for the next socket.
    let (_first, _) = server.connect("/ws/general").await;
    let refused = tokio_tungstenite::connect_async(server.ws_url("/ws/general")).await;
    assert!(refused.is_err(), "a second socket is over BROADCAST_MAX_CONNECTIONS=1");
    // A new host needs a restart: the running one is kept, the rest applies.
    let moved = read("host = \"0.0.0.0\"\nmax_connections_per_channel = 30\n");
    let done = app.reload(&moved).unwrap();
    assert_eq!(
        done.need_restart.iter().map(|v| v.name).collect::<Vec<_>>(),
        ["BROADCAST_HOST"]
    );
    assert_eq!(app.config().server.host.to_string(), "127.0.0.1");
    assert_eq!(app.emithub().default_settings().max_connections, 30);
}
