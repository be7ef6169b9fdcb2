//! From decoded records to messages: per-stream reassembly, framing (any protocol of
//! [`crate::protocols`]), then JSON-RPC and the stitcher.
//!
//! A stream is one pipe or socket ([`StreamKey`]); its [`Connection`] holds both
//! directions: the bytes one side wrote, and the bytes the other side read. Each direction
//! has its own framer, and checks the kernel's stream offsets so that a loss is noticed
//! and the framer resynchronises.

mod connection;
mod deliver;
#[cfg(test)]
mod tests;
mod waiting;

use std::sync::Arc;

use mcp_probe_common::{errno, Direction, EventKind, StreamKind};

use crate::{
    decode::Record,
    health::HealthFeed,
    host::Host,
    lookups::{Lookup, Lookups},
    metrics::{AgentMetrics, MapLabels, ReasonLabels},
    model::{Observation, StreamControl, StreamKey, Transport},
    protocols::framer_for,
    sockets,
    stitch::Stitcher,
    HashSet,
};

use connection::{Connection, Connections, Half, Link, TextCounts};
use waiting::{PeerAnswers, Waiting};

/// A stream with this many framed lines and none of them JSON-RPC is dropped.
const NON_JSONRPC_LINES_BEFORE_IGNORE: u64 = 8;
/// A direction with no traffic for this long is forgotten (its partial line dropped).
const IDLE_VIEW_NS: u64 = 30 * 60 * 1_000_000_000;
/// Kernel map occupancy is counted every this many sweeps (seconds).
const MAP_COUNT_EVERY: u64 = 30;
/// Processes whose exit the kernel is asked to report (its map's size).
const WATCHED_CAP: usize = mcp_probe_common::WATCHED_ENTRIES as usize;

/// A pipe's read side holding part of a message whose writer is gone is given up after
/// this long without bytes (ns).
const ORPHAN_AFTER_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub max_message_bytes: usize,
    /// Stream directions reassembled at once; past it the least recently active go.
    pub max_streams: usize,
    /// Bytes held for partial messages across all streams; past it the message being
    /// added to stops being buffered (it is still sized, as oversized).
    pub max_buffered_bytes: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 << 20,
            max_streams: 32_768,
            max_buffered_bytes: 256 << 20,
        }
    }
}

pub struct Pipeline<C: StreamControl> {
    config: PipelineConfig,
    connections: Connections,
    /// Peers and processes looked up off this thread; what needs an answer waits.
    lookups: Lookups,
    waiting: Waiting,
    peers: PeerAnswers,
    pub stitcher: Stitcher,
    health: HealthFeed,
    /// Processes whose exit the kernel was asked to report.
    watched: HashSet<u32>,
    sweeps: u64,
    metrics: AgentMetrics,
    control: C,
    /// Where processes are checked for liveness (periodically).
    host: Arc<dyn Host>,
}

fn stream_of(r: &Record<'_>) -> StreamKey {
    StreamKey {
        addr: r.stream_id,
        ino: r.ino,
    }
}

impl<C: StreamControl> Pipeline<C> {
    pub fn new(
        config: PipelineConfig,
        stitcher: Stitcher,
        health: HealthFeed,
        metrics: AgentMetrics,
        control: C,
        host: Arc<dyn Host>,
        lookups: Lookups,
    ) -> Self {
        Self {
            connections: Connections::new(config.max_buffered_bytes),
            config,
            lookups,
            waiting: Waiting::default(),
            peers: PeerAnswers::default(),
            host,
            stitcher,
            health,
            watched: HashSet::default(),
            sweeps: 0,
            metrics,
            control,
        }
    }

    /// Handles one raw ring buffer record.
    pub fn on_record_bytes(&mut self, bytes: &[u8]) {
        self.metrics.records.inc();
        self.handle(bytes);
        if !self.waiting.is_empty() {
            self.on_lookups();
            self.give_up_overdue();
        }
    }

