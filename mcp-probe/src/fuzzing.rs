//! Entry points shared by the fuzz targets (`mcp-probe/fuzz/fuzz_targets/`, one line each)
//! and the regression tests below, which replay the seed corpus and every input the fuzzer
//! ever broke a property with, on stable `cargo test`.
//!
//! Each function takes the raw fuzz input and panics when a property does not hold. The
//! properties go beyond "does not panic":
//!
//! - framers (`jsonl`, `http`, `sse`): the same bytes fed whole, cut at fuzz-chosen points,
//!   and one byte at a time give exactly the same frames or events (a differential oracle);
//!   the bytes a framer buffers stay within its cap (see [`SLACK_BYTES`]);
//! - `jsonl`: the lengths of frames, blank lines, terminators and resynchronisation
//!   discards add up to the input, and frames match an independent model of the stream;
//! - `http`: events follow the message grammar (a head, its body's messages, its end);
//! - `jsonrpc`: what `jsonrpc::parse` reports agrees with a plain `serde_json::Value` parse;
//! - `decode`: a decoded record re-encodes to the bytes it came from;
//! - `pipeline`: records built from fuzz bytes leave a scrape that parses, memory within
//!   bounds, and no state once everything has idled out.
//!
//! Framer inputs are laid out as: byte 0, a configuration byte (cap, and for `jsonl` a
//! mid-stream start); byte 1, the number `n` of cut points (mod 17); then `n` cut points of
//! 3 bytes each: an offset into the stream (u16 LE, modulo its length + 1) and an op byte;
//! then the stream itself. An op byte that is 0 mod 4 only cuts (the reference run ignores
//! it); other values are events at that offset that every run applies: a loss, a kernel
//! hole (`jsonl`), a close (`http`). A seed is therefore two bytes, `\x05\x00` say,
//! followed by real traffic.

use std::{cell::RefCell, rc::Rc};

use mcp_probe_common::{
    EventHeader, EventKind, StreamKind, Syscall, AF_INET, AF_INET6, AF_UNIX, EVENT_HEADER_LEN,
    SOCKET_INFO_LEN,
};
use prometheus_client::{encoding::text::encode, registry::Registry};

use crate::{
    decode,
    health::Health,
    metrics::{AgentMetrics, Metrics},
    model::StreamControl,
    protocols::{
        http::{self, HttpEvent, HttpFramer},
        jsonl::{Frame, LineFramer},
        jsonrpc::{self, Id, Message, Parsed},
        sse::SseParser,
    },
    stitch::{StitchConfig, Stitcher},
    stream::{Pipeline, PipelineConfig},
};

/// Allocation slack allowed over a framer's documented bound: the smallest allocation a
/// `Vec<u8>` makes is 8 bytes, so a cap of 1 still holds 8.
pub const SLACK_BYTES: usize = 64;

/// A harness: the raw fuzz input in, a panic when a property fails.
pub type Harness = fn(&[u8]);

/// Every target by name, for the regression replay.
pub const TARGETS: &[(&str, Harness)] = &[
    ("jsonl", jsonl),
    ("jsonrpc", jsonrpc),
    ("http", http),
    ("sse", sse),
    ("decode", decode),
    ("pipeline", pipeline),
];

/// Reads fuzz bytes front to back; past the end it reads zeros.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Caps the framer targets pick from: tiny ones reach the oversized paths with small
/// inputs, the last one is the agent's default.
const CAPS: [usize; 8] = [1, 2, 7, 16, 64, 256, 4096, 16 << 20];

/// A framer input: the stream, and where it is cut or interrupted.
struct Plan<'a> {
    config: u8,
    stream: &'a [u8],
    /// (offset, op), sorted by offset; ops keep their input order at one offset.
    cuts: Vec<(usize, u8)>,
}

impl<'a> Plan<'a> {
    fn parse(data: &'a [u8]) -> Self {
        let mut c = Cursor(data);
        let config = c.byte();
        let n = c.byte() % 17;
        let raw: Vec<(u16, u8)> = (0..n).map(|_| (c.u16(), c.byte())).collect();
        let stream = c.0;
        let mut cuts: Vec<(usize, u8)> = raw
            .into_iter()
            .map(|(at, op)| (usize::from(at) % (stream.len() + 1), op))
            .collect();
        cuts.sort_by_key(|&(at, _)| at);
        Self {
            config,
            stream,
            cuts,
        }
    }

