//! The one HMAC-SHA256 signature the server makes: Pusher channel authorizations and REST
//! request signatures, and the `X-Pusher-Signature` of webhooks.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `hex(hmac_sha256(secret, message))`, lower case.
pub(crate) fn hmac_sha256_hex(secret: &str, message: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_style_reference() {
        // The well-known HMAC-SHA256 example ("key", the quick brown fox).
        assert_eq!(
            hmac_sha256_hex("key", b"The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
