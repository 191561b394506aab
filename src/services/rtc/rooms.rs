//! Rooms of the real-time service: created, joined and left by clients, with an owner,
//! an optional member limit, and privacy (by invitation, or by a channel rule for
//! `room.{name}`). Membership belongs to the user, not the socket: a user whose last
//! socket in a room closes is marked away, and is still a member if they come back within
//! the grace period (their new socket rejoins at once); after it they are removed. A room
//! left empty is removed after the same grace period.
//!
//! A room `{name}` is the presence channel `presence.rtc-room.{name}` of the hub (so members
//! see each other come and go); the records live in a [`RecordStore`] (memory on one
//! node, Redis in a cluster), changed with compare-and-set.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::records::{update, RecordStore};
use crate::auth::Identity;
use crate::backend::BackendError;
use crate::channel::Channel;
use crate::session::{Grant, GrantSource, JoinError};

/// Hub channels of rooms start with this.
pub const ROOM_CHANNEL_PREFIX: &str = "presence.rtc-room.";
const ROOM_KEY: &str = "rooms:room:";
const USER_KEY: &str = "rooms:user:";
/// The rooms a user owns (created and not yet removed): what their room limit counts.
const OWNER_KEY: &str = "rooms:owner:";
/// Longest room name.
pub const MAX_ROOM_NAME: usize = 64;

/// Why a room operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The name is not 1 to 64 of `A-Z a-z 0-9 _ - =`.
    #[error("invalid room name {0:?}: 1 to 64 of A-Z a-z 0-9 _ - =")]
    InvalidName(String),
    /// A room of this name exists.
    #[error("room {0} already exists")]
    Exists(String),
    /// No room of this name.
    #[error("room {0} does not exist")]
    NotFound(String),
    /// The room has `max_members` members.
    #[error("room {room} is full ({max} members)")]
    Full {
        /// The room.
        room: String,
        /// Its limit.
        max: usize,
    },
    /// The room is private and the user is neither invited nor allowed by a rule.
    #[error("room {0} is private: an invitation is needed")]
    Private(String),
    /// The user is not a member.
    #[error("you are not a member of room {0}")]
    NotMember(String),
    /// Only an authenticated user can be in a room.
    #[error("rooms need an authenticated connection (a token)")]
    Unauthenticated,
    /// The user owns as many rooms as `BROADCAST_RTC_MAX_ROOMS_PER_USER` allows.
    #[error("you own {0} rooms, the most allowed (BROADCAST_RTC_MAX_ROOMS_PER_USER): leave or let one empty first")]
    TooManyRooms(usize),
    /// The records could not be reached.
    #[error("rooms unavailable: {0}")]
    Unavailable(String),
}

impl From<BackendError> for RoomError {
    fn from(e: BackendError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl RoomError {
    /// The `Error` frame's code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidName(_) => "invalid_room",
            Self::Exists(_) => "room_exists",
            Self::NotFound(_) => "room_not_found",
            Self::Full { .. } => "room_full",
            Self::Private(_) => "room_private",
            Self::NotMember(_) => "not_a_member",
            Self::Unauthenticated => "unauthorized",
            Self::TooManyRooms(_) => "too_many_rooms",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// When they joined.
    pub joined_at: DateTime<Utc>,
    /// Since when they have had no socket in the room (`None`: connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away_since: Option<DateTime<Utc>>,
}

/// A room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Its name.
    pub name: String,
    /// The user who created it.
    pub owner: String,
    /// Most members, `None` for no limit.
    pub max_members: Option<usize>,
    /// Whether joining needs an invitation (or a rule).
    pub private: bool,
    /// Users invited (private rooms).
    #[serde(default)]
    pub invited: Vec<String>,
    /// Members by user id.
    #[serde(default)]
    pub members: BTreeMap<String, Membership>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Since when it has had no member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_since: Option<DateTime<Utc>>,
}

impl Room {
    /// The hub channel of the room.
    pub fn channel(&self) -> Option<Channel> {
        room_channel(&self.name)
    }
}

/// The hub channel of room `name`.
pub fn room_channel(name: &str) -> Option<Channel> {
    Channel::parse(&format!("{ROOM_CHANNEL_PREFIX}{name}")).ok()
}

/// What a new room is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NewRoom {
    /// Most members.
    #[serde(default)]
    pub max_members: Option<usize>,
    /// Joining needs an invitation (or a rule allowing `room.{name}`).
    #[serde(default)]
    pub private: bool,
    /// Users invited.
    #[serde(default)]
    pub invite: Vec<String>,
}

