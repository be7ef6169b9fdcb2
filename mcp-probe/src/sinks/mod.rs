//! Sinks: where completed requests go besides the metrics. The stitcher hands each
//! completed exchange (and, optionally, each notification) to [`Sinks`] as a typed event;
//! each sink turns it into its own format on the reader thread (a JSON line, an OTLP span)
//! and hands it to its own writer thread through a bounded queue. The reader thread never
//! blocks on a sink: when a queue is full the record is dropped and counted in
//! `mcp_probe_sink_dropped_total{sink,reason="queue_full"}`.
//!
//! One record per side: an exchange seen by both its client and its server process gives
//! one record with `side="client"` and one with `side="server"`, exactly like the
//! `mcp_client_*` / `mcp_server_*` metrics.

pub mod otlp;
pub mod payload;
pub mod request_log;

use std::{
    hash::BuildHasher as _,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

pub use crate::events::{RequestContext, TraceParent};
use crate::{
    events::{Consumer, Ending, Event, Exchange, PayloadCapture, SinkNeeds},
    model::ServerRef,
    protocols::jsonrpc::Id,
};

/// Command-line options of the sinks (flattened into the agent's).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SinkArgs {
    /// Write one JSON line per completed request (per side) to this file, `-` for stdout.
    /// Metadata only unless --request-log-payloads.
    #[arg(long, env = "MCP_PROBE_REQUEST_LOG", value_name = "PATH")]
    pub request_log: Option<PathBuf>,
    /// Also write one line per notification to the request log.
    #[arg(long)]
    pub request_log_notifications: bool,
    /// Opt-in: add each request's and response's JSON to its log line, with
    /// credential-like fields and the --redact-path paths redacted, capped at
    /// --payload-max-bytes.
    #[arg(long)]
    pub request_log_payloads: bool,
    /// Longest captured payload (bytes of redacted JSON) per message.
    #[arg(long, default_value_t = 4096)]
    pub payload_max_bytes: usize,
    /// A JSON path (dot-separated from the message root, `*` for any key or index) whose
    /// value is redacted in captured payloads, e.g. `params.arguments.*`. Repeatable.
    #[arg(long = "redact-path", value_name = "PATH")]
    pub redact_paths: Vec<String>,
    /// Export one OTLP span per completed request (per side) to this OTLP/HTTP endpoint,
    /// e.g. `http://127.0.0.1:4318` (`/v1/traces` is added when the URL has no path).
    #[arg(long, env = "MCP_PROBE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// An HTTP header sent with every OTLP export, e.g. `X-Scope-OrgID=tenant`. Repeatable.
    #[arg(long = "otlp-header", value_name = "NAME=VALUE")]
    pub otlp_headers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open the request log {path}: {source}")]
    OpenLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad OTLP endpoint {url:?}: {reason}")]
    Endpoint { url: String, reason: &'static str },
    #[error("bad OTLP header {header:?}: expected NAME=VALUE")]
    Header { header: String },
    #[error("bad redaction path {path:?}: {reason}")]
    RedactPath { path: String, reason: &'static str },
    #[error("cannot start the {sink} writer thread: {source}")]
    Thread {
        sink: &'static str,
        source: std::io::Error,
    },
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A completed exchange as one side saw it.
#[derive(Debug, Clone)]
pub struct CompletedRequest<'a> {
    /// `client` (the process that sent the request) or `server` (the one that received it).
    pub side: &'static str,
    /// The settled server name (the `mcp_server_name` label).
    pub server: &'a str,
    /// The server's process when it runs on this host.
    pub server_pid: Option<u32>,
    /// `host:port` or `unix:PATH` of a server not on this host.
    pub server_address: Option<&'a str>,
    pub transport: &'static str,
    pub method: &'a str,
    pub tool: Option<&'a str>,
    pub prompt: Option<&'a str>,
    pub session: Option<&'a str>,
    /// CLOCK_MONOTONIC ns of the request, and of its end (response, cancellation, timeout).
    pub start_ns: u64,
    pub end_ns: u64,
    /// `ok`, `error`, `tool_error`, `cancelled` or `timeout`.
    pub outcome: &'static str,
    /// The JSON-RPC error code, `tool_error` or `http_<status>`, for error outcomes.
    pub error_type: Option<String>,
    pub request_bytes: u64,
    pub response_bytes: Option<u64>,
    pub response_payload: Option<&'a str>,
    pub context: &'a RequestContext,
}

/// A notification as one side saw it.
#[derive(Debug, Clone, Copy)]
pub struct NotificationEvent<'a> {
    pub side: &'static str,
    pub server: &'a str,
    pub transport: &'static str,
    pub method: &'a str,
    pub ts_ns: u64,
    pub bytes: u64,
    pub pid: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkDropLabels {
    pub sink: &'static str,
    /// `queue_full`, `write_failed` (request log), `export_failed` (OTLP).
    pub reason: &'static str,
}

/// The sinks' own counters.
#[derive(Clone, Default)]
pub struct SinkMetrics {
    pub records: Family<SinkLabels, Counter>,
    pub dropped: Family<SinkDropLabels, Counter>,
}

impl SinkMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "mcp_probe_sink_records",
            "Records a sink wrote or exported, by sink (request_log: lines, otlp: spans)",
            m.records.clone(),
        );
        registry.register(
            "mcp_probe_sink_dropped",
            "Records a sink dropped, by sink and reason (queue_full: its writer fell behind; write_failed, export_failed)",
            m.dropped.clone(),
        );
        m
    }

    /// Creates the series of an enabled sink at 0, so that they exist from the start.
    fn enable(&self, sink: &'static str, reasons: &[&'static str]) {
        let _ = self.records.get_or_create(&SinkLabels { sink });
        for &reason in reasons {
            let _ = self.dropped.get_or_create(&SinkDropLabels { sink, reason });
        }
    }

    pub fn dropped(&self, sink: &'static str, reason: &'static str, n: u64) {
        self.dropped
            .get_or_create(&SinkDropLabels { sink, reason })
            .inc_by(n);
    }

    pub fn written(&self, sink: &'static str, n: u64) {
        self.records.get_or_create(&SinkLabels { sink }).inc_by(n);
    }
}

