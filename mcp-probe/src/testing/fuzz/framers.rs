//! The framer harnesses: `jsonl` (`LineFramer`), `sse` (`SseParser`), `http`
//! (`HttpFramer`). Each feeds the same bytes whole, cut, and byte by byte.

use super::{Mode, Plan, Step, SLACK_BYTES};
use crate::protocols::{
    http::{self, HttpEvent, HttpFramer},
    jsonl::{Frame, LineFramer},
    sse::SseParser,
};

// ---------------------------------------------------------------------------------------
// jsonl

#[derive(Debug, PartialEq, Eq, Clone)]
enum LineOut {
    Message {
        bytes: Vec<u8>,
        first_ts: u64,
        last_ts: u64,
    },
    Oversized {
        len: u64,
        missing: u64,
        first_ts: u64,
        last_ts: u64,
    },
}

impl LineOut {
    fn untimed(&self) -> Self {
        match self.clone() {
            LineOut::Message { bytes, .. } => LineOut::Message {
                bytes,
                first_ts: 0,
                last_ts: 0,
            },
            LineOut::Oversized { len, missing, .. } => LineOut::Oversized {
                len,
                missing,
                first_ts: 0,
                last_ts: 0,
            },
        }
    }
}

fn hole_len(op: u8) -> u64 {
    u64::from(op >> 2) * 3
}

fn run_lines(plan: &Plan<'_>, mode: Mode) -> (Vec<LineOut>, u64) {
    let cap = plan.cap();
    let mut f = if plan.config & 8 != 0 {
        LineFramer::new_mid_stream(cap, plan.first_segment())
    } else {
        LineFramer::new(cap)
    };
    let mut out = Vec::new();
    for step in plan.steps(mode) {
        match step {
            Step::Bytes { data, segment, .. } => {
                f.push(data, segment as u64, &mut |frame| {
                    out.push(match frame {
                        Frame::Message {
                            bytes,
                            first_ts,
                            last_ts,
                        } => LineOut::Message {
                            bytes: bytes.to_vec(),
                            first_ts,
                            last_ts,
                        },
                        Frame::Oversized {
                            len,
                            first_ts,
                            last_ts,
                            missing_bytes,
                        } => LineOut::Oversized {
                            len,
                            missing: missing_bytes,
                            first_ts,
                            last_ts,
                        },
                    })
                });
                assert!(
                    f.buffered_bytes() <= cap + SLACK_BYTES,
                    "line framer buffers {} bytes with a cap of {cap}",
                    f.buffered_bytes()
                );
            }
            Step::Op(op) if op % 4 == 1 => f.lost(),
            Step::Op(op) => f.hole(hole_len(op)),
        }
    }
    (out, f.counters.resync_discarded_bytes)
}

/// The stream as the line framer's documentation describes it, computed on the whole
/// stream at once: lines end at `\n`, a `\r` before it is not part of the line, blank
/// lines are no messages, a line over the cap or with uncaptured bytes is sized exactly,
/// and after a loss everything up to the next newline is discarded (and counted, except
/// the bytes the kernel never captured).
#[derive(Default)]
struct LineModel {
    cap: usize,
    resync: bool,
    captured: Vec<u8>,
    holes: u64,
    /// The last byte of the line so far is a captured `\r`.
    ends_cr: bool,
    frames: Vec<LineOut>,
    discarded: u64,
    /// Bytes of the stream, captured or not.
    total: u64,
    /// Bytes no frame's length covers and that are not discarded while resynchronising:
    /// line terminators, blank lines, and uncaptured bytes of discarded lines.
    unframed: u64,
}

impl LineModel {
    fn push(&mut self, data: &[u8]) {
        for &b in data {
            self.total += 1;
            if self.resync {
                self.discarded += 1;
                self.resync = b != b'\n';
            } else if b == b'\n' {
                self.end_line();
            } else {
                self.captured.push(b);
                self.ends_cr = b == b'\r';
            }
        }
    }

    fn hole(&mut self, n: u64) {
        self.total += n;
        if n == 0 {
            return;
        }
        if self.resync {
            self.unframed += n; // never captured: not a discarded byte
            return;
        }
        self.holes += n;
        self.ends_cr = false;
    }

    fn lost(&mut self) {
        if !self.resync {
            self.discarded += self.captured.len() as u64;
            self.unframed += self.holes;
        }
        self.captured.clear();
        self.holes = 0;
        self.ends_cr = false;
        self.resync = true;
    }