    fn on_record(&mut self, r: &Record<'_>) {
        match r.kind {
            EventKind::Close => return self.on_close(r),
            EventKind::Followed => return self.first_sight(r.tgid, r.comm()),
            EventKind::ProcessExit => {
                let server = self.stitcher.name_if_server(r.tgid);
                self.health.on_exit(r.tgid, r.detail, server);
                self.watched.remove(&r.tgid);
                return self.on_process_gone(r.tgid, r.ts_ns);
            }
            EventKind::Error => return self.on_error(r),
            EventKind::SocketInfo => {
                if let Some(info) = sockets::decode_kernel(r.payload) {
                    self.connections
                        .set_socket(stream_of(r), sockets::from_kernel(&info));
                }
                return;
            }
            EventKind::Data | EventKind::Gap => {}
        }
        self.metrics.captured_bytes.inc_by(r.payload.len() as u64);
        tracing::trace!(
            tgid = r.tgid,
            tid = r.tid,
            fd = r.fd,
            ino = r.ino,
            write = r.direction() == Direction::Write,
            offset = r.stream_offset,
            syscall_len = r.syscall_len,
            syscall_offset = r.syscall_offset,
            captured = r.payload.len(),
            "record"
        );
        if self.on_data(r) {
            // The stream carries JSON, but not JSON-RPC: stop following it.
            let stream = stream_of(r);
            self.control.ignore_stream(r.stream_id);
            self.metrics
                .streams_ignored
                .get_or_create(&ReasonLabels {
                    reason: "not_jsonrpc",
                })
                .inc();
            self.connections.unfollow(&stream);
            self.stitcher.forget_stream(stream);
        }
        self.metrics
            .tracked_streams
            .set(self.connections.directions() as i64);
    }

    /// A data or gap record, through its direction's framer. True when the stream has
    /// shown it is not JSON-RPC.
    fn on_data(&mut self, r: &Record<'_>) -> bool {
        let stream = stream_of(r);
        let direction = r.direction();
        if self.connections.directions() >= self.config.max_streams
            && !self.connections.follows(&stream, direction)
        {
            self.evict_streams();
        }
        let max = self.config.max_message_bytes;
        let peers = &mut self.peers;
        let (conn, budget) = self.connections.follow(
            stream,
            direction,
            // Known by now (see `needs_lookup`).
            |socket| {
                peers.take(&stream).unwrap_or_else(|| match r.stream_kind {
                    StreamKind::Pipe => Link {
                        transport: Transport::Pipe,
                        peer: None,
                    },
                    StreamKind::Socket => waiting::without_lookup(socket),
                })
            },
            || Half {
                framer: framer_for(r.payload, max),
                buffered: 0,
                next_offset: r.stream_offset,
                last_ts_ns: r.ts_ns,
                last_tgid: r.tgid,
                last_fd: r.fd,
                texts: TextCounts::default(),
                counted_resync: 0,
            },
        );
        let Some((half, exchange, link)) = conn.parts(direction) else {
            return false;
        };
        half.last_ts_ns = r.ts_ns;
        half.last_tgid = r.tgid;
        half.last_fd = r.fd;
        if r.stream_offset != half.next_offset {
            // Bytes in between never arrived (ring buffer full, or a read failure): both
            // are counted by the kernel. Drop the partial message and find the next boundary.
            // A write syscall's first bytes may start a message (one message per write()
            // in every SDK); reads split the stream anywhere.
            let resume_at = (direction == Direction::Write
                && r.kind == EventKind::Data
                && r.syscall_offset == 0)
                .then_some(r.payload);
            half.framer.lost(resume_at);
        }
        let obs = Observation {
            tgid: r.tgid,
            comm: r.comm(),
            direction,
            stream,
            transport: link.transport,
            peer: link.peer.as_ref(),
            session: None,
            user: None,
            ts_ns: r.ts_ns,
            size: 0,
        };
        match r.kind {
            EventKind::Gap => half.framer.hole(u64::from(r.detail)),
            EventKind::Data => {
                let texts = &mut half.texts;
                let (stitcher, metrics) = (&mut self.stitcher, &self.metrics);
                half.framer.push(r.payload, r.ts_ns, &mut |frame| {
                    deliver::on_frame(frame, &obs, exchange, texts, stitcher, metrics)
                });
            }
            EventKind::Close
            | EventKind::Error
            | EventKind::SocketInfo
            | EventKind::ProcessExit
            | EventKind::Followed => {}
        }
        half.next_offset = r.stream_offset
            + match r.kind {
                EventKind::Gap => u64::from(r.detail),
                EventKind::Data => r.payload.len() as u64,
                EventKind::Close
                | EventKind::Error
                | EventKind::SocketInfo
                | EventKind::ProcessExit
                | EventKind::Followed => 0,
            };
        let discarded = half.framer.resync_discarded_bytes();
        self.metrics
            .discarded("resync", discarded - half.counted_resync);
        half.counted_resync = discarded;
        // Memory: the budget covers every partial message; the one that outgrows it stops
        // being buffered (it is still sized exactly).
        budget.account(half, &self.metrics);
        half.texts.jsonrpc == 0 && half.texts.other >= NON_JSONRPC_LINES_BEFORE_IGNORE
    }

