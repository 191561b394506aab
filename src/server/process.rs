//! The server as a process: binding the configured ports, signals, reloading the
//! configuration on SIGHUP or when its file changes, the open-files limit, logging.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::vars::Variable;
use crate::config::Config;

/// The server process: binds the configured ports (the WebSocket port, then the
/// application port, then the typed-frame port), installs the app's manager as the
/// process's facade, reloads the configuration on SIGHUP or when its file changes, and
/// serves until SIGINT or SIGTERM.
pub async fn run_process(config: Config) -> Result<(), StartError> {
    config.validate_for_serving()?;
    raise_open_files_limit();
    let server = config.server.clone();
    let app = Rustaxum::builder(config).facade().build()?;
    // Started before any port is bound or announced: a database that cannot be used stops
    // the process before it says it is listening.
    app.start()?;
    let shutdown = shutdown_signal();
    let explicit = server.explicit_ports;
    let mut bound: Vec<(TcpListener, &str)> = Vec::new();
    let websocket = SocketAddr::new(server.host, server.port);
    if let Some(l) = bind(websocket, "BROADCAST_WEBSOCKET_PORT", explicit.websocket).await? {
        bound.push((l, ""));
    }
    // The same port twice is one listener (0 means "any free port", so two of them).
    if let Some(port) = server.app_port.filter(|p| *p != server.port || *p == 0) {
        let addr = SocketAddr::new(server.host, port);
        if let Some(l) = bind(addr, "BROADCAST_APP_PORT", explicit.app).await? {
            bound.push((l, " (application port)"));
        }
    }
    if bound.is_empty() {
        return Err(StartError::NoListener(
            "the default ports are taken; set BROADCAST_WEBSOCKET_PORT or BROADCAST_APP_PORT".into(),
        ));
    }
    let scheme = if app.tls().is_some() { "https" } else { "http" };
    for (l, role) in &bound {
        let local = l.local_addr()?;
        tracing::info!(driver = %app.manager().default_driver_name(), "rustaxum listening on {scheme}://{local}{role}");
        say(&format!("rustaxum listening on {scheme}://{local}{role}"));
    }
    announce(&app.config());
    let router = app.router()?;
    let mut listeners: Vec<(TcpListener, Router)> = bound.into_iter().map(|(l, _)| (l, router.clone())).collect();
    // The typed-frame service's own port (BROADCAST_RTC_PORT), where /ws speaks typed frames.
    let rtc = app.state.rtc.config().clone();
    if let (Some(port), true) = (rtc.port, app.config().websocket.enabled) {
        let addr = SocketAddr::new(server.host, port);
        if let Some(l) = bind(addr, "BROADCAST_RTC_PORT", rtc.explicit_port).await? {
            let local = l.local_addr()?;
            let ws = if app.tls().is_some() { "wss" } else { "ws" };
            tracing::info!("typed-frame service listening on {ws}://{local}/ws");
            say(&format!(
                "rustaxum listening on {scheme}://{local} (typed frames at /ws)"
            ));
            listeners.push((l, protocol::rtc_router(app.state.clone())?));
        }
    }
    let watcher = CancellationToken::new();
    tokio::spawn(watch_config(app.clone(), watcher.clone()));
    // Every port is bound (connections queue in the kernel until the loop accepts them):
    // a `Type=notify` unit is started once Redis answers too.
    tokio::spawn(ready_when_reached(app.state.cluster.clone()));
    let result = app.serve(listeners, shutdown).await;
    watcher.cancel();
    result
}