    fn cap(&self) -> usize {
        CAPS[usize::from(self.config & 7)]
    }

    /// The steps of one run. `Whole` feeds each segment (the bytes between two events) in
    /// one push, `Cuts` also cuts at the fuzz-chosen points, `Bytes` feeds one byte at a time.
    fn steps(&self, mode: Mode) -> Vec<Step<'a>> {
        let mut steps = Vec::new();
        let mut segment = 0;
        let mut start = 0;
        let mut piece_start = 0;
        let push = |steps: &mut Vec<Step<'a>>, from: usize, to: usize, seg: usize, first| {
            if mode == Mode::Bytes {
                for i in from..to {
                    steps.push(Step::Bytes {
                        data: &self.stream[i..i + 1],
                        segment: seg,
                        first: first && i == from,
                    });
                }
            } else if from < to {
                steps.push(Step::Bytes {
                    data: &self.stream[from..to],
                    segment: seg,
                    first,
                });
            }
        };
        for &(at, op) in &self.cuts {
            if op % 4 == 0 {
                if mode == Mode::Cuts {
                    push(&mut steps, piece_start, at, segment, piece_start == start);
                    piece_start = at;
                }
                continue;
            }
            push(&mut steps, piece_start, at, segment, piece_start == start);
            steps.push(Step::Op(op));
            segment += 1;
            start = at;
            piece_start = at;
        }
        push(
            &mut steps,
            piece_start,
            self.stream.len(),
            segment,
            piece_start == start,
        );
        steps
    }

    /// The bytes up to the first event: what the kernel's first record would carry.
    fn first_segment(&self) -> &'a [u8] {
        let end = self
            .cuts
            .iter()
            .find(|&&(_, op)| op % 4 != 0)
            .map_or(self.stream.len(), |&(at, _)| at);
        &self.stream[..end]
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Whole,
    Cuts,
    Bytes,
}

#[derive(Debug)]
enum Step<'a> {
    Bytes {
        data: &'a [u8],
        segment: usize,
        /// The first piece of its segment (a syscall boundary).
        first: bool,
    },
    Op(u8),
}

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

// ---------------------------------------------------------------------------------------
// jsonrpc

/// `jsonrpc::parse`: whatever it reports agrees with an independent `serde_json::Value`
/// parse of the same bytes. Bytes that are not UTF-8 are tolerated inside strings the
/// parser skips (a tool's arguments, say), so the reference parses them lossily. Numbers
/// beyond `f64` (`1e400`, a legal id) are valid JSON that a `Value` cannot hold: such
/// inputs are only parsed.
pub fn jsonrpc(data: &[u8]) {
    let utf8 = std::str::from_utf8(data).is_ok();
    let value = serde_json::from_str::<serde_json::Value>(&String::from_utf8_lossy(data));
    let parsed = jsonrpc::parse(data);
    if matches!(&value, Err(e) if e.to_string().starts_with("number out of range")) {
        return;
    }
    match parsed {
        Err(jsonrpc::ParseError::InvalidJson(e)) => {
            assert!(!utf8 || value.is_err(), "valid JSON reported invalid ({e})")
        }
        Err(jsonrpc::ParseError::NotJsonRpc(_)) => {
            assert!(
                value.is_ok(),
                "invalid JSON reported as valid but not JSON-RPC"
            )
        }
        Ok(parsed) => {
            let Ok(value) = value else {
                panic!("invalid JSON parsed as {parsed:?}");
            };
            match parsed {
                Parsed::Single(msg) => check_message(&msg, &value),
                Parsed::Batch(items) => {
                    let Some(array) = value.as_array() else {
                        panic!("a batch from a non-array");
                    };
                    assert_eq!(items.len(), array.len(), "batch length");
                    for (item, v) in items.iter().zip(array) {
                        if let Ok(msg) = item {
                            check_message(msg, v);
                        }
                    }
                }
            }
        }
    }
}

