//! Routing rules: what happens to a message on its way out, decided once per message at
//! publish time (not per socket), for every protocol and every publisher.
//!
//! A rule matches a channel (topic) pattern and optionally an event pattern, then can
//! copy the message to other channels, drop it, keep or remove payload fields, rename
//! payload fields, or rename the event. Rules run in file order and compose: each sees
//! the message as the rules before it left it. Copies are delivered as they are when
//! copied and are not routed again (no loops).
//!
//! ```toml
//! [[route]]
//! name = "audit copy"              # optional, used in errors and logs
//! topic = "orders.*"               # channel pattern: `*` matches any run of characters
//! event = "order.*"                # optional event pattern
//! copy_to = ["audit"]
//!
//! [[route]]
//! topic = "users.*"
//! remove_fields = ["password", "ssn"]   # or keep_fields = ["id", "name"]
//! rename_fields = { email = "contact" }
//!
//! [[route]]
//! topic = "debug.*"
//! drop = true
//! ```

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::auth::Pattern;
use crate::channel::Channel;
use crate::hub::Message;
use crate::setting::InvalidSetting;

/// One rule as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    #[serde(default)]
    name: Option<String>,
    topic: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    copy_to: Vec<String>,
    #[serde(default)]
    drop: bool,
    #[serde(default)]
    keep_fields: Option<Vec<String>>,
    #[serde(default)]
    remove_fields: Vec<String>,
    #[serde(default)]
    rename_fields: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    rename_event: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    route: Vec<FileRule>,
}

/// A compiled rule.
#[derive(Debug)]
struct Rule {
    name: String,
    topic: Pattern,
    event: Option<Pattern>,
    copy_to: Vec<Channel>,
    drop: bool,
    keep_fields: Option<Vec<String>>,
    remove_fields: Vec<String>,
    rename_fields: Vec<(String, String)>,
    rename_event: Option<Arc<str>>,
}

impl Rule {
    fn matches(&self, message: &Message) -> bool {
        self.topic.matches(message.channel.local_name()).is_some()
            && self.event.as_ref().is_none_or(|e| e.matches(&message.event).is_some())
    }

    fn transforms_payload(&self) -> bool {
        self.keep_fields.is_some() || !self.remove_fields.is_empty() || !self.rename_fields.is_empty()
    }

    /// The payload with this rule's field changes; `None` when it is not a JSON object
    /// (only objects have fields) or nothing changed.
    fn transform(&self, data: &RawValue) -> Option<Arc<RawValue>> {
        let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(data.get()) else {
            return None;
        };
        if let Some(keep) = &self.keep_fields {
            fields.retain(|k, _| keep.iter().any(|f| f == k));
        }
        for field in &self.remove_fields {
            fields.remove(field);
        }
        for (from, to) in &self.rename_fields {
            if let Some(v) = fields.remove(from) {
                fields.insert(to.clone(), v);
            }
        }
        serde_json::value::to_raw_value(&Value::Object(Map::from_iter(fields)))
            .ok()
            .map(Arc::from)
    }
}

/// The routing rules of a node (none by default).
#[derive(Debug, Default)]
pub struct Routing {
    rules: Vec<Rule>,
}

/// A rule that cannot be used.
fn invalid(path: &Path, rule: &str, reason: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        var: "BROADCAST_ROUTES_FILE",
        value: path.display().to_string(),
        reason: format!("rule {rule}: {}", reason.into()),
    }
}

