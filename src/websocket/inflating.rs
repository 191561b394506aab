//! The read side of permessage-deflate beneath a WebSocket library that knows no
//! extensions: an `AsyncRead` adapter that follows the frames of the incoming byte stream,
//! passes every frame through untouched except compressed messages, and hands those on
//! as one plain frame with the inflated payload.
//!
//! tungstenite refuses any frame with RSV1 set; once a client agreed to
//! permessage-deflate it may compress any message it sends. The adapter only reads frame
//! headers of what it passes through (a few bytes per frame); a compressed message is
//! collected (up to the message size limit), inflated (up to the same limit) and given to
//! the library as a frame it already knows how to read, masked with a zero key when the
//! reader is a server (RFC 6455 requires client frames to be masked; XOR with zero leaves
//! the payload as it is).

// Public as `cli::websocket::DeflateClient`'s stream; crate-internal without the cli.
#![cfg_attr(not(feature = "cli"), allow(unreachable_pub))]

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::deflate::{inflate, InflateError};

/// Which end of the connection reads through the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A server: incoming frames are masked.
    Server,
    /// A client: incoming frames are not masked.
    Client,
}

/// Why the incoming stream broke the extension's rules; carried inside the `io::Error`
/// the read returns, so the socket can close with the right code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DeflateReadError {
    /// A compressed message, or what it inflates to, is over the size limit (1009).
    #[error("compressed message over the size limit")]
    TooBig,
    /// Bad DEFLATE data, a data frame inside a compressed message, or wrong masking (1002).
    #[error("invalid compressed message: {0}")]
    Protocol(&'static str),
}

impl From<InflateError> for DeflateReadError {
    fn from(e: InflateError) -> Self {
        match e {
            InflateError::TooBig => Self::TooBig,
            InflateError::Corrupt => Self::Protocol("not valid DEFLATE data"),
        }
    }
}

impl DeflateReadError {
    /// The error a failed read carries.
    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// The adapter's error inside `e`, if `e` is one.
    pub(crate) fn find(e: &io::Error) -> Option<Self> {
        e.get_ref()?.downcast_ref::<Self>().copied()
    }
}

/// A byte stream whose compressed WebSocket messages arrive inflated. Writes pass
/// through. Without an agreed extension it is the stream itself (no state, no scanning).
pub struct Inflating<S> {
    io: S,
    scan: Option<Box<Scan>>,
}

impl<S> Inflating<S> {
    /// `io` read as it is (no extension agreed).
    pub fn plain(io: S) -> Self {
        Self { io, scan: None }
    }

    /// `io` whose compressed messages are inflated, each up to `limit` bytes. A server's
    /// stream starts with frames (the HTTP server read the handshake); a client's starts
    /// with the server's HTTP answer, passed through up to its blank line.
    pub fn new(io: S, role: Role, limit: usize) -> Self {
        Self {
            io,
            scan: Some(Box::new(Scan::new(role, limit))),
        }
    }

    /// The stream underneath.
    #[cfg(feature = "cli")]
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The stream underneath, to end the connection on it.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Bytes read from the stream so far (counted only when inflating).
    #[cfg(feature = "cli")]
    pub fn bytes_read(&self) -> u64 {
        self.scan.as_ref().map_or(0, |s| s.read)
    }

    /// Compressed messages inflated so far.
    #[cfg(feature = "cli")]
    pub fn inflated(&self) -> u64 {
        self.scan.as_ref().map_or(0, |s| s.inflated)
    }
}

