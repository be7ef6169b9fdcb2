//! OTLP trace export: one span per completed request and side, following the
//! OpenTelemetry MCP semantic conventions, sent as OTLP/HTTP protobuf
//! (`POST /v1/traces`, `application/x-protobuf`) in batches.
//!
//! - Name `{mcp.method.name} {target}` (target: the tool or prompt name), kind `CLIENT`
//!   for the sender's record and `SERVER` for the receiver's.
//! - A request whose `params._meta` carries a W3C `traceparent` joins the caller's trace:
//!   both spans of the exchange (client and server side) are children of the caller's
//!   span. Without one, each span starts a trace of its own.
//! - The resource is the observed process: `service.name` is the server name for server
//!   spans and the client's `clientInfo.name` (or `mcp-client`) for client spans, with
//!   `process.pid` and `host.name`.
//!
//! Batches go out every second or at 512 spans, over plain HTTP/1.1 (no TLS: export to a
//! collector on the node). A failed export drops its batch, counted in
//! `mcp_probe_sink_dropped_total{sink="otlp",reason="export_failed"}`.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status},
};
use prost::Message as _;

use super::{CompletedRequest, SinkError, SinkMetrics, WallClock, Worker};

const SINK: &str = "otlp";
/// Spans per export request, at most.
const MAX_BATCH: usize = 512;
/// How long a span waits for its batch.
const BATCH_DELAY: Duration = Duration::from_secs(1);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// W3C trace flags in OTLP `flags`: bits 8 and 9 say whether the parent is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;
const SAMPLED: u32 = 0x01;

/// A span and the process (resource) it describes.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub service: String,
    pub pid: u32,
    pub span: Span,
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

fn int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

/// The span of a completed request.
pub fn span(
    ev: &CompletedRequest<'_>,
    clock: &WallClock,
    trace_id: [u8; 16],
    span_id: [u8; 8],
) -> SpanRecord {
    let c = ev.context;
    let target = ev.tool.or(ev.prompt);
    let name = match target {
        Some(t) => format!("{} {t}", ev.method),
        None => ev.method.to_owned(),
    };
    let mut attributes = vec![text("mcp.method.name", ev.method)];
    if let Some(tool) = ev.tool {
        attributes.push(text("gen_ai.tool.name", tool));
    }
    if ev.method == "tools/call" {
        attributes.push(text("gen_ai.operation.name", "execute_tool"));
    }
    if let Some(prompt) = ev.prompt {
        attributes.push(text("gen_ai.prompt.name", prompt));
    }
    if let Some(uri) = &c.resource {
        attributes.push(text("mcp.resource.uri", uri));
    }
    attributes.push(text("jsonrpc.request.id", &c.request_id));
    if let Some(v) = &c.protocol_version {
        attributes.push(text("mcp.protocol.version", v));
    }
    if let Some(s) = ev.session {
        attributes.push(text("mcp.session.id", s));
    }
    attributes.push(text("network.transport", ev.transport));
    if let Some((host, port)) = ev.server_address.and_then(|a| a.rsplit_once(':')) {
        if let Ok(port) = port.parse::<u16>() {
            attributes.push(text("server.address", host.trim_matches(['[', ']'])));
            attributes.push(int("server.port", i64::from(port)));
        }
    }
    let error_type = match ev.outcome {
        "timeout" => Some("timeout"),
        "error" | "tool_error" => ev.error_type.as_deref(),
        _ => None,
    };
    if let Some(e) = error_type {
        attributes.push(text("error.type", e));
        if e.parse::<i64>().is_ok() {
            attributes.push(text("rpc.response.status_code", e));
        }
    }
    attributes.push(text("mcp_probe.server.name", ev.server));
    if let Some(client) = &c.client_name {
        attributes.push(text("mcp_probe.client.name", client));
    }
    if let Some(user) = &c.user {
        attributes.push(text("mcp_probe.user", user));
    }
    attributes.push(text("mcp_probe.side", ev.side));
    attributes.push(text("mcp_probe.outcome", ev.outcome));
    attributes.push(int(
        "mcp_probe.request.size",
        i64::try_from(ev.request_bytes).unwrap_or(i64::MAX),
    ));
    if let Some(n) = ev.response_bytes {
        attributes.push(int(
            "mcp_probe.response.size",
            i64::try_from(n).unwrap_or(i64::MAX),
        ));
    }
    let (parent_span_id, flags) = match c.trace {
        Some(t) => (
            t.parent_span_id.to_vec(),
            u32::from(t.flags) | HAS_IS_REMOTE | IS_REMOTE,
        ),
        None => (Vec::new(), SAMPLED | HAS_IS_REMOTE),
    };
    let status = match error_type {
        Some(e) => Status {
            message: e.to_owned(),
            code: StatusCode::Error as i32,
        },
        None => Status::default(),
    };
    let kind = if ev.side == "server" {
        SpanKind::Server
    } else {
        SpanKind::Client
    };
    let service = match (ev.side, &c.client_name) {
        ("server", _) => ev.server.to_owned(),
        (_, Some(client)) => client.clone(),
        (_, None) => "mcp-client".to_owned(),
    };
    SpanRecord {
        service,
        pid: c.pid,
        span: Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            trace_state: c.tracestate.clone().unwrap_or_default(),
            parent_span_id,
            flags,
            name,
            kind: kind as i32,
            start_time_unix_nano: clock.unix_ns(ev.start_ns),
            end_time_unix_nano: clock.unix_ns(ev.end_ns),
            attributes,
            status: Some(status),
            ..Default::default()
        },
    }
}