/// A writer thread fed through a bounded queue.
struct Worker<T> {
    name: &'static str,
    tx: Option<SyncSender<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    fn spawn(
        name: &'static str,
        capacity: usize,
        run: impl FnOnce(mpsc::Receiver<T>) + Send + 'static,
    ) -> Result<Self, SinkError> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let thread = std::thread::Builder::new()
            .name(format!("mcp-probe-{name}"))
            .spawn(move || run(rx))
            .map_err(|source| SinkError::Thread { sink: name, source })?;
        Ok(Self {
            name,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands `item` over without blocking; counts it as dropped when the queue is full.
    fn send(&self, item: T, metrics: &SinkMetrics) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => metrics.dropped(self.name, "queue_full", 1),
            Err(TrySendError::Disconnected(_)) => metrics.dropped(self.name, "write_failed", 1),
        }
    }
}

impl<T> Drop for Worker<T> {
    /// Closes the queue and waits for the writer to flush what it holds.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(sink = self.name, "sink writer thread panicked");
            }
        }
    }
}

/// Lines queued for the request log writer.
const LOG_QUEUE: usize = 8192;
/// Spans queued for the OTLP exporter.
const SPAN_QUEUE: usize = 8192;

/// The configured sinks, owned by the stitcher (as one of its event consumers).
pub struct Sinks {
    log: Option<Worker<Vec<u8>>>,
    otlp: Option<Worker<otlp::SpanRecord>>,
    notifications: bool,
    capture: Option<payload::Capture>,
    metrics: SinkMetrics,
    ids: IdSource,
}