fn check_name(name: &str) -> Result<(), RoomError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ROOM_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '='));
    if ok {
        Ok(())
    } else {
        Err(RoomError::InvalidName(name.to_string()))
    }
}

fn decode<T: serde::de::DeserializeOwned>(raw: Option<&str>) -> Result<Option<T>, RoomError> {
    raw.map(|r| serde_json::from_str(r).map_err(|e| RoomError::Unavailable(format!("unreadable record: {e}"))))
        .transpose()
}

fn encode<T: Serialize>(value: &T) -> Result<String, RoomError> {
    serde_json::to_string(value).map_err(|e| RoomError::Unavailable(e.to_string()))
}

/// The rooms of a node (shared with the other nodes through the record store).
pub struct Rooms {
    store: Arc<dyn RecordStore>,
    max_per_owner: usize,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms").finish_non_exhaustive()
    }
}

impl Rooms {
    /// Rooms kept in `store`; one user owns at most `max_per_owner` at once.
    pub fn new(store: Arc<dyn RecordStore>, max_per_owner: usize) -> Self {
        Self { store, max_per_owner }
    }

    /// Creates room `name` owned by `owner`, who becomes its first member. Refused when
    /// the owner already owns the most rooms allowed.
    pub async fn create(&self, name: &str, owner: &str, new: NewRoom) -> Result<Room, RoomError> {
        check_name(name)?;
        if new.max_members == Some(0) {
            return Err(RoomError::InvalidName(format!(
                "{name} (max_members must be at least 1)"
            )));
        }
        self.own(owner, name).await?;
        let created = self.insert(name, owner, new).await;
        if created.is_err() {
            self.disown(owner, name).await?;
        }
        created
    }

    /// Removes room `name` that `owner` just created and could not enter.
    pub async fn abandon(&self, name: &str, owner: &str) -> Result<(), RoomError> {
        update(&*self.store, &format!("{ROOM_KEY}{name}"), |raw| {
            let Some(room) = decode::<Room>(raw)? else {
                return Ok::<_, RoomError>((None, ()));
            };
            let others = room.members.keys().any(|u| u != owner);
            Ok((if others { raw.map(str::to_string) } else { None }, ()))
        })
        .await?;
        self.index(owner, name, false).await?;
        self.disown(owner, name).await
    }

    /// Reserves one of `owner`'s rooms for `name`.
    async fn own(&self, owner: &str, name: &str) -> Result<(), RoomError> {
        let max = self.max_per_owner;
        update(&*self.store, &format!("{OWNER_KEY}{owner}"), |raw| {
            let mut rooms: Vec<String> = decode(raw)?.unwrap_or_default();
            if !rooms.iter().any(|r| r == name) {
                if rooms.len() >= max {
                    return Err(RoomError::TooManyRooms(max));
                }
                rooms.push(name.to_string());
            }
            Ok((Some(encode(&rooms)?), ()))
        })
        .await
    }

    async fn disown(&self, owner: &str, name: &str) -> Result<(), RoomError> {
        update(&*self.store, &format!("{OWNER_KEY}{owner}"), |raw| {
            let mut rooms: Vec<String> = decode(raw)?.unwrap_or_default();
            rooms.retain(|r| r != name);
            Ok((if rooms.is_empty() { None } else { Some(encode(&rooms)?) }, ()))
        })
        .await
    }

    async fn insert(&self, name: &str, owner: &str, new: NewRoom) -> Result<Room, RoomError> {
        let now = Utc::now();
        let mut room = Room {
            name: name.to_string(),
            owner: owner.to_string(),
            max_members: new.max_members,
            private: new.private,
            invited: new.invite,
            members: BTreeMap::new(),
            created_at: now,
            empty_since: None,
        };
        room.members.insert(
            owner.to_string(),
            Membership {
                joined_at: now,
                away_since: None,
            },
        );
        let record = encode(&room)?;
        if !self
            .store
            .compare_and_set(&format!("{ROOM_KEY}{name}"), None, Some(&record))
            .await?
        {
            return Err(RoomError::Exists(name.to_string()));
        }
        self.index(owner, name, true).await?;
        Ok(room)
    }

    /// A room.
    pub async fn get(&self, name: &str) -> Result<Room, RoomError> {
        check_name(name)?;
        let raw = self.store.get(&format!("{ROOM_KEY}{name}")).await?;
        decode(raw.as_deref())?.ok_or_else(|| RoomError::NotFound(name.to_string()))
    }