    fn end_line(&mut self) {
        let raw = self.captured.len() as u64 + self.holes;
        let strip = usize::from(self.ends_cr);
        let content = &self.captured[..self.captured.len() - strip];
        let len = raw - strip as u64;
        let blank = self.holes == 0 && content.iter().all(u8::is_ascii_whitespace);
        // A blank line's bytes, or a frame's terminator: `\n` and a stripped `\r`.
        self.unframed += if blank { raw + 1 } else { strip as u64 + 1 };
        if !blank {
            self.frames
                .push(if self.holes > 0 || len > self.cap as u64 {
                    LineOut::Oversized {
                        len,
                        missing: self.holes,
                        first_ts: 0,
                        last_ts: 0,
                    }
                } else {
                    LineOut::Message {
                        bytes: content.to_vec(),
                        first_ts: 0,
                        last_ts: 0,
                    }
                });
        }
        self.captured.clear();
        self.holes = 0;
        self.ends_cr = false;
    }
}

/// `LineFramer`: split invariance, the cap, and the accounting against [`LineModel`].
pub fn jsonl(data: &[u8]) {
    let plan = Plan::parse(data);
    let (whole, discarded) = run_lines(&plan, Mode::Whole);
    for mode in [Mode::Cuts, Mode::Bytes] {
        let (other, other_discarded) = run_lines(&plan, mode);
        assert_eq!(whole, other, "{mode:?} run differs from the whole run");
        assert_eq!(
            discarded, other_discarded,
            "{mode:?} run discards differently"
        );
    }
    let first = plan.first_segment();
    let starts_message = first
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{' || b == b'[');
    let mut model = LineModel {
        cap: plan.cap(),
        resync: plan.config & 8 != 0 && !starts_message,
        ..LineModel::default()
    };
    for step in plan.steps(Mode::Whole) {
        match step {
            Step::Bytes { data, .. } => model.push(data),
            Step::Op(op) if op % 4 == 1 => model.lost(),
            Step::Op(op) => model.hole(hole_len(op)),
        }
    }
    // The framer's own figures account for every byte: the lengths it reports, what it
    // discarded, and (from the model) terminators, blank lines and the pending line.
    let framed: u64 = whole
        .iter()
        .map(|f| match f {
            LineOut::Message { bytes, .. } => bytes.len() as u64,
            LineOut::Oversized { len, .. } => *len,
        })
        .sum();
    let pending = model.captured.len() as u64 + model.holes;
    assert_eq!(
        framed + discarded + model.unframed + pending,
        model.total,
        "frame lengths and discards do not add up to the stream"
    );
    let untimed: Vec<LineOut> = whole.iter().map(LineOut::untimed).collect();
    assert_eq!(untimed, model.frames, "frames differ from the line model");
    assert_eq!(
        discarded, model.discarded,
        "resync discards differ from the model"
    );
}

// ---------------------------------------------------------------------------------------
// sse

/// `SseParser`: split invariance, the cap (line and data buffers, each at most the cap),
/// and events without line ends in their type or data lines.
pub fn sse(data: &[u8]) {
    let plan = Plan::parse(data);
    let cap = plan.cap();
    let run = |mode| {
        let mut p = SseParser::new(cap);
        let mut out = Vec::new();
        for step in plan.steps(mode) {
            if let Step::Bytes { data, .. } = step {
                p.push(data, &mut |e| {
                    out.push(e.map(|e| (e.event.to_owned(), e.data.to_vec())));
                });
                assert!(
                    p.buffered_bytes() <= 2 * cap + SLACK_BYTES,
                    "SSE parser buffers {} bytes with a cap of {cap}",
                    p.buffered_bytes()
                );
            }
        }
        (out, p.oversized_events)
    };
    let whole = run(Mode::Whole);
    for mode in [Mode::Cuts, Mode::Bytes] {
        assert_eq!(whole, run(mode), "{mode:?} run differs from the whole run");
    }
    let oversized = whole.0.iter().filter(|e| e.is_err()).count();
    assert_eq!(
        oversized as u64, whole.1,
        "oversized events reported and counted"
    );
    for (event, data) in whole.0.iter().flatten() {
        assert!(
            data.len() <= cap,
            "an event of {} bytes passed the cap",
            data.len()
        );
        assert!(!data.contains(&b'\r') && !event.contains(['\r', '\n']));
    }
}

// ---------------------------------------------------------------------------------------
// http

#[derive(Debug, PartialEq, Eq)]
enum HttpOut {
    Head(http::Head),
    Message(Vec<u8>, Option<String>),
    Unparsable(&'static str),
    End,
    Invalid,
}

impl From<HttpEvent<'_>> for HttpOut {
    fn from(e: HttpEvent<'_>) -> Self {
        match e {
            HttpEvent::Head(h) => HttpOut::Head(h),
            HttpEvent::Message { bytes, sse_event } => {
                HttpOut::Message(bytes.to_vec(), sse_event.map(str::to_owned))
            }
            HttpEvent::Unparsable { reason } => HttpOut::Unparsable(reason),
            HttpEvent::End => HttpOut::End,
            HttpEvent::Invalid => HttpOut::Invalid,
        }
    }
}

/// Ops of the `http` target: a loss (`Some(true)`), the connection's close (`Some(false)`),
/// or a plain cut.
fn http_op(op: u8) -> Option<bool> {
    match op % 4 {
        0 => None,
        2 => Some(false),
        _ => Some(true),
    }
}

fn run_http(plan: &Plan<'_>, mode: Mode) -> Vec<(HttpOut, usize)> {
    let cap = plan.cap();
    let mut f = HttpFramer::new(cap);
    let mut out = Vec::new();
    // Bytes that may sit in a head buffer (pushed since the last message ended), and
    // whether a head was handed out and its body is being read.
    let (mut head_bytes, mut in_body) = (0usize, false);
    let mut skip_segment = None;
    for step in plan.steps(mode) {
        match step {
            Step::Bytes {
                data,
                segment,
                first,
            } => {
                // While resynchronising, the framer looks for a head at the start of a
                // syscall and skips the rest of it: a cut inside the segment is no
                // syscall boundary, so skip what the whole run skips.
                if skip_segment == Some(segment) || (!first && f.resyncing()) {
                    skip_segment = Some(segment);
                    continue;
                }
                let before = out.len();
                f.push(data, &mut |e| out.push((HttpOut::from(e), segment)));
                head_bytes += data.len();
                track(&out[before..], data.len(), &mut head_bytes, &mut in_body);
                // A head buffer grows like a `Vec` up to its limit; a body holds at most an
                // SSE line and event (each the cap) and a chunk-size line.
                let bound = if in_body {
                    2 * cap + http::MAX_CHUNK_LINE_BYTES
                } else {
                    (2 * head_bytes).min(http::MAX_HEAD_BYTES)
                };
                assert!(
                    f.buffered_bytes() <= bound + SLACK_BYTES,
                    "HTTP framer buffers {} bytes with a cap of {cap}",
                    f.buffered_bytes()
                );
            }
            Step::Op(op) => match http_op(op) {
                Some(true) => {
                    f.lost();
                    (head_bytes, in_body) = (0, false);
                }
                Some(false) => {
                    let before = out.len();
                    f.close(&mut |e| out.push((HttpOut::from(e), usize::MAX)));
                    track(&out[before..], 0, &mut head_bytes, &mut in_body);
                }
                None => unreachable!("plain cuts are not ops"),
            },
        }
    }
    out
}

/// Follows the events of one push for the buffer bound: `pushed` bytes were just fed.
fn track(events: &[(HttpOut, usize)], pushed: usize, head_bytes: &mut usize, in_body: &mut bool) {
    for (e, _) in events {
        match e {
            HttpOut::Head(_) => *in_body = true,
            HttpOut::End | HttpOut::Invalid => {
                *in_body = false;
                *head_bytes = pushed;
            }
            _ => {}
        }
    }
}

/// `HttpFramer`: split invariance (outside resynchronisation, where syscall boundaries
/// matter by design), the cap, and the event grammar.
pub fn http(data: &[u8]) {
    let plan = Plan::parse(data);
    let whole = run_http(&plan, Mode::Whole);
    for mode in [Mode::Cuts, Mode::Bytes] {
        let other = run_http(&plan, mode);
        assert_eq!(whole, other, "{mode:?} run differs from the whole run");
    }
    // A head opens a message; its body's messages follow; End closes it. A loss abandons
    // the message in progress without an End.
    let mut in_message = false;
    let mut events = whole.iter().peekable();
    for step in plan.steps(Mode::Whole) {
        let segment = match step {
            Step::Bytes { segment, .. } => segment,
            Step::Op(op) => {
                if http_op(op) == Some(true) {
                    in_message = false;
                    continue;
                }
                usize::MAX
            }
        };
        while let Some((e, _)) = events.next_if(|(_, s)| *s == segment) {
            match e {
                HttpOut::Head(h) => {
                    assert!(!in_message, "a head inside a message: {h:?}");
                    assert!(
                        h.user.is_none() || h.has_authorization,
                        "a user without a credential"
                    );
                    in_message = true;
                }
                HttpOut::Message(..) | HttpOut::Unparsable(_) => {
                    assert!(in_message, "a body outside a message: {e:?}")
                }
                HttpOut::End => {
                    assert!(in_message, "an end outside a message");
                    in_message = false;
                }
                HttpOut::Invalid => assert!(!in_message, "invalid bytes inside a message"),
            }
        }
    }
    for (e, _) in &whole {
        if let HttpOut::Message(bytes, _) = e {
            assert!(
                bytes.len() <= plan.cap(),
                "a body over the cap was handed out"
            );
        }
    }
}
