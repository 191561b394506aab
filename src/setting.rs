//! The one error a domain gives for a setting it cannot use. Domains (auth, the Redis
//! backend, routing, Pusher apps) check their own settings and answer with it; the
//! configuration wraps it in its `ConfigError` (the configuration stands above
//! them), so no domain imports the configuration.

/// A setting holds a value that cannot be used: which one, the value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for {var}: {value:?} ({reason})")]
pub struct InvalidSetting {
    /// The variable (or the file that holds the setting).
    pub var: &'static str,
    /// The value found.
    pub value: String,
    /// What was expected.
    pub reason: String,
}

impl InvalidSetting {
    /// `var` holds `value`, which is wrong because of `reason`.
    pub fn new(var: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            var,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// A TOML error as one line with where it is: `line 3, column 7: expected ...`.
pub(crate) fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return format!("not valid TOML: {}", e.message());
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("not valid TOML at line {line}, column {column}: {}", e.message())
}
