//! HTTP/1.x framing for one direction of a connection (MCP's Streamable HTTP and legacy
//! HTTP+SSE transports).
//!
//! Heads are parsed with `httparse`; bodies are delimited by `Content-Length`, chunked
//! transfer coding or the end of the connection; `Content-Encoding: gzip` JSON bodies are
//! inflated (bounded). A JSON body is handed out as one message, a `text/event-stream`
//! body as one message per SSE event, as the events arrive. Pipelined and keep-alive
//! messages follow each other on the same framer.

use std::io::Read as _;

use super::{sse::SseParser, Frame, Framer};

pub mod exchange;

/// Longest head accepted, through its blank line; a longer one is an error and the framer
/// resynchronises.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// Longest chunk-size line kept (with its extensions); beyond it the line is skipped.
pub const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// The media type of a body, as far as MCP cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    EventStream,
    Other,
}

/// What the agent keeps of a head. No header values other than these leave the parser
/// (in particular no credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `Some((method, path))` for a request, `None` for a response.
    pub request: Option<(String, String)>,
    /// Response status; 0 for requests.
    pub status: u16,
    pub content_type: Media,
    pub session_id: Option<String>,
    /// The request carries an `Authorization` header (its value is never kept).
    pub has_authorization: bool,
    /// Who the credential belongs to: a hash of the `Authorization` value keyed with a
    /// random key of this agent run, so the same credential gives the same user and the
    /// credential itself cannot be recovered.
    pub user: Option<String>,
}

/// What the framer reports.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpEvent<'a> {
    Head(Head),
    /// A JSON body, or the data of one SSE event (`event` is the SSE event type).
    Message {
        bytes: &'a [u8],
        sse_event: Option<&'a str>,
    },
    /// A body or event that could not be parsed: over the size cap, or bad compression.
    Unparsable {
        reason: &'static str,
    },
    /// The message (head and body) is complete.
    End,
    /// Bytes that are not HTTP where a head was expected; skipped until the next head.
    Invalid,
}

#[derive(Debug)]
enum BodyFraming {
    None,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug)]
enum Chunk {
    /// Reading the chunk-size line.
    Size(Vec<u8>),
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd(u8),
    /// Trailer lines after the last chunk, up to an empty line; `true` while the current
    /// line is empty so far (nothing but `\r`). Trailers are not kept.
    Trailer(bool),
}

#[derive(Debug)]
enum BodyKind {
    Json {
        buf: Vec<u8>,
        gzip: bool,
        over: bool,
    },
    Sse(Box<SseParser>),
    Skip,
}

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Body {
        framing: BodyFraming,
        kind: BodyKind,
    },
    /// After garbage or a loss: waiting for a chunk that starts a new message.
    Resync,
}

#[derive(Debug)]
pub struct HttpFramer {
    state: State,
    max_body_bytes: usize,
    /// The head being read started right after a resynchronisation: if its first bytes turn
    /// out not to be HTTP after all, it is skipped silently, like any chunk while resyncing.
    head_after_resync: bool,
}

/// Bytes [`starts_http`] needs to decide: the longest start it knows (`OPTIONS `).
const HTTP_START_BYTES: usize = 8;

/// True when `data` starts like an HTTP/1.x request or response (or is too short to tell
/// and could).
pub fn starts_http(data: &[u8]) -> bool {
    const STARTS: [&[u8]; 8] = [
        b"POST ",
        b"GET ",
        b"PUT ",
        b"DELETE ",
        b"PATCH ",
        b"OPTIONS ",
        b"HEAD ",
        b"HTTP/1.",
    ];
    STARTS
        .iter()
        .any(|s| data.starts_with(s) || (data.len() < s.len() && s.starts_with(data)))
}