    /// A process's first record (or the kernel's notice that it started a stream, which
    /// wakes the agent at once): read who it is now, while it surely runs (a short-lived
    /// server can be gone by the time its first message is complete), and ask the kernel
    /// to report its exit. A pid seen exiting before belongs to a new process now.
    fn first_sight(&mut self, tgid: u32, comm: &str) {
        if self.watched.contains(&tgid) {
            return;
        }
        self.stitcher.on_process_seen(tgid, comm);
        if !self.stitcher.is_identified(tgid)
            && !self.waiting.is_identifying(tgid)
            && self.lookups.ask(Lookup::Process { tgid })
        {
            self.waiting.identifying(tgid);
        }
        if self.watched.len() < WATCHED_CAP && self.control.watch_process(tgid) {
            self.watched.insert(tgid);
        }
    }

    /// `--max-streams` reached: the least recently active directions go.
    fn evict_streams(&mut self) {
        let stitcher = &mut self.stitcher;
        self.connections
            .evict_oldest(&self.metrics, &mut |stream| stitcher.forget_stream(stream));
    }

    /// A process exited (the kernel reported it, or a sweep found it gone): its sockets are
    /// closed as if it had closed them, the partial messages it was writing or reading can
    /// never be finished, and the stitcher forgets it before its pid is reused.
    fn on_process_gone(&mut self, tgid: u32, ts_ns: u64) {
        self.peers.forget_process(tgid);
        let mine: Vec<(StreamKey, Direction)> = self
            .connections
            .halves()
            .filter(|(_, _, h)| h.last_tgid == tgid)
            .map(|(k, d, _)| (k, d))
            .collect();
        for (stream, direction) in mine {
            let Some(conn) = self.connections.get(&stream) else {
                continue; // closed with its other direction
            };
            let Some(half) = conn.half(direction) else {
                continue;
            };
            let socket = conn.link.as_ref().is_some_and(|l| l.transport.is_socket());
            if half.framer.ends_with_connection() || socket {
                self.close_stream(stream, tgid, "", ts_ns);
            } else {
                self.abandon_half(&stream, direction);
            }
        }
        self.stitcher.on_process_exit(tgid, ts_ns);
        self.metrics
            .tracked_streams
            .set(self.connections.directions() as i64);
    }

    /// Drops a direction whose partial message can never be completed: counted as a
    /// truncated message and its bytes as discarded.
    fn abandon_half(&mut self, stream: &StreamKey, direction: Direction) {
        if let Some(half) = self.connections.remove_half(stream, direction) {
            let pending = half.framer.pending_bytes();
            if pending > 0 {
                self.metrics.parse_error("truncated");
                self.metrics.discarded("process_exit", pending);
            }
        }
    }

    /// A process closed its end of a followed socket: bodies delimited by the close end,
    /// requests still unanswered on it were aborted, and the connection is forgotten.
    fn on_close(&mut self, r: &Record<'_>) {
        self.close_stream(stream_of(r), r.tgid, r.comm(), r.ts_ns);
    }

    /// Process `tgid` closed its end of a followed socket (or exited).
    fn close_stream(&mut self, stream: StreamKey, tgid: u32, comm: &str, ts_ns: u64) {
        self.peers.take(&stream);
        if let Some(conn) = self.connections.remove(&stream) {
            self.close_connection(conn, stream, tgid, comm, ts_ns);
        }
        self.stitcher.on_connection_closed(tgid, stream, ts_ns);
        self.stitcher.forget_stream(stream);
        self.metrics
            .tracked_streams
            .set(self.connections.directions() as i64);
    }

    /// The last frames of a closed connection's directions, and what became of the
    /// requests its HTTP exchange was waiting on.
    fn close_connection(
        &mut self,
        conn: Connection,
        stream: StreamKey,
        tgid: u32,
        comm: &str,
        ts_ns: u64,
    ) {
        let (halves, link, mut exchange) = conn.into_parts();
        let Some(link) = link else {
            return; // no direction followed: nothing was waiting
        };
        let mut aborted = Vec::new();
        // Requests are aborted as the closing process sent them.
        let abort = Observation {
            tgid,
            comm,
            direction: Direction::Write,
            stream,
            transport: link.transport,
            peer: link.peer.as_ref(),
            session: None,
            user: None,
            ts_ns,
            size: 0,
        };
        for (direction, half) in DIRECTIONS.into_iter().zip(halves) {
            let Some(mut half) = half else {
                continue;
            };
            let obs = Observation { direction, ..abort };
            let texts = &mut half.texts;
            let (stitcher, metrics) = (&mut self.stitcher, &self.metrics);
            half.framer.close(ts_ns, &mut |frame| {
                deliver::on_frame(frame, &obs, &mut exchange, texts, stitcher, metrics)
            });
            if let Some((status, ids)) = exchange.close_direction(direction, &mut aborted) {
                for id in ids {
                    self.stitcher.on_http_error(&obs, id, status);
                }
            }
        }
        exchange.close(&mut aborted);
        if !aborted.is_empty() {
            self.stitcher.on_abort(&abort, aborted);
        }
    }

