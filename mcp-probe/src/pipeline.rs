//! From decoded records to messages: per-stream-direction reassembly, framing, JSON-RPC
//! parsing, then the correlator.
//!
//! A *view* is one direction of one stream (stream id + read/write): the bytes one side
//! wrote, or the bytes the other side read. Each view has its own framer, and checks the
//! kernel's stream offsets so that a loss is noticed and the framer resynchronises.

use std::collections::HashMap;

use mcp_probe_common::{Direction, EventKind, StreamKind};

use crate::{
    correlate::{Correlator, Observation, StreamKey},
    decode::{decode, Record},
    metrics::{AgentMetrics, ReasonLabels},
    protocols::{
        jsonl::{Frame, LineFramer},
        jsonrpc::{self, Parsed},
    },
};

/// Tells the kernel to stop following a stream (it carries JSON but not JSON-RPC).
pub trait StreamControl {
    fn ignore_stream(&mut self, stream_id: u64);
}

/// A stream with this many framed lines and none of them JSON-RPC is dropped.
const NON_JSONRPC_LINES_BEFORE_IGNORE: u64 = 8;
/// A view with no traffic for this long is forgotten (its partial line dropped).
const IDLE_VIEW_NS: u64 = 30 * 60 * 1_000_000_000;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub max_message_bytes: usize,
}

struct View {
    framer: LineFramer,
    next_offset: u64,
    transport: &'static str,
    last_ts_ns: u64,
    /// Lines that were not JSON-RPC before the stream carried any.
    other_lines: u64,
    jsonrpc_lines: u64,
    counted_resync: u64,
}

pub struct Pipeline<C: StreamControl> {
    config: PipelineConfig,
    views: HashMap<(StreamKey, Direction), View>,
    pub correlator: Correlator,
    metrics: AgentMetrics,
    control: C,
}

impl<C: StreamControl> Pipeline<C> {
    pub fn new(
        config: PipelineConfig,
        correlator: Correlator,
        metrics: AgentMetrics,
        control: C,
    ) -> Self {
        Self {
            config,
            views: HashMap::new(),
            correlator,
            metrics,
            control,
        }
    }

    /// Handles one raw ring buffer record.
    pub fn on_record_bytes(&mut self, bytes: &[u8]) {
        self.metrics.records.inc();
        match decode(bytes) {
            Ok(record) => self.on_record(&record),
            Err(_) => {
                self.metrics
                    .parse_errors
                    .get_or_create(&ReasonLabels { reason: "decode" })
                    .inc();
            }
        }
    }

    pub fn on_record(&mut self, r: &Record<'_>) {
        self.metrics.captured_bytes.inc_by(r.payload.len() as u64);
        let stream = StreamKey {
            addr: r.stream_id,
            ino: r.ino,
        };
        let key = (stream, r.direction());
        let max = self.config.max_message_bytes;
        let view = self.views.entry(key).or_insert_with(|| View {
            framer: LineFramer::new_mid_stream(max, r.payload),
            next_offset: r.stream_offset,
            transport: transport(r.stream_kind),
            last_ts_ns: r.ts_ns,
            other_lines: 0,
            jsonrpc_lines: 0,
            counted_resync: 0,
        });
        view.last_ts_ns = r.ts_ns;
        if r.stream_offset != view.next_offset {
            // Bytes in between never arrived (ring buffer full, or a read failure): both
            // are counted by the kernel. Drop the partial line and find the next boundary.
            view.framer.lost();
        }
        tracing::trace!(
            tgid = r.tgid,
            tid = r.tid,
            fd = r.fd,
            ino = r.ino,
            offset = r.stream_offset,
            syscall_len = r.syscall_len,
            syscall_offset = r.syscall_offset,
            captured = r.payload.len(),
            "record"
        );
        let comm = r.comm();
        let obs_base = Observation {
            tgid: r.tgid,
            comm: &comm,
            direction: r.direction(),
            stream,
            transport: view.transport,
            ts_ns: r.ts_ns,
            size: 0,
        };
        match r.kind {
            EventKind::Gap => {
                view.framer.hole(u64::from(r.gap_len));
                view.next_offset = r.stream_offset + u64::from(r.gap_len);
            }
            EventKind::Data => {
                let correlator = &mut self.correlator;
                let metrics = &self.metrics;
                let (mut other_lines, mut jsonrpc_lines) = (0u64, view.jsonrpc_lines);
                view.framer.push(r.payload, r.ts_ns, &mut |frame| {
                    match handle_frame(frame, &obs_base, correlator, metrics) {
                        Ok(n) => jsonrpc_lines += n,
                        // Its length says nothing about whether the stream is JSON-RPC.
                        Err(reason @ "oversized") => {
                            metrics
                                .parse_errors
                                .get_or_create(&ReasonLabels { reason })
                                .inc();
                        }
                        // On a stream that has carried JSON-RPC this is a broken message;
                        // before that it is most likely some other program's JSON output.
                        Err(reason) if jsonrpc_lines > 0 => {
                            metrics
                                .parse_errors
                                .get_or_create(&ReasonLabels { reason })
                                .inc();
                        }
                        Err(_) => {
                            other_lines += 1;
                            metrics.unconfirmed_lines.inc();
                        }
                    }
                });
                view.other_lines += other_lines;
                view.jsonrpc_lines = jsonrpc_lines;
                view.next_offset = r.stream_offset + r.payload.len() as u64;
            }
        }
        let discarded = view.framer.counters.resync_discarded_bytes;
        self.metrics
            .resync_discarded_bytes
            .inc_by(discarded - view.counted_resync);
        view.counted_resync = discarded;

        if view.jsonrpc_lines == 0 && view.other_lines >= NON_JSONRPC_LINES_BEFORE_IGNORE {
            self.control.ignore_stream(r.stream_id);
            self.metrics
                .streams_ignored
                .get_or_create(&ReasonLabels {
                    reason: "not_jsonrpc",
                })
                .inc();
            self.views.remove(&(stream, Direction::Read));
            self.views.remove(&(stream, Direction::Write));
            self.correlator.forget_stream(stream);
        }
        self.metrics.tracked_streams.set(self.views.len() as i64);
    }