fn check_id(id: &Id, v: Option<&serde_json::Value>) {
    let Some(v) = v else {
        panic!("{id:?} without an id member");
    };
    match id {
        Id::Num(n) => assert!(
            v.as_i64() == Some(*n) || (v.is_f64() && v.as_f64() == Some(*n as f64)),
            "id {n} from {v}"
        ),
        Id::NumText(_) => assert!(v.is_number(), "numeric id from {v}"),
        Id::Str(s) => assert_eq!(v.as_str(), Some(s.as_str()), "string id"),
    }
}

fn check_str(got: Option<&str>, v: Option<&serde_json::Value>, what: &str) {
    if let Some(got) = got {
        assert_eq!(v.and_then(|v| v.as_str()), Some(got), "{what}");
    }
}

fn check_message(msg: &Message<'_>, v: &serde_json::Value) {
    let Some(obj) = v.as_object() else {
        panic!("{msg:?} from a non-object");
    };
    assert_eq!(obj.get("jsonrpc").and_then(|v| v.as_str()), Some("2.0"));
    match msg {
        Message::Request { id, method, info } => {
            check_id(id, obj.get("id"));
            check_request(method, info, obj);
        }
        Message::Notification { method, info } => {
            assert!(!obj.contains_key("id"), "a notification with an id");
            check_request(method, info, obj);
        }
        Message::Response { id, info } => {
            check_id(id, obj.get("id"));
            assert!(obj.contains_key("result") && !obj.contains_key("method"));
            let result = obj.get("result");
            if info.is_error {
                assert_eq!(
                    result.and_then(|r| r.get("isError")),
                    Some(&serde_json::Value::Bool(true))
                );
            }
            if let Some(name) = info.server_name.as_deref() {
                let direct = result.and_then(|r| r.get("serverInfo")?.get("name"));
                let in_meta = result.and_then(|r| {
                    r.get("_meta")?
                        .get("io.modelcontextprotocol/serverInfo")?
                        .get("name")
                });
                assert!(
                    direct.and_then(|v| v.as_str()) == Some(name)
                        || in_meta.and_then(|v| v.as_str()) == Some(name),
                    "server name {name}"
                );
            }
        }
        Message::Error { id, code } => {
            match id {
                Some(id) => check_id(id, obj.get("id")),
                None => assert!(obj.get("id").is_none_or(|v| v.is_null())),
            }
            assert!(!obj.contains_key("method"));
            let got = obj.get("error").and_then(|e| e.get("code"));
            assert!(
                got.and_then(|c| c.as_i64()) == Some(*code)
                    || got.and_then(|c| c.as_f64()) == Some(*code as f64),
                "error code {code} from {got:?}"
            );
        }
    }
}

fn check_request(
    method: &str,
    info: &jsonrpc::RequestInfo<'_>,
    obj: &serde_json::Map<String, serde_json::Value>,
) {
    let params = obj.get("params");
    let meta = params.and_then(|p| p.get("_meta"));
    check_str(Some(method), obj.get("method"), "method");
    check_str(
        info.name.as_deref(),
        params.and_then(|p| p.get("name")),
        "params.name",
    );
    if let Some(name) = info.client_name.as_deref() {
        let direct = params.and_then(|p| p.get("clientInfo")?.get("name"));
        let in_meta = meta.and_then(|m| m.get("io.modelcontextprotocol/clientInfo")?.get("name"));
        assert!(
            direct.and_then(|v| v.as_str()) == Some(name)
                || in_meta.and_then(|v| v.as_str()) == Some(name),
            "client name {name}"
        );
    }
    if let Some(cancelled) = &info.cancelled_id {
        check_id(cancelled, params.and_then(|p| p.get("requestId")));
    }
}

// ---------------------------------------------------------------------------------------
// decode

