//! permessage-deflate (RFC 7692): reading a client's offer, the server's answer, and
//! compressing and inflating one message.
//!
//! The server always answers with `server_no_context_takeover` and
//! `client_no_context_takeover`: each message is compressed on its own, so one compressed
//! frame serves every socket that agreed to the same window, and each incoming message
//! inflates on its own, so no socket keeps a compression context (tens of KiB) for its
//! whole life.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub(crate) const EXTENSION: &str = "permessage-deflate";

/// The four octets a sender removes from the end of each compressed message and the
/// receiver appends again before inflating (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The smallest window the server can compress within (zlib's raw deflate cannot use 8).
pub(crate) const MIN_WINDOW_BITS: u8 = 9;
/// The largest (and default) LZ77 window, 32 KiB.
pub(crate) const MAX_WINDOW_BITS: u8 = 15;

/// Compression level: 1, the fastest. Most of a small message's cost is the fixed cost of
/// starting a message (about 6 µs at level 1, 14 µs from level 2 on, this machine); on a
/// 1.8 KB JSON event level 1 gives 605 bytes, level 6 483 (docs/performance.md).
const LEVEL: u32 = 1;

/// What the server and one client agreed on in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The largest window the server may compress with, in bits: the client's
    /// `server_max_window_bits`, or 15 when it named none.
    pub window_bits: u8,
    /// Whether the client named `server_max_window_bits` (the answer must then repeat it).
    named_window: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value that accepts the offer.
    pub(crate) fn response(&self) -> String {
        let mut answer = format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if self.named_window {
            answer.push_str(&format!("; server_max_window_bits={}", self.window_bits));
        }
        answer
    }
}

/// The first `permessage-deflate` offer the server can accept among the values of the
/// request's `Sec-WebSocket-Extensions` headers, or `None` (the connection is then not
/// compressed). An offer with an unknown, repeated or malformed parameter is declined
/// (RFC 7692 §5), as is one asking for an 8-bit server window.
pub(crate) fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Agreed> {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

/// One offer (`permessage-deflate; param; param=value`), if acceptable.
fn accept_offer(offer: &str) -> Option<Agreed> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen = [false; 4];
    let mut agreed = Agreed {
        window_bits: MAX_WINDOW_BITS,
        named_window: false,
    };
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (param, None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                let bits = window_bits(value?)?;
                if bits < MIN_WINDOW_BITS {
                    return None;
                }
                agreed.window_bits = bits;
                agreed.named_window = true;
                2
            }
            "client_max_window_bits" => {
                // The client may limit its own window; the server inflates with the largest
                // window, which reads any smaller one, so nothing to answer.
                if let Some(value) = value {
                    window_bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(agreed)
}

/// A parameter's value without the quotes a quoted-string may put around it.
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// A window size parameter: 8 to 15, digits only, no leading zero (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=MAX_WINDOW_BITS).contains(bits))
}

/// The window `text` is compressed with for a socket that allows `allowed` bits: no more
/// than the message needs (a message of 300 bytes compresses the same in any window of
/// 512 bytes or more, so every socket allowing that much shares one compressed frame).
pub(crate) fn window_for(len: usize, allowed: u8) -> u8 {
    let needed = usize::BITS - len.max(1).saturating_sub(1).leading_zeros();
    let needed = u8::try_from(needed).unwrap_or(MAX_WINDOW_BITS);
    needed
        .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
        .min(allowed.max(MIN_WINDOW_BITS))
}

thread_local! {
    /// One compressor per window size per thread, reset between messages (building one
    /// allocates and clears a few hundred KiB).
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
}

/// `text` as one compressed message payload (a raw DEFLATE stream, flushed, without its
/// last four octets), using at most a `2^window_bits` window; `None` when compressing
/// would not make it smaller.
pub(crate) fn compress(text: &[u8], window_bits: u8) -> Option<Bytes> {
    let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let slot = &mut compressors[usize::from(bits - MIN_WINDOW_BITS)];
        let compressor =
            slot.get_or_insert_with(|| Compress::new_with_window_bits(Compression::new(LEVEL), false, bits));
        compressor.reset();
        deflate(compressor, text)
    })
}

fn deflate(compressor: &mut Compress, text: &[u8]) -> Option<Bytes> {
    // Worth sending only if smaller: the buffer never grows past the input's size.
    let mut out = Vec::with_capacity(text.len() + TAIL.len());
    loop {
        let read = usize::try_from(compressor.total_in()).ok()?;
        compressor
            .compress_vec(text.get(read..)?, &mut out, FlushCompress::Sync)
            .ok()?;
        let read = usize::try_from(compressor.total_in()).ok()?;
        // The flush is complete once the compressor stops with room to spare.
        if read == text.len() && out.len() < out.capacity() {
            break;
        }
        if out.len() >= out.capacity() {
            return None;
        }
    }
    if !out.ends_with(&TAIL) {
        return None;
    }
    out.truncate(out.len() - TAIL.len());
    (out.len() < text.len()).then(|| Bytes::from(out))
}

