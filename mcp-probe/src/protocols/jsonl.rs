//! Newline-delimited message framing (the MCP stdio transport).
//!
//! Bytes arrive in stream order, split anywhere. The framer hands out each complete line
//! once, borrowed from the input when the line sits inside one chunk (the common case) and
//! from its own buffer otherwise. A line longer than `max_message_bytes` is not buffered
//! past the cap but still reported with its exact length. After lost bytes the framer
//! discards up to the next newline (resynchronises) rather than glue unrelated bytes.

use super::Framer;

/// A framed line.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its terminator (`\n` or `\r\n`).
    Message {
        bytes: &'a [u8],
        first_ts: u64,
        last_ts: u64,
    },
    /// A line that could not be kept whole: longer than the cap, or with bytes the kernel
    /// did not capture. `len` is exact either way.
    Oversized {
        len: u64,
        first_ts: u64,
        last_ts: u64,
        missing_bytes: u64,
    },
}

/// Counters the framer keeps for the agent's own metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FramerCounters {
    /// Bytes thrown away while resynchronising after a loss.
    pub resync_discarded_bytes: u64,
}

#[derive(Debug)]
pub struct LineFramer {
    max_message_bytes: usize,
    buf: Vec<u8>,
    /// Length of the current line so far, including bytes not kept.
    len: u64,
    /// Bytes of the current line the kernel did not capture.
    missing: u64,
    first_ts: u64,
    /// The current line so far ends with a captured `\r` (stripped if `\n` follows).
    ends_cr: bool,
    /// Every byte of the current line so far is captured ASCII whitespace.
    blank: bool,
    /// Discarding up to the next newline.
    resync: bool,
    /// The current line lost its buffer to the agent's memory budget: it is still sized
    /// exactly, and reported as oversized.
    shed: bool,
    pub counters: FramerCounters,
}