/// `decode::decode`: errors are the documented ones, and a decoded record re-encodes to
/// the header and payload it came from.
pub fn decode(data: &[u8]) {
    let record = match decode::decode(data) {
        Ok(r) => r,
        Err(decode::DecodeError::Short(n)) => {
            assert!(n == data.len() && n < EVENT_HEADER_LEN);
            return;
        }
        Err(_) => {
            assert!(data.len() >= EVENT_HEADER_LEN);
            return;
        }
    };
    let _ = record.comm();
    let header = EventHeader {
        kind: record.kind as u32,
        syscall: record.syscall as u32,
        ts_ns: record.ts_ns,
        tgid: record.tgid,
        tid: record.tid,
        comm: record.comm,
        stream_id: record.stream_id,
        ino: record.ino,
        stream_kind: record.stream_kind as u32,
        fd: record.fd,
        stream_offset: record.stream_offset,
        syscall_len: record.syscall_len,
        syscall_offset: record.syscall_offset,
        captured_len: record.payload.len() as u32,
        detail: record.detail,
    };
    let mut again = decode::encode(&header, record.payload);
    if record.kind == EventKind::ProcessExit {
        // Exit records carry no stream: the decoder does not read their stream kind.
        let at = std::mem::offset_of!(EventHeader, stream_kind);
        again[at..at + 4].copy_from_slice(&data[at..at + 4]);
    }
    assert_eq!(
        again,
        &data[..EVENT_HEADER_LEN + record.payload.len()],
        "a record does not re-encode to its bytes"
    );
}

// ---------------------------------------------------------------------------------------
// pipeline

/// A kernel that does nothing when told to stop following a stream.
#[derive(Default, Clone)]
struct NoControl {
    ignored: Rc<RefCell<Vec<u64>>>,
}

