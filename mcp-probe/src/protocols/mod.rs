//! Protocol parsers, each in its own module behind one contract: a [`Framer`] turns one
//! direction of a stream's bytes into [`Frame`]s (messages, heads, losses), and
//! [`jsonrpc`] parses the messages. The stream stage holds a `Box<dyn Framer>` per
//! direction and never asks which protocol it is.
//!
//! Adding a transport: a module that implements [`Framer`], and one line in
//! [`framer_for`] that recognises its first bytes.

pub mod http;
pub mod jsonl;
pub mod jsonrpc;
pub mod sse;

/// What a framer reports, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete JSON-RPC text: a JSON line, a JSON body, or the data of one SSE event.
    /// Borrowed from the pushed bytes or the framer's buffer.
    Message {
        bytes: &'a [u8],
        /// Kernel time (CLOCK_MONOTONIC ns) of the record that completed it.
        ts_ns: u64,
        /// The SSE event type, for the data of an SSE event.
        sse_event: Option<&'a str>,
    },
    /// A message that could not be kept whole (over the cap, shed by the memory budget,
    /// or with bytes the kernel did not capture); `len` is its exact length.
    Oversized { len: u64 },
    /// An HTTP head (request or response).
    Head(http::Head),
    /// A body or event that could not be parsed (over the cap, bad compression).
    Unparsable(&'static str),
    /// The HTTP message (head and body) is complete.
    End,
    /// Bytes that are not the protocol where a message was expected; skipped.
    Invalid,
}

/// One direction of one stream, from bytes to frames. Object safe (the emitters are
/// `&mut dyn FnMut`): one indirect call per record and per frame, no allocation.
pub trait Framer: Send {
    /// Feeds the captured bytes of one record (`ts_ns`: its kernel time); calls `emit` for
    /// each frame completed.
    fn push(&mut self, bytes: &[u8], ts_ns: u64, emit: &mut dyn FnMut(Frame<'_>));

    /// Bytes were lost without a trace (ring buffer full, a read failure): the message in
    /// progress is dropped and the framer resynchronises. `resume_at` is the bytes about
    /// to be pushed when they start a write syscall, a point where a framer may know a
    /// message starts (they are pushed next; this only looks at them).
    fn lost(&mut self, resume_at: Option<&[u8]>);

    /// `len` bytes the kernel knowingly did not capture inside one syscall (truncation).
    fn hole(&mut self, len: u64);

    /// The connection closed (or its process exited): a body delimited by the close ends.
    fn close(&mut self, ts_ns: u64, emit: &mut dyn FnMut(Frame<'_>));

    /// Bytes held in buffers (capacity), for the agent's memory budget.
    fn buffered_bytes(&self) -> usize;

    /// Captured bytes of the message in progress, counted as discarded when it is dropped.
    fn pending_bytes(&self) -> u64;

    /// Gives up the buffer of the message in progress (the memory budget is spent).
    fn shed(&mut self);

    /// Bytes skipped while resynchronising after losses, since the framer was made.
    fn resync_discarded_bytes(&self) -> u64 {
        0
    }

    /// The protocol's messages can be delimited by the end of the connection (HTTP): when
    /// the stream's process exits, the stream is closed rather than abandoned.
    fn ends_with_connection(&self) -> bool {
        false
    }
}

/// How a protocol is recognised from a stream's first captured bytes, and its framer.
type Registration = (fn(&[u8]) -> bool, fn(&[u8], usize) -> Box<dyn Framer>);

/// The one registration point: protocols recognisable from their first bytes, tried in
/// order. A stream none of them claims is taken for JSON lines (see [`framer_for`]).
const PROTOCOLS: &[Registration] = &[(http::starts_http, http::framer)];

/// The framer for a new stream direction, chosen from its first captured bytes. A stream
/// first seen mid-way that no protocol claims is JSON lines, resynchronising unless those
/// bytes start a message.
pub fn framer_for(first_bytes: &[u8], max_message_bytes: usize) -> Box<dyn Framer> {
    let framer = PROTOCOLS
        .iter()
        .find(|(starts, _)| starts(first_bytes))
        .map_or(
            jsonl::framer as fn(&[u8], usize) -> Box<dyn Framer>,
            |(_, f)| *f,
        );
    framer(first_bytes, max_message_bytes)
}

/// Appends `bytes` to a buffer that a parser keeps within `cap` bytes (callers check that
/// `buf.len() + bytes.len() <= cap`). The allocation grows geometrically like a `Vec`'s but
/// never past `cap`, so a parser's memory stays within its limit, not within twice it.
pub(crate) fn extend_capped(buf: &mut Vec<u8>, bytes: &[u8], cap: usize) {
    let needed = buf.len() + bytes.len();
    if needed > buf.capacity() {
        let target = buf.capacity().saturating_mul(2).min(cap).max(needed);
        buf.reserve_exact(target - buf.len());
    }
    buf.extend_from_slice(bytes);
}