    /// Periodic work: timeouts and idle views. `now_ns` is CLOCK_MONOTONIC.
    pub fn sweep(&mut self, now_ns: u64) {
        self.correlator.sweep(now_ns);
        self.views
            .retain(|_, v| now_ns.saturating_sub(v.last_ts_ns) < IDLE_VIEW_NS);
        self.metrics.tracked_streams.set(self.views.len() as i64);
        let buffered: usize = self.views.values().map(|v| v.framer.buffered_bytes()).sum();
        self.metrics.buffered_bytes.set(buffered as i64);
    }
}

/// Handles one framed line; returns how many JSON-RPC messages it held, or why it was
/// not JSON-RPC.
fn handle_frame(
    frame: Frame<'_>,
    obs_base: &Observation<'_>,
    correlator: &mut Correlator,
    metrics: &AgentMetrics,
) -> Result<u64, &'static str> {
    let (bytes, last_ts) = match frame {
        Frame::Oversized { len, .. } => {
            metrics.oversized_messages.inc();
            metrics.oversized_message_size.observe(len as f64);
            return Err("oversized");
        }
        Frame::Message { bytes, last_ts, .. } => (bytes, last_ts),
    };
    match jsonrpc::parse(bytes).map_err(|e| e.reason())? {
        Parsed::Single(msg) => {
            metrics.messages.inc();
            let obs = Observation {
                ts_ns: last_ts,
                size: bytes.len() as u64,
                ..*obs_base
            };
            correlator.on_message(&obs, msg);
            Ok(1)
        }
        Parsed::Batch(items) => {
            // Sizes of batch elements are their share of the line.
            let share = bytes.len() as u64 / items.len().max(1) as u64;
            let mut parsed = 0;
            for item in items {
                match item {
                    Ok(msg) => {
                        parsed += 1;
                        metrics.messages.inc();
                        let obs = Observation {
                            ts_ns: last_ts,
                            size: share,
                            ..*obs_base
                        };
                        correlator.on_message(&obs, msg);
                    }
                    Err(e) => {
                        metrics
                            .parse_errors
                            .get_or_create(&ReasonLabels { reason: e.reason() })
                            .inc();
                    }
                }
            }
            if parsed == 0 {
                Err("not_jsonrpc")
            } else {
                Ok(parsed)
            }
        }
    }
}