impl HttpFramer {
    pub fn new(max_body_bytes: usize) -> Self {
        Self {
            state: State::Head(Vec::new()),
            max_body_bytes,
            head_after_resync: false,
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        match &self.state {
            State::Head(b) => b.capacity(),
            State::Body { framing, kind } => {
                let chunk_line = match framing {
                    BodyFraming::Chunked(Chunk::Size(line)) => line.capacity(),
                    _ => 0,
                };
                chunk_line
                    + match kind {
                        BodyKind::Json { buf, .. } => buf.capacity(),
                        BodyKind::Sse(p) => p.buffered_bytes(),
                        BodyKind::Skip => 0,
                    }
            }
            State::Resync => 0,
        }
    }

    /// Bytes of the head or body in progress that are held.
    pub fn pending_bytes(&self) -> u64 {
        match &self.state {
            State::Head(b) => b.len() as u64,
            State::Body {
                kind: BodyKind::Json { buf, .. },
                ..
            } => buf.len() as u64,
            State::Body {
                kind: BodyKind::Sse(p),
                ..
            } => p.pending_bytes(),
            _ => 0,
        }
    }

    /// Gives up what is buffered (the agent's memory budget is spent): a JSON body or SSE
    /// event in progress is reported as oversized when it ends; a head in progress is
    /// dropped and the framer waits for the next one.
    pub fn shed(&mut self) {
        match &mut self.state {
            State::Head(b) if !b.is_empty() => self.state = State::Resync,
            State::Body {
                kind: BodyKind::Json { buf, over, .. },
                ..
            } => {
                *over = true;
                *buf = Vec::new();
            }
            State::Body {
                kind: BodyKind::Sse(p),
                ..
            } => p.shed(),
            _ => {}
        }
    }

    /// Skipping bytes until a syscall's bytes start with a head (after garbage or a loss).
    pub fn resyncing(&self) -> bool {
        matches!(self.state, State::Resync)
    }

    /// Bytes were lost: whatever message was in progress is abandoned.
    pub fn lost(&mut self) {
        self.state = State::Resync;
    }

    /// The connection closed: a body delimited by the close ends here.
    pub fn close(&mut self, emit: &mut impl FnMut(HttpEvent<'_>)) {
        if let State::Body {
            framing: BodyFraming::UntilClose,
            ..
        } = self.state
        {
            self.finish_body(emit);
        }
    }

    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(HttpEvent<'_>)) {
        while !data.is_empty() {
            match &mut self.state {
                State::Resync => {
                    if starts_http(data) {
                        self.state = State::Head(Vec::new());
                        self.head_after_resync = true;
                    } else {
                        return; // skip this chunk; heads start at syscall boundaries
                    }
                }
                State::Head(buf) => {
                    let before = buf.len();
                    // A chunk too short to tell whether it starts a head was kept: decide
                    // with the bytes that follow, as if they had come in one chunk.
                    if before < HTTP_START_BYTES {
                        let start: Vec<u8> = buf
                            .iter()
                            .chain(data)
                            .take(HTTP_START_BYTES)
                            .copied()
                            .collect();
                        if !starts_http(&start) {
                            if !std::mem::take(&mut self.head_after_resync) {
                                emit(HttpEvent::Invalid);
                            }
                            self.state = State::Resync;
                            return;
                        }
                    }
                    let take = data.len().min(MAX_HEAD_BYTES - before);
                    crate::protocols::extend_capped(buf, &data[..take], MAX_HEAD_BYTES);
                    // Only the new bytes (and the 3 before them) can complete the blank line.
                    let from = before.saturating_sub(3);
                    let Some(end) = find(&buf[from..], b"\r\n\r\n").map(|i| from + i + 4) else {
                        if buf.len() >= MAX_HEAD_BYTES {
                            emit(HttpEvent::Invalid);
                            self.state = State::Resync;
                        }
                        return;
                    };
                    self.head_after_resync = false;
                    let consumed = end - before;
                    let head_bytes = std::mem::take(buf);
                    match parse_head(&head_bytes[..end]) {
                        Some((head, framing)) => {
                            let kind = match (head.content_type, &framing) {
                                (_, BodyFraming::None) => BodyKind::Skip,
                                (Media::Json, _) => BodyKind::Json {
                                    buf: Vec::new(),
                                    gzip: is_gzip(&head_bytes[..end]),
                                    over: false,
                                },
                                (Media::EventStream, _) => {
                                    BodyKind::Sse(Box::new(SseParser::new(self.max_body_bytes)))
                                }
                                (Media::Other, _) => BodyKind::Skip,
                            };
                            emit(HttpEvent::Head(head));
                            self.state = State::Body { framing, kind };
                            if let State::Body {
                                framing: BodyFraming::None,
                                ..
                            } = self.state
                            {
                                self.finish_body(emit);
                            }
                        }
                        None => {
                            emit(HttpEvent::Invalid);
                            self.state = State::Resync;
                            return;
                        }
                    }
                    data = &data[consumed..];
                }
                State::Body { framing, kind } => {
                    let (used, body, done) = take_body(framing, data);
                    feed(kind, body, self.max_body_bytes, emit);
                    data = &data[used..];
                    if done {
                        self.finish_body(emit);
                    }
                }
            }
        }
    }

    fn finish_body(&mut self, emit: &mut impl FnMut(HttpEvent<'_>)) {
        let state = std::mem::replace(&mut self.state, State::Head(Vec::new()));
        if let State::Body {
            kind: BodyKind::Json { buf, gzip, over },
            ..
        } = state
        {
            if over {
                emit(HttpEvent::Unparsable {
                    reason: "oversized",
                });
            } else if gzip {
                let mut out = Vec::new();
                let limit = self.max_body_bytes as u64 + 1;
                match flate2::read::GzDecoder::new(&buf[..])
                    .take(limit)
                    .read_to_end(&mut out)
                {
                    Ok(n) if n as u64 >= limit => emit(HttpEvent::Unparsable {
                        reason: "oversized",
                    }),
                    Ok(_) => emit(HttpEvent::Message {
                        bytes: &out,
                        sse_event: None,
                    }),
                    Err(_) => emit(HttpEvent::Unparsable { reason: "bad_gzip" }),
                }
            } else if !buf.is_empty() {
                emit(HttpEvent::Message {
                    bytes: &buf,
                    sse_event: None,
                });
            }
        }
        emit(HttpEvent::End);
    }
}

/// Takes body bytes from `data` per the framing: (bytes consumed, body bytes, body done).
fn take_body<'a>(framing: &mut BodyFraming, data: &'a [u8]) -> (usize, &'a [u8], bool) {
    match framing {
        BodyFraming::None => (0, &[], true),
        BodyFraming::UntilClose => (data.len(), data, false),
        BodyFraming::Length(left) => {
            let n = (*left).min(data.len() as u64) as usize;
            *left -= n as u64;
            (n, &data[..n], *left == 0)
        }
        BodyFraming::Chunked(chunk) => match chunk {
            Chunk::Size(line) => {
                // The line, `\n` included, is kept up to the limit; a longer one is invalid
                // wherever the bytes are split: the body ends at the limit.
                let room = MAX_CHUNK_LINE_BYTES - line.len();
                let nl = match data.iter().position(|&b| b == b'\n') {
                    Some(nl) if nl < room => nl,
                    None if data.len() <= room => {
                        line.extend_from_slice(data);
                        return (data.len(), &[], false);
                    }
                    _ => return (room, &[], true),
                };
                line.extend_from_slice(&data[..=nl]);
                let size = match httparse::parse_chunk_size(line) {
                    Ok(httparse::Status::Complete((_, size))) => size,
                    _ => u64::MAX, // invalid: treat as the end of the body
                };
                *chunk = match size {
                    0 => Chunk::Trailer(true),
                    u64::MAX => return (nl + 1, &[], true),
                    n => Chunk::Data(n),
                };
                (nl + 1, &[], false)
            }
            Chunk::Data(left) => {
                let n = (*left).min(data.len() as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    *chunk = Chunk::DataEnd(2);
                }
                (n, &data[..n], false)
            }
            Chunk::DataEnd(left) => {
                let n = (*left as usize).min(data.len());
                *left -= n as u8;
                if *left == 0 {
                    *chunk = Chunk::Size(Vec::new());
                }
                (n, &[], false)
            }
            Chunk::Trailer(empty) => {
                let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                    *empty &= data.iter().all(|&b| b == b'\r');
                    return (data.len(), &[], false);
                };
                let blank = *empty && data[..nl].iter().all(|&b| b == b'\r');
                *empty = true;
                (nl + 1, &[], blank)
            }
        },
    }
}

fn feed(kind: &mut BodyKind, body: &[u8], max: usize, emit: &mut impl FnMut(HttpEvent<'_>)) {
    if body.is_empty() {
        return;
    }
    match kind {
        BodyKind::Skip => {}
        BodyKind::Json { buf, over, .. } => {
            if buf.len() + body.len() > max {
                *over = true;
                *buf = Vec::new();
            } else if !*over {
                crate::protocols::extend_capped(buf, body, max);
            }
        }
        BodyKind::Sse(parser) => parser.push(body, &mut |e| match e {
            Ok(e) => emit(HttpEvent::Message {
                bytes: e.data,
                sse_event: Some(e.event),
            }),
            Err(_) => emit(HttpEvent::Unparsable {
                reason: "oversized",
            }),
        }),
    }
}

fn parse_head(bytes: &[u8]) -> Option<(Head, BodyFraming)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (request, status, headers) = if bytes.starts_with(b"HTTP/") {
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(bytes) {
            Ok(httparse::Status::Complete(_)) => (None, r.code?, r.headers),
            _ => return None,
        }
    } else {
        let mut r = httparse::Request::new(&mut headers);
        match r.parse(bytes) {
            Ok(httparse::Status::Complete(_)) => (
                Some((r.method?.to_owned(), r.path?.to_owned())),
                0,
                r.headers,
            ),
            _ => return None,
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let content_type = match header("content-type") {
        Some(v) if contains_ci(v, b"text/event-stream") => Media::EventStream,
        Some(v) if contains_ci(v, b"json") => Media::Json,
        _ => Media::Other,
    };
    let chunked = header("transfer-encoding").is_some_and(|v| contains_ci(v, b"chunked"));
    let length = header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    let framing = if request.is_none() && (status < 200 || status == 204 || status == 304) {
        BodyFraming::None
    } else if chunked {
        BodyFraming::Chunked(Chunk::Size(Vec::new()))
    } else if let Some(n) = length {
        if n == 0 {
            BodyFraming::None
        } else {
            BodyFraming::Length(n)
        }
    } else if request.is_some() {
        BodyFraming::None
    } else {
        BodyFraming::UntilClose
    };
    let session_id = header("mcp-session-id")
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|s| s.chars().take(128).collect());
    let head = Head {
        request,
        status,
        content_type,
        session_id,
        has_authorization: header("authorization").is_some(),
        user: header("authorization").map(credential_user),
    };
    Some((head, framing))
}

fn credential_user(value: &[u8]) -> String {
    use std::hash::BuildHasher as _;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let hash = KEY.get_or_init(Default::default).hash_one(value);
    format!("cred:{:012x}", hash >> 16)
}

fn is_gzip(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let found = if head.starts_with(b"HTTP/") {
        let mut r = httparse::Response::new(&mut headers);
        r.parse(head).ok().map(|_| {
            r.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("content-encoding") && contains_ci(h.value, b"gzip")
            })
        })
    } else {
        let mut r = httparse::Request::new(&mut headers);
        r.parse(head).ok().map(|_| {
            r.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("content-encoding") && contains_ci(h.value, b"gzip")
            })
        })
    };
    found.unwrap_or(false)
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The framer of a stream that starts with an HTTP head.
pub fn framer(_first_bytes: &[u8], max_body_bytes: usize) -> Box<dyn Framer> {
    Box::new(HttpFramer::new(max_body_bytes))
}