/// Says READY=1 to systemd once the cluster link (when clustered) is healthy.
async fn ready_when_reached(cluster: Option<Arc<crate::cluster::redis::RedisBroker>>) {
    use crate::cluster::Broker;
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Some(broker) = cluster {
        if !broker.healthy() {
            tracing::info!("telling systemd the service is ready once Redis answers");
        }
        while !broker.healthy() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    notify_systemd("READY=1");
}

/// Tells systemd about the service's state (`READY=1`, `STOPPING=1`) when it runs as a
/// `Type=notify` unit: a datagram to `$NOTIFY_SOCKET` (a path, or an abstract name after
/// `@`). Nothing happens outside systemd; a failure is logged at debug, never fatal.
pub(super) fn notify_systemd(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_notify(&socket, state) {
        tracing::debug!(error = %e, "could not notify systemd ({state})");
    }
}

fn send_notify(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            UnixAddr::from_abstract_name(name)?
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => return Err(std::io::Error::other("abstract sockets need Linux")),
        None => UnixAddr::from_pathname(std::path::Path::new(socket))?,
    };
    let sender = UnixDatagram::unbound()?;
    sender.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Says at start what is live: the configuration's notes (a Laravel `.env`'s settings and
/// what rustaxum does with them), the Pusher apps, and who can join private and presence
/// channels.
fn announce(config: &Config) {
    for note in &config.notes {
        if note.warn {
            tracing::warn!("{}", note.text);
        } else {
            tracing::info!("{}", note.text);
        }
    }
    if let Some(redis) = config.redis_summary() {
        tracing::info!("{redis}");
    }
    let apps = &config.pusher.apps;
    let jwt = match &config.auth.jwt {
        Some(j) => format!("JWT ({:?})", j.algorithm),
        None => "JWT (off: no JWT_SECRET or JWT_PUBLIC_KEY_FILE)".to_string(),
    };
    match apps.default_app() {
        None => tracing::info!(
            "Pusher protocol: no app configured (PUSHER_APP_ID/KEY/SECRET, REVERB_APP_ID/KEY/SECRET or \
             PUSHER_APPS_FILE): Pusher clients are refused with 4001"
        ),
        Some(default) => {
            let ids: Vec<&str> = apps.iter().map(|a| a.id.as_str()).collect();
            tracing::info!(apps = %ids.join(","), default = %default.id, "Pusher protocol: {} app(s), key {} is the default app", ids.len(), default.key);
        }
    }
    match (apps.default_app(), config.auth.jwt.is_some()) {
        (Some(app), _) => tracing::info!(
            "private/presence channels: signed by the app's own auth endpoint (Laravel's /broadcasting/auth, app {}) \
             and {jwt} for rustaxum's /broadcasting/auth, native and typed-frame clients",
            app.id
        ),
        (None, true) => tracing::info!("private/presence channels: {jwt}"),
        (None, false) => tracing::warn!(
            "no JWT key configured (JWT_SECRET or JWT_PUBLIC_KEY_FILE) and no Pusher app: only public channels can be joined"
        ),
    }
}

/// How often the configuration file's modification time is checked.
const CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Reloads the configuration and the TLS certificate on SIGHUP, the configuration when
/// its file changes, and the certificate when its files change.
async fn watch_config(app: Rustaxum, stop: CancellationToken) {
    let tls = app.tls().cloned();
    let path = app.config().sources.file.as_ref().map(|f| f.path.clone());
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = path.as_deref().and_then(modified);
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the configuration reloads only when its file changes");
            None
        }
    };
    let mut poll = tokio::time::interval(CONFIG_POLL);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let why = tokio::select! {
            _ = stop.cancelled() => return,
            _ = hangup => {
                if let Some(tls) = &tls {
                    tls_reloaded(Some(tls.reload()), "SIGHUP");
                }
                "SIGHUP"
            }
            _ = poll.tick() => {
                if let Some(tls) = &tls {
                    tls_reloaded(tls.reload_if_changed(), "the certificate files changed");
                }
                let now = path.as_deref().and_then(modified);
                if now == last {
                    continue;
                }
                last = now;
                "the configuration file changed"
            }
        };
        reload_now(&app, path.as_deref(), why);
    }
}

/// Logs a TLS reload's outcome (`None`: nothing changed).
fn tls_reloaded(outcome: Option<Result<tls::CertInfo, tls::TlsError>>, why: &str) {
    match outcome {
        // The certificate itself was announced (subject, dates, a warning if invalid).
        Some(Ok(info)) => tracing::info!("TLS certificate reloaded ({why}): {}", info.subject),
        Some(Err(e)) => {
            tracing::error!(error = %e, "TLS certificate reload ({why}) failed; the current certificate is kept")
        }
        None => {}
    }
}

