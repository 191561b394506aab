//! Channel rules, Laravel's `Broadcast::channel`: a pattern with `{param}` placeholders
//! (one dot-free segment each) and `*` (anything, one character or more), a kind, and a
//! check. The first rule whose pattern matches decides; a channel no rule matches is
//! denied.
//!
//! ```
//! use rustaxum::auth::ChannelRules;
//! let mut rules = ChannelRules::new();
//! rules.public("lobby");
//! rules.channel("project.{project_id}", |user, params| user.has_role("pm") || params["project_id"] == "demo");
//! rules.presence("room.{id}", |_user, _params| true);
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::{AuthError, ChannelAuthorizer, Identity};
use crate::channel::{Channel, ChannelKind};
use crate::setting::InvalidSetting;

/// Values captured by a pattern's `{param}` placeholders.
pub type Params = HashMap<String, String>;

type Check = Arc<dyn Fn(&Identity, &Params) -> bool + Send + Sync>;

/// Channels anyone may join when no other configuration says otherwise.
pub const DEFAULT_PUBLIC_CHANNELS: &[&str] = &["general", "public", "announcements", "test"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Param(String),
    Star,
}

/// A compiled channel pattern such as `user.{user_id}` or `admin.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    raw: String,
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles a pattern; `{` without `}` or an empty `{}` is an error.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    if name.is_empty() || !raw.contains('}') {
                        return Err(format!("pattern {raw:?} has an empty or unclosed {{param}}"));
                    }
                    if !literal.is_empty() {
                        tokens.push(Token::Literal(std::mem::take(&mut literal)));
                    }
                    tokens.push(Token::Param(name));
                }
                '*' => {
                    if !literal.is_empty() {
                        tokens.push(Token::Literal(std::mem::take(&mut literal)));
                    }
                    tokens.push(Token::Star);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        if tokens.is_empty() {
            return Err("empty pattern".into());
        }
        Ok(Self {
            raw: raw.to_string(),
            tokens,
        })
    }

    /// The parameters captured if `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> Option<Params> {
        let mut params = Params::new();
        match_tokens(&self.tokens, name, &mut params).then_some(params)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// A channel name the pattern matches (each `{param}` and `*` as `x`).
    pub fn example(&self) -> String {
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Literal(l) => l.as_str(),
                Token::Param(_) | Token::Star => "x",
            })
            .collect()
    }
}

/// A private or presence rule that an earlier public rule swallows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// The public pattern.
    pub public: String,
    /// The rule it covers.
    pub covered: String,
    /// The covered rule's kind.
    pub kind: ChannelKind,
    /// A channel that is public because of it.
    pub example: String,
}

fn match_tokens(tokens: &[Token], s: &str, params: &mut Params) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match first {
        Token::Literal(l) => s
            .strip_prefix(l.as_str())
            .is_some_and(|r| match_tokens(rest, r, params)),
        Token::Param(name) => {
            let max = s.find('.').unwrap_or(s.len());
            (1..=max).rev().any(|len| {
                if !s.is_char_boundary(len) {
                    return false;
                }
                params.insert(name.clone(), s[..len].to_string());
                match_tokens(rest, &s[len..], params)
            })
        }
        Token::Star => (1..=s.len())
            .rev()
            .any(|len| s.is_char_boundary(len) && match_tokens(rest, &s[len..], params)),
    }
}

struct Rule {
    pattern: Pattern,
    kind: ChannelKind,
    check: Option<Check>,
}

/// An ordered list of channel rules; implements [`ChannelAuthorizer`]. The first rule
/// whose pattern matches decides; a channel no rule matches is refused.
///
/// ```
/// use rustaxum::auth::ChannelRules;
///
/// let mut rules = ChannelRules::public_only(&["news.*".to_string()]);
/// rules.channel("project.{id}", |user, params| user.teams.contains(&params["id"]));
/// rules.presence("room.{id}", |_user, _params| true);
/// // Rustaxum::builder(config).rules(rules).build()
/// ```
#[derive(Default)]
pub struct ChannelRules {
    rules: Vec<Rule>,
    history: Vec<String>,
}

impl std::fmt::Debug for ChannelRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.rules
                    .iter()
                    .map(|r| format!("{} ({})", r.pattern.as_str(), r.kind)),
            )
            .finish()
    }
}

