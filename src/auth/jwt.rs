//! JWT verification with `jsonwebtoken`.
//!
//! The algorithm is pinned by configuration: a token's header cannot choose it, so
//! `alg: none` and HS/RS confusion are rejected. `exp` is required, `nbf` is checked when
//! present, both with a small leeway; the audience must contain the configured value
//! (default `websocket`). Secrets and keys are never logged.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Identity;
use std::path::PathBuf;
use std::time::Duration;

use crate::setting::InvalidSetting;

/// How tokens are verified.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// `JWT_ALGORITHM`, default `HS256`. `HS*` use `JWT_SECRET`; `RS*`/`ES*` use
    /// `JWT_PUBLIC_KEY_FILE` (PEM).
    pub algorithm: Algorithm,
    /// `JWT_SECRET` for HMAC algorithms.
    pub secret: Option<String>,
    /// `JWT_PUBLIC_KEY_FILE` for RSA and ECDSA algorithms.
    pub public_key_file: Option<PathBuf>,
    /// `JWT_AUDIENCE`, default `websocket`.
    pub audience: String,
    /// `JWT_LEEWAY`, default 5 s: clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key_file", &self.public_key_file)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// Why a token was refused. Every variant means HTTP 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token was given where one is required.
    #[error("authentication token required")]
    Missing,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The signature does not verify with the configured key.
    #[error("token signature is invalid")]
    BadSignature,
    /// The header names another algorithm than the configured one (including `none`).
    #[error("token algorithm is not accepted")]
    WrongAlgorithm,
    /// `aud` does not contain the configured audience.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// Not a JWT, or claims missing or of the wrong type.
    #[error("token is malformed: {0}")]
    Malformed(String),
    /// A refreshed token names a different user.
    #[error("refreshed token is for a different user")]
    DifferentUser,
}

/// Verifies tokens against one key and algorithm.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Loads the key named by `config`; a missing or unreadable key names its variable.
    pub fn new(config: &JwtConfig) -> Result<Self, InvalidSetting> {
        use Algorithm::*;
        let key = match config.algorithm {
            HS256 | HS384 | HS512 => {
                let secret = config.secret.as_deref().ok_or_else(|| InvalidSetting {
                    var: "JWT_SECRET",
                    value: String::new(),
                    reason: format!("required for JWT_ALGORITHM={:?}", config.algorithm),
                })?;
                DecodingKey::from_secret(secret.as_bytes())
            }
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | EdDSA => {
                let path = config.public_key_file.as_ref().ok_or_else(|| InvalidSetting {
                    var: "JWT_PUBLIC_KEY_FILE",
                    value: String::new(),
                    reason: format!("required for JWT_ALGORITHM={:?}", config.algorithm),
                })?;
                let bad = |reason: String| InvalidSetting {
                    var: "JWT_PUBLIC_KEY_FILE",
                    value: path.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
                let parsed = match config.algorithm {
                    ES256 | ES384 => DecodingKey::from_ec_pem(&pem),
                    EdDSA => DecodingKey::from_ed_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                };
                parsed.map_err(|e| bad(format!("not a PEM public key for {:?}: {e}", config.algorithm)))?
            }
        };
        let mut validation = Validation::new(config.algorithm);
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        Ok(Self { key, validation })
    }

    /// Verifies `token` and returns who it identifies.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::WrongAlgorithm,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) => TokenError::Malformed(format!("missing claim {c}")),
            // A header that names an unknown algorithm ("none") fails to parse as JSON.
            ErrorKind::Json(_) if token_names_unknown_alg(token) => TokenError::WrongAlgorithm,
            _ => TokenError::Malformed(e.to_string()),
        })?;
        Ok(data.claims.into_identity())
    }
}