fn transport(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Pipe => "pipe",
        // Until socket families are decoded (issue P2), newline-delimited JSON-RPC on a
        // socket is stdio over a socketpair (how Node.js spawns children) or a unix socket.
        StreamKind::Socket => "unix",
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline driven by a synthetic event generator (fake clock, advancing offsets):
    //! pairing across processes, losses, stream reuse, without a kernel.

    use mcp_probe_common::{EventHeader, Syscall};
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;
    use crate::{correlate::CorrelatorConfig, decode::encode as encode_record, metrics::Metrics};

    #[derive(Default)]
    struct Ignored(Vec<u64>);
    impl StreamControl for Ignored {
        fn ignore_stream(&mut self, stream_id: u64) {
            self.0.push(stream_id);
        }
    }

    /// Fake kernel: assigns stream offsets and timestamps like the programs do.
    struct Generator {
        now_ns: u64,
        offsets: HashMap<(u64, u64, u32), u64>,
    }

    impl Generator {
        fn new() -> Self {
            Self {
                now_ns: 1_000_000_000,
                offsets: HashMap::new(),
            }
        }

        fn record(
            &mut self,
            tgid: u32,
            comm: &str,
            stream: (u64, u64),
            syscall: Syscall,
            bytes: &[u8],
        ) -> Vec<u8> {
            self.now_ns += 1_000_000; // 1 ms per syscall
            let offset = self
                .offsets
                .entry((stream.0, stream.1, syscall.direction() as u32))
                .or_insert(0);
            let mut c = [0u8; 16];
            c[..comm.len()].copy_from_slice(comm.as_bytes());
            let header = EventHeader {
                kind: EventKind::Data as u32,
                syscall: syscall as u32,
                ts_ns: self.now_ns,
                tgid,
                tid: tgid,
                comm: c,
                stream_id: stream.0,
                ino: stream.1,
                stream_kind: StreamKind::Pipe as u32,
                fd: 0,
                stream_offset: *offset,
                syscall_len: bytes.len() as u64,
                syscall_offset: 0,
                captured_len: bytes.len() as u32,
                gap_len: 0,
            };
            *offset += bytes.len() as u64;
            encode_record(&header, bytes)
        }

        /// Skips `n` bytes of a stream, as when the ring buffer was full.
        fn lose(&mut self, stream: (u64, u64), direction: Direction, n: u64) {
            *self
                .offsets
                .entry((stream.0, stream.1, direction as u32))
                .or_insert(0) += n;
        }
    }

    fn pipeline() -> (Pipeline<Ignored>, Registry) {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let correlator = Correlator::new(CorrelatorConfig::default(), metrics.clone());
        (
            Pipeline::new(
                PipelineConfig {
                    max_message_bytes: 1 << 20,
                },
                correlator,
                metrics.agent,
                Ignored::default(),
            ),
            registry,
        )
    }

    fn value(registry: &Registry, series: &str) -> f64 {
        let mut text = String::new();
        encode(&mut text, registry).expect("encode");
        text.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }

    const CLIENT: u32 = 4_000_000; // pids that do not exist: names come from comm
    const SERVER: u32 = 4_000_001;
    const TO_SERVER: (u64, u64) = (0xffff_0000_0000_1000, 11);
    const TO_CLIENT: (u64, u64) = (0xffff_0000_0000_2000, 12);

    /// One exchange, seen by both processes, in the order the kernel would report it.
    fn exchange(g: &mut Generator, p: &mut Pipeline<Ignored>, request: &[u8], response: &[u8]) {
        let records = [
            g.record(CLIENT, "client", TO_SERVER, Syscall::Write, request),
            g.record(SERVER, "weather", TO_SERVER, Syscall::Read, request),
            g.record(SERVER, "weather", TO_CLIENT, Syscall::Write, response),
            g.record(CLIENT, "client", TO_CLIENT, Syscall::Read, response),
        ];
        for r in &records {
            p.on_record_bytes(r);
        }
    }

    #[test]
    fn pairs_on_both_sides_with_kernel_timestamps() {
        let (mut p, registry) = pipeline();
        let mut g = Generator::new();
        exchange(&mut g, &mut p, b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"tools/call\",\"params\":{\"name\":\"forecast\"}}\n", b"{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"isError\":true}}\n");
        p.sweep(g.now_ns + 10_000_000_000); // settle the name (no handshake seen)
        let q = "{mcp_server_name=\"weather\",mcp_method_name=\"tools/call\",gen_ai_tool_name=\"forecast\",gen_ai_prompt_name=\"\",outcome=\"tool_error\",error_type=\"tool_error\",network_transport=\"pipe\"}";
        assert_eq!(
            value(&registry, &format!("mcp_client_responses_total{q}")),
            1.0
        );
        assert_eq!(
            value(&registry, &format!("mcp_server_responses_total{q}")),
            1.0
        );
        // Client: written at t+1ms, response read at t+4ms; server: read t+2, written t+3.
        assert!(
            (value(&registry, "mcp_client_operation_duration_seconds_sum") - 0.003).abs() < 1e-9
        );
        assert!(
            (value(&registry, "mcp_server_operation_duration_seconds_sum") - 0.001).abs() < 1e-9
        );
    }

    #[test]
    fn a_loss_resynchronises_and_later_exchanges_still_pair() {
        let (mut p, registry) = pipeline();
        let mut g = Generator::new();
        let req = |id: u32| {
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"ping\"}}\n").into_bytes()
        };
        let resp =
            |id: u32| format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{}}}}\n").into_bytes();
        exchange(&mut g, &mut p, &req(1), &resp(1));
        // The kernel lost a record of the client's writes: half a request went missing.
        let half_message = b"{\"jsonrpc\":\"2.0\",\"id\":2,";
        let half = g.record(CLIENT, "client", TO_SERVER, Syscall::Write, half_message);
        p.on_record_bytes(&half);
        g.lose(TO_SERVER, Direction::Write, 20);
        p.on_record_bytes(&g.record(CLIENT, "client", TO_SERVER, Syscall::Write, b"\"tail\"}\n"));
        exchange(&mut g, &mut p, &req(3), &resp(3));
        p.sweep(g.now_ns + 10_000_000_000);
        assert_eq!(value(&registry, "mcp_client_requests_total"), 2.0);
        assert_eq!(value(&registry, "mcp_probe_parse_errors_total"), 0.0);
        let tail = b"\"tail\"}\n".len();
        assert_eq!(
            value(&registry, "mcp_probe_resync_discarded_bytes_total"),
            (half_message.len() + tail) as f64
        );
    }

    #[test]
    fn reused_inode_memory_is_a_new_stream() {
        let (mut p, registry) = pipeline();
        let mut g = Generator::new();
        let req = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
        let resp = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n";
        exchange(&mut g, &mut p, req, resp);
        // Same inode address, new inode number, offsets from 0 again.
        let reused = (TO_SERVER.0, 99);
        p.on_record_bytes(&g.record(CLIENT, "client", reused, Syscall::Write, req));
        p.on_record_bytes(&g.record(SERVER, "weather", reused, Syscall::Read, req));
        p.on_record_bytes(&g.record(SERVER, "weather", TO_CLIENT, Syscall::Write, resp));
        p.on_record_bytes(&g.record(CLIENT, "client", TO_CLIENT, Syscall::Read, resp));
        p.sweep(g.now_ns + 10_000_000_000);
        assert_eq!(value(&registry, "mcp_server_requests_total"), 2.0);
        assert_eq!(
            value(&registry, "mcp_probe_resync_discarded_bytes_total"),
            0.0
        );
    }

    #[test]
    fn json_that_is_not_jsonrpc_turns_the_stream_off() {
        let (mut p, registry) = pipeline();
        let mut g = Generator::new();
        for _ in 0..NON_JSONRPC_LINES_BEFORE_IGNORE {
            p.on_record_bytes(&g.record(
                7,
                "logger",
                TO_SERVER,
                Syscall::Write,
                b"{\"level\":\"info\"}\n",
            ));
        }
        assert_eq!(p.control.0, vec![TO_SERVER.0]);
        assert_eq!(value(&registry, "mcp_probe_parse_errors_total"), 0.0);
        assert_eq!(value(&registry, "mcp_probe_unconfirmed_lines_total"), 8.0);
    }

    #[test]
    fn timeouts_and_unsettled_names_are_flushed_by_the_sweep() {
        let (mut p, registry) = pipeline();
        let mut g = Generator::new();
        let req = b"{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"tools/call\",\"params\":{\"name\":\"slow\"}}\n";
        p.on_record_bytes(&g.record(CLIENT, "client", TO_SERVER, Syscall::Write, req));
        p.on_record_bytes(&g.record(SERVER, "weather", TO_SERVER, Syscall::Read, req));
        p.sweep(g.now_ns + 301 * 1_000_000_000);
        assert_eq!(value(&registry, "mcp_client_request_timeouts_total"), 1.0);
        assert_eq!(value(&registry, "mcp_server_request_timeouts_total"), 1.0);
        // The answer arrives after all.
        let resp = b"{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"result\":{}}\n";
        p.on_record_bytes(&g.record(SERVER, "weather", TO_CLIENT, Syscall::Write, resp));
        p.on_record_bytes(&g.record(CLIENT, "client", TO_CLIENT, Syscall::Read, resp));
        assert_eq!(value(&registry, "mcp_probe_late_responses_total"), 2.0);
        assert_eq!(value(&registry, "mcp_probe_unpaired_responses_total"), 0.0);
    }
}