impl LineFramer {
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            buf: Vec::new(),
            len: 0,
            missing: 0,
            first_ts: 0,
            ends_cr: false,
            blank: true,
            resync: false,
            shed: false,
            counters: FramerCounters::default(),
        }
    }

    /// A framer for a stream first seen mid-way: unless the first bytes start a message,
    /// everything up to the first newline is discarded.
    pub fn new_mid_stream(max_message_bytes: usize, first_bytes: &[u8]) -> Self {
        let mut f = Self::new(max_message_bytes);
        f.resync = !starts_message(first_bytes);
        f
    }

    /// After a loss, the next bytes are known to start a message (e.g. a write syscall
    /// that starts like one: MCP SDKs write one message per write()): nothing needs to be
    /// skipped.
    pub fn at_message_start(&mut self) {
        if self.len == 0 {
            self.resync = false;
        }
    }

    /// True when no partial line is pending.
    #[cfg(test)]
    pub fn at_boundary(&self) -> bool {
        self.len == 0 && !self.resync
    }

    /// Bytes currently buffered (for memory accounting).
    pub fn buffered_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Captured bytes of the line in progress (kept or not), 0 at a boundary.
    pub fn pending_bytes(&self) -> u64 {
        if self.resync {
            0
        } else {
            self.len - self.missing.min(self.len)
        }
    }

    /// Gives up the buffer of the line in progress (the agent's memory budget is spent):
    /// the line is still sized exactly and reported as `Oversized`.
    pub fn shed(&mut self) {
        if self.len > 0 {
            self.shed = true;
            self.buf = Vec::new();
        }
    }

    /// Drops the line in progress for good (its writer is gone); returns its captured bytes.
    pub fn abandon(&mut self) -> u64 {
        let pending = self.pending_bytes();
        self.buf = Vec::new();
        self.len = 0;
        self.missing = 0;
        self.shed = false;
        self.ends_cr = false;
        self.blank = true;
        pending
    }

    /// Feeds captured bytes; calls `emit` for each line completed.
    pub fn push(&mut self, mut data: &[u8], ts: u64, emit: &mut impl FnMut(Frame<'_>)) {
        while !data.is_empty() {
            let newline = memchr(b'\n', data);
            let (piece, rest, ends_line) = match newline {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;
            if self.resync {
                self.counters.resync_discarded_bytes += piece.len() as u64 + u64::from(ends_line);
                if ends_line {
                    self.resync = false;
                }
                continue;
            }
            if self.len == 0 {
                self.first_ts = ts;
            }
            if !piece.is_empty() {
                self.ends_cr = piece.last() == Some(&b'\r');
                self.blank &= piece.iter().all(u8::is_ascii_whitespace);
            }
            if ends_line && self.len == 0 {
                // Whole line inside this chunk: hand it out without copying.
                self.finish(piece, piece.len() as u64, ts, emit);
                continue;
            }
            self.len += piece.len() as u64;
            // One byte over the cap may be the `\r` of a line that fits without it.
            let keep = self.max_message_bytes.saturating_add(1);
            let room = keep.saturating_sub(self.buf.len());
            if self.len <= keep as u64 && self.missing == 0 && !self.shed {
                super::extend_capped(&mut self.buf, &piece[..piece.len().min(room)], keep);
            } else if !self.buf.is_empty() {
                self.buf = Vec::new(); // over the cap: stop holding memory for it
            }
            if ends_line {
                let len = self.len;
                let buf = std::mem::take(&mut self.buf);
                self.finish(&buf, len, ts, emit);
                self.buf = buf;
                self.buf.clear();
                if self.buf.capacity() > 64 * 1024 {
                    self.buf = Vec::new();
                }
            }
        }
    }

    /// Ends the current line; `line` holds all of it unless it was over the cap or had a
    /// hole. Whether it ends with `\r` or is blank does not depend on that.
    fn finish(&mut self, line: &[u8], len: u64, ts: u64, emit: &mut impl FnMut(Frame<'_>)) {
        let first_ts = self.first_ts;
        let missing = self.missing;
        let shed = std::mem::take(&mut self.shed);
        let (ends_cr, blank) = (self.ends_cr, self.blank);
        self.len = 0;
        self.missing = 0;
        self.ends_cr = false;
        self.blank = true;
        if blank {
            return; // blank line: not a message
        }
        let len = len - u64::from(ends_cr);
        let line = match (ends_cr, line.split_last()) {
            (true, Some((_, without_cr))) => without_cr,
            _ => line,
        };
        if missing > 0 || shed || len > self.max_message_bytes as u64 {
            emit(Frame::Oversized {
                len,
                first_ts,
                last_ts: ts,
                missing_bytes: missing,
            });
        } else {
            emit(Frame::Message {
                bytes: line,
                first_ts,
                last_ts: ts,
            });
        }
    }

    /// Bytes the kernel knowingly did not capture inside one syscall (truncation). The
    /// current line keeps counting its length through the hole. While resynchronising they
    /// are not counted as discarded: they never reached the agent, and the kernel already
    /// counts them as lost (`truncated`).
    pub fn hole(&mut self, len: u64) {
        if self.resync || len == 0 {
            return; // an empty hole (a malformed gap record) must not cost the line its bytes
        }
        self.len += len;
        self.missing += len;
        self.ends_cr = false;
        self.blank = false;
        self.buf = Vec::new();
    }

    /// Bytes lost without a trace (ring buffer full): whatever line was in progress is
    /// dropped and the framer waits for the next newline.
    pub fn lost(&mut self) {
        self.counters.resync_discarded_bytes += self.len - self.missing.min(self.len);
        self.buf.clear();
        self.len = 0;
        self.missing = 0;
        self.shed = false;
        self.ends_cr = false;
        self.blank = true;
        self.resync = true;
    }
}

/// The framer of a stream first seen mid-way (see [`LineFramer::new_mid_stream`]).
pub fn framer(first_bytes: &[u8], max_message_bytes: usize) -> Box<dyn Framer> {
    Box::new(LineFramer::new_mid_stream(max_message_bytes, first_bytes))
}

/// The JSON-lines framer behind the protocol contract.
impl Framer for LineFramer {
    fn push(&mut self, bytes: &[u8], ts_ns: u64, emit: &mut dyn FnMut(super::Frame<'_>)) {
        LineFramer::push(self, bytes, ts_ns, &mut |frame| {
            emit(match frame {
                Frame::Message { bytes, last_ts, .. } => super::Frame::Message {
                    bytes,
                    ts_ns: last_ts,
                    sse_event: None,
                },
                Frame::Oversized { len, .. } => super::Frame::Oversized { len },
            })
        });
    }

    /// A write that starts like a message starts one (one message per write() in every
    /// SDK): nothing needs to be skipped. Reads split the stream anywhere.
    fn lost(&mut self, resume_at: Option<&[u8]>) {
        LineFramer::lost(self);
        if resume_at.is_some_and(starts_message) {
            self.at_message_start();
        }
    }

    fn hole(&mut self, len: u64) {
        LineFramer::hole(self, len);
    }

    fn close(&mut self, _ts_ns: u64, _emit: &mut dyn FnMut(super::Frame<'_>)) {}

    fn buffered_bytes(&self) -> usize {
        LineFramer::buffered_bytes(self)
    }

    fn pending_bytes(&self) -> u64 {
        LineFramer::pending_bytes(self)
    }

    fn shed(&mut self) {
        LineFramer::shed(self);
    }

    fn resync_discarded_bytes(&self) -> u64 {
        self.counters.resync_discarded_bytes
    }
}

/// The bytes start like a JSON-RPC text (after optional whitespace): `{` or `[`.
pub fn starts_message(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{' || b == b'[')
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Out {
        Msg(Vec<u8>, u64, u64),
        Big(u64, u64),
    }

    fn run(f: &mut LineFramer, chunks: &[(&[u8], u64)]) -> Vec<Out> {
        let mut out = Vec::new();
        for (data, ts) in chunks {
            f.push(data, *ts, &mut |fr| {
                out.push(match fr {
                    Frame::Message {
                        bytes,
                        first_ts,
                        last_ts,
                    } => Out::Msg(bytes.to_vec(), first_ts, last_ts),
                    Frame::Oversized {
                        len, missing_bytes, ..
                    } => Out::Big(len, missing_bytes),
                })
            });
        }
        out
    }

    const TWO: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"ping\"}\n{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{}}\n";

    #[test]
    fn whole_message_in_one_chunk() {
        let mut f = LineFramer::new(1024);
        let out = run(&mut f, &[(b"{\"a\":1}\n", 5)]);
        assert_eq!(out, vec![Out::Msg(b"{\"a\":1}".to_vec(), 5, 5)]);
        assert!(f.at_boundary());
    }

    #[test]
    fn every_split_offset_of_two_coalesced_messages() {
        let first = &TWO[..TWO.iter().position(|&b| b == b'\n').unwrap()];
        let second = &TWO[first.len() + 1..TWO.len() - 1];
        for split in 0..=TWO.len() {
            let mut f = LineFramer::new(1024);
            let out = run(&mut f, &[(&TWO[..split], 1), (&TWO[split..], 2)]);
            let ts_first = if split > first.len() { 1 } else { 2 };
            let first_ts_first = if split == 0 { 2 } else { 1 };
            let first_ts_second = if split > first.len() + 1 { 1 } else { 2 };
            let ts_second = if split == TWO.len() { 1 } else { 2 };
            assert_eq!(
                out,
                vec![
                    Out::Msg(first.to_vec(), first_ts_first, ts_first),
                    Out::Msg(second.to_vec(), first_ts_second, ts_second)
                ],
                "split at {split}"
            );
            assert!(f.at_boundary());
        }
    }

    #[test]
    fn byte_by_byte() {
        let mut f = LineFramer::new(1024);
        let chunks: Vec<(&[u8], u64)> = TWO.chunks(1).map(|c| (c, 9)).collect();
        assert_eq!(run(&mut f, &chunks).len(), 2);
    }

    #[test]
    fn crlf_and_blank_lines() {
        let mut f = LineFramer::new(1024);
        let out = run(&mut f, &[(b"\n\r\n  \n{\"a\":1}\r\n", 1)]);
        assert_eq!(out, vec![Out::Msg(b"{\"a\":1}".to_vec(), 1, 1)]);
    }

    #[test]
    fn oversized_line_is_counted_exactly_without_buffering_it() {
        let mut f = LineFramer::new(16);
        let big = [b'x'; 100];
        let out = run(&mut f, &[(&big[..50], 1), (&big[50..], 2), (b"\n{}\n", 3)]);
        assert_eq!(out, vec![Out::Big(100, 0), Out::Msg(b"{}".to_vec(), 3, 3)]);
        assert_eq!(f.buffered_bytes(), 0);
    }

    #[test]
    fn buffer_never_allocates_past_the_cap() {
        let mut f = LineFramer::new(256);
        let _ = run(&mut f, &[(&[b'x'; 250][..], 1), (&[b'x'; 6][..], 1)]);
        assert!(f.buffered_bytes() <= 257, "{}", f.buffered_bytes());
    }

    #[test]
    fn oversized_crlf_line_has_the_same_length_however_it_is_split() {
        let line = b"{\"a\":\"0123456789\"}\r\n"; // 18 bytes before the CRLF
        for split in 0..=line.len() {
            let mut f = LineFramer::new(16);
            let out = run(&mut f, &[(&line[..split], 1), (&line[split..], 1)]);
            assert_eq!(out, vec![Out::Big(18, 0)], "split at {split}");
        }
        // A line of exactly the cap before its CRLF is a message, even when split.
        let mut f = LineFramer::new(16);
        let out = run(
            &mut f,
            &[(b"{\"a\":\"01234567", 1), (b"\"}\r", 1), (b"\n", 1)],
        );
        assert_eq!(out, vec![Out::Msg(b"{\"a\":\"01234567\"}".to_vec(), 1, 1)]);
    }

    #[test]
    fn oversized_line_in_one_chunk() {
        let mut f = LineFramer::new(4);
        let out = run(&mut f, &[(b"{\"a\":1}\n{}\n", 1)]);
        assert_eq!(out, vec![Out::Big(7, 0), Out::Msg(b"{}".to_vec(), 1, 1)]);
    }

    #[test]
    fn kernel_hole_keeps_the_exact_length() {
        let mut f = LineFramer::new(1024);
        let _ = run(&mut f, &[(b"{\"id\":1,", 1)]);
        f.hole(1000);
        let out = run(&mut f, &[(b"\"x\":2}\n", 2)]);
        assert_eq!(out, vec![Out::Big(8 + 1000 + 6, 1000)]);
        assert!(f.at_boundary());
    }

    #[test]
    fn empty_hole_keeps_the_line() {
        let mut f = LineFramer::new(1024);
        let _ = run(&mut f, &[(b"{\"a\":", 1)]);
        f.hole(0);
        let out = run(&mut f, &[(b"1}\n  ", 2)]);
        f.hole(0);
        let out2 = run(&mut f, &[(b" \n", 3)]);
        assert_eq!(out, vec![Out::Msg(b"{\"a\":1}".to_vec(), 1, 2)]);
        assert_eq!(
            out2,
            vec![],
            "a blank line around an empty hole is still blank"
        );
    }

    #[test]
    fn loss_resynchronises_at_next_newline() {
        let mut f = LineFramer::new(1024);
        let _ = run(&mut f, &[(b"{\"id\":1,", 1)]);
        f.lost();
        let out = run(&mut f, &[(b"tail of something}\n{\"ok\":1}\n", 2)]);
        assert_eq!(out, vec![Out::Msg(b"{\"ok\":1}".to_vec(), 2, 2)]);
        assert_eq!(f.counters.resync_discarded_bytes, 8 + 19);
    }

    #[test]
    fn hole_while_resynchronising_is_not_a_discarded_byte() {
        let mut f = LineFramer::new(1024);
        let _ = run(&mut f, &[(b"{\"id\":1,", 1)]);
        f.lost();
        f.hole(4096);
        let out = run(&mut f, &[(b"tail}\n{}\n", 2)]);
        assert_eq!(out, vec![Out::Msg(b"{}".to_vec(), 2, 2)]);
        assert_eq!(f.counters.resync_discarded_bytes, 8 + 6);
    }

    #[test]
    fn mid_stream_start() {
        let mut f = LineFramer::new_mid_stream(1024, b"ail\"}\n{");
        assert_eq!(
            run(&mut f, &[(b"ail\"}\n{}\n", 1)]),
            vec![Out::Msg(b"{}".to_vec(), 1, 1)]
        );
        let mut f = LineFramer::new_mid_stream(1024, b" {\"a\"");
        assert_eq!(
            run(&mut f, &[(b" {\"a\":1}\n", 1)]),
            vec![Out::Msg(b" {\"a\":1}".to_vec(), 1, 1)]
        );
    }

    #[test]
    fn a_shed_line_is_still_sized_exactly() {
        let mut f = LineFramer::new(1024);
        let _ = run(&mut f, &[(b"{\"id\":1,", 1)]);
        assert_eq!(f.pending_bytes(), 8);
        f.shed();
        assert_eq!(f.buffered_bytes(), 0);
        let out = run(&mut f, &[(b"\"x\":2}\n{}\n", 2)]);
        assert_eq!(out, vec![Out::Big(14, 0), Out::Msg(b"{}".to_vec(), 2, 2)]);
        assert_eq!(f.buffered_bytes(), 0);
    }

    #[test]
    fn abandon_returns_the_partial_line() {
        let mut f = LineFramer::new(1024);
        let _ = run(&mut f, &[(b"{\"id\":1,", 1)]);
        assert_eq!(f.abandon(), 8);
        assert!(f.at_boundary());
        assert_eq!(
            run(&mut f, &[(b"{}\n", 2)]),
            vec![Out::Msg(b"{}".to_vec(), 2, 2)]
        );
    }

    #[test]
    fn binary_garbage_is_framed_not_fatal() {
        let mut f = LineFramer::new(1024);
        let out = run(&mut f, &[(&[0xff, 0x00, 0xfe, b'\n', 0x80][..], 1)]);
        assert_eq!(out, vec![Out::Msg(vec![0xff, 0x00, 0xfe], 1, 1)]);
        assert!(!f.at_boundary());
    }
}