impl Routing {
    /// No rules: every message goes out as published.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether a rule copies messages to other channels: a message published straight
    /// into Redis on any channel may then end up on a channel this node serves.
    pub fn copies(&self) -> bool {
        self.rules.iter().any(|r| !r.copy_to.is_empty())
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Reads the rules of a TOML file; a rule that cannot work stops with its name (or
    /// number) and why.
    pub fn load(path: &Path) -> Result<Self, InvalidSetting> {
        let text = std::fs::read_to_string(path).map_err(|e| invalid(path, "file", format!("cannot read it: {e}")))?;
        Self::parse(path, &text)
    }

    /// Reads rules from `text` (the file at `path`, for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Self, InvalidSetting> {
        let file: RoutesFile =
            toml::from_str(text).map_err(|e| invalid(path, "file", crate::setting::toml_error(text, &e)))?;
        let mut rules = Vec::with_capacity(file.route.len());
        for (i, r) in file.route.into_iter().enumerate() {
            let name = r.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
            let label = format!("{name:?} ({})", r.topic);
            let bad = |reason: String| invalid(path, &label, reason);
            let topic = Pattern::parse(&r.topic).map_err(&bad)?;
            let event = r.event.as_deref().map(Pattern::parse).transpose().map_err(&bad)?;
            let copy_to = r
                .copy_to
                .iter()
                .map(|c| Channel::parse(c).map_err(|e| bad(format!("copy_to {c:?}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            if r.keep_fields.is_some() && !r.remove_fields.is_empty() {
                return Err(bad("keep_fields and remove_fields together: use one".into()));
            }
            let changes = !copy_to.is_empty()
                || r.keep_fields.is_some()
                || !r.remove_fields.is_empty()
                || !r.rename_fields.is_empty()
                || r.rename_event.is_some();
            if r.drop && changes {
                return Err(bad("drop with other actions: a dropped message has nothing left to change; put copies in a rule before it".into()));
            }
            let rename_event = match r.rename_event {
                Some(e) if e.is_empty() || e.len() > 200 => {
                    return Err(bad("rename_event must be 1 to 200 characters".into()))
                }
                other => other.map(Arc::from),
            };
            let rule = Rule {
                name,
                topic,
                event,
                copy_to,
                drop: r.drop,
                keep_fields: r.keep_fields,
                remove_fields: r.remove_fields,
                rename_fields: r.rename_fields.into_iter().collect(),
                rename_event,
            };
            let acts =
                rule.drop || !rule.copy_to.is_empty() || rule.transforms_payload() || rule.rename_event.is_some();
            if !acts {
                return Err(bad(
                    "no action: give copy_to, drop, keep_fields, remove_fields, rename_fields or rename_event".into(),
                ));
            }
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    /// What `message` becomes: itself (perhaps changed) unless dropped, then its copies.
    pub fn route(&self, mut message: Message) -> Vec<Message> {
        if self.rules.is_empty() {
            return vec![message];
        }
        let mut out = Vec::new();
        for rule in &self.rules {
            if !rule.matches(&message) {
                continue;
            }
            if rule.drop {
                tracing::trace!(rule = %rule.name, channel = %message.channel, "message dropped by a routing rule");
                return out;
            }
            if rule.transforms_payload() {
                if let Some(data) = rule.transform(&message.data) {
                    // Reshaped: the publisher's text no longer describes it.
                    message.data = data;
                    message.text = None;
                }
            }
            if let Some(event) = &rule.rename_event {
                message.event = event.clone();
            }
            for target in &rule.copy_to {
                if *target != message.channel {
                    out.push(Message {
                        channel: target.clone(),
                        ..message.clone()
                    });
                }
            }
        }
        out.insert(0, message);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(channel: &str, event: &str, data: Value) -> Message {
        let raw = serde_json::value::to_raw_value(&data).unwrap();
        Message::event(Channel::parse(channel).unwrap(), event, Arc::from(raw))
    }

    fn routing(text: &str) -> Result<Routing, String> {
        Routing::parse(Path::new("routes.toml"), text).map_err(|e| e.to_string())
    }

    fn view(out: &[Message]) -> Vec<(String, String, Value)> {
        out.iter()
            .map(|m| {
                (
                    m.channel.name().to_string(),
                    m.event.to_string(),
                    serde_json::from_str(m.data.get()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn rules_copy_drop_filter_and_rename_once() {
        let r = routing(
            r#"
[[route]]
name = "audit"
topic = "orders.*"
copy_to = ["audit"]
[[route]]
topic = "orders.*"
event = "paid"
remove_fields = ["card"]
rename_fields = { total = "amount" }
rename_event = "order.paid"
copy_to = ["payments"]
[[route]]
topic = "debug.*"
drop = true
[[route]]
topic = "users.*"
keep_fields = ["id"]
"#,
        )
        .unwrap();
        let out = r.route(msg(
            "orders.7",
            "paid",
            serde_json::json!({"id": 7, "card": "4242", "total": 10}),
        ));
        assert_eq!(
            view(&out),
            [
                (
                    "orders.7".into(),
                    "order.paid".into(),
                    serde_json::json!({"id": 7, "amount": 10})
                ),
                (
                    "audit".into(),
                    "paid".into(),
                    serde_json::json!({"id": 7, "card": "4242", "total": 10})
                ),
                (
                    "payments".into(),
                    "order.paid".into(),
                    serde_json::json!({"id": 7, "amount": 10})
                ),
            ]
        );
        assert!(r.route(msg("debug.x", "e", serde_json::json!({}))).is_empty());
        assert_eq!(
            view(&r.route(msg("users.1", "e", serde_json::json!({"id": 1, "email": "a@b"})))),
            [("users.1".into(), "e".into(), serde_json::json!({"id": 1}))]
        );
        // Not an object: fields cannot be filtered, the payload passes as it is.
        assert_eq!(
            view(&r.route(msg("users.1", "e", serde_json::json!("text")))),
            [("users.1".into(), "e".into(), serde_json::json!("text"))]
        );
        assert_eq!(view(&r.route(msg("other", "e", serde_json::json!(1)))).len(), 1);
    }

    #[test]
    fn rules_that_cannot_work_are_refused_by_name() {
        for (text, words) in [
            ("[[route]]\nname = \"x\"\ntopic = \"a\"\n", "\"x\" (a): no action"),
            (
                "[[route]]\ntopic = \"a\"\ndrop = true\ncopy_to = [\"b\"]\n",
                "\"#1\" (a): drop with other actions",
            ),
            (
                "[[route]]\ntopic = \"a\"\ncopy_to = [\"bad name!\"]\n",
                "copy_to \"bad name!\"",
            ),
            (
                "[[route]]\ntopic = \"a\"\nkeep_fields = [\"x\"]\nremove_fields = [\"y\"]\n",
                "keep_fields and remove_fields",
            ),
            ("[[route]]\ntopic = \"a.{\"\ndrop = true\n", "unclosed"),
            ("[[route]]\ntopic = \"a\"\ndrpo = true\n", "unknown field"),
        ] {
            let err = routing(text).unwrap_err();
            assert!(
                err.contains("BROADCAST_ROUTES_FILE") && err.contains(words),
                "{text}: {err}"
            );
        }
    }
}
