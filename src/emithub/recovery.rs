//! What a returning EmitHub socket missed on a `persist_messages` channel.

use super::*;

impl EmitHub {
    /// What a socket that last saw `since` on a `persist_messages` channel missed: the
    /// persisted messages after it (at most `limit`, the newest), whether that is all of
    /// them, whether it was cut to `limit`, and the channel's position. `None` when the
    /// channel keeps no messages.
    pub async fn recover(&self, id: Uuid, since: &Position, limit: usize) -> Result<Option<Recovered>, EmitHubError> {
        let channel = self.get(id)?;
        if !channel.settings.persist_messages {
            return Ok(None);
        }
        let epoch = epoch_of(id);
        let page = self
            .store
            .messages(id, None, limit.saturating_add(1).min(10_000))
            .await?;
        let top = page.messages.last().map_or(0, |m| m.sequence);
        let position = Position {
            epoch: epoch.clone(),
            offset: top,
        };
        if since.epoch != epoch || since.offset > top {
            return Ok(Some(Recovered {
                messages: Vec::new(),
                recovered: false,
                capped: false,
                position,
            }));
        }
        let mut missed: Vec<StoredMessage> = page
            .messages
            .into_iter()
            .filter(|m| m.sequence > since.offset)
            .collect();
        let capped = missed.len() > limit;
        if capped {
            missed.drain(..missed.len() - limit);
        }
        // Continuous when the first missed one follows `since` (or nothing was missed).
        let continuous = missed
            .first()
            .map_or(since.offset == top, |m| m.sequence == since.offset + 1);
        Ok(Some(Recovered {
            recovered: continuous && !capped,
            capped,
            messages: if continuous || capped { missed } else { Vec::new() },
            position,
        }))
    }
}