impl Sinks {
    /// Registers the sink metrics (always, so their names are stable) and starts the
    /// configured sinks; `None` when none is configured.
    pub fn start(args: &SinkArgs, registry: &mut Registry) -> Result<Option<Self>, SinkError> {
        let metrics = SinkMetrics::register(registry);
        let capture = if args.request_log_payloads {
            Some(payload::Capture::new(
                args.payload_max_bytes,
                &args.redact_paths,
            )?)
        } else {
            None
        };
        let log = match &args.request_log {
            Some(path) => {
                metrics.enable("request_log", &["queue_full", "write_failed"]);
                Some(request_log::start(path, metrics.clone(), LOG_QUEUE)?)
            }
            None => None,
        };
        let otlp = match &args.otlp_endpoint {
            Some(url) => {
                let exporter = otlp::Exporter::new(url, &args.otlp_headers)?;
                metrics.enable("otlp", &["queue_full", "export_failed"]);
                Some(otlp::start(exporter, metrics.clone(), SPAN_QUEUE)?)
            }
            None => None,
        };
        if log.is_none() && otlp.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            notifications: args.request_log_notifications && log.is_some(),
            capture: if log.is_some() { capture } else { None },
            log,
            otlp,
            metrics,
            ids: IdSource::default(),
        }))
    }

    /// The redacted, capped JSON of a message, when payload capture is on.
    pub fn capture(&self, raw: &[u8]) -> Option<Box<str>> {
        self.capture.as_ref().map(|c| c.capture(raw))
    }

    pub fn wants_notifications(&self) -> bool {
        self.notifications
    }

    /// One completed exchange.
    pub fn on_request(&self, ev: &CompletedRequest<'_>) {
        let clock = WallClock::now();
        // Our span, when spans are exported; its trace is the caller's when known.
        let span = self.otlp.as_ref().map(|_| {
            let trace_id = ev
                .context
                .trace
                .map_or_else(|| self.ids.trace_id(), |t| t.trace_id);
            (trace_id, self.ids.span_id())
        });
        if let Some(log) = &self.log {
            log.send(request_log::request_line(ev, &clock, span), &self.metrics);
        }
        if let (Some(otlp), Some((trace_id, span_id))) = (&self.otlp, span) {
            otlp.send(otlp::span(ev, &clock, trace_id, span_id), &self.metrics);
        }
    }

    pub fn on_notification(&self, ev: &NotificationEvent<'_>) {
        if let (true, Some(log)) = (self.notifications, &self.log) {
            log.send(
                request_log::notification_line(ev, &WallClock::now()),
                &self.metrics,
            );
        }
    }
}

impl Sinks {
    /// What the stitcher must keep per request for these sinks.
    pub fn needs(&self) -> SinkNeeds {
        SinkNeeds {
            context: true,
            capture: self
                .capture
                .clone()
                .map(|c| Arc::new(c) as Arc<dyn PayloadCapture>),
        }
    }
}

/// The sinks take completed exchanges (and, when asked, notifications) from the stitcher.
impl Consumer for Sinks {
    fn consume(&mut self, event: &mut Event) {
        match event {
            Event::Exchange(x) => {
                if let Some(context) = &x.request.context {
                    self.on_request(&completed(x, context));
                }
            }
            Event::Notification {
                side,
                server,
                method,
                transport,
                tgid,
                ts_ns,
                size,
            } if self.wants_notifications() => {
                self.on_notification(&NotificationEvent {
                    side: side.label(),
                    server,
                    transport: transport.label(),
                    method,
                    ts_ns: *ts_ns,
                    bytes: *size,
                    pid: *tgid,
                });
            }
            _ => {}
        }
    }
}

/// The sinks' view of a completed exchange: the metrics' labels plus the request's
/// context.
fn completed<'a>(x: &'a Exchange, context: &'a RequestContext) -> CompletedRequest<'a> {
    let p = &x.request;
    let (outcome, error_type) = x.ending.labels();
    let (end_ns, response_bytes, response_payload) = match &x.ending {
        Ending::Response {
            size,
            duration_s,
            payload,
            ..
        } => (
            p.ts_ns.saturating_add((duration_s * 1e9) as u64),
            Some(*size),
            payload.as_deref(),
        ),
        Ending::Cancelled { at_ns } | Ending::Timeout { at_ns } => (*at_ns, None, None),
    };
    CompletedRequest {
        side: x.side.label(),
        server: &x.server,
        server_pid: match &x.server_ref {
            Some(ServerRef::Process(tgid)) => Some(*tgid),
            _ => None,
        },
        server_address: match &x.server_ref {
            Some(ServerRef::Endpoint(address)) => Some(address),
            _ => None,
        },
        transport: p.transport.label(),
        method: &p.method,
        tool: p.tool.as_deref(),
        prompt: p.prompt.as_deref(),
        session: p.session.as_deref(),
        start_ns: p.ts_ns,
        end_ns: end_ns.max(p.ts_ns),
        outcome,
        error_type,
        request_bytes: p.size,
        response_bytes,
        response_payload,
        context,
    }
}

