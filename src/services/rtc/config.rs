//! The typed-frame service's settings.

use std::time::Duration;

/// `BROADCAST_RTC_MAX_ROOMS_PER_USER` when not set.
pub const DEFAULT_MAX_ROOMS_PER_USER: usize = 20;

/// The typed-frame service (the real-time communication document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcConfig {
    /// `BROADCAST_RTC_PORT` (also `PORT`): its own port, where `/ws` speaks typed frames,
    /// default 8081; `None` (`off`) for none. It is also mounted on the main ports.
    pub port: Option<u16>,
    /// Whether `BROADCAST_RTC_PORT` was set (an explicit port that is taken stops start-up).
    pub explicit_port: bool,
    /// `BROADCAST_ROOM_GRACE`: how long an away member and an empty room are kept, 60 s.
    pub room_grace: Duration,
    /// `BROADCAST_RTC_MAX_ROOMS_PER_USER`: rooms one user may own at once, 20.
    pub max_rooms_per_user: usize,
    /// `BROADCAST_RTC_ALLOW_ANONYMOUS`: with a JWT key configured, admit connections
    /// without a token, `false` (they get 401).
    pub allow_anonymous: bool,
    /// The rate limits.
    pub limits: crate::services::rtc::RateLimits,
}

impl Default for RtcConfig {
    /// The environment's defaults, except the port, which is off (a library default opens
    /// no port of its own).
    fn default() -> Self {
        Self {
            port: None,
            explicit_port: false,
            room_grace: Duration::from_secs(60),
            max_rooms_per_user: DEFAULT_MAX_ROOMS_PER_USER,
            allow_anonymous: false,
            limits: crate::services::rtc::RateLimits::default(),
        }
    }
}
