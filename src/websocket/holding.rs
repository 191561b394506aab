//! Incoming frames handed on whole, so that memory follows the bytes received.
//!
//! tungstenite reserves a frame's announced length as soon as it has read the frame's
//! header: a client announcing 4 MiB frames and sending ten bytes of each costs the
//! server 4 MiB per socket. This adapter sits beneath it (and beneath the inflating
//! layer) on every server socket and follows the frame headers of what arrives: complete
//! frames pass at once, untouched; the bytes of a frame still incomplete at the end of a
//! read are held (in a buffer that grows with what arrives) until the frame is complete.
//! A frame announced over the size limit passes at once, so the library refuses it (1009)
//! without reserving anything.
//!
//! An incomplete frame, or a fragmented message whose last fragment has not come, may not
//! stall: after the frame timeout (`BROADCAST_FRAME_TIMEOUT`, 10 s) the read fails with
//! [`Stalled`], and the socket is closed (1008).
//!
//! Idle sockets hold nothing beyond a pointer; the state is boxed while a frame or a
//! message is incomplete.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A frame or a fragmented message did not complete within the frame timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a frame or message was not completed within the frame timeout")]
pub(crate) struct Stalled;

impl Stalled {
    /// Whether `e` is this error.
    pub(crate) fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<Self>())
    }
}

/// A server socket's byte stream whose frames reach the reader whole (see the module).
pub(crate) struct Holding<S> {
    io: S,
    held: Option<Box<Held>>,
    /// The largest frame payload held back (larger ones pass: the reader refuses them).
    limit: u32,
    /// The frame timeout, in milliseconds.
    timeout_ms: u32,
}

struct Held {
    /// `[..ready]`: complete frames to hand on (from `out_at`); `[ready..]`: the start of
    /// an incomplete frame.
    bytes: Vec<u8>,
    ready: usize,
    out_at: usize,
    /// A fragmented message is open (its last fragment has not come).
    message_open: bool,
    /// When what is incomplete (the frame, or the message) must have completed.
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// How far the complete frames at the start of `bytes` reach, and whether a fragmented
/// message is open after them (`open` before). A frame announced over `limit` counts as
/// complete (it goes on, to be refused); nothing after it is looked at.
fn complete_prefix(bytes: &[u8], limit: u64, mut open: bool) -> (usize, bool) {
    let mut at = 0;
    loop {
        let Some(&[first, second]) = bytes.get(at..at + 2) else {
            return (at, open);
        };
        let masked = if second & 0x80 != 0 { 4 } else { 0 };
        let (len, header) = match second & 0x7f {
            126 => match bytes.get(at + 2..at + 4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4 + masked),
                None => return (at, open),
            },
            127 => match bytes.get(at + 2..at + 10) {
                Some(b) => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(b);
                    (u64::from_be_bytes(n), 10 + masked)
                }
                None => return (at, open),
            },
            n => (u64::from(n), 2 + masked),
        };
        if len > limit {
            // Passed on as far as its header: the reader refuses it for its size.
            return (at + header.min(bytes.len() - at), false);
        }
        let end = usize::try_from(len).ok().and_then(|len| (at + header).checked_add(len));
        match end {
            Some(end) if end <= bytes.len() => {
                let opcode = first & 0x0f;
                let fin = first & 0x80 != 0;
                if opcode < 0x8 {
                    // Data frames open a message (not final) or end it (final).
                    open = !fin;
                }
                at = end;
            }
            _ => return (at, open),
        }
    }
}

impl<S> Holding<S> {
    /// `io`, holding incomplete frames of up to `limit` bytes for at most `timeout`.
    pub(crate) fn new(io: S, limit: usize, timeout: Duration) -> Self {
        Self {
            io,
            held: None,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        }
    }

