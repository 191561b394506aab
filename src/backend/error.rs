//! What can go wrong between nodes.

/// A cluster operation failed; the cluster backend is unreachable or refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached or answered with an error.
    #[error("{0}")]
    Unavailable(String),
    /// Recent calls failed; calls fail fast until the circuit breaker lets a probe through.
    #[error("circuit open after repeated failures; retrying shortly")]
    CircuitOpen,
    /// The backend did not answer in time.
    #[error("command timed out")]
    Timeout,
    /// A message could not be encoded for the wire.
    #[error("could not encode a message: {0}")]
    Encode(String),
    /// The channel's owner refused the message (an EmitHub channel that is paused,
    /// stopped or over its rate limit): not an outage, retrying will not help.
    #[error("refused: {0}")]
    Refused(String),
}

impl From<serde_json::Error> for BackendError {
    fn from(e: serde_json::Error) -> Self {
        Self::Encode(e.to_string())
    }
}

/// Why a store (EmitHub's, presence's, history's) failed: what it was doing and the
/// underlying error, kept as the [`source`](std::error::Error::source) (a `redis`,
/// `redb`, `io` or `serde_json` error a caller can downcast), not flattened to text. Its
/// text is the context and the cause's text (`cannot open the database x.redb: Permission
/// denied`), as the log and the API show it.
#[derive(Debug, Clone)]
pub struct Failure {
    context: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Failure {
    /// A failure with no underlying error (`sequence overflow`).
    pub fn new(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            source: None,
        }
    }

    /// `context` failed because of `source`.
    pub fn caused(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            context: context.into(),
            source: Some(std::sync::Arc::new(source)),
        }
    }

    /// A failure that is its underlying error, with no more to say.
    pub fn of(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::caused(String::new(), source)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.source, self.context.is_empty()) {
            (Some(source), true) => write!(f, "{source}"),
            (Some(source), false) => write!(f, "{}: {source}", self.context),
            (None, _) => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Failures are equal when they say the same (their sources are not comparable).
impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Failure {}