/// The HTTP framer behind the protocol contract. A loss, known or not, abandons the message
/// in progress: a body cannot be resumed without its framing.
impl Framer for HttpFramer {
    fn push(&mut self, bytes: &[u8], ts_ns: u64, emit: &mut dyn FnMut(Frame<'_>)) {
        HttpFramer::push(self, bytes, &mut |e| emit(Frame::from_http(e, ts_ns)));
    }

    fn lost(&mut self, _resume_at: Option<&[u8]>) {
        HttpFramer::lost(self);
    }

    fn hole(&mut self, _len: u64) {
        HttpFramer::lost(self);
    }

    fn close(&mut self, ts_ns: u64, emit: &mut dyn FnMut(Frame<'_>)) {
        HttpFramer::close(self, &mut |e| emit(Frame::from_http(e, ts_ns)));
    }

    fn buffered_bytes(&self) -> usize {
        HttpFramer::buffered_bytes(self)
    }

    fn pending_bytes(&self) -> u64 {
        HttpFramer::pending_bytes(self)
    }

    fn shed(&mut self) {
        HttpFramer::shed(self);
    }

    fn ends_with_connection(&self) -> bool {
        true
    }
}

impl<'a> Frame<'a> {
    fn from_http(e: HttpEvent<'a>, ts_ns: u64) -> Self {
        match e {
            HttpEvent::Head(head) => Frame::Head(head),
            HttpEvent::Message { bytes, sse_event } => Frame::Message {
                bytes,
                ts_ns,
                sse_event,
            },
            HttpEvent::Unparsable { reason } => Frame::Unparsable(reason),
            HttpEvent::End => Frame::End,
            HttpEvent::Invalid => Frame::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Ev {
        Head(Option<String>, u16, Media, Option<String>),
        Msg(String, Option<String>),
        Bad(&'static str),
        End,
        Invalid,
    }

    fn run(f: &mut HttpFramer, chunks: &[&[u8]]) -> Vec<Ev> {
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut |e| out.push(convert(e)));
        }
        out
    }

    fn convert(e: HttpEvent<'_>) -> Ev {
        match e {
            HttpEvent::Head(h) => Ev::Head(
                h.request.map(|(m, p)| format!("{m} {p}")),
                h.status,
                h.content_type,
                h.session_id,
            ),
            HttpEvent::Message { bytes, sse_event } => Ev::Msg(
                String::from_utf8_lossy(bytes).into_owned(),
                sse_event.map(str::to_owned),
            ),
            HttpEvent::Unparsable { reason } => Ev::Bad(reason),
            HttpEvent::End => Ev::End,
            HttpEvent::Invalid => Ev::Invalid,
        }
    }

    const POST: &[u8] = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nmcp-session-id: abc\r\nAuthorization: Bearer secret\r\nContent-Length: 46\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}";
    const SSE_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nmcp-session-id: abc\r\ntransfer-encoding: chunked\r\n\r\n2e\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\r\n1a\r\n\"result\":{\"tools\":[]}}\r\n\r\n\r\n0\r\n\r\n";

    fn credential_user_of(bytes: &[u8]) -> Option<String> {
        let mut user = None;
        HttpFramer::new(1 << 20).push(bytes, &mut |e| {
            if let HttpEvent::Head(h) = e {
                user = h.user;
            }
        });
        user
    }

    #[test]
    fn request_with_json_body_keeps_no_credentials() {
        let mut f = HttpFramer::new(1 << 20);
        let mut heads = Vec::new();
        f.push(POST, &mut |e| {
            if let HttpEvent::Head(h) = e {
                heads.push(h)
            }
        });
        assert_eq!(heads.len(), 1);
        assert!(heads[0].has_authorization);
        assert!(!format!("{:?}", heads[0]).contains("secret"));
        let user = heads[0].user.clone().expect("a user for the credential");
        assert!(user.starts_with("cred:") && user.len() == 17, "{user}");
        assert_eq!(
            Some(user),
            credential_user_of(POST),
            "the same credential is the same user"
        );
        let out = run(&mut HttpFramer::new(1 << 20), &[POST]);
        assert_eq!(
            out,
            vec![
                Ev::Head(Some("POST /mcp".into()), 0, Media::Json, Some("abc".into())),
                Ev::Msg(
                    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}".into(),
                    None
                ),
                Ev::End
            ]
        );
    }

    #[test]
    fn chunked_sse_response_at_every_split() {
        let whole = run(&mut HttpFramer::new(1 << 20), &[SSE_RESPONSE]);
        assert_eq!(
            whole,
            vec![
                Ev::Head(None, 200, Media::EventStream, Some("abc".into())),
                Ev::Msg(
                    "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}".into(),
                    Some("message".into())
                ),
                Ev::End
            ]
        );
        for split in 0..=SSE_RESPONSE.len() {
            assert_eq!(
                run(
                    &mut HttpFramer::new(1 << 20),
                    &[&SSE_RESPONSE[..split], &SSE_RESPONSE[split..]]
                ),
                whole,
                "split {split}"
            );
        }
    }

    #[test]
    fn keep_alive_and_pipelined_messages() {
        let accepted = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
        let json = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}";
        let mut both = accepted.to_vec();
        both.extend_from_slice(json);
        let out = run(&mut HttpFramer::new(1 << 20), &[&both]);
        assert_eq!(out.len(), 5, "{out:?}");
        assert_eq!(out[1], Ev::End);
        assert_eq!(
            out[3],
            Ev::Msg("{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}".into(), None)
        );
    }