    fn on_error(&mut self, r: &Record<'_>) {
        let stream = stream_of(r);
        // The side: from the HTTP traffic seen on the connection, else from /proc (an
        // accepted socket shares its port with a listener).
        let conn = self.connections.get(&stream);
        let known = conn.and_then(|c| {
            let client = c.exchange.client()?;
            let link = c.link.as_ref()?;
            Some((client, link.transport, link.peer.clone()))
        });
        let (client, transport, peer) = match known {
            Some(k) => k,
            None => {
                // Known by now (see `needs_lookup`), else from the link or the socket.
                let link = self
                    .peers
                    .take(&stream)
                    .or_else(|| conn.and_then(|c| c.link.clone()))
                    .unwrap_or_else(|| {
                        waiting::without_lookup(conn.and_then(|c| c.socket.as_ref()))
                    });
                (link.peer.is_some(), link.transport, link.peer)
            }
        };
        let reason = match r.detail {
            errno::ECONNRESET => "reset",
            errno::EPIPE => "broken_pipe",
            errno::ETIMEDOUT => "timeout",
            errno::ECONNABORTED => "aborted",
            _ => "unreachable",
        };
        let obs = Observation {
            tgid: r.tgid,
            comm: r.comm(),
            direction: r.direction(),
            stream,
            transport,
            peer: peer.as_ref(),
            session: None,
            user: None,
            ts_ns: r.ts_ns,
            size: 0,
        };
        self.stitcher.on_connection_error(&obs, !client, reason);
    }

    /// Periodic work: timeouts, processes gone, idle and orphaned directions, memory
    /// accounting. `now_ns` is CLOCK_MONOTONIC.
    pub fn sweep(&mut self, now_ns: u64) {
        self.on_lookups();
        self.give_up_overdue();
        self.stitcher.sweep(now_ns);
        let servers = self.stitcher.server_processes();
        self.health.update(servers);

        // Processes that exited without an exit record reaching us (not watched: the
        // kernel's map was full; or the record was lost).
        let mut tgids: Vec<u32> = self
            .connections
            .halves()
            .map(|(_, _, h)| h.last_tgid)
            .collect();
        tgids.sort_unstable();
        tgids.dedup();
        tgids.retain(|&t| !self.control.process_exists(t));
        for tgid in tgids {
            self.watched.remove(&tgid);
            self.on_process_gone(tgid, now_ns);
        }
        // The read side of a pipe holding part of a message that its writer, now gone, will
        // never finish.
        let orphans: Vec<StreamKey> = self
            .connections
            .iter()
            .filter(|(_, c)| {
                c.link
                    .as_ref()
                    .is_some_and(|l| l.transport == Transport::Pipe)
                    && c.half(Direction::Write).is_none()
                    && c.half(Direction::Read).is_some_and(|h| {
                        now_ns.saturating_sub(h.last_ts_ns) > ORPHAN_AFTER_NS
                            && h.framer.pending_bytes() > 0
                    })
            })
            .map(|(k, _)| *k)
            .collect();
        for stream in orphans {
            self.abandon_half(&stream, Direction::Read);
        }
        let idle: Vec<(StreamKey, Direction)> = self
            .connections
            .halves()
            .filter(|(_, _, h)| now_ns.saturating_sub(h.last_ts_ns) >= IDLE_VIEW_NS)
            .map(|(k, d, _)| (k, d))
            .collect();
        for (stream, direction) in idle {
            self.connections.remove_half(&stream, direction);
            if self
                .connections
                .get(&stream)
                .is_some_and(|c| !c.is_followed())
            {
                self.stitcher.forget_stream(stream);
            }
        }
        self.connections.sweep_unfollowed();

        // Counting map entries walks the maps key by key: not every second.
        self.sweeps += 1;
        if self.sweeps % MAP_COUNT_EVERY == 1 {
            let control = &self.control;
            self.watched.retain(|&tgid| control.process_exists(tgid));
            let host = &self.host;
            let mut gone = |tgid| !host.process_exists(tgid);
            for (map, entries, capacity) in self.control.sweep_maps(&mut gone) {
                let labels = MapLabels { map };
                self.metrics
                    .map_entries
                    .get_or_create(&labels)
                    .set(entries as i64);
                self.metrics
                    .map_capacity
                    .get_or_create(&labels)
                    .set(capacity as i64);
            }
        }
        // Memory accounting, from scratch.
        let buffered = self.connections.recount_buffered();
        self.metrics
            .tracked_streams
            .set(self.connections.directions() as i64);
        self.metrics.buffered_bytes.set(buffered as i64);
    }
}

/// The directions of a connection, read first.
const DIRECTIONS: [Direction; 2] = [Direction::Read, Direction::Write];