    /// Adds `user` to room `name` (or marks them back if they were away). `allowed_by_rule`
    /// says whether a channel rule lets them into a private room.
    pub async fn join(&self, name: &str, user: &str, allowed_by_rule: bool) -> Result<Room, RoomError> {
        check_name(name)?;
        let room = update(&*self.store, &format!("{ROOM_KEY}{name}"), |raw| {
            let mut room: Room = decode(raw)?.ok_or_else(|| RoomError::NotFound(name.to_string()))?;
            if let Some(m) = room.members.get_mut(user) {
                m.away_since = None;
                return Ok((Some(encode(&room)?), room));
            }
            let invited = room.owner == user || room.invited.iter().any(|u| u == user);
            if room.private && !invited && !allowed_by_rule {
                return Err(RoomError::Private(name.to_string()));
            }
            if let Some(max) = room.max_members {
                if room.members.len() >= max {
                    return Err(RoomError::Full {
                        room: name.to_string(),
                        max,
                    });
                }
            }
            room.members.insert(
                user.to_string(),
                Membership {
                    joined_at: Utc::now(),
                    away_since: None,
                },
            );
            room.empty_since = None;
            Ok((Some(encode(&room)?), room))
        })
        .await?;
        self.index(user, name, true).await?;
        Ok(room)
    }

    /// Removes `user` from room `name`.
    pub async fn leave(&self, name: &str, user: &str) -> Result<(), RoomError> {
        check_name(name)?;
        update(&*self.store, &format!("{ROOM_KEY}{name}"), |raw| {
            let mut room: Room = decode(raw)?.ok_or_else(|| RoomError::NotFound(name.to_string()))?;
            if room.members.remove(user).is_none() {
                return Err(RoomError::NotMember(name.to_string()));
            }
            if room.members.is_empty() {
                room.empty_since = Some(Utc::now());
            }
            Ok((Some(encode(&room)?), ()))
        })
        .await?;
        self.index(user, name, false).await
    }

    /// Marks `user` away from room `name` (their last socket there closed).
    pub async fn away(&self, name: &str, user: &str) -> Result<(), RoomError> {
        update(&*self.store, &format!("{ROOM_KEY}{name}"), |raw| {
            let Some(mut room) = decode::<Room>(raw)? else {
                return Ok((None, ()));
            };
            match room.members.get_mut(user) {
                Some(m) if m.away_since.is_none() => m.away_since = Some(Utc::now()),
                _ => return Ok((raw.map(str::to_string), ())),
            }
            Ok((Some(encode(&room)?), ()))
        })
        .await
    }

    /// The rooms `user` is a member of.
    pub async fn rooms_of(&self, user: &str) -> Result<Vec<String>, RoomError> {
        let raw = self.store.get(&format!("{USER_KEY}{user}")).await?;
        Ok(decode(raw.as_deref())?.unwrap_or_default())
    }

    async fn index(&self, user: &str, room: &str, member: bool) -> Result<(), RoomError> {
        update(&*self.store, &format!("{USER_KEY}{user}"), |raw| {
            let mut rooms: Vec<String> = decode(raw)?.unwrap_or_default();
            rooms.retain(|r| r != room);
            if member {
                rooms.push(room.to_string());
                rooms.sort();
            }
            let new = if rooms.is_empty() { None } else { Some(encode(&rooms)?) };
            Ok((new, ()))
        })
        .await
    }

