//! The configuration file (`emit_hub.toml`, the EmitHub documents' shape) and where each
//! setting came from.
//!
//! The file sets the same settings as the environment, under the keys of
//! [`super::vars::VARIABLES`]: top-level keys (`host`, `port`, `db_path`, ...)
//! and the sections `[cors]`, `[websocket]`, `[persistence]`, `[jwt]`, `[redis]` and
//! `[pusher]`; `[env]` sets any variable by name. The environment wins over the file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::vars::{self, Kind, Variable, VARIABLES};
use super::ConfigError;

/// Sections of the file, in the order they are generated.
const SECTIONS: [&str; 10] = [
    "",
    "cors",
    "websocket",
    "rtc",
    "history",
    "webhooks",
    "persistence",
    "jwt",
    "redis",
    "pusher",
];

/// A configuration file, read and checked: each setting's value as the variable would be
/// written.
#[derive(Clone, Default)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Variable → (value, the key that set it).
    values: BTreeMap<&'static str, (String, String)>,
}

impl std::fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFile")
            .field("path", &self.path)
            .field("settings", &self.values.len())
            .finish()
    }
}

fn file_error(path: &Path, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::File {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl ConfigFile {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, "", format!("cannot read it: {e}")))?;
        Self::parse(path, &text)
    }

    /// Checks `text` as the file at `path`: unknown keys and values of the wrong type are
    /// errors naming the key.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_error(path, "", crate::setting::toml_error(text, &e)))?;
        let mut file = Self {
            path: path.to_path_buf(),
            values: BTreeMap::new(),
        };
        for (key, value) in &table {
            match value {
                toml::Value::Table(section) if key == "env" => {
                    for (name, value) in section {
                        let var = vars::find(name).ok_or_else(|| {
                            file_error(
                                path,
                                &format!("env.{name}"),
                                "not a known variable (see --show-env-vars)",
                            )
                        })?;
                        file.set(var, &format!("env.{name}"), value)?;
                    }
                }
                toml::Value::Table(section) if SECTIONS.contains(&key.as_str()) => {
                    for (field, value) in section {
                        let full = format!("{key}.{field}");
                        let var = vars::by_key(&full)
                            .ok_or_else(|| file_error(path, &full, known_keys(key, "unknown key")))?;
                        file.set(var, &full, value)?;
                    }
                }
                _ => {
                    let var = vars::by_key(key).ok_or_else(|| file_error(path, key, known_keys("", "unknown key")))?;
                    file.set(var, key, value)?;
                }
            }
        }
        Ok(file)
    }

    fn set(&mut self, var: &'static Variable, key: &str, value: &toml::Value) -> Result<(), ConfigError> {
        let text = as_variable(var.kind, value).ok_or_else(|| {
            file_error(
                &self.path,
                key,
                format!("expected {}, found {}", expected(var.kind), value.type_str()),
            )
        })?;
        if let Some((_, earlier)) = self.values.get(var.name) {
            return Err(file_error(
                &self.path,
                key,
                format!("{} is already set by {earlier}", var.name),
            ));
        }
        self.values.insert(var.name, (text, key.to_string()));
        Ok(())
    }

    /// The value the file gives `var`.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.values.get(var).map(|(v, _)| v.as_str())
    }

    /// The key that set `var`.
    pub fn key_of(&self, var: &str) -> Option<&str> {
        self.values.get(var).map(|(_, k)| k.as_str())
    }
}

fn known_keys(section: &str, what: &str) -> String {
    let keys: Vec<&str> = VARIABLES
        .iter()
        .filter(|v| v.section() == section)
        .map(Variable::field)
        .collect();
    let sections = if section.is_empty() {
        format!("; sections: {}, env", SECTIONS[1..].join(", "))
    } else {
        String::new()
    };
    format!("{what}; known keys here: {}{sections}", keys.join(", "))
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "a string",
        Kind::Integer => "a whole number",
        Kind::Number => "a number",
        Kind::Bool => "true or false",
        Kind::List => "a list of strings",
        Kind::Duration => "seconds (a whole number) or a string such as \"500ms\"",
        Kind::PortOrOff => "a port number or \"off\"",
        Kind::SwitchOrSize => "\"on\", \"off\", true, false or a size in bytes",
    }
}