impl StreamControl for NoControl {
    fn ignore_stream(&mut self, stream_id: u64) {
        self.ignored.borrow_mut().push(stream_id);
    }
    fn watch_process(&mut self, _tgid: u32) -> bool {
        true
    }
    fn sweep_maps(
        &mut self,
        _gone: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<(&'static str, usize, usize)> {
        Vec::new()
    }
    /// Its pids are above any real pid_max: none exists.
    fn process_exists(&self, _tgid: u32) -> bool {
        false
    }
}

/// Streams the `pipeline` target writes to: two pipes and two sockets.
const STREAMS: [(u64, u64, StreamKind); 4] = [
    (0xffff_8880_0000_1000, 11, StreamKind::Pipe),
    (0xffff_8880_0000_2000, 12, StreamKind::Pipe),
    (0xffff_8880_0000_3000, 13, StreamKind::Socket),
    (0xffff_8880_0000_4000, 14, StreamKind::Socket),
];
/// Process ids that do not exist on any host (above the kernel's `pid_max` limit), so the
/// agent's /proc look-ups find nothing and the run does not depend on the machine.
const FIRST_TGID: u32 = 4_200_000;
const COMMS: [&[u8; 16]; 4] = [
    b"python3\0\0\0\0\0\0\0\0\0",
    b"node\0\0\0\0\0\0\0\0\0\0\0\0",
    b"claude\0\0\0\0\0\0\0\0\0\0",
    b"weather\0\0\0\0\0\0\0\0\0",
];

/// The `pipeline` target: the input is a sequence of records. Each starts with an op byte
/// (the record kind, or a sweep of the clock), a byte choosing stream, process, syscall
/// and whether bytes before it were lost, a byte of clock advance (in 10 ms), a length
/// byte, then that many payload bytes. One op passes a raw 96-byte header from the input.
///
/// Properties: no panic; the scrape parses as the exposition format whatever the traffic
/// put in labels; every captured byte is counted; buffered bytes stay within the views'
/// caps; and once everything has idled out, no stream, request or buffer is left.
pub fn pipeline(data: &[u8]) {
    const MAX: usize = 4096;
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let agent: AgentMetrics = metrics.agent.clone();
    let host: std::sync::Arc<dyn crate::host::Host> =
        std::sync::Arc::new(crate::host::FakeHost::new());
    let stitcher =
        Stitcher::recording(StitchConfig::default(), metrics.clone(), None, host.clone());
    let mut p = Pipeline::new(
        // Small bounds, so that eviction and the buffer budget are exercised too.
        PipelineConfig {
            max_message_bytes: MAX,
            max_streams: 6,
            max_buffered_bytes: 3 * MAX,
        },
        stitcher,
        Health::new(metrics.health.clone(), host.clone()),
        metrics.agent,
        NoControl::default(),
        host,
    );
    let mut c = Cursor(data);
    let mut now_ns: u64 = 1_000_000_000;
    let mut offsets = [[0u64; 2]; 4];
    let (mut records, mut captured) = (0u64, 0u64);
    while !c.is_empty() {
        let op = c.byte() % 10;
        let who = c.byte();
        now_ns += u64::from(c.byte()) * 10_000_000;
        let len = usize::from(c.byte());
        let payload = c.take(len);
        let stream = usize::from(who & 3);
        let process = usize::from((who >> 2) & 3);
        let syscall = Syscall::try_from(u32::from((who >> 4) & 7)).unwrap_or(Syscall::Read);
        let direction = syscall.direction() as usize;
        if who & 0x80 != 0 {
            offsets[stream][direction] += 100; // a record the ring buffer had no room for
        }
        let (stream_id, ino, stream_kind) = STREAMS[stream];
        let kind = match op {
            0..=2 => EventKind::Data,
            3 => EventKind::Gap,
            4 => EventKind::Close,
            5 => EventKind::Error,
            6 => EventKind::SocketInfo,
            7 => EventKind::ProcessExit,
            8 => {
                p.sweep(now_ns);
                continue;
            }
            _ => {
                let raw = [c.take(EVENT_HEADER_LEN), payload].concat();
                records += 1;
                if let Ok(r) = decode::decode(&raw) {
                    if matches!(r.kind, EventKind::Data | EventKind::Gap) {
                        captured += r.payload.len() as u64;
                    }
                }
                p.on_record_bytes(&raw);
                continue;
            }
        };
        let payload = match kind {
            EventKind::SocketInfo => socket_info(payload),
            EventKind::Data => payload.to_vec(),
            _ => Vec::new(),
        };
        let detail = match kind {
            EventKind::Gap => len as u32 * 16,
            EventKind::Error => [104, 32, 110, 103, 111][len % 5], // ECONNRESET, EPIPE, ...
            EventKind::ProcessExit => u32::from(who) << 8,
            _ => 0,
        };
        let header = EventHeader {
            kind: kind as u32,
            syscall: syscall as u32,
            ts_ns: now_ns,
            tgid: FIRST_TGID + process as u32,
            tid: FIRST_TGID + process as u32,
            comm: *COMMS[process],
            stream_id,
            ino,
            stream_kind: stream_kind as u32,
            fd: 3 + stream as u32,
            stream_offset: offsets[stream][direction],
            syscall_len: payload.len() as u64 + u64::from(detail),
            syscall_offset: 0,
            captured_len: payload.len() as u32,
            detail,
        };
        offsets[stream][direction] += match kind {
            EventKind::Data => payload.len() as u64,
            EventKind::Gap => u64::from(detail),
            _ => 0,
        };
        if matches!(kind, EventKind::Data | EventKind::Gap) {
            captured += payload.len() as u64;
        }
        records += 1;
        p.on_record_bytes(&decode::encode(&header, &payload));
    }
    assert_eq!(agent.records.get(), records, "records counted");
    assert_eq!(
        agent.captured_bytes.get(),
        captured,
        "captured bytes counted"
    );

    p.sweep(now_ns + 1_000_000_000);
    let views = agent.tracked_streams.get().max(0) as usize;
    // A view holds a framer: a line buffer (the cap) or an HTTP head or body (see `http`).
    let per_view = (2 * MAX + http::MAX_CHUNK_LINE_BYTES).max(http::MAX_HEAD_BYTES) + SLACK_BYTES;
    assert!(
        agent.buffered_bytes.get() as usize <= views * per_view,
        "{} bytes buffered in {views} views",
        agent.buffered_bytes.get()
    );
    check_exposition(&registry);

    // Two hours later: every request has timed out and every view idled away.
    p.sweep(now_ns + 7_200_000_000_000);
    p.sweep(now_ns + 7_201_000_000_000);
    assert_eq!(
        agent.tracked_streams.get(),
        0,
        "views left after idling out"
    );
    assert_eq!(
        agent.pending_requests.get(),
        0,
        "requests left after timing out"
    );
    assert_eq!(agent.buffered_bytes.get(), 0, "bytes left buffered");
    check_exposition(&registry);
}

fn socket_info(bytes: &[u8]) -> Vec<u8> {
    let mut info = vec![0u8; SOCKET_INFO_LEN];
    let n = bytes.len().min(SOCKET_INFO_LEN);
    info[..n].copy_from_slice(&bytes[..n]);
    let family = [AF_INET, AF_INET6, AF_UNIX][usize::from(info[0] % 3)];
    info[..2].copy_from_slice(&family.to_ne_bytes());
    info
}

/// Checks the scrape line by line against the text exposition format: a name, labels
/// with quoted and escaped values, and a number.
fn check_exposition(registry: &Registry) {
    let mut text = String::new();
    if encode(&mut text, registry).is_err() {
        panic!("the registry does not encode");
    }
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        assert!(sample_line(line), "not an exposition line: {line:?}");
    }
}

