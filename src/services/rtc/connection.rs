//! One typed-frame connection's part in the service: the user it counts online as, the
//! rooms it is in, entering, creating and leaving rooms, and going away when it closes.
//! The wire protocol (`protocol::rtc`) turns the outcomes into frames.

use std::sync::Arc;

use crate::channel::{Channel, ChannelKind};
use crate::session::{member_of, Grant, JoinAs, JoinError, Refusal, Session};

use super::rooms::room_channel;
use super::{NewRoom, Room, RoomError, Rtc};

/// A room the connection is now in.
#[derive(Debug, Clone)]
pub struct Entered {
    /// The room as it is after entering.
    pub room: Room,
    /// Its hub channel (a presence channel).
    pub channel: Channel,
    /// Whether the user was a member already (brought back after a reconnection).
    pub rejoined: bool,
}

/// Why a room could not be entered: the room refused, or its channel did.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    /// The room (name, membership, size, privacy, records).
    #[error(transparent)]
    Room(#[from] RoomError),
    /// The room's channel (connection quotas, closing).
    #[error(transparent)]
    Join(#[from] JoinError),
}

impl EnterError {
    /// The documented error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Room(e) => e.code(),
            Self::Join(e) => e.code().as_str(),
        }
    }
}

/// What authenticating brought: the user's own channel joined, online, and each room they
/// are still a member of entered again (or why not).
#[derive(Debug, Default)]
pub struct Authenticated {
    /// Each room, in order: entered, or the room's name and the refusal.
    pub rooms: Vec<Result<Entered, (String, EnterError)>>,
    /// The user's rooms could not be listed.
    pub unlisted: Option<RoomError>,
}

/// One connection of the typed-frame service.
#[derive(Debug)]
pub struct Connection {
    rtc: Arc<Rtc>,
    /// The user this connection counts as online for, once authenticated.
    online: Option<String>,
    /// Rooms this connection is in.
    rooms: Vec<String>,
}

impl Connection {
    /// A connection of `rtc`, not yet counted online.
    pub fn new(rtc: Arc<Rtc>) -> Self {
        Self {
            rtc,
            online: None,
            rooms: Vec::new(),
        }
    }

    /// The service.
    pub fn rtc(&self) -> &Arc<Rtc> {
        &self.rtc
    }

    /// Once the session has an identity: joins the user's own channel (direct messages),
    /// counts them online and brings back the rooms they are still a member of. Nothing
    /// for an anonymous session.
    pub async fn authenticated(&mut self, s: &mut Session) -> Authenticated {
        let mut out = Authenticated::default();
        let Some(identity) = s.identity().cloned() else {
            return out;
        };
        if let Ok(own) = Channel::parse(&crate::channel::user_channel(&identity.user_id)) {
            if let Err(e) = s.join(&own, JoinAs::User).await {
                tracing::warn!(user = %identity.user_id, error = %e, "the rules refuse a user their own channel: no direct messages for them");
            }
        }
        match self.rtc.online(s.node(), &member_of(&identity), s.id()).await {
            Ok(()) => self.online = Some(identity.user_id.clone()),
            Err(e) => tracing::warn!(user = %identity.user_id, error = %e, "could not record the user online"),
        }
        match self.rtc.rooms().rooms_of(&identity.user_id).await {
            Ok(names) => {
                for name in names {
                    let entered = self.enter(s, &name, true).await;
                    out.rooms.push(entered.map_err(|e| (name, e)));
                }
            }
            Err(e) => out.unlisted = Some(e),
        }
        out
    }

    /// Whether a channel rule lets the connection's user into private room `name`.
    fn allowed_by_rule(s: &Session, name: &str) -> bool {
        let Ok(channel) = Channel::parse(&format!("room.{name}")) else {
            return false;
        };
        matches!(s.node().grant(s.identity(), &channel, &JoinAs::User), Ok(g) if g.channel.kind() != ChannelKind::Public)
    }

    /// Adds the user to room `name` (unless `rejoin`, which only marks them back) and
    /// joins its channel, where members may send client events.
    pub async fn enter(&mut self, s: &mut Session, name: &str, rejoin: bool) -> Result<Entered, EnterError> {
        let identity = s.identity().cloned().ok_or(RoomError::Unauthenticated)?;
        let room = self
            .rtc
            .rooms()
            .join(name, &identity.user_id, Self::allowed_by_rule(s, name))
            .await?;
        let channel = room.channel().ok_or_else(|| RoomError::InvalidName(name.into()))?;
        let mut grant = Grant::for_channel(channel.clone(), Some(member_of(&identity)));
        grant.client_events = true;
        s.join(&channel, JoinAs::Granted(Box::new(grant))).await?;
        if !self.rooms.iter().any(|r| r == name) {
            self.rooms.push(name.to_string());
        }
        Ok(Entered {
            room,
            channel,
            rejoined: rejoin,
        })
    }

    /// Creates room `name` owned by the user and enters it. A room its creator cannot
    /// enter is not kept: the refusal is the answer.
    pub async fn create(
        &mut self,
        s: &mut Session,
        name: &str,
        options: NewRoom,
    ) -> Result<(Room, Entered), EnterError> {
        let me = s.user().ok_or(RoomError::Unauthenticated)?;
        let room = self.rtc.rooms().create(name, &me, options).await?;
        match self.enter(s, name, false).await {
            Ok(entered) => Ok((room, entered)),
            Err(refused) => {
                if let Err(e) = self.rtc.rooms().abandon(name, &me).await {
                    tracing::warn!(room = %name, error = %e, "removing a room its creator could not enter failed");
                }
                Err(refused)
            }
        }
    }

    /// Takes the user out of room `name` and its channel.
    pub async fn leave(&mut self, s: &mut Session, name: &str) -> Result<(), RoomError> {
        let me = s.user().ok_or(RoomError::Unauthenticated)?;
        self.rtc.rooms().leave(name, &me).await?;
        self.rooms.retain(|r| r != name);
        if let Some(channel) = room_channel(name) {
            let _ = s.leave(channel.name()).await;
        }
        Ok(())
    }

    /// The connection closed: no longer online, and away from each room where no other
    /// socket of the user is (on any node).
    pub async fn closed(&mut self, s: &mut Session) {
        let Some(user) = self.online.take() else {
            return;
        };
        self.rtc.offline(s.node(), &user, s.id()).await;
        for name in std::mem::take(&mut self.rooms) {
            let Some(channel) = room_channel(&name) else { continue };
            let _ = s.leave(channel.name()).await;
            let still_here = match s.node().presence().members(channel.name()).await {
                Ok(members) => members.iter().any(|m| m.user_id == user),
                Err(_) => true,
            };
            if !still_here {
                if let Err(e) = self.rtc.rooms().away(&name, &user).await {
                    tracing::debug!(room = %name, %user, error = %e, "marking a member away failed; the sweep will");
                }
            }
        }
    }
}