fn token_names_unknown_alg(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    serde_json::from_slice::<Value>(&bytes).is_ok_and(|h| {
        h.get("alg")
            .and_then(Value::as_str)
            .is_some_and(|alg| alg.parse::<Algorithm>().is_err())
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdLike {
    Text(String),
    Number(serde_json::Number),
}

impl IdLike {
    fn into_string(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Number(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user_info: Option<Value>,
    #[serde(default)]
    teams: Vec<IdLike>,
    #[serde(default)]
    orgs: Vec<IdLike>,
}

impl Claims {
    fn into_identity(self) -> Identity {
        let user_info = match (self.user_info, self.name) {
            (Some(info), _) => info,
            (None, Some(name)) => json!({"name": name}),
            (None, None) => json!({}),
        };
        Identity {
            user_id: self.sub,
            user_info,
            roles: self.roles,
            permissions: self.permissions,
            teams: self.teams.into_iter().map(IdLike::into_string).collect(),
            orgs: self.orgs.into_iter().map(IdLike::into_string).collect(),
            expires_at: Some(self.exp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use std::time::Duration;

    const SECRET: &str = "unit-test-secret";

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(&JwtConfig {
            algorithm: Algorithm::HS256,
            secret: Some(SECRET.into()),
            public_key_file: None,
            audience: "websocket".into(),
            leeway: Duration::from_secs(5),
        })
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign(claims: Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn claims() -> Value {
        json!({"sub": "42", "aud": "websocket", "exp": now() + 60})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut c = claims();
        c[key] = value;
        c
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let v = verifier();
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let cases: Vec<(&str, String, TokenError)> = vec![
            ("expired", sign(with("exp", json!(now() - 60))), TokenError::Expired),
            ("nbf", sign(with("nbf", json!(now() + 600))), TokenError::NotYetValid),
            (
                "aud",
                sign(with("aud", json!(["api", "web"]))),
                TokenError::WrongAudience,
            ),
            (
                "forged",
                encode(&Header::default(), &claims(), &EncodingKey::from_secret(b"other")).unwrap(),
                TokenError::BadSignature,
            ),
            (
                "alg none",
                format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims())),
                TokenError::WrongAlgorithm,
            ),
            (
                "HS512 header",
                encode(
                    &Header::new(Algorithm::HS512),
                    &claims(),
                    &EncodingKey::from_secret(SECRET.as_bytes()),
                )
                .unwrap(),
                TokenError::WrongAlgorithm,
            ),
        ];
        for (what, token, expected) in cases {
            assert_eq!(v.verify(&token).unwrap_err(), expected, "{what}");
        }
        for garbage in ["", "abc", "a.b.c", "...."] {
            assert!(
                matches!(v.verify(garbage), Err(TokenError::Malformed(_))),
                "{garbage:?}"
            );
        }
        let no_sub = sign(json!({"aud": "websocket", "exp": now() + 60}));
        assert!(matches!(v.verify(&no_sub), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn claims_become_an_identity_within_leeway() {
        let v = verifier();
        let token = sign(json!({
            "sub": "42", "aud": ["websocket", "api"], "exp": now() - 2, "iat": now() - 100,
            "roles": ["admin"], "permissions": ["read"], "name": "Ann", "teams": [7, "x"], "orgs": ["acme"],
        }));
        let id = v.verify(&token).expect("2 s past exp is inside the 5 s leeway");
        assert_eq!(id.user_id, "42");
        assert!(id.has_role("admin") && id.has_permission("read"));
        assert_eq!(id.user_info, json!({"name": "Ann"}));
        assert_eq!(id.teams, vec!["7", "x"]);
        assert_eq!(id.orgs, vec!["acme"]);
    }

    #[test]
    fn missing_keys_name_their_variable() {
        let mut c = JwtConfig {
            algorithm: Algorithm::RS256,
            secret: Some("s".into()),
            public_key_file: None,
            audience: "websocket".into(),
            leeway: Duration::ZERO,
        };
        assert!(JwtVerifier::new(&c)
            .unwrap_err()
            .to_string()
            .contains("JWT_PUBLIC_KEY_FILE"));
        c.public_key_file = Some("/nonexistent/key.pem".into());
        assert!(JwtVerifier::new(&c)
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/key.pem"));
        c.algorithm = Algorithm::HS256;
        c.secret = None;
        assert!(JwtVerifier::new(&c).unwrap_err().to_string().contains("JWT_SECRET"));
    }
}
