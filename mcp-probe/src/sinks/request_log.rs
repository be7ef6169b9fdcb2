//! The request log: one JSON object per line for each completed request (per side) and,
//! optionally, each notification. Lines are serialized on the reader thread and written
//! by a writer thread that flushes whenever its queue runs empty.
//!
//! Fields (absent ones are left out):
//! `ts` (RFC 3339 UTC, when the request was sent or received), `event` (`request` or
//! `notification`), `side`, `server`, `server_address`, `transport`, `method`, `tool`,
//! `prompt`, `resource`, `request_id`, `outcome`, `error_type`, `duration_seconds`,
//! `request_bytes`, `response_bytes`, `client_name`, `user`, `session`,
//! `protocol_version`, `pid`, `client_pid`, `server_pid`, `trace_id`, `span_id`,
//! `parent_span_id`, and with payload capture `request_payload` and `response_payload`.

use std::{
    io::Write as _,
    path::Path,
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::Duration,
};

use serde::Serialize;

use super::{
    hex, rfc3339, CompletedRequest, NotificationEvent, SinkError, SinkMetrics, WallClock, Worker,
};

const SINK: &str = "request_log";

#[derive(Serialize)]
struct RequestLine<'a> {
    ts: String,
    event: &'static str,
    side: &'static str,
    server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_address: Option<&'a str>,
    transport: &'static str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    request_id: &'a str,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    duration_seconds: f64,
    request_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol_version: Option<&'a str>,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_payload: Option<&'a str>,
}

#[derive(Serialize)]
struct NotificationLine<'a> {
    ts: String,
    event: &'static str,
    side: &'static str,
    server: &'a str,
    transport: &'static str,
    method: &'a str,
    bytes: u64,
    pid: u32,
}

/// The log line of a completed request (with its newline). `span` is the trace and span
/// id of the OTLP span exported for it, if any.
pub fn request_line(
    ev: &CompletedRequest<'_>,
    clock: &WallClock,
    span: Option<([u8; 16], [u8; 8])>,
) -> Vec<u8> {
    let c = ev.context;
    let trace_id = span
        .map(|(t, _)| t)
        .or(c.trace.map(|t| t.trace_id))
        .map(|t| hex(&t));
    let line = RequestLine {
        ts: rfc3339(clock.unix_ns(ev.start_ns)),
        event: "request",
        side: ev.side,
        server: ev.server,
        server_address: ev.server_address,
        transport: ev.transport,
        method: ev.method,
        tool: ev.tool,
        prompt: ev.prompt,
        resource: c.resource.as_deref(),
        request_id: &c.request_id,
        outcome: ev.outcome,
        error_type: ev.error_type.as_deref(),
        // Microsecond precision is plenty and keeps the lines short.
        duration_seconds: (ev.end_ns.saturating_sub(ev.start_ns) / 1_000) as f64 / 1e6,
        request_bytes: ev.request_bytes,
        response_bytes: ev.response_bytes,
        client_name: c.client_name.as_deref(),
        user: c.user.as_deref(),
        session: ev.session,
        protocol_version: c.protocol_version.as_deref(),
        pid: c.pid,
        client_pid: c.client_pid,
        server_pid: ev.server_pid,
        trace_id,
        span_id: span.map(|(_, s)| hex(&s)),
        parent_span_id: c.trace.map(|t| hex(&t.parent_span_id)),
        request_payload: c.payload.as_deref(),
        response_payload: ev.response_payload,
    };
    to_line(&line)
}

pub fn notification_line(ev: &NotificationEvent<'_>, clock: &WallClock) -> Vec<u8> {
    to_line(&NotificationLine {
        ts: rfc3339(clock.unix_ns(ev.ts_ns)),
        event: "notification",
        side: ev.side,
        server: ev.server,
        transport: ev.transport,
        method: ev.method,
        bytes: ev.bytes,
        pid: ev.pid,
    })
}

fn to_line(value: &impl Serialize) -> Vec<u8> {
    // Serializing plain strings and numbers into a Vec cannot fail.
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Opens the log (appending; `-` is stdout) and starts its writer.
pub(super) fn start(
    path: &Path,
    metrics: SinkMetrics,
    capacity: usize,
) -> Result<Worker<Vec<u8>>, SinkError> {
    let out: Box<dyn std::io::Write + Send> = if path == Path::new("-") {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| SinkError::OpenLog {
                    path: path.to_owned(),
                    source,
                })?,
        )
    };
    Worker::spawn(SINK, capacity, move |rx| write_lines(rx, out, &metrics))
}

