//! Reading variables: each helper names the variable and the bad value on failure.

use std::time::Duration;

use super::ConfigError;

/// Reads variables through a lookup function and reports bad values by name.
pub(super) struct Env<'a>(pub(super) &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    pub(super) fn list(&self, var: &str) -> Vec<String> {
        self.string(var)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Like `duration`, but `0` is allowed.
    pub(super) fn duration_or_zero(&self, var: &'static str) -> Result<Option<Duration>, ConfigError> {
        self.parse_duration(var, true)
    }

    pub(super) fn string(&self, var: &str) -> Option<String> {
        self.0(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    pub(super) fn string_allow_empty(&self, var: &str) -> Option<String> {
        self.0(var).map(|v| v.trim().to_string())
    }

    pub(super) fn parse<T: std::str::FromStr>(
        &self,
        var: &'static str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.string(var) {
            None => Ok(None),
            Some(value) => value.parse().map(Some).map_err(|_| ConfigError::Invalid {
                var,
                value,
                reason: format!("expected {expected}"),
            }),
        }
    }

    pub(super) fn positive(&self, var: &'static str) -> Result<Option<usize>, ConfigError> {
        match self.parse::<usize>(var, "a whole number greater than 0")? {
            Some(0) => Err(ConfigError::Invalid {
                var,
                value: "0".into(),
                reason: "expected a whole number greater than 0".into(),
            }),
            other => Ok(other),
        }
    }

    pub(super) fn bool(&self, var: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.string(var) {
            None => Ok(None),
            Some(value) => match value.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(Some(true)),
                "0" | "false" | "no" | "off" => Ok(Some(false)),
                _ => Err(ConfigError::Invalid {
                    var,
                    value,
                    reason: "expected true or false".into(),
                }),
            },
        }
    }

    /// Durations are whole seconds (`30`), or carry a unit: `500ms`, `30s`, `2m`.
    pub(super) fn duration(&self, var: &'static str) -> Result<Option<Duration>, ConfigError> {
        self.parse_duration(var, false)
    }

    pub(super) fn parse_duration(&self, var: &'static str, allow_zero: bool) -> Result<Option<Duration>, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(None);
        };
        match parse_duration(&value) {
            Some(d) if allow_zero || !d.is_zero() => Ok(Some(d)),
            _ => Err(ConfigError::Invalid {
                var,
                value,
                reason: format!(
                    "expected a duration such as 30, 30s, 500ms or 2m{}",
                    if allow_zero { "" } else { " (greater than 0)" }
                ),
            }),
        }
    }
}

/// Parses `30`, `30s`, `500ms` or `2m`.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let (digits, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    Some(d)
}
