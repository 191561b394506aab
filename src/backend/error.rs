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