/// Converts kernel timestamps (CLOCK_MONOTONIC) to Unix time, with the offset between the
/// two clocks read now (so a clock step or NTP slew is followed).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ns: i128,
}

impl WallClock {
    pub fn now() -> Self {
        let read = |clock| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid timespec to fill; the clocks exist on every Linux.
            unsafe { libc::clock_gettime(clock, &mut ts) };
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        };
        Self {
            offset_ns: read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC),
        }
    }

    /// A clock whose monotonic time is Unix time plus `offset_ns` (tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Unix time in ns of a CLOCK_MONOTONIC timestamp.
    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        u64::try_from(i128::from(mono_ns) + self.offset_ns).unwrap_or(0)
    }
}

/// Unix time in ns as RFC 3339 UTC with microseconds: `2026-11-24T10:00:00.123456Z`.
pub fn rfc3339(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = (unix_ns % 1_000_000_000) / 1_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian, 400-year eras).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Span and trace ids: a keyed hash (random key per agent run) of a counter, so ids are
/// unique within a run and unpredictable across runs. Never zero.
#[derive(Default)]
struct IdSource {
    keys: std::collections::hash_map::RandomState,
    next: AtomicU64,
}

impl IdSource {
    fn next_u64(&self) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.keys.hash_one(n).max(1)
    }

    fn span_id(&self) -> [u8; 8] {
        self.next_u64().to_be_bytes()
    }

    fn trace_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        id[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        id
    }
}

/// A JSON-RPC id as text (`7`, `"abc"` without quotes).
pub fn id_text(id: &Id) -> String {
    match id {
        Id::Num(n) => n.to_string(),
        Id::NumText(t) | Id::Str(t) => t.clone(),
    }
}