impl ChannelRules {
    /// No rules: every channel is denied.
    pub fn new() -> Self {
        Self::default()
    }

    /// The default rules of the RustAxum broadcasting document:
    ///
    /// | pattern | kind | who |
    /// |---|---|---|
    /// | `general`, `public`, `announcements`, `test`, `extra_public` | public | anyone |
    /// | `notifications` | private | any valid token |
    /// | `admin`, `admin.*` | private | role `admin` |
    /// | `user.{id}` | private | `sub == id` |
    /// | `team.{id}` / `org.{id}` | private | `id` in the `teams` / `orgs` claim |
    /// | `presence.*` | presence | any valid token |
    pub fn defaults(extra_public: &[String]) -> Self {
        let mut rules = Self::public_only(extra_public);
        rules.add_default_private_rules();
        rules
    }

    /// Only the default public channels plus `extra_public`.
    pub fn public_only(extra_public: &[String]) -> Self {
        let mut rules = Self::new();
        for name in DEFAULT_PUBLIC_CHANNELS {
            rules.public(name);
        }
        for name in extra_public {
            rules.public(name);
        }
        rules
    }

    /// Appends the default private and presence rules (see [`defaults`](Self::defaults)).
    pub fn add_default_private_rules(&mut self) {
        self.add_default_private_rules_guarded(false);
    }

    /// The default private and presence rules; with `signed_by_app` (a Pusher app, e.g.
    /// Laravel, guards the same channels by its signature) without the two that let *any*
    /// valid token in (`notifications`, `presence.*`): a channel the app guards with its
    /// own callback is never readable through a rule that does not name it. The rules
    /// that check who the user is (`user.{id}`, `admin.*`, `team.{id}`, `org.{id}`) stay.
    pub fn add_default_private_rules_guarded(&mut self, signed_by_app: bool) {
        if !signed_by_app {
            self.channel("notifications", |_, _| true);
        }
        self.channel("admin", |u, _| u.has_role("admin"));
        self.channel("admin.*", |u, _| u.has_role("admin"));
        self.channel("user.{id}", |u, p| p.get("id").is_some_and(|id| *id == u.user_id));
        self.channel("team.{id}", |u, p| p.get("id").is_some_and(|id| u.teams.contains(id)));
        self.channel("org.{id}", |u, p| p.get("id").is_some_and(|id| u.orgs.contains(id)));
        if !signed_by_app {
            self.presence("presence.*", |_, _| true);
        }
    }

    /// Anyone may join channels matching `pattern`. Panics on an invalid pattern (a
    /// programming error); use [`try_add`](Self::try_add) for patterns from input.
    pub fn public(&mut self, pattern: &str) -> &mut Self {
        self.push(pattern, ChannelKind::Public, None)
    }

    /// A private channel: joins need a valid token and `check` to return true.
    pub fn channel<F>(&mut self, pattern: &str, check: F) -> &mut Self
    where
        F: Fn(&Identity, &Params) -> bool + Send + Sync + 'static,
    {
        self.push(pattern, ChannelKind::Private, Some(Arc::new(check)))
    }

    /// A presence channel: like [`channel`](Self::channel), plus a member list.
    pub fn presence<F>(&mut self, pattern: &str, check: F) -> &mut Self
    where
        F: Fn(&Identity, &Params) -> bool + Send + Sync + 'static,
    {
        self.push(pattern, ChannelKind::Presence, Some(Arc::new(check)))
    }

    /// Adds a rule from untrusted input, reporting an invalid pattern instead of panicking.
    pub fn try_add(&mut self, pattern: &str, kind: ChannelKind, check: Option<Check>) -> Result<&mut Self, String> {
        let pattern = Pattern::parse(pattern)?;
        self.rules.push(Rule { pattern, kind, check });
        Ok(self)
    }

    fn push(&mut self, pattern: &str, kind: ChannelKind, check: Option<Check>) -> &mut Self {
        match self.try_add(pattern, kind, check) {
            Ok(_) => self,
            Err(e) => panic!("invalid channel rule: {e}"),
        }
    }

    /// Whether any rule needs an authenticated user.
    pub fn has_private(&self) -> bool {
        self.rules.iter().any(|r| r.kind != ChannelKind::Public)
    }

