#[tokio::test]
async fn https_urls_can_be_reached() {
    // Built with TLS: an https URL fails to connect (nothing listens), not as an
    // unsupported scheme.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = reqwest::Client::new()
        .post(format!("https://127.0.0.1:{port}/hook"))
        .send()
        .await
        .unwrap_err();
    // Without TLS, reqwest fails with "invalid URL, scheme is not http" (also a
    // connect error), so look for the refused TCP connection itself.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut refused = false;
    while let Some(e) = source {
        refused |= e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        source = e.source();
    }
    assert!(refused, "{err:?}");
}