    /// The stream underneath, to end the connection on it.
    pub(crate) fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Holding<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let limit = u64::from(this.limit);
        loop {
            if let Some(held) = this.held.as_deref_mut() {
                // Complete frames first.
                if held.out_at < held.ready {
                    let n = buf.remaining().min(held.ready - held.out_at);
                    buf.put_slice(&held.bytes[held.out_at..held.out_at + n]);
                    held.out_at += n;
                    if held.out_at == held.ready {
                        held.bytes.drain(..held.ready);
                        (held.ready, held.out_at) = (0, 0);
                        if held.bytes.is_empty() && !held.message_open {
                            this.held = None;
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
                if held.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, Stalled)));
                }
            }
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            let end = buf.filled().len();
            if end == start {
                // End of stream (what was held is incomplete and goes nowhere).
                return Poll::Ready(Ok(()));
            }
            let timeout = this.timeout();
            match this.held.as_deref_mut() {
                Some(held) => {
                    held.bytes.extend_from_slice(&buf.filled()[start..]);
                    buf.set_filled(start);
                    let was_open = held.message_open;
                    let (ready, open) = complete_prefix(&held.bytes, limit, was_open);
                    if ready > 0 {
                        held.ready = ready;
                        held.message_open = open;
                        // A new incomplete unit (a message just opened, or a frame begun
                        // outside a message) gets its own time; an open message keeps its
                        // own however many control frames come.
                        let new_frame = !open && held.bytes.len() > ready;
                        if (open && !was_open) || new_frame {
                            held.deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
                        }
                    }
                }
                None => {
                    let (ready, open) = complete_prefix(&buf.filled()[start..], limit, false);
                    let incomplete = start + ready < end;
                    if !incomplete && !open {
                        return Poll::Ready(Ok(()));
                    }
                    let tail = buf.filled()[start + ready..].to_vec();
                    buf.set_filled(start + ready);
                    this.held = Some(Box::new(Held {
                        bytes: tail,
                        ready: 0,
                        out_at: 0,
                        message_open: open,
                        deadline: Box::pin(tokio::time::sleep(timeout)),
                    }));
                    if ready > 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Holding<S> {
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend((n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        out.extend([0, 0, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frames_are_complete_or_not() {
        let a = frame(0x81, b"hello");
        let b = frame(0x81, &[b'x'; 300]);
        let both = [a.clone(), b.clone()].concat();
        assert_eq!(complete_prefix(&both, 1 << 20, false), (both.len(), false));
        assert_eq!(complete_prefix(&both[..a.len() + 3], 1 << 20, false), (a.len(), false));
        assert_eq!(complete_prefix(&both[..1], 1 << 20, false), (0, false));
        // A fragment opens a message; the final continuation closes it.
        let first = frame(0x01, b"ab");
        let ping = frame(0x89, b"");
        let last = frame(0x80, b"cd");
        assert_eq!(complete_prefix(&first, 1 << 20, false), (first.len(), true));
        assert_eq!(complete_prefix(&ping, 1 << 20, true), (ping.len(), true));
        assert_eq!(complete_prefix(&last, 1 << 20, true), (last.len(), false));
        // Announced over the limit: passes as far as its header.
        let mut big = vec![0x81, 0x80 | 127];
        big.extend((4u64 << 20).to_be_bytes());
        big.extend([0, 0, 0, 0, b'x']);
        assert_eq!(complete_prefix(&big, 64 * 1024, false), (14, false));
        // A length that overflows is never complete.
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend(u64::MAX.to_be_bytes());
        assert_eq!(complete_prefix(&huge, u64::MAX, false).0, 0);
    }

    /// What a reader gets through the adapter when `input` arrives in `chunk`-byte writes.
    async fn through(input: Vec<u8>, chunk: usize) -> Vec<u8> {
        let (mut writer, reader) = tokio::io::duplex(64);
        tokio::spawn(async move {
            for piece in input.chunks(chunk) {
                writer.write_all(piece).await.unwrap();
            }
        });
        let mut out = Vec::new();
        let mut holding = Holding::new(reader, 1 << 20, Duration::from_secs(5));
        holding.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn bytes_pass_unchanged_whatever_the_reads() {
        let input = [
            frame(0x81, b"hello"),
            frame(0x01, &[b'a'; 200]),
            frame(0x89, b"ping"),
            frame(0x80, &[b'b'; 70_000]),
            frame(0x88, &[3, 232]),
        ]
        .concat();
        for chunk in [1, 3, 7, 64, 1000, 100_000] {
            assert_eq!(through(input.clone(), chunk).await, input, "chunk {chunk}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_incomplete_frame_is_held_and_times_out() {
        let (mut writer, reader) = tokio::io::duplex(1024);
        let mut announced = vec![0x81, 0x80 | 126];
        announced.extend(60_000u16.to_be_bytes());
        announced.extend([0, 0, 0, 0]);
        announced.extend_from_slice(b"only ten b");
        writer.write_all(&announced).await.unwrap();
        let mut holding = Holding::new(reader, 64 * 1024, Duration::from_secs(10));
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(30), holding.read(&mut buf)).await;
        let err = read.expect("the timeout ends the read").unwrap_err();
        assert!(Stalled::is(&err), "{err}");
        // Held: what arrived, not what was announced.
        drop(writer);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fragmented_message_that_stalls_times_out() {
        let (mut writer, reader) = tokio::io::duplex(1024);
        writer.write_all(&frame(0x01, b"first part")).await.unwrap();
        let mut holding = Holding::new(reader, 64 * 1024, Duration::from_secs(10));
        let mut buf = [0u8; 512];
        let n = holding.read(&mut buf).await.unwrap();
        assert_eq!(n, frame(0x01, b"first part").len(), "the fragment itself passes");
        // Pongs keep coming, the message never ends.
        writer.write_all(&frame(0x8a, b"")).await.unwrap();
        assert!(holding.read(&mut buf).await.is_ok());
        let err = holding.read(&mut buf).await.unwrap_err();
        assert!(Stalled::is(&err), "{err}");
    }

    #[test]
    fn an_idle_socket_holds_a_pointer() {
        assert_eq!(std::mem::size_of::<Holding<u64>>(), 24);
    }
}