fn reload_now(app: &Rustaxum, path: Option<&std::path::Path>, why: &str) {
    let names = |vars: &[&Variable]| vars.iter().map(|v| v.name).collect::<Vec<_>>().join(", ");
    let fresh = match Config::load_with(path, &app.config().sources.overrides) {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::error!(error = %e, "configuration reload ({why}) failed; the running configuration is kept");
            return;
        }
    };
    match app.reload(&fresh) {
        Ok(done) if done.applied.is_empty() && done.need_restart.is_empty() => {
            tracing::info!("configuration reloaded ({why}): nothing changed");
        }
        Ok(done) => {
            if !done.applied.is_empty() {
                tracing::info!(applied = %names(&done.applied), "configuration reloaded ({why})");
            }
            if !done.need_restart.is_empty() {
                tracing::warn!(
                    settings = %names(&done.need_restart),
                    "configuration reloaded ({why}): these changed but apply only after a restart; their running values are kept"
                );
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload ({why}) refused; the running configuration is kept")
        }
    }
}

/// Binds `addr`. A port the operator set must bind (or start-up stops naming it); a
/// default one that is taken is skipped with a warning.
async fn bind(addr: SocketAddr, var: &'static str, explicit: bool) -> Result<Option<TcpListener>, StartError> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(source) if explicit => Err(StartError::Bind { var, addr, source }),
        Err(e) => {
            tracing::warn!("{addr} ({var}, default) is not available ({e}); skipped, set {var} to choose another port");
            Ok(None)
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every socket is a file, and
/// the usual soft default (1,024) would cap the server far below what it can hold.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled,
/// so a signal that arrives right after start-up is not fatal.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {},
                        _ = term.recv() => {},
                    }
                }
                (int, term) => {
                    let e = int.err().or(term.err()).map(|e| e.to_string()).unwrap_or_default();
                    tracing::error!(error = %e, "cannot listen for SIGINT/SIGTERM; stop the server with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Whether logs are JSON (`LOG_FORMAT=json`): then stdout's lines are JSON too.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes a line for scripts to stdout (`rustaxum listening on ...`): plain text, or with
/// `LOG_FORMAT=json` a JSON object shaped as the log's own lines ([`json_line`]), so a
/// merged stream stays JSON. A closed stdout (`rustaxum | head -1`) is not an error.
pub fn say(line: &str) {
    use std::io::Write;
    let text = if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        json_line("INFO", line)
    } else {
        line.to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// One line in the shape of the JSON log (`tracing-subscriber`'s): `timestamp` (RFC 3339,
/// UTC, microseconds), `level`, `fields.message` and `target`. For what is written
/// outside the log: stdout's lines and the errors that stop start-up.
pub fn json_line(level: &str, message: &str) -> String {
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    serde_json::json!({
        "timestamp": timestamp,
        "level": level,
        "fields": {"message": message},
        "target": "rustaxum",
    })
    .to_string()
}

/// Whether log lines get colours: only on a terminal, and not with `NO_COLOR` set
/// (no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

type FilterHandle = tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The log filter installed by [`init_tracing`], replaced on reload.
static LOG_FILTER: std::sync::OnceLock<FilterHandle> = std::sync::OnceLock::new();

/// Logs to stderr as `log` says: filtered by `RUST_LOG` (default `info`), as text or
/// one JSON object per line (`LOG_FORMAT=json`). The filter can be changed later
/// ([`set_log_filter`], used by a configuration reload).
pub fn init_tracing(log: &crate::config::LogConfig) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let json = log.format == crate::config::LogFormat::Json;
    JSON_LOGS.store(json, std::sync::atomic::Ordering::Relaxed);
    let installed = match log.format {
        crate::config::LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        crate::config::LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = LOG_FILTER.set(handle);
    }
}

/// Replaces the log filter installed by [`init_tracing`]; false when there is none (the
/// application installed its own subscriber) or `filter` is invalid.
pub fn set_log_filter(filter: &str) -> bool {
    let (Some(handle), Ok(filter)) = (LOG_FILTER.get(), tracing_subscriber::EnvFilter::try_new(filter)) else {
        return false;
    };
    handle.reload(filter).is_ok()
}
