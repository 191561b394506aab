//! Whom the CLI trusts over `https://` and `wss://`: the public CAs (webpki roots), the
//! PEM file `SSL_CERT_FILE` names (as curl and OpenSSL read it), and `--ca FILE`; or,
//! with `--insecure`, any certificate. One TLS configuration serves the HTTP client and
//! the WebSocket connector alike.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;

use super::client::CliError;

/// The CLI's TLS trust.
#[derive(Debug, Clone)]
pub struct Trust {
    config: Arc<rustls::ClientConfig>,
}

impl Trust {
    /// The public CAs, `SSL_CERT_FILE` (when set) and `ca` (when given); `insecure`
    /// accepts any certificate instead (the handshake is still checked, the name and the
    /// issuer are not).
    pub fn new(ca: Option<&Path>, insecure: bool) -> Result<Self, CliError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| CliError::Usage(format!("TLS: {e}")))?;
        let config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
                add_pem(&mut roots, Path::new(&file), "SSL_CERT_FILE")?;
            }
            if let Some(ca) = ca {
                add_pem(&mut roots, ca, "--ca")?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// An HTTP client builder using this trust.
    pub fn http(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder().use_preconfigured_tls((*self.config).clone())
    }

    /// The connector for `wss://` URLs.
    pub fn connector(&self) -> tokio_tungstenite::Connector {
        tokio_tungstenite::Connector::Rustls(self.config.clone())
    }
}

/// Adds the certificates of the PEM file `file` (named `what` in errors).
fn add_pem(roots: &mut rustls::RootCertStore, file: &Path, what: &str) -> Result<(), CliError> {
    use rustls_pki_types::pem::PemObject;
    let bad = |e: String| CliError::Usage(format!("{what} {}: {e}", file.display()));
    let pem = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    let mut added = 0;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(())
}

/// What to do about a failed connection, from its root cause.
pub(crate) fn hint(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase().replace(' ', "");
    if r.contains("unknownissuer") || r.contains("unknownca") {
        "the server's certificate is not signed by a CA this machine trusts: pass --ca FILE \
         with its CA (or set SSL_CERT_FILE), or --insecure to skip the check"
    } else if r.contains("notvalidforname") {
        "the server's certificate does not name this address: use --server https://NAME:PORT \
         with a name it has, or --insecure"
    } else if r.contains("causedasendentity") {
        "the server presents a CA certificate as its own (a self-signed one from `openssl req \
         -x509`?): serve a certificate a CA signed and pass --ca FILE with that CA, or --insecure"
    } else if r.contains("expired") || r.contains("notvalidyet") {
        "the server's certificate is not valid now (expired, or this machine's clock is wrong)"
    } else if r.contains("invalidcontenttype") || r.contains("corruptmessage") || r.contains("wrongversion") {
        "it does not speak TLS there: use http://"
    } else if r.contains("invalidhttpversionparsed") {
        "it answers TLS there, not plain HTTP: use https://"
    } else if r.contains("connectionclosedbeforemessagecompleted") || r.contains("connectionreset") {
        "is it serving TLS (BROADCAST_TLS_CERT)? then use https://"
    } else {
        "is the server running? use --server URL"
    }
}

/// `--insecure`: any certificate; the handshake's signatures are still verified.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
