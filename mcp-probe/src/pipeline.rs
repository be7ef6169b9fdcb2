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
        Frame::Oversized { .. } => {
            metrics.oversized_messages.inc();
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