/// Where the adapter stands in the incoming frames.
struct Scan {
    role: Role,
    limit: usize,
    /// While the HTTP answer is read (clients): how much of its final CRLF CRLF was seen;
    /// [`NOT_SWITCHING`] once an answer that is not `101` ended (what follows is its body,
    /// not frames: it passes untouched).
    http: Option<u8>,
    /// Bytes of the HTTP answer's status line seen (up to its status code), and whether
    /// that code is not `101`.
    status_seen: u8,
    refused: bool,
    /// The current frame's header so far.
    header: [u8; 14],
    have: usize,
    /// Whether the current frame passes through (decided on its first byte).
    passing: bool,
    /// Payload bytes of the current frame still to come once its header is read
    /// (non-zero: the bytes that follow are payload).
    left: u64,
    /// The current collected frame's mask, its position in it, and whether it ends the message.
    mask: [u8; 4],
    mask_at: usize,
    fin: bool,
    /// The compressed message being collected: its opcode and payload so far.
    message: Option<(u8, Vec<u8>)>,
    /// Bytes read past a completed compressed message, handed on after it.
    pending: Vec<u8>,
    /// The inflated message as a frame, and how much of it was handed on.
    out: Vec<u8>,
    out_at: usize,
    /// Bytes read from the stream, and compressed messages inflated.
    read: u64,
    inflated: u64,
}

/// What one pass over freshly read bytes did.
struct Walked {
    /// Bytes passed through, moved to the front of the region.
    kept: usize,
    /// Bytes of the region looked at (the rest follows a completed message).
    used: usize,
    /// A compressed message ended: its opcode and payload.
    complete: Option<(u8, Vec<u8>)>,
}

/// `Scan::http` after an HTTP answer that is not `101 Switching Protocols`.
const NOT_SWITCHING: u8 = u8::MAX;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;

impl Scan {
    fn new(role: Role, limit: usize) -> Self {
        Self {
            role,
            limit,
            http: (role == Role::Client).then_some(0),
            status_seen: 0,
            refused: false,
            header: [0; 14],
            have: 0,
            passing: true,
            left: 0,
            mask: [0; 4],
            mask_at: 0,
            fin: false,
            message: None,
            pending: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            read: 0,
            inflated: 0,
        }
    }