/// A TOML value as the variable would be written, if its type fits.
fn as_variable(kind: Kind, value: &toml::Value) -> Option<String> {
    use toml::Value as V;
    match (kind, value) {
        (Kind::List, V::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(",")),
        (Kind::Bool, V::Boolean(b)) => Some(b.to_string()),
        (Kind::Integer | Kind::Number | Kind::Duration | Kind::PortOrOff | Kind::SwitchOrSize, V::Integer(n)) => {
            Some(n.to_string())
        }
        (Kind::SwitchOrSize, V::Boolean(b)) => Some(if *b { "on" } else { "off" }.to_string()),
        (Kind::Number, V::Float(f)) => Some(f.to_string()),
        // Strings are taken as the variable would be (e.g. "500ms", "off", "1,2").
        (_, V::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Where settings came from: the environment (by variable or alias) and the file.
#[derive(Clone, Default)]
pub struct Sources {
    /// The file, if one was read.
    pub file: Option<ConfigFile>,
    /// Every setting that was set: variable → value.
    pub values: BTreeMap<&'static str, String>,
    /// Where each setting of `values` came from (the variable, alias or other program's
    /// name that set it, or the file).
    pub origins: BTreeMap<&'static str, Origin>,
    /// Settings given on the command line (they win over the environment, and are
    /// applied again on reload).
    pub overrides: BTreeMap<&'static str, String>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: BTreeMap<&str, &str> = self
            .values
            .iter()
            .map(|(k, v)| {
                let secret = vars::find(k).is_some_and(|var| var.secret);
                (*k, if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("Sources")
            .field("file", &self.file.as_ref().map(|f| &f.path))
            .field("values", &shown)
            .finish()
    }
}

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This environment variable (the setting's own, an alias, or another program's name
    /// for it such as Laravel's `REDIS_HOST`).
    Variable(&'static str),
    /// The configuration file.
    File,
    /// Nothing set it.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Variable(name) => f.write_str(name),
            Self::File => f.write_str("the configuration file"),
            Self::Default => f.write_str("default"),
        }
    }
}

impl Sources {
    /// Where `var`'s value came from ([`Origin::Default`] when nothing set it).
    pub fn origin(&self, var: &str) -> Origin {
        self.origins.get(var).copied().unwrap_or(Origin::Default)
    }

    /// The value of `var`: set, or its default.
    pub fn value(&self, var: &Variable) -> String {
        self.values
            .get(var.name)
            .cloned()
            .unwrap_or_else(|| var.default.to_string())
    }

    /// The settings that differ between `self` and `other`.
    pub fn changed(&self, other: &Sources) -> Vec<&'static Variable> {
        VARIABLES.iter().filter(|v| self.value(v) != other.value(v)).collect()
    }

    /// A complete, commented configuration file holding these settings: loading it back
    /// (with nothing else set) gives the same configuration. Secrets are not printed.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# rustaxum configuration file (the EmitHub emit_hub.toml shape).\n\
             # Every key is optional; each sets the environment variable named in its comment,\n\
             # and the environment wins over this file. Settings marked (live) are applied on\n\
             # reload (file change or SIGHUP); the others need a restart.\n\
             # Durations are seconds, or strings with a unit: \"500ms\", \"2m\".\n",
        );
        for section in SECTIONS {
            if section.is_empty() {
                out.push('\n');
            } else {
                let _ = write!(out, "\n[{section}]\n");
            }
            for var in VARIABLES.iter().filter(|v| v.section() == section) {
                let aliases = if var.aliases.is_empty() {
                    String::new()
                } else {
                    format!(", also {}", var.aliases.join(", "))
                };
                let live = if var.reload { " (live)" } else { "" };
                let _ = writeln!(out, "# {}{live}. {}{aliases}", capitalised(var.about), var.name);
                let value = self.values.get(var.name).cloned();
                match value {
                    Some(_) if var.secret => {
                        let _ = writeln!(
                            out,
                            "# {} = \"...\"  (set elsewhere; secrets are not printed)",
                            var.field()
                        );
                    }
                    Some(v) => {
                        let _ = writeln!(out, "{} = {}", var.field(), toml_value(var.kind, &v));
                    }
                    None if var.default.is_empty() => {
                        let _ = writeln!(out, "# {} = {}", var.field(), toml_value(var.kind, ""));
                    }
                    None => {
                        let _ = writeln!(out, "{} = {}", var.field(), toml_value(var.kind, var.default));
                    }
                }
            }
        }
        out.push_str("\n# Any other variable by name, e.g.:\n# [env]\n# BROADCAST_RULES_FILE = \"rules.toml\"\n");
        out
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A variable's value written as TOML of its kind.
fn toml_value(kind: Kind, value: &str) -> String {
    let quoted = |s: &str| toml::Value::String(s.to_string()).to_string();
    match kind {
        Kind::Integer | Kind::PortOrOff | Kind::SwitchOrSize if value.parse::<i64>().is_ok() => value.to_string(),
        Kind::Number if value.parse::<f64>().is_ok_and(f64::is_finite) => value.to_string(),
        Kind::Bool => match value.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => "true".into(),
            "0" | "false" | "no" | "off" => "false".into(),
            _ => quoted(value),
        },
        Kind::List => {
            let items: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(quoted)
                .collect();
            format!("[{}]", items.join(", "))
        }
        Kind::Duration => match super::parse_duration(value) {
            Some(d) if d.subsec_nanos() == 0 => d.as_secs().to_string(),
            _ => quoted(value),
        },
        _ => quoted(value),
    }
}

/// `--show-env-vars`: every variable, its aliases, default, file key and what it does.
pub fn show_env_vars() -> String {
    let mut out = String::from(
        "Environment variables (the environment wins over the configuration file; a .env file is read too).\n\
         The configuration file is --config FILE, else $BROADCAST_CONFIG_FILE (or $EMIT_HUB_CONFIG),\n\
         else ./emit_hub.toml when it exists. (live) settings are applied on reload (file change or SIGHUP).\n\n",
    );
    for section in SECTIONS {
        let title = if section.is_empty() { "server" } else { section };
        let _ = writeln!(out, "[{title}]");
        for var in VARIABLES.iter().filter(|v| v.section() == section) {
            let default = if var.default.is_empty() { "unset" } else { var.default };
            let live = if var.reload { " (live)" } else { "" };
            let _ = writeln!(out, "  {:<38} default {default}{live}; file key {}", var.name, var.key);
            for alias in var.aliases {
                let _ = writeln!(out, "  {:<38} same as {}", alias, var.name);
            }
            for weak in var.weak {
                let _ = writeln!(out, "  {:<38} same as {} when that is unset", weak, var.name);
            }
            let _ = writeln!(out, "      {}", var.about);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_takes_on_off_a_boolean_or_a_size() {
        use toml::Value as V;
        let read = |v: V| as_variable(Kind::SwitchOrSize, &v);
        assert_eq!(read(V::Integer(2048)).as_deref(), Some("2048"));
        assert_eq!(read(V::Boolean(false)).as_deref(), Some("off"));
        assert_eq!(read(V::Boolean(true)).as_deref(), Some("on"));
        assert_eq!(read(V::String("off".into())).as_deref(), Some("off"));
        assert_eq!(read(V::Float(1.5)), None);
        assert_eq!(toml_value(Kind::SwitchOrSize, "2048"), "2048");
        assert_eq!(toml_value(Kind::SwitchOrSize, "on"), "\"on\"");
    }

    #[test]
    fn the_documents_file_is_read_as_documented() {
        let text = r#"
host = "0.0.0.0"
port = 3000
db_path = "./data/emit_hub.redb"
max_connections_per_channel = 5000
message_size_limit = 2097152
log_level = "debug"

[cors]
allowed_origins = ["*"]
allowed_methods = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
allowed_headers = ["Content-Type", "Authorization", "Accept"]
max_age = 7200

[websocket]
connection_timeout = 60
max_continuation_size = 2097152
ping_interval = 45
pong_timeout = 15

[persistence]
persist_messages_default = true
max_messages_per_channel = 50000
message_retention_days = 90
auto_backup = true
backup_interval_hours = 12
"#;
        let file = ConfigFile::parse(Path::new("emit_hub.toml"), text).unwrap();
        assert_eq!(file.get("BROADCAST_HOST"), Some("0.0.0.0"));
        assert_eq!(
            file.get("CORS_ALLOWED_HEADERS"),
            Some("Content-Type,Authorization,Accept")
        );
        assert_eq!(file.get("BROADCAST_CONNECTION_TIMEOUT"), Some("60"));
        assert_eq!(file.get("EMIT_HUB_BACKUP_INTERVAL_HOURS"), Some("12"));
        assert_eq!(file.key_of("BROADCAST_PING_INTERVAL"), Some("websocket.ping_interval"));
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, key, words) in [
            ("prot = 3000", "prot", "unknown key"),
            (
                "[websocket]\nping_intervall = 3",
                "websocket.ping_intervall",
                "unknown key",
            ),
            ("port = \"x\"\nport = 1", "", "not valid TOML at line 2, column 1"),
            (
                "[cors]\nallowed_origins = [1]",
                "cors.allowed_origins",
                "a list of strings",
            ),
            (
                "[persistence]\nauto_backup = 3",
                "persistence.auto_backup",
                "true or false",
            ),
            ("[env]\nNOT_A_VAR = 1", "env.NOT_A_VAR", "not a known variable"),
            (
                "port = 1\n[env]\nBROADCAST_WEBSOCKET_PORT = 2",
                "BROADCAST_WEBSOCKET_PORT",
                "is already set by",
            ),
        ] {
            let err = ConfigFile::parse(Path::new("x.toml"), text).unwrap_err().to_string();
            assert!(
                err.contains("x.toml") && err.contains(key) && err.contains(words),
                "{text}: {err}"
            );
        }
    }
}
