//! What the stitcher hands on: finished exchanges and the other facts it learns, as
//! events. The metrics recorder and the sinks (request log, OTLP spans) are consumers of
//! the same events, so the stitcher itself records nothing and knows no metric.

use std::sync::Arc;

use crate::model::{ServerRef, Side, StreamKey, Transport};

/// Receives every event the stitcher emits, in order. A consumer may take what it alone
/// needs out of an event (consumers run in registration order: sinks before metrics).
pub trait Consumer: Send {
    fn consume(&mut self, event: &mut Event);
}

/// What the sinks need kept per request (nothing at all when no sink is on).
#[derive(Clone, Default)]
pub struct SinkNeeds {
    /// Keep a [`RequestContext`] per request.
    pub context: bool,
    /// Keep the redacted JSON of requests and responses.
    pub capture: Option<Arc<dyn PayloadCapture>>,
}

/// Turns a message's JSON into what may leave the agent (redacted, capped).
pub trait PayloadCapture: Send + Sync {
    fn capture(&self, raw: &[u8]) -> Box<str>;
}

/// One fact from the stitcher. Server names are settled, capped label values.
#[derive(Debug, Clone)]
pub enum Event {
    /// A request whose outcome is known (response, cancellation, timeout), from one side.
    Exchange(Exchange),
    Notification {
        side: Side,
        server: String,
        method: String,
        transport: Transport,
        tgid: u32,
        ts_ns: u64,
        size: u64,
    },
    /// An HTTP response status; `side` is the process that read (client) or wrote (server) it.
    HttpStatus {
        side: Side,
        server: String,
        status: u16,
        transport: Transport,
    },
    /// A syscall on an MCP connection failed (reset, broken pipe, timeout, ...).
    ConnectionError {
        side: Side,
        server: String,
        reason: &'static str,
        transport: Transport,
    },
    /// A session ended (explicitly, by its process's exit, or idle).
    SessionEnded {
        side: Side,
        server: String,
        transport: Transport,
        duration_s: f64,
    },
    /// The sessions open now (replaces the previous list).
    ActiveSessions(Vec<ActiveSession>),
    /// Requests waiting for their responses, across all processes.
    PendingRequests(usize),
    /// A limit pushed `n` entries of `what` out.
    Evicted { what: &'static str, n: u64 },
    /// The answer to a request already counted as cancelled or timed out.
    LateResponse,
    /// A response read before its request's record, paired once the request came.
    ReorderedResponse,
    /// A response no request was found for.
    Unpaired { transport: Transport },
    /// A traffic-derived label value past its cap became `_other`.
    LabelOverflow { label: &'static str },
}

/// A session that is open now, as one process sees it.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub side: Side,
    pub server: String,
    pub transport: Transport,
    /// `clientInfo.name` of the session's client, if its handshake was seen.
    pub client: Option<String>,
    /// Clients are counted from the server's side, or the client's for a remote server.
    pub counts_clients: bool,
}

/// One request as one side saw it, with what its outcome was.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub side: Side,
    /// The settled, capped server name (the `mcp_server_name` label).
    pub server: String,
    pub server_ref: Option<ServerRef>,
    pub request: Request,
    pub ending: Ending,
}

/// A request, as the stitcher keeps it until its outcome is known.
#[derive(Debug, Clone)]
pub struct Request {
    pub stream: StreamKey,
    /// Capped label values.
    pub method: String,
    pub tool: Option<String>,
    pub prompt: Option<String>,
    /// Kernel time of the request and its JSON size.
    pub ts_ns: u64,
    pub size: u64,
    pub transport: Transport,
    /// The MCP server of this exchange is the observing process itself.
    pub server_is_observer: bool,
    pub session: Option<Box<str>>,
    /// Who sent the request (`cred:…` for HTTP credentials, `uid:N` for local clients),
    /// kept only where per-user requests are counted: in the server's own view, or in the
    /// client's when the server is not on this host.
    pub user: Option<String>,
    /// What only the sinks need (request log, spans); `None` when no sink is on.
    pub context: Option<Box<RequestContext>>,
}

/// What happened to a request.
#[derive(Debug, Clone)]
pub enum Ending {
    Response {
        outcome: Outcome,
        size: u64,
        duration_s: f64,
        /// The captured response (payload capture only).
        payload: Option<Box<str>>,
    },
    /// Cancelled at `at_ns` (a cancellation, a closed connection, the process's exit).
    Cancelled { at_ns: u64 },
    /// No response within the request timeout, which ran out at `at_ns`.
    Timeout { at_ns: u64 },
}

impl Ending {
    /// The `outcome` label, and the `error_type` before its cap.
    pub fn labels(&self) -> (&'static str, Option<String>) {
        match self {
            Ending::Response { outcome, .. } => outcome.labels(),
            Ending::Cancelled { .. } => ("cancelled", None),
            Ending::Timeout { .. } => ("timeout", None),
        }
    }
}

/// How a response answered its request.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Ok,
    ToolError,
    Error(i64),
    /// An HTTP error status answered the request instead of a JSON-RPC response.
    Http(u16),
}

impl Outcome {
    pub fn labels(self) -> (&'static str, Option<String>) {
        match self {
            Outcome::Ok => ("ok", None),
            Outcome::ToolError => ("tool_error", Some("tool_error".to_owned())),
            Outcome::Error(code) => ("error", Some(code.to_string())),
            Outcome::Http(status) => ("error", Some(format!("http_{status}"))),
        }
    }
}

/// What the stitcher keeps about a pending request only for the sinks (allocated only
/// when a sink is on).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The observing process.
    pub pid: u32,
    /// The MCP client's process, when known: the observer on the client side, the process
    /// writing into the server's stdin pipe on the server side.
    pub client_pid: Option<u32>,
    pub request_id: String,
    /// `clientInfo.name`, from the request or its session.
    pub client_name: Option<String>,
    /// `uid:N` of the local client process or `cred:<hash>` of the HTTP credential.
    pub user: Option<String>,
    pub protocol_version: Option<String>,
    /// The resource URI of `resources/read` and `resources/(un)subscribe`, without its
    /// user info, query and fragment.
    pub resource: Option<String>,
    pub trace: Option<TraceParent>,
    pub tracestate: Option<String>,
    /// The redacted, capped request JSON (payload capture only).
    pub payload: Option<Box<str>>,
}

/// A W3C `traceparent`: the caller's trace and span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_span_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>` (a later version may append fields); `None`
    /// for anything malformed or an all-zero id, as the W3C spec says.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let mut parts = text.split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = hex_bytes(trace)?;
        let parent_span_id: [u8; 8] = hex_bytes(span)?;
        let [flags] = hex_bytes::<1>(flags)?;
        hex_bytes::<1>(version)?;
        if trace_id == [0; 16] || parent_span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_span_id,
            flags,
        })
    }
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A shared collector of copies of the events: a test keeps one handle and gives the
/// stitcher the other.
impl Consumer for Arc<std::sync::Mutex<Vec<Event>>> {
    fn consume(&mut self, event: &mut Event) {
        if let Ok(mut events) = self.lock() {
            events.push(event.clone());
        }
    }
}