/// The export request of a batch: one `ResourceSpans` per observed process.
pub fn export_request(batch: Vec<SpanRecord>, host: &str) -> ExportTraceServiceRequest {
    // Ordered, so that a batch always encodes the same way.
    let mut by_process: BTreeMap<(String, u32), Vec<Span>> = BTreeMap::new();
    for r in batch {
        by_process
            .entry((r.service, r.pid))
            .or_default()
            .push(r.span);
    }
    let resource_spans: Vec<ResourceSpans> = by_process
        .into_iter()
        .map(|((service, pid), spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", &service),
                    int("process.pid", i64::from(pid)),
                    text("host.name", host),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "mcp-probe".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// Where and how spans are posted.
#[derive(Debug, Clone)]
pub struct Exporter {
    /// `host:port`, to connect to and for the `Host` header.
    authority: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Exporter {
    /// `url` is `http://HOST[:PORT][/PATH]`; without a path, `/v1/traces`.
    pub fn new(url: &str, headers: &[String]) -> Result<Self, SinkError> {
        let bad = |reason| SinkError::Endpoint {
            url: url.to_owned(),
            reason,
        };
        if url.starts_with("https://") {
            return Err(bad(
                "https is not supported: export to a collector on this node over http",
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or(bad("must start with http://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', ' ']) {
            return Err(bad("no host"));
        }
        let has_port = match authority.rfind(']') {
            Some(i) => authority[i..].contains(':'),
            None => authority.contains(':'),
        };
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let path = match path {
            "" | "/" => "/v1/traces".to_owned(),
            p => p.to_owned(),
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("bad path"));
        }
        let headers = headers
            .iter()
            .map(|h| {
                let bad = || SinkError::Header { header: h.clone() };
                let (name, value) = h.split_once('=').ok_or_else(bad)?;
                let name = name.trim();
                let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
                if name.is_empty() || !name.bytes().all(token) {
                    return Err(bad());
                }
                if value.bytes().any(|b| b == b'\r' || b == b'\n') {
                    return Err(bad());
                }
                Ok((name.to_owned(), value.trim().to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            authority,
            path,
            headers,
        })
    }

    /// The URL spans go to (without the headers, which may hold credentials).
    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }

    /// POSTs one protobuf body; returns the HTTP status.
    fn post(&self, body: &[u8]) -> std::io::Result<u16> {
        let addr = self
            .authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("the endpoint's host has no address"))?;
        let mut s = TcpStream::connect_timeout(&addr, EXPORT_TIMEOUT)?;
        s.set_read_timeout(Some(EXPORT_TIMEOUT))?;
        s.set_write_timeout(Some(EXPORT_TIMEOUT))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: mcp-probe/{}\r\n",
            self.path,
            self.authority,
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut response = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        while !response.windows(2).any(|w| w == b"\r\n") && response.len() < 64 << 10 {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
        }
        status_of(&response)
            .ok_or_else(|| std::io::Error::other("the endpoint did not answer with HTTP"))
    }
}

fn status_of(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

pub(super) fn start(
    exporter: Exporter,
    metrics: SinkMetrics,
    capacity: usize,
) -> Result<Worker<SpanRecord>, SinkError> {
    tracing::info!(endpoint = %exporter.url(), "exporting OTLP spans");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    Worker::spawn(SINK, capacity, move |rx| {
        export_loop(rx, &exporter, &host, &metrics)
    })
}

fn export_loop(rx: Receiver<SpanRecord>, exporter: &Exporter, host: &str, metrics: &SinkMetrics) {
    let mut batch: Vec<SpanRecord> = Vec::new();
    let mut since: Option<Instant> = None;
    let mut last_warning: Option<Instant> = None;
    let mut flush = |batch: &mut Vec<SpanRecord>| {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let body = export_request(std::mem::take(batch), host).encode_to_vec();
        let failure = match exporter.post(&body) {
            Ok(status) if (200..300).contains(&status) => None,
            Ok(status) => Some(format!("HTTP status {status}")),
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => metrics.written(SINK, n),
            Some(why) => {
                metrics.dropped(SINK, "export_failed", n);
                // At most one warning a minute for a collector that is down.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(endpoint = %exporter.url(), spans = n, "OTLP export failed: {why}");
                    last_warning = Some(Instant::now());
                }
            }
        }
    };
    loop {
        let wait = since.map_or(BATCH_DELAY, |t| BATCH_DELAY.saturating_sub(t.elapsed()));
        match rx.recv_timeout(wait) {
            Ok(record) => {
                batch.push(record);
                since.get_or_insert_with(Instant::now);
                if batch.len() >= MAX_BATCH {
                    flush(&mut batch);
                    since = None;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                flush(&mut batch);
                since = None;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if since.is_some_and(|t| t.elapsed() >= BATCH_DELAY) {
            flush(&mut batch);
            since = None;
        }
    }
    flush(&mut batch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{RequestContext, TraceParent};

    fn context() -> RequestContext {
        RequestContext {
            pid: 41,
            client_pid: Some(40),
            request_id: "7".into(),
            client_name: Some("claude".into()),
            user: Some("uid:1000".into()),
            protocol_version: Some("2025-11-25".into()),
            trace: TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            tracestate: Some("vendor=x".into()),
            ..Default::default()
        }
    }

    fn event<'a>(c: &'a RequestContext, side: &'static str) -> CompletedRequest<'a> {
        CompletedRequest {
            side,
            server: "weather",
            server_pid: Some(41),
            server_address: None,
            transport: "pipe",
            method: "tools/call",
            tool: Some("forecast"),
            prompt: None,
            session: Some("s-1"),
            start_ns: 2_000_000_000,
            end_ns: 2_500_000_000,
            outcome: "error",
            error_type: Some("-32602".into()),
            request_bytes: 120,
            response_bytes: Some(64),
            response_payload: None,
            context: c,
        }
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    #[test]
    fn a_server_span_follows_the_mcp_conventions_and_joins_the_callers_trace() {
        let c = context();
        let clock = WallClock::with_offset(1_000);
        let r = span(&event(&c, "server"), &clock, [9; 16], [3; 8]);
        assert_eq!((r.service.as_str(), r.pid), ("weather", 41));
        let sp = &r.span;
        assert_eq!(sp.name, "tools/call forecast");
        assert_eq!(sp.kind, SpanKind::Server as i32);
        assert_eq!(sp.trace_id, vec![9; 16]);
        assert_eq!(sp.span_id, vec![3; 8]);
        assert_eq!(
            sp.parent_span_id,
            vec![0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
        );
        assert_eq!(sp.flags, 0x301);
        assert_eq!(sp.trace_state, "vendor=x");
        assert_eq!(
            (sp.start_time_unix_nano, sp.end_time_unix_nano),
            (2_000_001_000, 2_500_001_000)
        );
        for (key, value) in [
            ("mcp.method.name", s("tools/call")),
            ("gen_ai.tool.name", s("forecast")),
            ("gen_ai.operation.name", s("execute_tool")),
            ("jsonrpc.request.id", s("7")),
            ("mcp.protocol.version", s("2025-11-25")),
            ("mcp.session.id", s("s-1")),
            ("network.transport", s("pipe")),
            ("error.type", s("-32602")),
            ("rpc.response.status_code", s("-32602")),
            ("mcp_probe.server.name", s("weather")),
            ("mcp_probe.client.name", s("claude")),
            ("mcp_probe.side", s("server")),
            ("mcp_probe.outcome", s("error")),
            ("mcp_probe.request.size", any_value::Value::IntValue(120)),
            ("mcp_probe.response.size", any_value::Value::IntValue(64)),
        ] {
            assert_eq!(attr(sp, key), Some(&value), "{key}");
        }
        let status = sp.status.as_ref().expect("status");
        assert_eq!(
            (status.code, status.message.as_str()),
            (StatusCode::Error as i32, "-32602")
        );
    }

    #[test]
    fn client_spans_ok_outcomes_and_remote_servers() {
        let mut c = context();
        c.trace = None;
        c.tracestate = None;
        c.client_name = None;
        let mut ev = event(&c, "client");
        ev.outcome = "ok";
        ev.error_type = None;
        ev.tool = None;
        ev.method = "prompts/get";
        ev.prompt = Some("greet");
        ev.server_address = Some("10.0.0.9:8000");
        let r = span(&ev, &WallClock::with_offset(0), [1; 16], [2; 8]);
        assert_eq!(r.service, "mcp-client");
        assert_eq!(r.span.name, "prompts/get greet");
        assert_eq!(r.span.kind, SpanKind::Client as i32);
        assert!(r.span.parent_span_id.is_empty());
        assert_eq!(r.span.flags, 0x101);
        assert_eq!(attr(&r.span, "error.type"), None);
        assert_eq!(attr(&r.span, "gen_ai.prompt.name"), Some(&s("greet")));
        assert_eq!(attr(&r.span, "server.address"), Some(&s("10.0.0.9")));
        assert_eq!(
            attr(&r.span, "server.port"),
            Some(&any_value::Value::IntValue(8000))
        );
        assert_eq!(r.span.status, Some(Status::default()));
        ev.outcome = "timeout";
        let r = span(&ev, &WallClock::with_offset(0), [1; 16], [2; 8]);
        assert_eq!(attr(&r.span, "error.type"), Some(&s("timeout")));
        assert_eq!(attr(&r.span, "rpc.response.status_code"), None);
    }

    #[test]
    fn a_batch_is_grouped_by_process_and_round_trips_through_protobuf() {
        let c = context();
        let clock = WallClock::with_offset(0);
        let batch = vec![
            span(&event(&c, "server"), &clock, [1; 16], [1; 8]),
            span(&event(&c, "client"), &clock, [1; 16], [2; 8]),
            span(&event(&c, "server"), &clock, [1; 16], [3; 8]),
        ];
        let request = export_request(batch, "node-1");
        assert_eq!(request.resource_spans.len(), 2);
        let bytes = request.encode_to_vec();
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded, request);
        let spans: usize = decoded
            .resource_spans
            .iter()
            .map(|r| r.scope_spans[0].spans.len())
            .sum();
        assert_eq!(spans, 3);
        let services: Vec<String> = decoded
            .resource_spans
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .map(|r| {
                match r.attributes[0]
                    .value
                    .as_ref()
                    .and_then(|v| v.value.as_ref())
                {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    other => panic!("service.name {other:?}"),
                }
            })
            .collect();
        assert_eq!(services, vec!["claude".to_owned(), "weather".to_owned()]);
    }

    #[test]
    fn endpoints_and_headers() {
        let e = Exporter::new("http://127.0.0.1:4318", &[]).expect("valid");
        assert_eq!(e.url(), "http://127.0.0.1:4318/v1/traces");
        let e = Exporter::new(
            "http://collector/otlp/v1/traces",
            &["X-Scope-OrgID=t1".into()],
        )
        .expect("valid");
        assert_eq!(e.url(), "http://collector:80/otlp/v1/traces");
        assert_eq!(e.headers, vec![("X-Scope-OrgID".into(), "t1".into())]);
        let e = Exporter::new("http://[::1]:4318/", &[]).expect("valid");
        assert_eq!(e.url(), "http://[::1]:4318/v1/traces");
        for bad in ["https://c:4318", "c:4318", "http://", "http://u@c/"] {
            assert!(Exporter::new(bad, &[]).is_err(), "{bad}");
        }
        for bad in ["novalue", "a b=c", "x=1\r\ny: 2"] {
            assert!(
                Exporter::new("http://c", &[bad.to_owned()]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn response_status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 Busy\r\n"), Some(503));
        assert_eq!(status_of(b"SSH-2.0\r\n"), None);
        assert_eq!(status_of(b""), None);
    }
}