    /// Every room's name.
    pub async fn names(&self) -> Result<Vec<String>, RoomError> {
        let mut names: Vec<String> = self
            .store
            .keys(ROOM_KEY)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(ROOM_KEY).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes members away longer than `grace` and rooms empty longer than `grace`;
    /// members with no socket anywhere (`present` says who has one) are marked away first.
    /// Returns (members removed, rooms removed).
    pub async fn sweep(
        &self,
        grace: chrono::Duration,
        present: &(dyn Fn(&Room) -> Option<Vec<String>> + Sync),
    ) -> Result<(usize, usize), RoomError> {
        let now = Utc::now();
        let (mut members_removed, mut rooms_removed) = (0, 0);
        for name in self.names().await? {
            let key = format!("{ROOM_KEY}{name}");
            let Some(room) = decode::<Room>(self.store.get(&key).await?.as_deref())? else {
                continue;
            };
            let here = present(&room);
            let (removed, gone) = update(&*self.store, &key, |raw| {
                let Some(mut room) = decode::<Room>(raw)? else {
                    return Ok::<_, RoomError>((None, (Vec::new(), false)));
                };
                let mut removed = Vec::new();
                for (user, m) in room.members.iter_mut() {
                    let connected = here.as_ref().is_none_or(|h| h.contains(user));
                    if m.away_since.is_none() && !connected {
                        m.away_since = Some(now);
                    }
                }
                room.members.retain(|user, m| {
                    let expired = m.away_since.is_some_and(|t| now - t >= grace);
                    if expired {
                        removed.push(user.clone());
                    }
                    !expired
                });
                if room.members.is_empty() && room.empty_since.is_none() {
                    room.empty_since = Some(now);
                }
                if room.empty_since.is_some_and(|t| now - t >= grace) && room.members.is_empty() {
                    return Ok((None, (removed, true)));
                }
                Ok((Some(encode(&room)?), (removed, false)))
            })
            .await?;
            for user in &removed {
                self.index(user, &name, false).await?;
            }
            members_removed += removed.len();
            if gone {
                self.disown(&room.owner, &name).await?;
                rooms_removed += 1;
                tracing::debug!(room = %name, "empty room removed");
            }
        }
        Ok((members_removed, rooms_removed))
    }
}

/// Room channels are joined through the rooms (`JoinRoom`), never directly.
pub struct RoomChannels;

impl GrantSource for RoomChannels {
    fn grant(&self, _identity: Option<&Identity>, channel: &Channel) -> Option<Result<Grant, JoinError>> {
        channel
            .name()
            .starts_with(ROOM_CHANNEL_PREFIX)
            .then(|| Err(JoinError::Forbidden(channel.name().to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::rtc::records::MemoryRecords;

    #[tokio::test]
    async fn rooms_have_owners_limits_privacy_and_a_grace_period() {
        let rooms = Rooms::new(Arc::new(MemoryRecords::default()), 20);
        let room = rooms
            .create(
                "lobby",
                "alice",
                NewRoom {
                    max_members: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(room.owner, "alice");
        assert_eq!(
            rooms
                .create("lobby", "bob", NewRoom::default())
                .await
                .unwrap_err()
                .code(),
            "room_exists"
        );
        assert_eq!(
            rooms
                .create("no way", "bob", NewRoom::default())
                .await
                .unwrap_err()
                .code(),
            "invalid_room"
        );
        rooms.join("lobby", "bob", false).await.unwrap();
        assert_eq!(
            rooms.join("lobby", "carol", false).await.unwrap_err().code(),
            "room_full"
        );
        assert_eq!(rooms.rooms_of("bob").await.unwrap(), ["lobby"]);

        rooms
            .create(
                "secret",
                "alice",
                NewRoom {
                    private: true,
                    invite: vec!["bob".into()],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            rooms.join("secret", "carol", false).await.unwrap_err().code(),
            "room_private"
        );
        rooms.join("secret", "carol", true).await.expect("a rule lets carol in");
        rooms.join("secret", "bob", false).await.expect("invited");

        // Away members come back within the grace period, and are removed after it.
        rooms.away("lobby", "bob").await.unwrap();
        rooms.join("lobby", "bob", false).await.unwrap();
        assert!(rooms.get("lobby").await.unwrap().members["bob"].away_since.is_none());
        rooms.away("lobby", "bob").await.unwrap();
        let everyone_here = |_: &Room| None;
        assert_eq!(
            rooms.sweep(chrono::Duration::hours(1), &everyone_here).await.unwrap(),
            (0, 0)
        );
        assert_eq!(
            rooms
                .sweep(chrono::Duration::zero(), &|_: &Room| Some(vec![
                    "alice".into(),
                    "carol".into()
                ]))
                .await
                .unwrap(),
            (2, 0)
        );
        assert!(rooms.rooms_of("bob").await.unwrap().is_empty());
        rooms.leave("lobby", "alice").await.unwrap();
        assert_eq!(rooms.leave("lobby", "alice").await.unwrap_err().code(), "not_a_member");
        let (_, gone) = rooms.sweep(chrono::Duration::zero(), &everyone_here).await.unwrap();
        assert_eq!(gone, 1);
        assert_eq!(rooms.get("lobby").await.unwrap_err().code(), "room_not_found");
        assert_eq!(rooms.names().await.unwrap(), ["secret"]);
    }
}