fn sample_line(line: &str) -> bool {
    let b = line.as_bytes();
    let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = b.iter().take_while(|&&c| is_name(c)).count();
    if i == 0 {
        return false;
    }
    if b.get(i) == Some(&b'{') {
        i += 1;
        loop {
            if b.get(i) == Some(&b'}') {
                i += 1;
                break;
            }
            let name = b[i..].iter().take_while(|&&c| is_name(c)).count();
            if name == 0 || b.get(i + name..i + name + 2) != Some(b"=\"") {
                return false;
            }
            i += name + 2;
            loop {
                match b.get(i) {
                    None => return false,
                    Some(b'\\') if matches!(b.get(i + 1), Some(b'\\' | b'"' | b'n')) => i += 2,
                    Some(b'\\') => return false,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return false,
            }
        }
    }
    let Some(rest) = line.get(i..).and_then(|r| r.strip_prefix(' ')) else {
        return false;
    };
    let value = rest.split(' ').next().unwrap_or_default();
    value.parse::<f64>().is_ok() || matches!(value, "+Inf" | "-Inf" | "NaN")
}

#[cfg(test)]
mod tests {
    //! Replays the seed corpus and the regressions on stable: every input the fuzzer ever
    //! broke a property with stays fixed.

    use std::path::Path;

    use super::*;

    fn replay(dir: &str) -> usize {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
        let mut failures = Vec::new();
        let mut count = 0;
        for &(name, target) in TARGETS {
            let Ok(entries) = std::fs::read_dir(root.join(name)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path
                    .file_name()
                    .is_some_and(|n| n.as_encoded_bytes()[0] == b'.')
                {
                    continue;
                }
                let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                count += 1;
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    failures.push(path);
                }
            }
        }
        assert!(failures.is_empty(), "failing inputs: {failures:#?}");
        count
    }

    #[test]
    fn seed_corpus_holds_every_property() {
        assert!(replay("corpus") > 0, "no seed corpus found");
    }

    #[test]
    fn fuzzer_findings_stay_fixed() {
        replay("regressions");
    }

    #[test]
    fn plans_cut_where_asked() {
        // cfg, 2 cuts: a plain cut at 2 and a loss at 4, then "abcdef".
        let plan = Plan::parse(b"\x00\x02\x02\x00\x00\x04\x00\x01abcdef");
        let pieces = |mode| {
            plan.steps(mode)
                .iter()
                .map(|s| match s {
                    Step::Bytes { data, .. } => String::from_utf8_lossy(data).into_owned(),
                    Step::Op(_) => "|".into(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(pieces(Mode::Whole), ["abcd", "|", "ef"]);
        assert_eq!(pieces(Mode::Cuts), ["ab", "cd", "|", "ef"]);
        assert_eq!(pieces(Mode::Bytes).len(), 7);
    }

    #[test]
    fn exposition_checker_rejects_broken_labels() {
        assert!(sample_line("a_total 1"));
        assert!(sample_line(r#"a{b="x\"y",c=""} 2.5"#));
        assert!(!sample_line(r#"a{b="x"y"} 1"#));
        assert!(!sample_line(r#"a{b="x} 1"#));
        assert!(!sample_line("a{b=\"x\\q\"} 1"));
    }
}