    /// Rules read from a TOML file (see docs/security.md), added in file order.
    pub fn load_file(&mut self, path: &std::path::Path) -> Result<&mut Self, InvalidSetting> {
        let bad = |reason: String| InvalidSetting {
            var: "BROADCAST_RULES_FILE",
            value: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let file: RulesFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        for rule in file.rules {
            let check = match rule.kind {
                ChannelKind::Public => None,
                _ => Some(compile_conditions(&rule.allow).map_err(&bad)?),
            };
            self.try_add(&rule.pattern, rule.kind, check).map_err(&bad)?;
            if rule.history {
                self.history.push(rule.pattern.clone());
            }
        }
        Ok(self)
    }

    /// Private and presence rules that a public rule before them swallows (e.g.
    /// `BROADCAST_PUBLIC_CHANNELS=*` before `user.{id}`): the first matching rule decides,
    /// so their channels are public. Also a public pattern spelled with a Pusher
    /// `private-`/`presence-` prefix, which can only be a mistake.
    pub fn shadowed(&self) -> Vec<Shadowed> {
        let mut found = Vec::new();
        for (j, rule) in self.rules.iter().enumerate() {
            if rule.kind == ChannelKind::Public {
                let raw = rule.pattern.as_str();
                if raw.starts_with("private-") || raw.starts_with("presence-") {
                    found.push(Shadowed {
                        public: raw.to_string(),
                        covered: "the private-/presence- prefix".into(),
                        kind: ChannelKind::Private,
                        example: raw.to_string(),
                    });
                }
                continue;
            }
            let example = rule.pattern.example();
            let first = self.rules[..j]
                .iter()
                .find(|p| p.kind == ChannelKind::Public && p.pattern.matches(&example).is_some());
            if let Some(public) = first {
                found.push(Shadowed {
                    public: public.pattern.as_str().to_string(),
                    covered: rule.pattern.as_str().to_string(),
                    kind: rule.kind,
                    example,
                });
            }
        }
        found
    }

    /// Patterns of the rules file's rules marked `history = true`: their channels keep
    /// history (beside `BROADCAST_HISTORY_CHANNELS`).
    pub fn history_patterns(&self) -> &[String] {
        &self.history
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<FileRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    pattern: String,
    kind: ChannelKind,
    #[serde(default)]
    allow: Vec<String>,
    /// The channels keep history for recovery.
    #[serde(default)]
    history: bool,
}

/// `allow` entries (any one suffices): `authenticated`, `role:NAME`, `permission:NAME`,
/// `user:{param}`, `team:{param}`, `org:{param}`.
fn compile_conditions(allow: &[String]) -> Result<Check, String> {
    #[derive(Clone)]
    enum Cond {
        Authenticated,
        Role(String),
        Permission(String),
        User(String),
        Team(String),
        Org(String),
    }
    let param = |v: &str| -> Result<String, String> {
        v.strip_prefix('{')
            .and_then(|v| v.strip_suffix('}'))
            .map(str::to_string)
            .ok_or_else(|| format!("expected {{param}} in {v:?}"))
    };
    let mut conds = Vec::new();
    for a in allow {
        let cond = match a.split_once(':') {
            None if a == "authenticated" => Cond::Authenticated,
            Some(("role", r)) => Cond::Role(r.to_string()),
            Some(("permission", p)) => Cond::Permission(p.to_string()),
            Some(("user", p)) => Cond::User(param(p)?),
            Some(("team", p)) => Cond::Team(param(p)?),
            Some(("org", p)) => Cond::Org(param(p)?),
            _ => return Err(format!("unknown allow condition {a:?}")),
        };
        conds.push(cond);
    }
    if conds.is_empty() {
        return Err("a private or presence rule needs `allow` conditions".into());
    }
    Ok(Arc::new(move |u: &Identity, p: &Params| {
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        conds.iter().any(|c| match c {
            Cond::Authenticated => true,
            Cond::Role(r) => u.has_role(r),
            Cond::Permission(x) => u.permissions.iter().any(|y| y == x),
            Cond::User(k) => u.user_id == get(k),
            Cond::Team(k) => u.teams.iter().any(|t| t == get(k)),
            Cond::Org(k) => u.orgs.iter().any(|t| t == get(k)),
        })
    }))
}

/// The kind a rule gives `channel`: an encrypted channel is private whatever rule
/// admits it (its name says so, and only a private grant gets its shared secret).
fn kind_for(channel: &Channel, rule: ChannelKind) -> ChannelKind {
    if channel.is_encrypted() {
        ChannelKind::Private
    } else {
        rule
    }
}

impl ChannelAuthorizer for ChannelRules {
    fn authorize(&self, identity: Option<&Identity>, channel: &Channel) -> Result<Channel, AuthError> {
        // Rules are the server's, for every app; `private-encrypted-orders.1` is matched
        // as `orders.1` (as Laravel does).
        let name = channel.rule_name();
        for rule in &self.rules {
            let Some(params) = rule.pattern.matches(name) else {
                continue;
            };
            let kind = kind_for(channel, rule.kind);
            let Some(check) = &rule.check else {
                return Ok(channel.with_kind(kind));
            };
            let user = identity.ok_or_else(|| AuthError::Unauthenticated(channel.local_name().to_string()))?;
            return if check(user, &params) {
                Ok(channel.with_kind(kind))
            } else {
                Err(AuthError::Forbidden(channel.local_name().to_string()))
            };
        }
        Err(AuthError::Forbidden(channel.local_name().to_string()))
    }

    fn kind_of(&self, channel: &Channel) -> Option<ChannelKind> {
        self.rules
            .iter()
            .find(|r| r.pattern.matches(channel.rule_name()).is_some())
            .map(|r| kind_for(channel, r.kind))
    }

    /// The channels some rule names.
    fn reserves(&self, channel: &Channel) -> bool {
        self.kind_of(channel).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Hardening round two (issue 21, defect 6): `BROADCAST_PUBLIC_CHANNELS=*` made private
    // and presence names public without a word.
    #[test]
    fn public_patterns_that_swallow_private_rules_are_found() {
        let star = ChannelRules::defaults(&["*".to_string()]);
        let covered: Vec<String> = star.shadowed().into_iter().map(|s| s.covered).collect();
        assert!(covered.contains(&"user.{id}".to_string()), "{covered:?}");
        assert!(covered.contains(&"presence.*".to_string()), "{covered:?}");
        let user = ChannelRules::defaults(&["user.*".to_string()]);
        let shadows = user.shadowed();
        assert_eq!(shadows.len(), 1, "{shadows:?}");
        assert_eq!(
            (shadows[0].public.as_str(), shadows[0].covered.as_str()),
            ("user.*", "user.{id}")
        );
        assert_eq!(shadows[0].example, "user.x");
        let fine = ChannelRules::defaults(&["orders.*".to_string(), "chat".to_string()]);
        assert_eq!(fine.shadowed(), Vec::new());
        let prefixed = ChannelRules::defaults(&["private-orders".to_string()]);
        assert_eq!(prefixed.shadowed().len(), 1);
    }

    fn user(id: &str, roles: &[&str], teams: &[&str], orgs: &[&str]) -> Identity {
        Identity {
            user_id: id.into(),
            user_info: json!({}),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            permissions: vec![],
            teams: teams.iter().map(|s| s.to_string()).collect(),
            orgs: orgs.iter().map(|s| s.to_string()).collect(),
            expires_at: None,
        }
    }

    #[test]
    fn patterns_capture_params_and_respect_segments() {
        let p = Pattern::parse("user.{id}").unwrap();
        assert_eq!(p.matches("user.42").unwrap()["id"], "42");
        for no in ["user.", "user.42.x", "User.42", "user", "xuser.42", "user42"] {
            assert!(p.matches(no).is_none(), "{no}");
        }
        let s = Pattern::parse("admin.*").unwrap();
        assert!(s.matches("admin.alerts").is_some());
        assert!(s.matches("admin.a.b").is_some());
        assert!(s.matches("admin.").is_none());
        assert!(s.matches("adminx").is_none());
        let two = Pattern::parse("chat.{room}.{thread}").unwrap();
        let m = two.matches("chat.r1.t2").unwrap();
        assert_eq!((m["room"].as_str(), m["thread"].as_str()), ("r1", "t2"));
        assert!(Pattern::parse("bad.{").is_err());
        assert!(Pattern::parse("bad.{}").is_err());
    }

    #[test]
    fn default_rules_table() {
        let rules = ChannelRules::defaults(&["lobby.*".to_string()]);
        let alice = user("42", &[], &["7"], &["acme"]);
        let admin = user("1", &["admin"], &[], &[]);
        let ch = |n: &str| Channel::parse(n).unwrap();
        type Case<'a> = (&'a str, Option<&'a Identity>, Result<ChannelKind, u16>);
        let cases: &[Case] = &[
            ("general", None, Ok(ChannelKind::Public)),
            ("announcements", None, Ok(ChannelKind::Public)),
            ("test", Some(&alice), Ok(ChannelKind::Public)),
            ("lobby.3", None, Ok(ChannelKind::Public)),
            ("notifications", None, Err(401)),
            ("notifications", Some(&alice), Ok(ChannelKind::Private)),
            ("admin", Some(&alice), Err(403)),
            ("admin", Some(&admin), Ok(ChannelKind::Private)),
            ("admin.alerts", Some(&alice), Err(403)),
            ("admin.alerts", Some(&admin), Ok(ChannelKind::Private)),
            ("admin.alerts", None, Err(401)),
            ("user.42", Some(&alice), Ok(ChannelKind::Private)),
            ("private-user.42", Some(&alice), Ok(ChannelKind::Private)),
            ("user.7", Some(&alice), Err(403)),
            ("user.42", None, Err(401)),
            ("user.42.x", Some(&alice), Err(403)),
            ("User.42", Some(&alice), Err(403)),
            ("team.7", Some(&alice), Ok(ChannelKind::Private)),
            ("team.8", Some(&alice), Err(403)),
            ("org.acme", Some(&alice), Ok(ChannelKind::Private)),
            ("org.other", Some(&alice), Err(403)),
            ("presence.chat.1", Some(&alice), Ok(ChannelKind::Presence)),
            ("presence-chat.1", Some(&alice), Ok(ChannelKind::Presence)),
            ("presence.chat.1", None, Err(401)),
            ("random", Some(&admin), Err(403)),
            ("random", None, Err(403)),
        ];
        for (name, who, expected) in cases {
            let got = rules
                .authorize(*who, &ch(name))
                .map(|c| c.kind())
                .map_err(|e| e.http_status());
            assert_eq!(&got, expected, "{name} as {:?}", who.map(|u| &u.user_id));
        }
    }

    #[test]
    fn kind_of_is_the_first_matching_rule_whoever_asks() {
        let rules = ChannelRules::defaults(&[]);
        let kind = |n: &str| rules.kind_of(&Channel::parse(n).unwrap());
        assert_eq!(kind("private-general"), Some(ChannelKind::Public));
        assert_eq!(kind("user.42"), Some(ChannelKind::Private));
        assert_eq!(kind("presence-chat.1"), Some(ChannelKind::Presence));
        assert_eq!(kind("private-App.Models.User.1"), None);
    }

    #[test]
    fn rules_file_conditions() {
        let dir = std::env::temp_dir().join(format!("rustaxum-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.toml");
        std::fs::write(
            &path,
            r#"
[[rules]]
pattern = "project.{pid}"
kind = "private"
allow = ["role:pm", "team:{pid}"]

[[rules]]
pattern = "kiosk"
kind = "public"
"#,
        )
        .unwrap();
        let mut rules = ChannelRules::new();
        rules.load_file(&path).unwrap();
        let pm = user("1", &["pm"], &[], &[]);
        let member = user("2", &[], &["9"], &[]);
        let other = user("3", &[], &[], &[]);
        let ch = |n: &str| Channel::parse(n).unwrap();
        assert!(rules.authorize(Some(&pm), &ch("project.5")).is_ok());
        assert!(rules.authorize(Some(&member), &ch("project.9")).is_ok());
        assert!(rules.authorize(Some(&member), &ch("project.5")).is_err());
        assert!(rules.authorize(Some(&other), &ch("project.9")).is_err());
        assert!(rules.authorize(None, &ch("kiosk")).is_ok());
        assert!(rules.has_private());

        std::fs::write(
            &path,
            "[[rules]]\npattern = \"x\"\nkind = \"private\"\nallow = [\"wizard:yes\"]\n",
        )
        .unwrap();
        let err = ChannelRules::new().load_file(&path).unwrap_err().to_string();
        assert!(err.contains("BROADCAST_RULES_FILE") && err.contains("wizard"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
