//! TLS on every listener (`BROADCAST_TLS_CERT`, `BROADCAST_TLS_KEY`): rustls, HTTP/1.1
//! (WebSocket upgrades), the certificate read again on SIGHUP and when its files change.
//! A new certificate serves new connections; open ones keep the one they started with.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Why the certificate or key could not be used; names the file and the variable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{var}={path}: {reason}")]
    File {
        /// `BROADCAST_TLS_CERT` or `BROADCAST_TLS_KEY`.
        var: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key is not the certificate's (or rustls refused the pair).
    #[error("BROADCAST_TLS_KEY={key} does not belong to BROADCAST_TLS_CERT={cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// Why.
        reason: String,
    },
}

/// What the operator needs to know of a certificate: whose it is and when it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The leaf certificate's subject (`CN=realtime.example.com`).
    pub subject: String,
    /// Valid from (Unix seconds).
    pub not_before: i64,
    /// Valid until (Unix seconds).
    pub not_after: i64,
}

impl CertInfo {
    fn date(secs: i64) -> String {
        chrono::DateTime::from_timestamp(secs, 0).map_or_else(|| secs.to_string(), |d| d.to_rfc3339())
    }

    /// `subject, valid <from> to <until>`.
    pub fn describe(&self) -> String {
        format!(
            "{}, valid {} to {}",
            self.subject,
            Self::date(self.not_before),
            Self::date(self.not_after)
        )
    }

    /// Why the certificate is not valid now, if it is not.
    pub fn invalid_now(&self) -> Option<&'static str> {
        let now = chrono::Utc::now().timestamp();
        if now > self.not_after {
            Some("expired")
        } else if now < self.not_before {
            Some("not yet valid")
        } else {
            None
        }
    }

    /// Logs what is served: the subject and dates, and a warning when it is not valid now
    /// (clients refuse it: the server serves it anyway, so that a clock or a renewal can be
    /// fixed without a restart).
    fn announce(&self, what: &str) {
        match self.invalid_now() {
            Some(why) => tracing::warn!(
                "TLS certificate {what}: {}: it is {why}; clients will refuse it (renew it: the files are read again on SIGHUP and when they change)",
                self.describe()
            ),
            None => tracing::info!("TLS certificate {what}: {}", self.describe()),
        }
    }
}

/// The subject and validity of the chain's first (leaf) certificate.
fn inspect(leaf: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| e.to_string())?;
    let validity = cert.validity();
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// The current certificate, shared with rustls.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// TLS for the server's listeners.
pub struct Tls {
    files: TlsFiles,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
    /// The files' modification times when last read.
    seen: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
    /// The served certificate's subject and dates.
    info: std::sync::Mutex<CertInfo>,
    /// Its expiry (Unix seconds), for `/metrics`.
    expiry: Arc<std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads and checks a certificate chain and its key.
fn load(files: &TlsFiles) -> Result<(CertifiedKey, CertInfo), TlsError> {
    let file_error = |var: &'static str, path: &Path, reason: String| TlsError::File {
        var,
        path: path.display().to_string(),
        reason,
    };
    let cert_pem =
        std::fs::read(&files.cert).map_err(|e| file_error("BROADCAST_TLS_CERT", &files.cert, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("BROADCAST_TLS_CERT", &files.cert, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(
            "BROADCAST_TLS_CERT",
            &files.cert,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    // A certificate that does not parse is said to be one, not a key that does not match.
    let info = inspect(&chain[0]).map_err(|e| {
        file_error(
            "BROADCAST_TLS_CERT",
            &files.cert,
            format!("the first certificate is not a valid X.509 certificate: {e}"),
        )
    })?;
    let key_pem = std::fs::read(&files.key).map_err(|e| file_error("BROADCAST_TLS_KEY", &files.key, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        file_error(
            "BROADCAST_TLS_KEY",
            &files.key,
            format!("no private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })?;
    let key = CertifiedKey::from_der(chain, key, &ring::default_provider()).map_err(|e| TlsError::Mismatch {
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((key, info))
}

impl Tls {
    /// TLS with the certificate and key of `files`, checked now.
    /// `expiry` is kept at the served certificate's expiry (Unix seconds).
    pub fn new(files: TlsFiles, expiry: Arc<std::sync::atomic::AtomicI64>) -> Result<Arc<Self>, TlsError> {
        let seen = (modified(&files.cert), modified(&files.key));
        let (key, info) = load(&files)?;
        info.announce("loaded");
        expiry.store(info.not_after, std::sync::atomic::Ordering::Relaxed);
        let current = Arc::new(Current(ArcSwap::from_pointee(key)));
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Mismatch {
                cert: files.cert.display().to_string(),
                key: files.key.display().to_string(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // WebSocket upgrades are HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(Self {
            files,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            seen: std::sync::Mutex::new(seen),
            info: std::sync::Mutex::new(info),
            expiry,
        }))
    }

    /// The served certificate's subject and dates.
    pub fn info(&self) -> CertInfo {
        crate::sync::lock(&self.info).clone()
    }

    /// What accepts TLS connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again and serves the new certificate from the next connection on.
    /// A bad new pair is refused and the current one kept.
    pub fn reload(&self) -> Result<CertInfo, TlsError> {
        let seen = (modified(&self.files.cert), modified(&self.files.key));
        let (key, info) = load(&self.files)?;
        self.current.0.store(Arc::new(key));
        *crate::sync::lock(&self.seen) = seen;
        *crate::sync::lock(&self.info) = info.clone();
        self.expiry.store(info.not_after, std::sync::atomic::Ordering::Relaxed);
        info.announce("rotated");
        Ok(info)
    }

    /// Reloads when either file changed since it was last read (certificate rotation by
    /// certbot and the like); `Some` with the outcome when it did.
    pub fn reload_if_changed(&self) -> Option<Result<CertInfo, TlsError>> {
        let now = (modified(&self.files.cert), modified(&self.files.key));
        if *crate::sync::lock(&self.seen) == now {
            return None;
        }
        let outcome = self.reload();
        if outcome.is_err() {
            // Do not retry the same broken files every second; the next change will.
            *crate::sync::lock(&self.seen) = now;
        }
        Some(outcome)
    }
}