    /// Follows the frames in `region`, keeping (at its front) what passes through and
    /// taking compressed messages out.
    fn walk(&mut self, region: &mut [u8]) -> Result<Walked, DeflateReadError> {
        let mut i = 0;
        // A client's stream starts with the HTTP answer: it passes as it is.
        while let Some(seen) = self.http {
            if seen == NOT_SWITCHING {
                return Ok(Walked {
                    kept: region.len(),
                    used: region.len(),
                    complete: None,
                });
            }
            let Some(&byte) = region.get(i) else { break };
            i += 1;
            // "HTTP/1.1 101": the code is bytes 9 to 11 of the status line.
            if let Some(expected) = b"101".get(usize::from(self.status_seen).wrapping_sub(9)) {
                self.refused |= byte != *expected;
            }
            self.status_seen = self.status_seen.saturating_add(1).min(12);
            let seen = match (seen, byte) {
                (0 | 2, b'\r') | (1 | 3, b'\n') => seen + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            self.http = match (seen < 4, self.refused) {
                (true, _) => Some(seen),
                (false, false) => None,
                (false, true) => Some(NOT_SWITCHING),
            };
        }
        let mut kept = i;
        while i < region.len() {
            if self.left > 0 {
                let n = usize::try_from(self.left).unwrap_or(usize::MAX).min(region.len() - i);
                if self.passing {
                    region.copy_within(i..i + n, kept);
                    kept += n;
                } else if let Some((_, data)) = self.message.as_mut() {
                    data.extend(
                        region[i..i + n]
                            .iter()
                            .enumerate()
                            .map(|(k, b)| b ^ self.mask[(self.mask_at + k) % 4]),
                    );
                    self.mask_at = (self.mask_at + n) % 4;
                }
                i += n;
                self.left -= n as u64;
                if self.left > 0 {
                    continue;
                }
            } else {
                let byte = region[i];
                if self.have == 0 {
                    self.passing = self.passes(byte)?;
                }
                self.header[self.have] = byte;
                self.have += 1;
                if self.passing {
                    region[kept] = byte;
                    kept += 1;
                }
                i += 1;
                if self.header_len() != Some(self.have) {
                    continue;
                }
                self.start_payload()?;
                if self.left > 0 {
                    continue;
                }
            }
            // The current frame ended here.
            if let Some(complete) = self.frame_ended() {
                return Ok(Walked {
                    kept,
                    used: i,
                    complete: Some(complete),
                });
            }
        }
        Ok(Walked {
            kept,
            used: i,
            complete: None,
        })
    }

    /// Whether a frame starting with `first` passes through (else it is part of a
    /// compressed message).
    fn passes(&mut self, first: u8) -> Result<bool, DeflateReadError> {
        let rsv1 = first & 0x40 != 0;
        let opcode = first & 0x0f;
        // RSV2 and RSV3 mean nothing here (RFC 6455 §5.2): a frame this layer takes in
        // (so tungstenite never sees its first byte) must not carry them.
        let absorbed = matches!(
            (opcode, self.message.is_some(), rsv1),
            (OP_TEXT | OP_BINARY, false, true) | (OP_CONTINUATION, true, _)
        );
        if absorbed && first & 0x30 != 0 {
            return Err(DeflateReadError::Protocol("RSV2 or RSV3 set"));
        }
        match (opcode, self.message.is_some()) {
            (OP_TEXT | OP_BINARY, false) if rsv1 => {
                self.message = Some((opcode, Vec::new()));
                Ok(false)
            }
            (OP_CONTINUATION, true) if rsv1 => Err(DeflateReadError::Protocol("RSV1 set on a continuation frame")),
            (OP_CONTINUATION, true) => Ok(false),
            (OP_TEXT | OP_BINARY, true) => Err(DeflateReadError::Protocol("a new message inside a compressed one")),
            // Control frames, and plain messages (a bad RSV bit among them is the
            // library's to refuse).
            _ => Ok(true),
        }
    }

    /// The header's full length, once its second byte is known.
    fn header_len(&self) -> Option<usize> {
        if self.have < 2 {
            return None;
        }
        let second = self.header[1];
        let extended = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        Some(2 + extended + mask)
    }

    /// The header is complete: learns the payload's length (and, for a collected frame,
    /// checks its masking and size, and takes its mask).
    fn start_payload(&mut self) -> Result<(), DeflateReadError> {
        let h = &self.header;
        let masked = h[1] & 0x80 != 0;
        let (len, at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]), 10),
            n => (u64::from(n), 2),
        };
        self.have = 0;
        self.left = len;
        if self.passing {
            return Ok(());
        }
        if masked != (self.role == Role::Server) {
            return Err(DeflateReadError::Protocol(if masked {
                "a masked frame from the server"
            } else {
                "an unmasked frame from the client"
            }));
        }
        self.mask = if masked {
            [h[at], h[at + 1], h[at + 2], h[at + 3]]
        } else {
            [0; 4]
        };
        self.mask_at = 0;
        self.fin = h[0] & 0x80 != 0;
        let collected = self.message.as_ref().map_or(0, |(_, data)| data.len());
        let total = u64::try_from(collected).unwrap_or(u64::MAX).saturating_add(len);
        if total > u64::try_from(self.limit).unwrap_or(u64::MAX) {
            return Err(DeflateReadError::TooBig);
        }
        if let Some((_, data)) = self.message.as_mut() {
            data.reserve(usize::try_from(len).unwrap_or(0));
        }
        Ok(())
    }

    /// A frame's payload ended: the compressed message, if that frame completed one.
    fn frame_ended(&mut self) -> Option<(u8, Vec<u8>)> {
        if self.passing || !self.fin {
            return None;
        }
        self.message.take()
    }

    /// The inflated message as one unfragmented frame the library reads as usual.
    fn reframe(&self, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask_bit = if self.role == Role::Server { 0x80 } else { 0 };
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if self.role == Role::Server {
            frame.extend_from_slice(&[0; 4]);
        }
        frame.extend_from_slice(payload);
        frame
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(scan) = this.scan.as_deref_mut() else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if scan.out_at < scan.out.len() {
                let n = buf.remaining().min(scan.out.len() - scan.out_at);
                buf.put_slice(&scan.out[scan.out_at..scan.out_at + n]);
                scan.out_at += n;
                if scan.out_at == scan.out.len() {
                    scan.out = Vec::new();
                    scan.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let start = buf.filled().len();
            if scan.pending.is_empty() {
                ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                if buf.filled().len() == start {
                    // End of stream.
                    return Poll::Ready(Ok(()));
                }
                scan.read += (buf.filled().len() - start) as u64;
            } else {
                let n = buf.remaining().min(scan.pending.len());
                buf.put_slice(&scan.pending[..n]);
                scan.pending.drain(..n);
            }
            let region = &mut buf.filled_mut()[start..];
            let walked = scan.walk(region).and_then(|walked| {
                if walked.used < region.len() {
                    let rest = region[walked.used..].to_vec();
                    scan.pending.splice(0..0, rest);
                }
                if let Some((opcode, compressed)) = &walked.complete {
                    scan.out = scan.reframe(*opcode, &inflate(compressed, scan.limit)?);
                    scan.out_at = 0;
                    scan.inflated += 1;
                }
                Ok(walked)
            });
            let walked = match walked {
                Ok(walked) => walked,
                Err(e) => {
                    // The connection fails: nothing of this read is handed on.
                    buf.set_filled(start);
                    return Poll::Ready(Err(e.into_io()));
                }
            };
            buf.set_filled(start + walked.kept);
            if walked.kept > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::deflate::compress;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client frame: FIN, RSV1 and opcode in the first byte, masked with `key`.
    fn frame(first: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![first];
        let mask_bit = if key.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(mask_bit | n as u8),
            n if n <= 65535 => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match key {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    /// Reads everything `input` becomes through the adapter, `chunk` bytes at a time.
    async fn through(input: Vec<u8>, role: Role, limit: usize, chunk: usize) -> io::Result<Vec<u8>> {
        let (mut writer, reader) = tokio::io::duplex(chunk);
        tokio::spawn(async move {
            for piece in input.chunks(chunk) {
                if writer.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        let mut adapted = Inflating::new(reader, role, limit);
        let mut out = Vec::new();
        adapted.read_to_end(&mut out).await?;
        Ok(out)
    }

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[tokio::test]
    async fn plain_frames_pass_untouched_and_compressed_ones_arrive_inflated() {
        let text = br#"{"event":"pusher:subscribe","data":{"channel":"private-orders.42","auth":"app-key:0123456789abcdef0123456789abcdef"}}"#.repeat(4);
        let compressed = compress(&text, 15).expect("compresses");
        let mut input = frame(0x89, b"ping", Some(KEY)); // a ping
        input.extend(frame(0x81, b"plain", Some(KEY)));
        input.extend(frame(0xc1, &compressed, Some(KEY))); // FIN + RSV1 + text
        input.extend(frame(0x81, b"after", Some(KEY)));
        let mut expected = frame(0x89, b"ping", Some(KEY));
        expected.extend(frame(0x81, b"plain", Some(KEY)));
        expected.extend(frame(0x81, &text, Some([0; 4])));
        expected.extend(frame(0x81, b"after", Some(KEY)));
        for chunk in [1, 3, 7, 64, 4096] {
            assert_eq!(
                through(input.clone(), Role::Server, 1 << 16, chunk)
                    .await
                    .expect("reads"),
                expected,
                "chunk {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn a_fragmented_compressed_message_with_a_ping_between_its_fragments() {
        let text = br#"{"type":"Broadcast","topic":"room-1","payload":{"text":"hello hello hello hello"}}"#.repeat(5);
        let compressed = compress(&text, 15).expect("compresses");
        let (a, b) = compressed.split_at(compressed.len() / 2);
        let mut input = frame(0x41, a, Some(KEY)); // RSV1 + text, not final
        input.extend(frame(0x89, b"", Some(KEY)));
        input.extend(frame(0x80, b, Some([1, 2, 3, 4]))); // final continuation
        let mut expected = frame(0x89, b"", Some(KEY));
        expected.extend(frame(0x81, &text, Some([0; 4])));
        for chunk in [1, 5, 4096] {
            assert_eq!(
                through(input.clone(), Role::Server, 1 << 16, chunk)
                    .await
                    .expect("reads"),
                expected
            );
        }
        // A client reads the server's HTTP answer as it is, then unmasked frames (one of
        // them compressed, starting in the same read as the answer's end).
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX: \xc1\r\n\r\n".to_vec();
        let input = [head.clone(), frame(0xc2, &compressed, None)].concat();
        let expected = [head, frame(0x82, &text, None)].concat();
        for chunk in [1, 2, 4096] {
            assert_eq!(
                through(input.clone(), Role::Client, 1 << 16, chunk)
                    .await
                    .expect("reads"),
                expected
            );
        }
    }

    #[tokio::test]
    async fn hostile_compressed_messages_are_refused_with_a_reason() {
        let bomb = compress(&vec![b'x'; 1 << 20], 15).expect("compresses");
        let refused = |r: io::Result<Vec<u8>>| r.err().as_ref().and_then(DeflateReadError::find);
        let cases: Vec<(Vec<u8>, DeflateReadError)> = vec![
            (frame(0xc1, &bomb, Some(KEY)), DeflateReadError::TooBig),
            (frame(0xc1, &[0xaa; 70_000], Some(KEY)), DeflateReadError::TooBig),
            (
                frame(0xc1, &[0xff; 10], Some(KEY)),
                DeflateReadError::Protocol("not valid DEFLATE data"),
            ),
            (
                frame(0xc1, &bomb, None),
                DeflateReadError::Protocol("an unmasked frame from the client"),
            ),
            (
                [frame(0x41, &bomb[..4], Some(KEY)), frame(0x81, b"x", Some(KEY))].concat(),
                DeflateReadError::Protocol("a new message inside a compressed one"),
            ),
            (
                [frame(0x41, &bomb[..4], Some(KEY)), frame(0xc0, b"x", Some(KEY))].concat(),
                DeflateReadError::Protocol("RSV1 set on a continuation frame"),
            ),
            // Issue 34: RSV2/RSV3 on a compressed frame, or on a continuation of a
            // compressed message, were accepted.
            (
                frame(0xe1, &bomb[..4], Some(KEY)),
                DeflateReadError::Protocol("RSV2 or RSV3 set"),
            ),
            (
                frame(0xd1, &bomb[..4], Some(KEY)),
                DeflateReadError::Protocol("RSV2 or RSV3 set"),
            ),
            (
                [frame(0x41, &bomb[..4], Some(KEY)), frame(0xa0, b"x", Some(KEY))].concat(),
                DeflateReadError::Protocol("RSV2 or RSV3 set"),
            ),
        ];
        for (input, reason) in cases {
            assert_eq!(
                refused(through(input, Role::Server, 64 * 1024, 512).await),
                Some(reason)
            );
        }
    }

    #[tokio::test]
    async fn a_refused_handshake_s_body_is_not_read_as_frames() {
        // A client offered the extension; the server said 403 with a JSON body, whose
        // bytes would read as frame headers with reserved bits set.
        let answer = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 27\r\n\r\n{\"error\":\"forbidden\",\"a\":1}".to_vec();
        for chunk in [1, 7, 512] {
            let got = through(answer.clone(), Role::Client, 64 * 1024, chunk)
                .await
                .expect("passes");
            assert_eq!(got, answer, "chunk {chunk}");
        }
    }

    #[test]
    fn a_socket_that_agreed_holds_little_while_idle() {
        // The plain adapter is the stream and a pointer; the scanner is one small box.
        assert_eq!(std::mem::size_of::<Inflating<u64>>(), 16);
        assert!(std::mem::size_of::<Scan>() <= 192, "{}", std::mem::size_of::<Scan>());
    }

    #[tokio::test]
    async fn without_the_extension_bytes_are_not_looked_at() {
        let input = frame(0xc1, b"not even deflate", Some(KEY));
        let (mut writer, reader) = tokio::io::duplex(64);
        writer.write_all(&input).await.expect("writes");
        drop(writer);
        let mut out = Vec::new();
        Inflating::plain(reader).read_to_end(&mut out).await.expect("reads");
        assert_eq!(out, input);
    }
}