/// Writes lines until the queue closes, flushing whenever it runs empty (and at least
/// every second). A failed write drops the lines it held, counted.
fn write_lines(rx: Receiver<Vec<u8>>, out: Box<dyn std::io::Write + Send>, metrics: &SinkMetrics) {
    let mut out = std::io::BufWriter::with_capacity(64 << 10, out);
    let mut buffered = 0u64;
    let flush = |out: &mut std::io::BufWriter<_>, buffered: &mut u64| {
        if *buffered == 0 {
            return;
        }
        match out.flush() {
            Ok(()) => metrics.written(SINK, *buffered),
            Err(e) => {
                tracing::warn!(error = %e, lines = *buffered, "request log write failed");
                metrics.dropped(SINK, "write_failed", *buffered);
            }
        }
        *buffered = 0;
    };
    loop {
        let line = match rx.try_recv() {
            Ok(line) => line,
            Err(_) => {
                flush(&mut out, &mut buffered);
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(line) => line,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        if out.write_all(&line).is_err() {
            metrics.dropped(SINK, "write_failed", buffered + 1);
            buffered = 0;
            continue;
        }
        buffered += 1;
    }
    flush(&mut out, &mut buffered);
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
            resource: None,
            trace: None,
            tracestate: None,
            payload: None,
        }
    }

    fn request<'a>(c: &'a RequestContext) -> CompletedRequest<'a> {
        CompletedRequest {
            side: "server",
            server: "weather",
            server_pid: Some(41),
            server_address: None,
            transport: "pipe",
            method: "tools/call",
            tool: Some("forecast"),
            prompt: None,
            session: None,
            start_ns: 2_000_000_000,
            end_ns: 2_012_345_678,
            outcome: "tool_error",
            error_type: Some("tool_error".into()),
            request_bytes: 120,
            response_bytes: Some(64),
            response_payload: None,
            context: c,
        }
    }

    /// Kernel time 0 is 2026-11-18T11:06:40Z.
    fn clock() -> WallClock {
        WallClock::with_offset(1_795_000_000_000_000_000)
    }

    #[test]
    fn a_request_line_holds_metadata_only() {
        let c = context();
        let line = String::from_utf8(request_line(&request(&c), &clock(), None)).expect("utf-8");
        assert_eq!(
            line,
            concat!(
                r#"{"ts":"2026-11-18T11:06:42.000000Z","event":"request","side":"server","server":"weather","#,
                r#""transport":"pipe","method":"tools/call","tool":"forecast","request_id":"7","outcome":"tool_error","#,
                r#""error_type":"tool_error","duration_seconds":0.012345,"request_bytes":120,"response_bytes":64,"#,
                r#""client_name":"claude","user":"uid:1000","protocol_version":"2025-11-25","pid":41,"client_pid":40,"#,
                r#""server_pid":41}"#,
                "\n"
            )
        );
    }

    #[test]
    fn trace_ids_payloads_and_a_remote_server() {
        let mut c = context();
        c.trace = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        c.payload = Some(r#"{"jsonrpc":"2.0"}"#.into());
        c.resource = Some("file:///a".into());
        let mut ev = request(&c);
        ev.side = "client";
        ev.server = "10.1.2.3:8000";
        ev.server_address = Some("10.1.2.3:8000");
        ev.server_pid = None;
        ev.method = "resources/read";
        ev.tool = None;
        ev.outcome = "timeout";
        ev.error_type = None;
        ev.response_bytes = None;
        ev.session = Some("abc");
        let span = Some((
            c.trace.map(|t| t.trace_id).unwrap_or_default(),
            [1, 2, 3, 4, 5, 6, 7, 8],
        ));
        let line = String::from_utf8(request_line(&ev, &clock(), span)).expect("utf-8");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["server_address"], "10.1.2.3:8000");
        assert_eq!(v["resource"], "file:///a");
        assert_eq!(v["session"], "abc");
        assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(v["span_id"], "0102030405060708");
        assert_eq!(v["parent_span_id"], "b7ad6b7169203331");
        assert_eq!(v["request_payload"], r#"{"jsonrpc":"2.0"}"#);
        assert!(v.get("response_bytes").is_none() && v.get("error_type").is_none());
        assert!(line.ends_with("}\n") && !line[..line.len() - 1].contains('\n'));
    }

    #[test]
    fn a_notification_line() {
        let ev = NotificationEvent {
            side: "client",
            server: "weather",
            transport: "tcp",
            method: "notifications/initialized",
            ts_ns: 1_500_000,
            bytes: 54,
            pid: 9,
        };
        assert_eq!(
            String::from_utf8(notification_line(&ev, &clock())).expect("utf-8"),
            concat!(
                r#"{"ts":"2026-11-18T11:06:40.001500Z","event":"notification","side":"client","#,
                r#""server":"weather","transport":"tcp","method":"notifications/initialized","bytes":54,"pid":9}"#,
                "\n"
            )
        );
    }

    #[test]
    fn the_writer_flushes_everything_before_it_exits() {
        let dir = std::env::temp_dir().join(format!("mcp-probe-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("requests.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = SinkMetrics::register(&mut registry);
        let worker = start(&path, metrics.clone(), 4).expect("start");
        for i in 0..3 {
            worker.send(format!("{{\"n\":{i}}}\n").into_bytes(), &metrics);
        }
        drop(worker);
        let text = std::fs::read_to_string(&path).expect("read log");
        assert_eq!(text, "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
        assert_eq!(
            metrics
                .records
                .get_or_create(&super::super::SinkLabels { sink: SINK })
                .get(),
            3
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