/// Why an incoming compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InflateError {
    /// It inflates to more than the message size limit (the socket closes with 1009).
    #[error("the compressed message inflates past the message size limit")]
    TooBig,
    /// It is not a valid DEFLATE stream (the socket closes with 1002).
    #[error("the compressed message is not valid DEFLATE data")]
    Corrupt,
}

/// Inflates one message's payload, refusing to produce more than `limit` bytes (so a
/// small "zip bomb" cannot allocate more than a large plain message would).
pub(crate) fn inflate(payload: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let input = [payload, &TAIL[..]].concat();
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(payload.len().saturating_mul(3).max(64).min(limit.saturating_add(1)));
    loop {
        let before = (inflater.total_in(), inflater.total_out());
        let read = usize::try_from(before.0).map_err(|_| InflateError::Corrupt)?;
        let status = inflater
            .decompress_vec(
                input.get(read..).ok_or(InflateError::Corrupt)?,
                &mut out,
                FlushDecompress::Sync,
            )
            .map_err(|_| InflateError::Corrupt)?;
        if out.len() > limit {
            return Err(InflateError::TooBig);
        }
        // A final block (BFINAL) ends the message early; what follows is ignored.
        let all_read = usize::try_from(inflater.total_in()).is_ok_and(|read| read == input.len());
        if status == Status::StreamEnd || (all_read && out.len() < out.capacity()) {
            return Ok(out);
        }
        if out.len() == out.capacity() {
            out.reserve(out.capacity().min(limit.saturating_add(1) - out.len()).max(64));
        } else if before == (inflater.total_in(), inflater.total_out()) {
            return Err(InflateError::Corrupt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_accepted_or_declined_as_rfc_7692_says() {
        let browser = negotiate(["permessage-deflate; client_max_window_bits"]).expect("accepted");
        assert_eq!(browser.window_bits, 15);
        assert_eq!(
            browser.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let narrow =
            negotiate(["permessage-deflate; server_max_window_bits=10; client_no_context_takeover"]).expect("accepted");
        assert_eq!(narrow.window_bits, 10);
        assert!(narrow.response().ends_with("; server_max_window_bits=10"));
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=\"12\""]).map(|a| a.window_bits),
            Some(12)
        );
        // The first acceptable offer wins; declined ones are skipped.
        let second = negotiate(["permessage-deflate; server_max_window_bits=8, permessage-deflate"]).expect("fallback");
        assert_eq!(second.window_bits, 15);
        for declined in [
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
        ] {
            assert_eq!(negotiate([declined]), None, "{declined}");
        }
        assert_eq!(negotiate([]), None);
        // Several headers are one list.
        assert!(negotiate(["foo", "PERMESSAGE-DEFLATE"]).is_some());
    }

    #[test]
    fn a_compressed_message_inflates_to_the_same_text() {
        let text = br#"{"event":"order.shipped","channel":"private-orders.42","data":"{\"id\":42,\"items\":[{\"sku\":\"A-1\",\"qty\":1},{\"sku\":\"A-2\",\"qty\":3}],\"status\":\"shipped\",\"carrier\":\"dhl\"}"}"#.repeat(3);
        let compressed = compress(&text, 15).expect("smaller");
        assert!(
            compressed.len() < text.len() / 2,
            "{} of {}",
            compressed.len(),
            text.len()
        );
        assert_eq!(inflate(&compressed, 1 << 20).expect("inflates"), text);
        // The compressor is reused: a second message comes out the same.
        assert_eq!(compress(&text, 15), Some(compressed.clone()));
        // A narrow window still inflates with the default one.
        let narrow = compress(&text, 9).expect("smaller");
        assert_eq!(inflate(&narrow, 1 << 20).expect("inflates"), text);
    }

    #[test]
    fn what_would_not_shrink_is_sent_as_it_is() {
        assert_eq!(compress(b"{}", 15), None);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        assert_eq!(compress(&noise, 15), None);
    }

    #[test]
    fn a_bomb_or_garbage_is_refused() {
        let bomb = compress(&vec![b'a'; 1 << 20], 15).expect("compresses");
        assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 64 * 1024), Err(InflateError::TooBig));
        assert_eq!(inflate(&bomb, 1 << 20).map(|t| t.len()), Ok(1 << 20));
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff, 0x00], 1024),
            Err(InflateError::Corrupt)
        );
        assert_eq!(inflate(&[], 1024), Ok(Vec::new()));
    }

    #[test]
    fn the_window_is_what_the_message_needs_within_what_the_socket_allows() {
        assert_eq!(window_for(0, 15), 9);
        assert_eq!(window_for(300, 15), 9);
        assert_eq!(window_for(512, 15), 9);
        assert_eq!(window_for(513, 15), 10);
        assert_eq!(window_for(5000, 15), 13);
        assert_eq!(window_for(5000, 10), 10);
        assert_eq!(window_for(1 << 20, 15), 15);
    }
}