    #[test]
    fn gzip_json_body() {
        let body = b"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body).unwrap();
        let gz = gz.finish().unwrap();
        let mut msg = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n", gz.len()).into_bytes();
        msg.extend_from_slice(&gz);
        let out = run(&mut HttpFramer::new(1 << 20), &[&msg]);
        assert_eq!(
            out[1],
            Ev::Msg(String::from_utf8_lossy(body).into_owned(), None)
        );
        let mut bad = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\n".to_vec();
        bad.extend_from_slice(b"nope");
        assert_eq!(
            run(&mut HttpFramer::new(1 << 20), &[&bad])[1],
            Ev::Bad("bad_gzip")
        );
    }

    #[test]
    fn error_statuses_oversized_bodies_and_garbage() {
        let unauthorized =
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            run(&mut HttpFramer::new(1 << 20), &[unauthorized]),
            vec![Ev::Head(None, 401, Media::Other, None), Ev::End]
        );
        let big = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n0123456789";
        assert_eq!(
            run(&mut HttpFramer::new(4), &[big])[1],
            Ev::Bad("oversized")
        );
        let mut f = HttpFramer::new(1 << 20);
        assert_eq!(run(&mut f, &[b"\x16\x03\x01 TLS hello"]), vec![Ev::Invalid]);
        assert_eq!(run(&mut f, &[b"more junk"]), vec![]);
        assert_eq!(
            run(&mut f, &[POST]).len(),
            3,
            "resynchronises at the next head"
        );
    }

    #[test]
    fn a_short_chunk_that_only_looks_like_a_method_is_invalid_at_every_split() {
        let bytes: &[u8] = b"POS.T /mcp HTTP/1.1\r\nHost: x\r\n\r\n";
        // (A later chunk starting with `HTTP/1.` would be taken for a new head.)
        for split in 0..=10 {
            let out = run(
                &mut HttpFramer::new(1 << 20),
                &[&bytes[..split], &bytes[split..]],
            );
            assert_eq!(out, vec![Ev::Invalid], "split {split}");
        }
        // While resynchronising such a chunk is skipped silently, as when it comes whole.
        let mut f = HttpFramer::new(1 << 20);
        f.lost();
        assert_eq!(run(&mut f, &[b"POS", b".T /mcp HTTP/1.1\r\n\r\n"]), vec![]);
        assert!(f.resyncing());
        assert_eq!(run(&mut f, &[POST]).len(), 3);
    }

    #[test]
    fn head_limit_is_the_same_however_the_head_is_split() {
        let head = |len: usize| {
            let mut h = b"GET /sse HTTP/1.1\r\nX: ".to_vec();
            h.resize(len - 4, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        for (len, ok) in [(MAX_HEAD_BYTES, true), (MAX_HEAD_BYTES + 1, false)] {
            let h = head(len);
            for split in [1, 100, len - 3, len - 1] {
                let out = run(&mut HttpFramer::new(1 << 20), &[&h[..split], &h[split..]]);
                let parsed = matches!(out.first(), Some(Ev::Head(..)));
                assert_eq!(parsed, ok, "head of {len} bytes split at {split}: {out:?}");
            }
        }
    }

    #[test]
    fn oversized_sse_events_are_reported_in_order_at_every_split() {
        let bytes: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 0123456789\n\ndata: ok\n\ndata: 0123456789\n\n";
        let expected = vec![
            Ev::Head(None, 200, Media::EventStream, None),
            Ev::Bad("oversized"),
            Ev::Msg("ok".into(), Some("message".into())),
            Ev::Bad("oversized"),
        ];
        for split in 0..=bytes.len() {
            let out = run(&mut HttpFramer::new(8), &[&bytes[..split], &bytes[split..]]);
            assert_eq!(out, expected, "split {split}");
        }
    }

    #[test]
    fn chunk_lines_are_bounded_however_they_are_split() {
        let head: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        // A trailer line that never ends is skipped, not buffered.
        let mut f = HttpFramer::new(1 << 20);
        let _ = run(&mut f, &[head, b"2\r\n{}\r\n0\r\n"]);
        for _ in 0..1000 {
            let _ = run(&mut f, &[&[b'a'; 64][..]]);
        }
        assert!(f.buffered_bytes() < 64, "{}", f.buffered_bytes());
        // A chunk-size line over the limit ends the body at the limit at every split.
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"2");
        bytes.extend_from_slice(&b";a".repeat(MAX_CHUNK_LINE_BYTES));
        bytes.extend_from_slice(b"\r\n{}\r\n0\r\n\r\n");
        let whole = run(&mut HttpFramer::new(1 << 20), &[&bytes]);
        assert_eq!(whole[1], Ev::End, "{whole:?}");
        for split in [
            head.len() + 1,
            head.len() + 500,
            head.len() + 1030,
            bytes.len() - 9,
        ] {
            let out = run(
                &mut HttpFramer::new(1 << 20),
                &[&bytes[..split], &bytes[split..]],
            );
            assert_eq!(out, whole, "split {split}");
        }
    }

    #[test]
    fn event_stream_until_close() {
        let mut f = HttpFramer::new(1 << 20);
        let out = run(&mut f, &[b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nevent: endpoint\r\ndata: /messages/?session_id=9f\r\n\r\n"]);
        assert_eq!(
            out[1],
            Ev::Msg("/messages/?session_id=9f".into(), Some("endpoint".into()))
        );
    }
}
