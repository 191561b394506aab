//! The WebSocket wire beneath the protocols: permessage-deflate (RFC 7692).
//!
//! [`deflate`] reads a client's offer and compresses or inflates one message;
//! [`Inflating`] sits between the network and the WebSocket library and hands compressed
//! incoming messages on inflated; [`client::connect`] offers the extension as a client.
//! The server's sockets (`protocol::socket`) and the benchmark's clients use them. The
//! compressed frame of an outgoing message is made once per message and window, and
//! shared by every socket that agreed to it.

#[cfg(feature = "cli")]
pub(crate) mod client;
pub(crate) mod deflate;
mod holding;
mod inflating;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

pub(crate) use holding::{Holding, Stalled};
pub(crate) use inflating::{DeflateReadError, Inflating, Role};

/// A compressed message's payload as a final text frame with RSV1 set (RFC 7692 §6), for
/// tungstenite to write as it is (`Message::Frame`; a client's is masked on the way).
pub(crate) fn compressed_text(payload: Bytes) -> Frame {
    let header = FrameHeader {
        is_final: true,
        rsv1: true,
        rsv2: false,
        rsv3: false,
        opcode: OpCode::Data(Data::Text),
        mask: None,
    };
    Frame::from_payload(header, payload)
}

/// `BROADCAST_COMPRESSION`: whether the server agrees to permessage-deflate, and from
/// what size a message is sent compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Offers are declined: every socket is uncompressed.
    Off,
    /// Offers are accepted; messages of at least this many bytes are sent compressed
    /// (smaller ones gain little and cost the client an inflate).
    Above(usize),
}

/// What compression did on one server, for `/metrics`: messages compressed (once per
/// message, protocol and window size) and their sizes before and after.
#[derive(Debug, Default)]
pub(crate) struct DeflateStats {
    frames: std::sync::atomic::AtomicU64,
    before: std::sync::atomic::AtomicU64,
    after: std::sync::atomic::AtomicU64,
}

impl DeflateStats {
    /// One message of `before` bytes compressed to `after`.
    pub(crate) fn record(&self, before: usize, after: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.frames.fetch_add(1, Relaxed);
        self.before.fetch_add(before as u64, Relaxed);
        self.after.fetch_add(after as u64, Relaxed);
    }

    /// Messages compressed, their bytes before, and after.
    pub(crate) fn snapshot(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.frames.load(Relaxed),
            self.before.load(Relaxed),
            self.after.load(Relaxed),
        )
    }
}

impl Compression {
    /// What a value must look like (the configuration's error says it).
    pub const EXPECTED: &'static str = "on, off, or the size in bytes from which messages are compressed (1 or more)";

    /// The size from which messages go compressed; `None` when off.
    pub fn threshold(self) -> Option<usize> {
        match self {
            Self::Above(n) => Some(n),
            Self::Off => None,
        }
    }

    /// `on`: messages of 1 KiB or more are compressed. Smaller JSON gains little at the
    /// fastest level (a 260-byte event shrinks by 5 %, a 1.8 KB one by 67 %) and costs
    /// every client an inflate.
    pub const DEFAULT_THRESHOLD: usize = 1024;
}

impl Default for Compression {
    fn default() -> Self {
        Self::Above(Self::DEFAULT_THRESHOLD)
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    /// `on`, `off` or a threshold in bytes (at least 1).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" => Ok(Self::default()),
            "off" | "false" | "no" => Ok(Self::Off),
            n => match n.parse::<usize>() {
                Ok(0) | Err(_) => Err(format!("expected {}", Self::EXPECTED)),
                Ok(n) => Ok(Self::Above(n)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Compression;

    #[test]
    fn the_setting_reads_on_off_or_a_threshold() {
        assert_eq!("on".parse(), Ok(Compression::Above(1024)));
        assert_eq!(" OFF ".parse(), Ok(Compression::Off));
        assert_eq!("1024".parse(), Ok(Compression::Above(1024)));
        for bad in ["0", "-1", "1kb", ""] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
    }
}