/// A peer-chosen string, cut to at most `max` bytes at a character boundary.
pub fn bounded(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing() {
        let t = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .expect("valid");
        assert_eq!(hex(&t.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(hex(&t.parent_span_id), "b7ad6b7169203331");
        assert_eq!(t.flags, 1);
        // A later version may append fields.
        assert!(
            TraceParent::parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-x")
                .is_some()
        );
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(951_782_400_000_000_000 + 1_234_567),
            "2000-02-29T00:00:00.001234Z"
        );
        assert_eq!(
            rfc3339(1_795_000_000_123_456_789),
            "2026-11-18T11:06:40.123456Z"
        );
        assert_eq!(
            rfc3339(4_102_444_799_999_999_999),
            "2099-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn wall_clock_offsets() {
        let c = WallClock::with_offset(1_000);
        assert_eq!(c.unix_ns(5), 1_005);
        assert_eq!(WallClock::with_offset(-10).unix_ns(5), 0);
        let now = WallClock::now();
        assert!(now.unix_ns(0) > 1_700_000_000_000_000_000, "{now:?}");
    }

    #[test]
    fn ids_are_distinct_and_non_zero() {
        let ids = IdSource::default();
        let a = ids.span_id();
        let b = ids.span_id();
        assert_ne!(a, b);
        assert_ne!(a, [0; 8]);
        assert_ne!(ids.trace_id(), ids.trace_id());
    }

    /// The stitcher fed a stdio session seen by both processes (client 10 writes stream
    /// 1 and reads stream 2; server 20 the other way round) writes one line per side.
    #[test]
    fn the_stitcher_logs_each_exchange_once_per_side() {
        use crate::{
            metrics::Metrics,
            model::{Observation, StreamKey, Transport},
            protocols::jsonrpc::{parse, Parsed},
            stitch::{StitchConfig, Stitcher},
        };
        use mcp_probe_common::Direction;

        let dir = std::env::temp_dir().join(format!("mcp-probe-sink-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("requests.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let args = SinkArgs {
            request_log: Some(path.clone()),
            request_log_notifications: true,
            request_log_payloads: true,
            payload_max_bytes: 4096,
            redact_paths: vec!["params.arguments.text".into()],
            ..Default::default()
        };
        let sinks = Sinks::start(&args, &mut registry).expect("sinks");
        let mut c = Stitcher::recording(
            StitchConfig::default(),
            metrics,
            sinks,
            std::sync::Arc::new(crate::host::FakeHost::new()),
        );
        let send =
            |c: &mut Stitcher, tgid: u32, stream: u64, dir: Direction, ms: u64, text: &str| {
                let msg = match parse(text.as_bytes()) {
                    Ok(Parsed::Single(m)) => m,
                    other => panic!("{other:?}"),
                };
                let obs = Observation {
                    tgid,
                    comm: if tgid == 10 { "client" } else { "server" },
                    direction: dir,
                    stream: StreamKey {
                        addr: stream,
                        ino: stream,
                    },
                    transport: Transport::Pipe,
                    peer: None,
                    session: None,
                    user: None,
                    ts_ns: ms * 1_000_000,
                    size: text.len() as u64,
                };
                c.on_message_bytes(&obs, msg, Some(text.as_bytes()));
            };
        // Both processes see every message: the writer first, then the reader.
        let exchange = |c: &mut Stitcher, ms: u64, request: &str, response: &str| {
            send(c, 10, 1, Direction::Write, ms, request);
            send(c, 20, 1, Direction::Read, ms + 1, request);
            send(c, 20, 2, Direction::Write, ms + 5, response);
            send(c, 10, 2, Direction::Read, ms + 6, response);
        };
        exchange(
            &mut c,
            100,
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"clientInfo":{"name":"probe-client"},"protocolVersion":"2025-11-25"}}"#,
            r#"{"jsonrpc":"2.0","id":0,"result":{"serverInfo":{"name":"weather"},"protocolVersion":"2025-11-25"}}"#,
        );
        send(
            &mut c,
            10,
            1,
            Direction::Write,
            110,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        );
        exchange(
            &mut c,
            200,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"forecast","arguments":{"text":"secret words","api_key":"k"},"_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#,
        );
        c.sweep(10_000_000_000);
        drop(c);
        let text = std::fs::read_to_string(&path).expect("log");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        let requests: Vec<&serde_json::Value> =
            lines.iter().filter(|l| l["event"] == "request").collect();
        assert_eq!(requests.len(), 4, "{text}");
        let call = |side: &str| {
            requests
                .iter()
                .find(|l| l["side"] == side && l["method"] == "tools/call")
                .unwrap_or_else(|| panic!("{side} tools/call in {text}"))
        };
        for (side, pid, duration) in [("client", 10, 0.006), ("server", 20, 0.004)] {
            let l = call(side);
            assert_eq!(l["server"], "weather");
            assert_eq!(l["tool"], "forecast");
            assert_eq!(l["outcome"], "tool_error");
            assert_eq!(l["error_type"], "tool_error");
            assert_eq!(l["pid"], pid);
            assert_eq!(l["client_pid"], 10);
            assert_eq!(l["server_pid"], 20);
            assert_eq!(l["request_id"], "1");
            assert_eq!(l["client_name"], "probe-client");
            assert_eq!(l["duration_seconds"], duration);
            assert_eq!(l["trace_id"], "0af7651916cd43dd8448eb211c80319c");
            assert_eq!(l["parent_span_id"], "b7ad6b7169203331");
            let payload = l["request_payload"].as_str().expect("captured request");
            assert!(
                payload.contains(r#""text":"[REDACTED]""#)
                    && payload.contains(r#""api_key":"[REDACTED]""#)
                    && !payload.contains("secret words"),
                "{payload}"
            );
            assert_eq!(
                l["response_payload"],
                r#"{"id":1,"jsonrpc":"2.0","result":{"content":[],"isError":true}}"#
            );
        }
        let init = requests
            .iter()
            .find(|l| l["side"] == "server" && l["method"] == "initialize")
            .expect("initialize");
        assert_eq!(init["protocol_version"], "2025-11-25");
        let notes: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["event"] == "notification")
            .collect();
        assert_eq!(notes.len(), 1, "{text}");
        assert_eq!(notes[0]["method"], "notifications/initialized");
        assert_eq!(notes[0]["side"], "client");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bounded_cuts_at_a_char_boundary() {
        assert_eq!(bounded("héllo", 2), "h");
        assert_eq!(bounded("héllo", 3), "hé");
        assert_eq!(bounded("abc", 10), "abc");
    }
}
