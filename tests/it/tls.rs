//! TLS in the server (`BROADCAST_TLS_CERT`, `BROADCAST_TLS_KEY`), with a CA and
//! certificates the test makes with `openssl`: the native HTTP API over https (reqwest
//! trusting the CA), a Python `websockets` client and pusher-js (`forceTLS`) over wss,
//! certificate rotation without a restart, and clear start-up errors.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

/// A CA and leaf certificates it signs, in a temporary directory.
pub(crate) struct Pki {
    pub(crate) dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("rustaxum-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=rustaxum test CA",
            ],
        );
        Self { dir }
    }

    /// A leaf for 127.0.0.1 and localhost named `name` (its CN), signed by the CA.
    pub(crate) fn leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        )
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// The binary serving TLS with `cert` and `key` (copied to the files it watches).
async fn tls_server(cert: &Path, key: &Path, env: &[(&str, &str)]) -> (tokio::process::Child, u16) {
    let mut cmd = server_command();
    cmd.args(["--port", "0"])
        .env("BROADCAST_TLS_CERT", cert)
        .env("BROADCAST_TLS_KEY", key)
        .envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default();
    let port = line
        .strip_prefix("rustaxum listening on https://127.0.0.1:")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

pub(crate) fn https(ca: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder().add_root_certificate(ca).build().unwrap()
}

/// The next message the Python client printed.
async fn next(printed: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> serde_json::Value {
    let line = tokio::time::timeout(Duration::from_secs(10), printed.next_line())
        .await
        .expect("a message")
        .unwrap();
    serde_json::from_str(&line.expect("the client printed")).unwrap()
}

/// The status of `GET {base}/health`.
async fn health(client: &reqwest::Client, base: &str) -> u16 {
    client
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The CN of the certificate the server presents now.
fn served_cn(port: u16) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn https_and_wss_for_every_client_and_a_rotation_without_restart() {
    let pki = Pki::new();
    let (first_cert, first_key) = pki.leaf("first");
    let (cert, key) = (pki.dir.join("live.pem"), pki.dir.join("live.key"));
    std::fs::copy(&first_cert, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let (child, port) = tls_server(&cert, &key, &[("BROADCAST_PUBLIC_CHANNELS", "secure-news")]).await;
    let client = https(&pki.ca());
    let base = format!("https://127.0.0.1:{port}");
    assert_eq!(health(&client, &base).await, 200);
    assert!(served_cn(port).contains("CN = first"), "{}", served_cn(port));
    // Plain HTTP on the TLS port is not served.
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/health")).await.is_err());

    // A Python websockets client over wss, kept open across the rotation.
    let python = "target/emithub-venv/bin/python";
    assert!(Path::new(python).exists(), "scripts/test makes the venv");
    let mut py = tokio::process::Command::new(python)
        .args(["tests/tls/client.py", &format!("wss://127.0.0.1:{port}/ws/secure-news")])
        .arg(pki.ca())
        .args(["3", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut printed = BufReader::new(py.stdout.take().unwrap()).lines();
    assert_eq!(next(&mut printed).await["event"], "subscription_succeeded");
    let publish = |event: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .post(format!("{base}/api/broadcast"))
                .json(&serde_json::json!({"channel": "secure-news", "event": event, "data": {}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    };
    publish("before").await;
    assert_eq!(next(&mut printed).await["event"], "before");

    // Rotation: new files in place; new connections get the new certificate within the
    // poll (1 s), the open socket keeps going.
    let (second_cert, second_key) = pki.leaf("second");
    std::fs::copy(&second_key, &key).unwrap();
    std::fs::copy(&second_cert, &cert).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !served_cn(port).contains("CN = second") {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publish("after").await;
    assert_eq!(
        next(&mut printed).await["event"],
        "after",
        "the open socket is unaffected"
    );

    // A broken pair on disk is refused; the current certificate stays.
    std::fs::copy(&first_key, &key).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(served_cn(port).contains("CN = second"));
    assert_eq!(health(&client, &base).await, 200);
    terminate(child).await;
}

#[tokio::test]
async fn pusher_js_with_force_tls() {
    assert!(
        Path::new("tests/pusher/node_modules").exists(),
        "scripts/test runs npm ci"
    );
    let pki = Pki::new();
    let (cert, key) = pki.leaf("pusher");
    let (child, port) = tls_server(
        &cert,
        &key,
        &[
            ("PUSHER_APP_ID", "tls"),
            ("PUSHER_APP_KEY", "tls-key"),
            ("PUSHER_APP_SECRET", "tls-secret-0123456789"),
        ],
    )
    .await;
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-force-exit", "tests/pusher/tls.mjs"])
        .env("RX_PORT", port.to_string())
        .env("NODE_EXTRA_CA_CERTS", pki.ca())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("# fail 0"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    terminate(child).await;
}

#[tokio::test]
async fn a_missing_or_mismatched_certificate_stops_start_up_by_name() {
    let pki = Pki::new();
    let (cert, _) = pki.leaf("one");
    let (_, other_key) = pki.leaf("two");
    let run = |cert: PathBuf, key: PathBuf| async move {
        let out = server_command()
            .args(["--port", "0"])
            .env("BROADCAST_TLS_CERT", cert)
            .env("BROADCAST_TLS_KEY", key)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(cert.clone(), other_key).await;
    assert!(err.contains("does not belong to BROADCAST_TLS_CERT"), "{err}");
    let err = run(pki.dir.join("nope.pem"), pki.dir.join("nope.key")).await;
    assert!(
        err.contains("BROADCAST_TLS_CERT=") && err.contains("No such file"),
        "{err}"
    );
    let out = server_command()
        .env("BROADCAST_TLS_CERT", &cert)
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("BROADCAST_TLS_KEY"));
}

// The benchmark client speaks TLS too (`TLS=1 scripts/bench`): wss:// sockets and https://
// publishes trusting the test's CA.
#[tokio::test]
async fn the_benchmark_client_runs_over_tls() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("bench");
    let (child, port) = tls_server(&cert, &key, &[("BROADCAST_PUBLIC_CHANNELS", "bench")]).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"))
        .args(["--server", &format!("https://127.0.0.1:{port}"), "broadcast", "bench"])
        .args(["--connections", "20", "--messages", "3", "--ca"])
        .arg(pki.ca())
        .env_remove("BROADCAST_API_TOKEN")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("3 × 20 subscribers = 60 deliveries"), "{text}");
    terminate(child).await;
}

/// A self-signed certificate for 127.0.0.1 named `name`, valid from `from` to `until`
/// (years, months, days), written to `dir`.
fn dated(dir: &Path, name: &str, from: (i32, u8, u8), until: (i32, u8, u8)) -> (PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// What the binary logs within `wait` when started with `cert` and `key`; and it, running.
async fn logs_with(
    cert: &Path,
    key: &Path,
    wait: Duration,
) -> (
    tokio::process::Child,
    u16,
    String,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
) {
    let mut cmd = server_command();
    cmd.args(["--port", "0"])
        .env("BROADCAST_TLS_CERT", cert)
        .env("BROADCAST_TLS_KEY", key);
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default();
    let port = line.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let mut logged = String::new();
    let _ = tokio::time::timeout(wait, async {
        while let Ok(Some(l)) = err.next_line().await {
            logged.push_str(&l);
            logged.push('\n');
        }
    })
    .await;
    (child, port, logged, err)
}

// Issue 34: expired certificates were served without a word, at start and on rotation; a
// certificate that does not parse was reported as a key mismatch.
#[tokio::test]
async fn certificates_that_are_not_valid_now_are_warned_about_with_their_dates() {
    let dir = std::env::temp_dir().join(format!("rustaxum-tls-dates-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (expired, expired_key) = dated(&dir, "old.example", (2020, 1, 1), (2021, 1, 1));
    let (child, port, logged, _) = logs_with(&expired, &expired_key, Duration::from_millis(1500)).await;
    assert!(
        logged.contains("WARN") && logged.contains("TLS certificate loaded: CN=old.example, valid 2020-01-01T00:00:00+00:00 to 2021-01-01T00:00:00+00:00: it is expired"),
        "{logged}"
    );
    // /metrics tells when the served certificate expires.
    let insecure = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let metrics = insecure
        .get(format!("https://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rustaxum_tls_certificate_expiry_timestamp_seconds 1609459200"),
        "{metrics}"
    );
    drop(child);
    // Rotation to a certificate not valid yet: warned about, and the rotation names it.
    let (fresh, fresh_key) = dated(&dir, "now.example", (2025, 1, 1), (2099, 1, 1));
    let (child, port, _, mut err) = logs_with(&fresh, &fresh_key, Duration::from_millis(300)).await;
    let (future, future_key) = dated(&dir, "future.example", (2098, 1, 1), (2099, 1, 1));
    std::fs::copy(&future, &fresh).unwrap();
    std::fs::copy(&future_key, &fresh_key).unwrap();
    let rotated = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = String::new();
        while let Ok(Some(l)) = err.next_line().await {
            seen.push_str(&l);
            seen.push('\n');
            if l.contains("TLS certificate reloaded") {
                break;
            }
        }
        seen
    })
    .await
    .expect("the rotation is logged");
    assert!(
        rotated.contains("TLS certificate rotated: CN=future.example") && rotated.contains("it is not yet valid"),
        "{rotated}"
    );
    assert!(
        rotated.contains("TLS certificate reloaded (") && rotated.contains("CN=future.example"),
        "{rotated}"
    );
    let metrics = insecure
        .get(format!("https://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rustaxum_tls_certificate_expiry_timestamp_seconds 4070908800"),
        "{metrics}"
    );
    drop(child);
    // A PEM block that is no certificate: said so, not "the key does not belong".
    let broken = dir.join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAAAAAAAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let out = server_command()
        .args(["--port", "0"])
        .env("BROADCAST_TLS_CERT", &broken)
        .env("BROADCAST_TLS_KEY", &fresh_key)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not a valid X.509 certificate") && !err.contains("does not belong"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// artisan reaches a TLS node (issue 35): it trusts `--ca` and SSL_CERT_FILE, skips the
// check with `--insecure`, says "pass --ca" when the issuer is unknown, and speaks https://
// by itself beside a `.env` that configures BROADCAST_TLS_CERT.
#[tokio::test]
async fn artisan_reaches_a_tls_node_and_says_what_to_pass_when_it_cannot() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("artisan");
    let (child, port) = tls_server(&cert, &key, &[]).await;
    let server = format!("https://127.0.0.1:{port}");
    let dir = pki.dir.join("node");
    std::fs::create_dir_all(&dir).unwrap();
    let artisan = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_artisan"));
        for (k, _) in std::env::vars() {
            if k.starts_with("BROADCAST_") || k == "SSL_CERT_FILE" {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(&dir).args(args);
        cmd
    };
    let stats = |out: &std::process::Output| {
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        (out.status.code(), format!("{o}{e}"))
    };

    let (code, text) = stats(
        &artisan(&["broadcast", "stats", "--server", &server])
            .output()
            .await
            .unwrap(),
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("pass --ca FILE"), "{text}");
    let plain = format!("http://127.0.0.1:{port}");
    let (code, text) = stats(
        &artisan(&["broadcast", "stats", "--server", &plain])
            .output()
            .await
            .unwrap(),
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("use https://"), "{text}");

    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    for (how, mut cmd) in [
        (
            "--ca",
            artisan(&["broadcast", "stats", "--server", &server, "--ca", ca]),
        ),
        (
            "--ca before broadcast",
            artisan(&["--ca", ca, "broadcast", "stats", "--server", &server]),
        ),
        (
            "--insecure",
            artisan(&["broadcast", "stats", "--server", &server, "--insecure"]),
        ),
        ("SSL_CERT_FILE", {
            let mut c = artisan(&["broadcast", "stats", "--server", &server]);
            c.env("SSL_CERT_FILE", ca);
            c
        }),
    ] {
        let (code, text) = stats(&cmd.output().await.unwrap());
        assert_eq!(code, Some(0), "{how}: {text}");
        assert!(text.contains("onnections"), "{how}: {text}");
    }

    // Beside the node's .env, no --server: https:// on its port.
    std::fs::write(
        dir.join(".env"),
        format!(
            "BROADCAST_TLS_CERT={}\nBROADCAST_TLS_KEY={}\nBROADCAST_WEBSOCKET_PORT={port}\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let (code, text) = stats(&artisan(&["broadcast", "stats", "--ca", ca]).output().await.unwrap());
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = stats(&artisan(&["broadcast", "stats"]).output().await.unwrap());
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("https://127.0.0.1:{port}")) && text.contains("--ca"),
        "{text}"
    );
    terminate(child).await;
}
