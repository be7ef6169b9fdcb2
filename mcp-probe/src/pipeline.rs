//! From decoded records to messages: per-stream-direction reassembly, framing (JSON lines
//! or HTTP/1.x with JSON and SSE bodies), JSON-RPC parsing, then the correlator.
//!
//! A *view* is one direction of one stream (stream id + read/write): the bytes one side
//! wrote, or the bytes the other side read. Each view has its own framer, and checks the
//! kernel's stream offsets so that a loss is noticed and the framer resynchronises.

use std::collections::VecDeque;

use crate::{HashMap, HashSet};

use mcp_probe_common::{errno, Direction, EventKind, StreamKind};

use crate::{
    correlate::Correlator,
    decode::{decode, Record},
    health::Health,
    metrics::{AgentMetrics, MapLabels, ReasonLabels},
    model::{Observation, ServerRef, StreamControl, StreamKey, Transport},
    protocols::{
        http::{starts_http, HttpEvent, HttpFramer},
        jsonl::{self, Frame, LineFramer},
        jsonrpc::{self, Id, Message, Parsed},
    },
    sockets,
};

/// A stream with this many framed lines and none of them JSON-RPC is dropped.
const NON_JSONRPC_LINES_BEFORE_IGNORE: u64 = 8;
/// A view with no traffic for this long is forgotten (its partial line dropped).
const IDLE_VIEW_NS: u64 = 30 * 60 * 1_000_000_000;
/// Kernel map occupancy is counted every this many sweeps (seconds).
const MAP_COUNT_EVERY: u64 = 30;
/// Sockets whose identity is remembered (beyond this, /proc is asked instead).
const MAX_SOCKETS: usize = 65_536;
/// Processes whose exit the kernel is asked to report (its map's size).
const WATCHED_CAP: usize = mcp_probe_common::WATCHED_ENTRIES as usize;
/// HTTP requests remembered per connection while their responses are awaited.
const MAX_HTTP_IN_FLIGHT: usize = 64;

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

enum Framing {
    Lines(LineFramer),
    Http(HttpFramer),
}

impl Framing {
    fn buffered_bytes(&self) -> usize {
        match self {
            Framing::Lines(f) => f.buffered_bytes(),
            Framing::Http(f) => f.buffered_bytes(),
        }
    }

    fn pending_bytes(&self) -> u64 {
        match self {
            Framing::Lines(f) => f.pending_bytes(),
            Framing::Http(f) => f.pending_bytes(),
        }
    }

    fn shed(&mut self) {
        match self {
            Framing::Lines(f) => f.shed(),
            Framing::Http(f) => f.shed(),
        }
    }
}

struct View {
    framing: Framing,
    /// `framing.buffered_bytes()` as last added to the pipeline's total.
    buffered: usize,
    next_offset: u64,
    transport: Transport,
    peer: Option<ServerRef>,
    last_ts_ns: u64,
    /// The process of the last record, and its descriptor.
    last_tgid: u32,
    last_fd: u32,
    /// Lines that were not JSON-RPC before the stream carried any.
    other_lines: u64,
    jsonrpc_lines: u64,
    counted_resync: u64,
    /// HTTP: the head being handled is a request (else a response).
    in_request: bool,
    /// HTTP: status and JSON-RPC request ids of the response being handled.
    response: Option<(u16, Vec<Id>)>,
    /// HTTP: this process is the client of the connection (it sends the requests).
    http_client: Option<bool>,
    /// HTTP: the MCP session of the message being handled (`mcp-session-id`, the
    /// `session_id` of a legacy POST URL, or the legacy `endpoint` event of a GET stream).
    session: Option<String>,
    /// HTTP: who sent the request being handled (keyed hash of its credential).
    user: Option<String>,
}

/// JSON-RPC requests carried by one HTTP request, waiting for its HTTP response.
#[derive(Default)]
struct HttpTxn {
    request_ids: Vec<Id>,
}

pub struct Pipeline<C: StreamControl> {
    config: PipelineConfig,
    views: HashMap<(StreamKey, Direction), View>,
    /// Per socket: HTTP requests whose responses have not started yet (FIFO: pipelining).
    http_in_flight: HashMap<StreamKey, VecDeque<HttpTxn>>,
    /// Per socket: its identity, as the kernel reported it when following started.
    sockets: HashMap<StreamKey, sockets::SocketInfo>,
    servers: sockets::Servers,
    pub correlator: Correlator,
    health: Health,
    /// Processes whose exit the kernel was asked to report.
    watched: HashSet<u32>,
    /// Sum of the views' `buffered`.
    buffered_total: usize,
    sweeps: u64,
    metrics: AgentMetrics,
    control: C,
}

impl<C: StreamControl> Pipeline<C> {
    pub fn new(
        config: PipelineConfig,
        correlator: Correlator,
        health: Health,
        metrics: AgentMetrics,
        control: C,
    ) -> Self {
        Self {
            config,
            views: HashMap::default(),
            http_in_flight: HashMap::default(),
            sockets: HashMap::default(),
            servers: sockets::Servers::new(std::sync::Arc::new(crate::host::ProcHost)),
            correlator,
            health,
            watched: HashSet::default(),
            buffered_total: 0,
            sweeps: 0,
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
        match r.kind {
            EventKind::Close => return self.on_close(r),
            EventKind::Followed => return self.first_sight(r.tgid, r.comm()),
            EventKind::ProcessExit => {
                let server = self.correlator.name_if_server(r.tgid);
                self.health.on_exit(r.tgid, r.detail, server);
                self.watched.remove(&r.tgid);
                return self.on_process_gone(r.tgid, r.ts_ns);
            }
            EventKind::Error => return self.on_error(r),
            EventKind::SocketInfo => {
                if let Some(info) = sockets::decode_kernel(r.payload) {
                    let stream = StreamKey {
                        addr: r.stream_id,
                        ino: r.ino,
                    };
                    if self.sockets.len() < MAX_SOCKETS {
                        self.sockets.insert(stream, sockets::from_kernel(&info));
                    }
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
        let stream = StreamKey {
            addr: r.stream_id,
            ino: r.ino,
        };
        let key = (stream, r.direction());
        self.first_sight(r.tgid, r.comm());
        if !self.views.contains_key(&key) && self.views.len() >= self.config.max_streams {
            self.evict_views();
        }
        let max = self.config.max_message_bytes;
        let sockets_seen = &self.sockets;
        let servers = &mut self.servers;
        let view = self.views.entry(key).or_insert_with(|| {
            let (transport, peer) = match r.stream_kind {
                StreamKind::Pipe => (Transport::Pipe, None),
                StreamKind::Socket => {
                    let info = sockets_seen
                        .get(&stream)
                        .cloned()
                        .unwrap_or_else(|| sockets::lookup(&crate::host::ProcHost, r.tgid, r.ino));
                    (
                        info.transport,
                        info.peer.map(|addr| servers.resolve(r.tgid, addr)),
                    )
                }
            };
            let framing = if starts_http(r.payload) {
                Framing::Http(HttpFramer::new(max))
            } else {
                Framing::Lines(LineFramer::new_mid_stream(max, r.payload))
            };
            View {
                framing,
                buffered: 0,
                next_offset: r.stream_offset,
                transport,
                peer,
                last_ts_ns: r.ts_ns,
                last_tgid: r.tgid,
                last_fd: r.fd,
                other_lines: 0,
                jsonrpc_lines: 0,
                counted_resync: 0,
                in_request: false,
                response: None,
                http_client: None,
                session: None,
                user: None,
            }
        });
        view.last_ts_ns = r.ts_ns;
        view.last_tgid = r.tgid;
        view.last_fd = r.fd;
        if r.stream_offset != view.next_offset {
            // Bytes in between never arrived (ring buffer full, or a read failure): both
            // are counted by the kernel. Drop the partial message and find the next boundary.
            match &mut view.framing {
                Framing::Lines(f) => {
                    f.lost();
                    // A write that starts like a message starts one (one message per
                    // write() in every SDK); reads split the stream anywhere.
                    if r.direction() == Direction::Write
                        && r.kind == EventKind::Data
                        && r.syscall_offset == 0
                        && jsonl::starts_message(r.payload)
                    {
                        f.at_message_start();
                    }
                }
                Framing::Http(f) => f.lost(),
            }
        }
        let comm = r.comm();
        let peer = view.peer.clone();
        let obs = Observation {
            tgid: r.tgid,
            comm,
            direction: r.direction(),
            stream,
            transport: view.transport,
            peer: peer.as_ref(),
            session: None,
            user: None,
            ts_ns: r.ts_ns,
            size: 0,
        };
        let mut http_events = Vec::new();
        match (r.kind, &mut view.framing) {
            (
                EventKind::Close
                | EventKind::Error
                | EventKind::SocketInfo
                | EventKind::ProcessExit
                | EventKind::Followed,
                _,
            ) => {}
            (EventKind::Gap, Framing::Lines(f)) => {
                f.hole(u64::from(r.detail));
            }
            (EventKind::Gap, Framing::Http(f)) => f.lost(),
            (EventKind::Data, Framing::Lines(f)) => {
                let correlator = &mut self.correlator;
                let metrics = &self.metrics;
                let (mut other_lines, mut jsonrpc_lines) = (0u64, view.jsonrpc_lines);
                f.push(r.payload, r.ts_ns, &mut |frame| {
                    let result = match frame {
                        Frame::Oversized { len, .. } => {
                            metrics.oversized_messages.inc();
                            metrics.oversized_message_size.observe(len as f64);
                            // Its length says nothing about whether the stream is JSON-RPC.
                            metrics.parse_error("oversized");
                            return;
                        }
                        Frame::Message { bytes, last_ts, .. } => handle_text(
                            bytes,
                            &Observation {
                                ts_ns: last_ts,
                                ..obs
                            },
                            correlator,
                            metrics,
                        ),
                    };
                    count_text(
                        result.map(|_| 1),
                        &mut jsonrpc_lines,
                        &mut other_lines,
                        metrics,
                    );
                });
                view.other_lines += other_lines;
                view.jsonrpc_lines = jsonrpc_lines;
            }
            (EventKind::Data, Framing::Http(f)) => {
                f.push(r.payload, &mut |e| {
                    http_events.push(OwnedHttpEvent::from(e))
                });
            }
        }
        for event in http_events {
            self.on_http_event(key, &obs, event);
        }
        let Some(view) = self.views.get_mut(&key) else {
            return;
        };
        view.next_offset = r.stream_offset
            + match r.kind {
                EventKind::Gap => u64::from(r.detail),
                EventKind::Data => r.payload.len() as u64,
                EventKind::Close
                | EventKind::Error
                | EventKind::SocketInfo
                | EventKind::ProcessExit
                | EventKind::Followed => 0,
            };
        if let Framing::Lines(f) = &view.framing {
            let discarded = f.counters.resync_discarded_bytes;
            self.metrics
                .discarded("resync", discarded - view.counted_resync);
            view.counted_resync = discarded;
        }
        // Memory: the budget covers every partial message; the one that outgrows it stops
        // being buffered (it is still sized exactly).
        let now = view.framing.buffered_bytes();
        self.buffered_total = self.buffered_total - view.buffered + now;
        view.buffered = now;
        if self.buffered_total > self.config.max_buffered_bytes && now > 0 {
            view.framing.shed();
            self.metrics.evicted("message_buffer", 1);
            let after = view.framing.buffered_bytes();
            self.buffered_total = self.buffered_total - view.buffered + after;
            view.buffered = after;
        }
        if view.jsonrpc_lines == 0 && view.other_lines >= NON_JSONRPC_LINES_BEFORE_IGNORE {
            self.control.ignore_stream(r.stream_id);
            self.metrics
                .streams_ignored
                .get_or_create(&ReasonLabels {
                    reason: "not_jsonrpc",
                })
                .inc();
            self.remove_view(&(stream, Direction::Read));
            self.remove_view(&(stream, Direction::Write));
            self.http_in_flight.remove(&stream);
            self.correlator.forget_stream(stream);
        }
        self.metrics.tracked_streams.set(self.views.len() as i64);
    }

    /// A process's first record (or the kernel's notice that it started a stream, which
    /// wakes the agent at once): read who it is now, while it surely runs (a short-lived
    /// server can be gone by the time its first message is complete), and ask the kernel
    /// to report its exit. A pid seen exiting before belongs to a new process now.
    fn first_sight(&mut self, tgid: u32, comm: &str) {
        if self.watched.contains(&tgid) {
            return;
        }
        self.correlator.on_process_seen(tgid);
        self.correlator.processes.observe(tgid, comm);
        if self.watched.len() < WATCHED_CAP && self.control.watch_process(tgid) {
            self.watched.insert(tgid);
        }
    }

    /// Removes a view, keeping the buffered-bytes total true.
    fn remove_view(&mut self, key: &(StreamKey, Direction)) -> Option<View> {
        let view = self.views.remove(key)?;
        self.buffered_total -= view.buffered;
        Some(view)
    }

    /// `--max-streams` reached: the least recently active sixteenth of the views go (one
    /// pass, so a flood of new streams costs O(1) per stream). Their partial messages are
    /// counted as discarded.
    fn evict_views(&mut self) {
        let n = (self.views.len() / 16).max(1);
        let mut by_age: Vec<(u64, (StreamKey, Direction))> =
            self.views.iter().map(|(k, v)| (v.last_ts_ns, *k)).collect();
        by_age.select_nth_unstable_by_key(n - 1, |(ts, _)| *ts);
        for (_, key) in by_age.into_iter().take(n) {
            if let Some(view) = self.remove_view(&key) {
                self.metrics
                    .discarded("evicted", view.framing.pending_bytes());
            }
            let stream = key.0;
            if !self.has_views(stream) {
                self.http_in_flight.remove(&stream);
                self.sockets.remove(&stream);
                self.correlator.forget_stream(stream);
            }
        }
        self.metrics.evicted("stream", n as u64);
    }

    fn has_views(&self, stream: StreamKey) -> bool {
        self.views.contains_key(&(stream, Direction::Read))
            || self.views.contains_key(&(stream, Direction::Write))
    }

    /// A process exited (the kernel reported it, or a sweep found it gone): its sockets are
    /// closed as if it had closed them, the partial messages it was writing or reading can
    /// never be finished, and the correlator forgets it before its pid is reused.
    fn on_process_gone(&mut self, tgid: u32, ts_ns: u64) {
        let mine: Vec<(StreamKey, Direction)> = self
            .views
            .iter()
            .filter(|(_, v)| v.last_tgid == tgid)
            .map(|(k, _)| *k)
            .collect();
        for key in mine {
            let Some(view) = self.views.get(&key) else {
                continue; // closed with its other direction
            };
            if matches!(view.framing, Framing::Http(_)) || view.transport.is_socket() {
                self.close_stream(key.0, tgid, "", ts_ns);
            } else {
                self.abandon_view(&key);
            }
        }
        self.correlator.on_process_exit(tgid, ts_ns);
        self.metrics.tracked_streams.set(self.views.len() as i64);
    }

    /// Drops a view whose partial message can never be completed: counted as a truncated
    /// message and its bytes as discarded.
    fn abandon_view(&mut self, key: &(StreamKey, Direction)) {
        if let Some(view) = self.remove_view(key) {
            let pending = view.framing.pending_bytes();
            if pending > 0 {
                self.metrics.parse_error("truncated");
                self.metrics.discarded("process_exit", pending);
            }
        }
    }

    /// A process closed its end of a followed socket: bodies delimited by the close end,
    /// requests still unanswered on it were aborted, and the connection is forgotten.
    fn on_close(&mut self, r: &Record<'_>) {
        let stream = StreamKey {
            addr: r.stream_id,
            ino: r.ino,
        };
        self.close_stream(stream, r.tgid, r.comm(), r.ts_ns);
    }

    /// Process `tgid` closed its end of a followed socket (or exited).
    fn close_stream(&mut self, stream: StreamKey, tgid: u32, comm: &str, ts_ns: u64) {
        let mut aborted = Vec::new();
        let mut socket = None;
        for direction in [Direction::Read, Direction::Write] {
            let Some(view) = self.views.get_mut(&(stream, direction)) else {
                continue;
            };
            socket = Some((view.transport, view.peer.clone()));
            let mut events = Vec::new();
            if let Framing::Http(f) = &mut view.framing {
                f.close(&mut |e| events.push(OwnedHttpEvent::from(e)));
            }
            let peer = view.peer.clone();
            let obs = Observation {
                tgid,
                comm,
                direction,
                stream,
                transport: view.transport,
                peer: peer.as_ref(),
                session: None,
                user: None,
                ts_ns,
                size: 0,
            };
            for e in events {
                self.on_http_event((stream, direction), &obs, e);
            }
            if let Some(view) = self.remove_view(&(stream, direction)) {
                match view.response {
                    // An error status answered these requests even if the body was never
                    // read (a client that gives up on a 401 closes without reading it).
                    Some((status, ids)) if status >= 400 => {
                        for id in ids {
                            self.correlator.on_http_error(&obs, id, status);
                        }
                    }
                    Some((_, ids)) => aborted.extend(ids),
                    None => {}
                }
            }
        }
        if let Some(queue) = self.http_in_flight.remove(&stream) {
            aborted.extend(queue.into_iter().flat_map(|t| t.request_ids));
        }
        if let (false, Some((transport, peer))) = (aborted.is_empty(), socket) {
            let obs = Observation {
                tgid,
                comm,
                direction: Direction::Write,
                stream,
                transport,
                peer: peer.as_ref(),
                session: None,
                user: None,
                ts_ns,
                size: 0,
            };
            self.correlator.on_abort(&obs, aborted);
        }
        self.sockets.remove(&stream);
        self.correlator.on_connection_closed(tgid, stream, ts_ns);
        self.correlator.forget_stream(stream);
        self.metrics.tracked_streams.set(self.views.len() as i64);
    }

    fn on_error(&mut self, r: &Record<'_>) {
        let stream = StreamKey {
            addr: r.stream_id,
            ino: r.ino,
        };
        // The side: from the HTTP traffic seen on the connection, else from /proc (an
        // accepted socket shares its port with a listener).
        let views = [Direction::Write, Direction::Read].map(|d| self.views.get(&(stream, d)));
        let known = views
            .iter()
            .flatten()
            .find_map(|v| v.http_client.map(|c| (c, v.transport, v.peer.clone())));
        let (client, transport, peer) = match known {
            Some(k) => k,
            None => {
                let info = self
                    .sockets
                    .get(&stream)
                    .cloned()
                    .unwrap_or_else(|| sockets::lookup(&crate::host::ProcHost, r.tgid, r.ino));
                let peer = info.peer.map(|p| self.servers.resolve(r.tgid, p));
                (peer.is_some(), info.transport, peer)
            }
        };
        let reason = match r.detail {
            errno::ECONNRESET => "reset",
            errno::EPIPE => "broken_pipe",
            errno::ETIMEDOUT => "timeout",
            errno::ECONNABORTED => "aborted",
            _ => "unreachable",
        };
        let comm = r.comm();
        let obs = Observation {
            tgid: r.tgid,
            comm,
            direction: r.direction(),
            stream,
            transport,
            peer: peer.as_ref(),
            session: None,
            user: None,
            ts_ns: r.ts_ns,
            size: 0,
        };
        self.correlator.on_connection_error(&obs, !client, reason);
    }

    fn on_http_event(
        &mut self,
        key: (StreamKey, Direction),
        obs: &Observation<'_>,
        event: OwnedHttpEvent,
    ) {
        let Some(view) = self.views.get_mut(&key) else {
            return;
        };
        let stream = key.0;
        match event {
            OwnedHttpEvent::Head {
                is_request: true,
                session,
                delete,
                user,
                ..
            } => {
                if let (true, Some(id)) = (delete, &session) {
                    // The client ends its HTTP session; both sides see the DELETE.
                    self.correlator.on_session_delete(obs, id);
                }
                let Some(view) = self.views.get_mut(&key) else {
                    return;
                };
                view.in_request = true;
                view.session = session;
                view.user = user;
                view.http_client = Some(obs.direction == Direction::Write);
                let queue = self.http_in_flight.entry(stream).or_default();
                if queue.len() >= MAX_HTTP_IN_FLIGHT {
                    queue.pop_front();
                }
                queue.push_back(HttpTxn::default());
            }
            OwnedHttpEvent::Head {
                is_request: false,
                status,
                session,
                ..
            } => {
                view.in_request = false;
                if session.is_some() {
                    view.session = session;
                }
                view.http_client = Some(obs.direction == Direction::Read);
                let txn = self
                    .http_in_flight
                    .get_mut(&stream)
                    .and_then(VecDeque::pop_front)
                    .unwrap_or_default();
                view.response = Some((status, txn.request_ids));
                self.correlator.on_http_response(obs, status);
            }
            OwnedHttpEvent::Message { bytes, endpoint } => {
                if endpoint {
                    // Legacy HTTP+SSE: the POST URL names the session of this GET stream.
                    view.session = session_in_url(&String::from_utf8_lossy(&bytes));
                    return;
                }
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return; // an empty priming event
                }
                let user = if view.in_request {
                    view.user.as_deref()
                } else {
                    None
                };
                let obs = Observation {
                    session: view.session.as_deref(),
                    user,
                    ..*obs
                };
                let result = handle_text(&bytes, &obs, &mut self.correlator, &self.metrics);
                if let (Ok(ids), true) = (&result, view.in_request) {
                    if let Some(txn) = self
                        .http_in_flight
                        .get_mut(&stream)
                        .and_then(VecDeque::back_mut)
                    {
                        txn.request_ids.extend(ids.iter().cloned());
                    }
                }
                count_text(
                    result.map(|ids| ids.len().max(1) as u64),
                    &mut view.jsonrpc_lines,
                    &mut view.other_lines,
                    &self.metrics,
                );
            }
            OwnedHttpEvent::Unparsable(reason) => {
                self.metrics
                    .parse_errors
                    .get_or_create(&ReasonLabels { reason })
                    .inc();
            }
            OwnedHttpEvent::End => {
                if let Some((status, ids)) = view.response.take() {
                    if status >= 400 {
                        // Requests this HTTP error answered without a JSON-RPC response.
                        for id in ids {
                            self.correlator.on_http_error(obs, id, status);
                        }
                    }
                }
            }
            OwnedHttpEvent::Invalid => {
                count_text(
                    Err("invalid_http"),
                    &mut view.jsonrpc_lines,
                    &mut view.other_lines,
                    &self.metrics,
                );
            }
        }
    }

    /// Periodic work: timeouts, processes gone, idle and orphaned views, memory accounting.
    /// `now_ns` is CLOCK_MONOTONIC.
    pub fn sweep(&mut self, now_ns: u64) {
        self.correlator.sweep(now_ns);
        let servers = self.correlator.server_processes();
        self.health.update(&servers);

        // Processes that exited without an exit record reaching us (not watched: the
        // kernel's map was full; or the record was lost).
        let mut tgids: Vec<u32> = self.views.values().map(|v| v.last_tgid).collect();
        tgids.sort_unstable();
        tgids.dedup();
        tgids.retain(|&t| !self.control.process_exists(t));
        for tgid in tgids {
            self.watched.remove(&tgid);
            self.on_process_gone(tgid, now_ns);
        }
        // The read side of a pipe holding part of a message that its writer, now gone, will
        // never finish.
        let orphans: Vec<(StreamKey, Direction)> = self
            .views
            .iter()
            .filter(|((stream, direction), v)| {
                *direction == Direction::Read
                    && v.transport == Transport::Pipe
                    && now_ns.saturating_sub(v.last_ts_ns) > ORPHAN_AFTER_NS
                    && v.framing.pending_bytes() > 0
                    && !self.views.contains_key(&(*stream, Direction::Write))
            })
            .map(|(k, _)| *k)
            .collect();
        for key in orphans {
            self.abandon_view(&key);
        }
        let idle: Vec<(StreamKey, Direction)> = self
            .views
            .iter()
            .filter(|(_, v)| now_ns.saturating_sub(v.last_ts_ns) >= IDLE_VIEW_NS)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            self.remove_view(&key);
            if !self.has_views(key.0) {
                self.correlator.forget_stream(key.0);
            }
        }
        let views = &self.views;
        let has_views = |stream: &StreamKey| {
            views.contains_key(&(*stream, Direction::Read))
                || views.contains_key(&(*stream, Direction::Write))
        };
        self.sockets.retain(|stream, _| has_views(stream));
        self.http_in_flight.retain(|stream, _| has_views(stream));

        // Counting map entries walks the maps key by key: not every second.
        self.sweeps += 1;
        if self.sweeps % MAP_COUNT_EVERY == 1 {
            let control = &self.control;
            self.watched.retain(|&tgid| control.process_exists(tgid));
            let mut gone = |tgid| !std::path::Path::new(&format!("/proc/{tgid}")).exists();
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
        self.buffered_total = 0;
        for view in self.views.values_mut() {
            view.buffered = view.framing.buffered_bytes();
            self.buffered_total += view.buffered;
        }
        self.metrics.tracked_streams.set(self.views.len() as i64);
        self.metrics.buffered_bytes.set(self.buffered_total as i64);
    }
}

/// An `HttpEvent` that owns its bytes, so it can outlive the framer's borrow.
enum OwnedHttpEvent {
    Head {
        is_request: bool,
        status: u16,
        session: Option<String>,
        /// A DELETE request (a client ending its HTTP session).
        delete: bool,
        /// The keyed hash of the request's credential.
        user: Option<String>,
    },
    Message {
        bytes: Vec<u8>,
        endpoint: bool,
    },
    Unparsable(&'static str),
    End,
    Invalid,
}

impl From<HttpEvent<'_>> for OwnedHttpEvent {
    fn from(e: HttpEvent<'_>) -> Self {
        match e {
            HttpEvent::Head(h) => {
                let from_url = h
                    .request
                    .as_ref()
                    .and_then(|(_, path)| session_in_url(path));
                let delete = h
                    .request
                    .as_ref()
                    .is_some_and(|(method, _)| method == "DELETE");
                OwnedHttpEvent::Head {
                    is_request: h.request.is_some(),
                    status: h.status,
                    session: h.session_id.or(from_url),
                    delete,
                    user: h.user,
                }
            }
            HttpEvent::Message { bytes, sse_event } => OwnedHttpEvent::Message {
                bytes: bytes.to_vec(),
                endpoint: sse_event == Some("endpoint"),
            },
            HttpEvent::Unparsable { reason } => OwnedHttpEvent::Unparsable(reason),
            HttpEvent::End => OwnedHttpEvent::End,
            HttpEvent::Invalid => OwnedHttpEvent::Invalid,
        }
    }
}

/// The session id in a legacy HTTP+SSE POST URL (`?session_id=` in Python, `?sessionId=`
/// in TypeScript).
fn session_in_url(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "session_id" || key == "sessionId").then(|| value.chars().take(128).collect())
    })
}

/// Counts a text's outcome against its stream: JSON-RPC found, a broken message on a
/// stream that has carried JSON-RPC, or (before that) most likely another program's JSON.
fn count_text(
    result: Result<u64, &'static str>,
    jsonrpc: &mut u64,
    other: &mut u64,
    metrics: &AgentMetrics,
) {
    match result {
        Ok(n) => *jsonrpc += n,
        Err(reason) if *jsonrpc > 0 => {
            metrics
                .parse_errors
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
        Err(_) => {
            *other += 1;
            metrics.unconfirmed_lines.inc();
        }
    }
}

/// Parses one JSON-RPC text (a line, a JSON body, an SSE event) and hands its messages to
/// the correlator. Returns the ids of the requests in it, or why it was not JSON-RPC.
fn handle_text(
    bytes: &[u8],
    obs: &Observation<'_>,
    correlator: &mut Correlator,
    metrics: &AgentMetrics,
) -> Result<Vec<Id>, &'static str> {
    let mut ids = Vec::new();
    let mut deliver = |msg: Message<'_>, size: u64, text: Option<&[u8]>| {
        metrics.messages.inc();
        if let Message::Request { id, .. } = &msg {
            ids.push(id.clone());
        }
        correlator.on_message_bytes(&Observation { size, ..*obs }, msg, text);
    };
    match jsonrpc::parse(bytes).map_err(|e| e.reason())? {
        Parsed::Single(msg) => deliver(msg, bytes.len() as u64, Some(bytes)),
        Parsed::Batch(items) => {
            // Sizes of batch elements are their share of the line.
            let share = bytes.len() as u64 / items.len().max(1) as u64;
            let mut parsed = 0;
            for item in items {
                match item {
                    Ok(msg) => {
                        parsed += 1;
                        deliver(msg, share, None);
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
                return Err("not_jsonrpc");
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    //! The pipeline driven by a synthetic event generator (fake clock, advancing offsets):
    //! pairing across processes, losses, stream reuse, without a kernel.

    use mcp_probe_common::{EventHeader, Syscall};
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;
    use crate::{correlate::CorrelatorConfig, decode::encode as encode_record, metrics::Metrics};

    /// Streams the pipeline turned off, and pids the test pretends have exited.
    #[derive(Default)]
    struct Ignored(Vec<u64>, Vec<u32>);
    impl StreamControl for Ignored {
        fn ignore_stream(&mut self, stream_id: u64) {
            self.0.push(stream_id);
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
        fn process_exists(&self, tgid: u32) -> bool {
            !self.1.contains(&tgid)
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
                offsets: HashMap::default(),
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
                detail: 0,
            };
            *offset += bytes.len() as u64;
            encode_record(&header, bytes)
        }

        /// The kernel's report that a watched process exited.
        fn exit(&mut self, tgid: u32) -> Vec<u8> {
            self.now_ns += 1_000_000;
            let header = EventHeader {
                kind: EventKind::ProcessExit as u32,
                syscall: Syscall::Write as u32,
                ts_ns: self.now_ns,
                tgid,
                tid: tgid,
                comm: [0; 16],
                stream_id: 0,
                ino: 0,
                stream_kind: 0,
                fd: 0,
                stream_offset: 0,
                syscall_len: 0,
                syscall_offset: 0,
                captured_len: 0,
                detail: 0,
            };
            encode_record(&header, b"")
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
        pipeline_with(
            PipelineConfig {
                max_message_bytes: 1 << 20,
                ..PipelineConfig::default()
            },
            CorrelatorConfig::default(),
        )
    }

    fn pipeline_with(
        config: PipelineConfig,
        correlator: CorrelatorConfig,
    ) -> (Pipeline<Ignored>, Registry) {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let correlator = Correlator::new(correlator, metrics.clone());
        (
            Pipeline::new(
                config,
                correlator,
                Health::new(
                    metrics.health.clone(),
                    std::sync::Arc::new(crate::host::ProcHost),
                ),
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
            value(
                &registry,
                "mcp_probe_discarded_bytes_total{reason=\"resync\"}"
            ),
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
            value(
                &registry,
                "mcp_probe_discarded_bytes_total{reason=\"resync\"}"
            ),
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

    fn ping(id: u32) -> Vec<u8> {
        format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"ping\"}}\n").into_bytes()
    }

    fn pong(id: u32) -> Vec<u8> {
        format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{}}}}\n").into_bytes()
    }

    #[test]
    fn an_error_head_whose_body_was_never_read_still_answers_the_request() {
        let (mut p, registry) = pipeline();
        let mut g = Generator::new();
        let conn = (0xffff_0000_0006_0000, 401);
        let body = b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{}}";
        let mut post = format!(
            "POST /mcp HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        post.extend_from_slice(body);
        p.on_record_bytes(&g.record(CLIENT, "client", conn, Syscall::Write, &post));
        // The head of a 401 arrives; the client gives up and closes without its body.
        let head = b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n";
        p.on_record_bytes(&g.record(CLIENT, "client", conn, Syscall::Read, head));
        let empty = g.record(CLIENT, "client", conn, Syscall::Read, b"");
        let r = decode(&empty).expect("record");
        let close = EventHeader {
            kind: EventKind::Close as u32,
            ..raw_header(&r)
        };
        p.on_record_bytes(&encode_record(&close, b""));
        p.sweep(g.now_ns + 10_000_000_000);
        assert_eq!(
            value(&registry, "mcp_client_responses_total{mcp_server_name=\"unknown\",mcp_method_name=\"initialize\",gen_ai_tool_name=\"\",gen_ai_prompt_name=\"\",outcome=\"error\",error_type=\"http_401\""),
            1.0
        );
        assert_eq!(
            value(&registry, "mcp_client_request_cancellations_total"),
            0.0
        );
    }

    /// The header of a decoded record, to build another from it.
    fn raw_header(r: &Record<'_>) -> EventHeader {
        EventHeader {
            kind: r.kind as u32,
            syscall: r.syscall as u32,
            ts_ns: r.ts_ns,
            tgid: r.tgid,
            tid: r.tid,
            comm: r.comm,
            stream_id: r.stream_id,
            ino: r.ino,
            stream_kind: r.stream_kind as u32,
            fd: r.fd,
            stream_offset: r.stream_offset,
            syscall_len: r.syscall_len,
            syscall_offset: r.syscall_offset,
            captured_len: r.payload.len() as u32,
            detail: r.detail,
        }
    }

    #[test]
    fn max_streams_evicts_the_least_recently_active_and_counts_their_bytes() {
        let (mut p, registry) = pipeline_with(
            PipelineConfig {
                max_streams: 4,
                ..PipelineConfig::default()
            },
            CorrelatorConfig::default(),
        );
        let mut g = Generator::new();
        // Six pipes, each with the first 10 bytes of a message.
        for n in 0..6u64 {
            let pipe = (0xffff_0000_0001_0000 + n * 0x1000, 100 + n);
            p.on_record_bytes(&g.record(CLIENT, "client", pipe, Syscall::Write, b"{\"id\":1,\"a"));
        }
        assert!(p.views.len() <= 4, "{} views", p.views.len());
        assert_eq!(
            value(&registry, "mcp_probe_evictions_total{what=\"stream\"}"),
            2.0
        );
        // The two oldest went, with their partial messages.
        assert_eq!(
            value(
                &registry,
                "mcp_probe_discarded_bytes_total{reason=\"evicted\"}"
            ),
            20.0
        );
        // A stream that comes back starts mid-message and resynchronises.
        let first = (0xffff_0000_0001_0000, 100);
        p.on_record_bytes(&g.record(CLIENT, "client", first, Syscall::Write, b"\":2}\n"));
        p.on_record_bytes(&g.record(CLIENT, "client", first, Syscall::Write, &ping(3)));
        assert_eq!(value(&registry, "mcp_probe_messages_total"), 1.0);
        assert_eq!(value(&registry, "mcp_probe_parse_errors_total"), 0.0);
    }

    #[test]
    fn the_buffer_budget_sheds_the_message_that_outgrows_it() {
        let (mut p, registry) = pipeline_with(
            PipelineConfig {
                max_buffered_bytes: 4096,
                ..PipelineConfig::default()
            },
            CorrelatorConfig::default(),
        );
        let mut g = Generator::new();
        let a = (0xffff_0000_0002_0000, 201);
        let b = (0xffff_0000_0003_0000, 202);
        // A holds 3000 bytes of a message; B then grows past what is left.
        let mut big_a =
            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\",\"params\":{\"p\":\"".to_vec();
        big_a.resize(3000, b'a');
        p.on_record_bytes(&g.record(CLIENT, "client", a, Syscall::Write, &big_a));
        let mut big_b = big_a.clone();
        big_b.resize(2000, b'b');
        p.on_record_bytes(&g.record(CLIENT, "client", b, Syscall::Write, &big_b));
        assert!(p.buffered_total <= 4096 + 4096, "{}", p.buffered_total);
        assert_eq!(
            value(
                &registry,
                "mcp_probe_evictions_total{what=\"message_buffer\"}"
            ),
            1.0
        );
        // B ends: sized exactly, not parsed. A ends: parsed.
        p.on_record_bytes(&g.record(CLIENT, "client", b, Syscall::Write, b"\"}}\n"));
        p.on_record_bytes(&g.record(CLIENT, "client", a, Syscall::Write, b"\"}}\n"));
        assert_eq!(value(&registry, "mcp_probe_oversized_messages_total"), 1.0);
        assert_eq!(
            value(&registry, "mcp_probe_oversized_message_size_bytes_sum"),
            2003.0
        );
        assert_eq!(value(&registry, "mcp_probe_messages_total"), 1.0);
        p.sweep(g.now_ns);
        assert_eq!(
            p.buffered_total,
            p.views
                .values()
                .map(|v| v.framing.buffered_bytes())
                .sum::<usize>()
        );
    }

    #[test]
    fn a_writer_that_exits_mid_message_leaves_nothing_behind() {
        let (mut p, registry) = pipeline();
        let mut g = Generator::new();
        exchange(&mut g, &mut p, &ping(1), &pong(1));
        let half = b"{\"jsonrpc\":\"2.0\",\"id\":2,\"meth";
        p.on_record_bytes(&g.record(CLIENT, "client", TO_SERVER, Syscall::Write, half));
        p.on_record_bytes(&g.record(SERVER, "weather", TO_SERVER, Syscall::Read, half));
        // The client dies; the kernel reports it.
        p.control.1.push(CLIENT);
        p.on_record_bytes(&g.exit(CLIENT));
        assert_eq!(
            value(
                &registry,
                "mcp_probe_parse_errors_total{reason=\"truncated\"}"
            ),
            1.0
        );
        // The server's read side of that pipe is given up once it has waited long enough.
        p.sweep(g.now_ns + ORPHAN_AFTER_NS / 2);
        assert_eq!(
            value(
                &registry,
                "mcp_probe_parse_errors_total{reason=\"truncated\"}"
            ),
            1.0
        );
        p.sweep(g.now_ns + 2 * ORPHAN_AFTER_NS);
        assert_eq!(
            value(
                &registry,
                "mcp_probe_parse_errors_total{reason=\"truncated\"}"
            ),
            2.0
        );
        assert_eq!(
            value(
                &registry,
                "mcp_probe_discarded_bytes_total{reason=\"process_exit\"}"
            ),
            2.0 * half.len() as f64
        );
        assert_eq!(p.buffered_total, 0);
        assert_eq!(value(&registry, "mcp_probe_buffered_bytes"), 0.0);
        // The first exchange was counted; nothing was glued to anything.
        assert_eq!(value(&registry, "mcp_server_requests_total"), 1.0);
        assert_eq!(
            value(
                &registry,
                "mcp_probe_parse_errors_total{reason=\"invalid_json\"}"
            ),
            0.0
        );
    }

    #[test]
    fn a_reused_pid_does_not_inherit_the_old_process_name() {
        let (mut p, registry) = pipeline();
        let mut g = Generator::new();
        let init = b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{}}\n";
        let announced =
            b"{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"serverInfo\":{\"name\":\"alpha\"}}}\n";
        exchange(&mut g, &mut p, init, announced);
        exchange(&mut g, &mut p, &ping(1), &pong(1));
        assert_eq!(
            value(
                &registry,
                "mcp_server_requests_total{mcp_server_name=\"alpha\""
            ),
            2.0
        );
        // The server exits and a new process gets its pid: it speaks without a handshake.
        p.on_record_bytes(&g.exit(SERVER));
        let (in2, out2) = ((0xffff_0000_0004_0000, 301), (0xffff_0000_0005_0000, 302));
        p.on_record_bytes(&g.record(CLIENT, "client", in2, Syscall::Write, &ping(7)));
        p.on_record_bytes(&g.record(SERVER, "beta", in2, Syscall::Read, &ping(7)));
        p.on_record_bytes(&g.record(SERVER, "beta", out2, Syscall::Write, &pong(7)));
        p.on_record_bytes(&g.record(CLIENT, "client", out2, Syscall::Read, &pong(7)));
        p.sweep(g.now_ns + 10_000_000_000);
        assert_eq!(
            value(
                &registry,
                "mcp_server_requests_total{mcp_server_name=\"alpha\""
            ),
            2.0
        );
        assert_eq!(
            value(
                &registry,
                "mcp_server_requests_total{mcp_server_name=\"beta\""
            ),
            1.0
        );
    }

    #[test]
    fn pending_requests_per_process_are_bounded_and_evictions_are_not_outcomes() {
        let (mut p, registry) = pipeline_with(
            PipelineConfig::default(),
            CorrelatorConfig {
                max_pending_per_process: 3,
                ..CorrelatorConfig::default()
            },
        );
        let mut g = Generator::new();
        for id in 1..=5 {
            p.on_record_bytes(&g.record(CLIENT, "client", TO_SERVER, Syscall::Write, &ping(id)));
        }
        assert_eq!(
            value(
                &registry,
                "mcp_probe_evictions_total{what=\"pending_request\"}"
            ),
            2.0
        );
        assert_eq!(value(&registry, "mcp_probe_pending_requests"), 3.0);
        // Answers to the evicted ones are late; the others pair.
        for id in 1..=5 {
            p.on_record_bytes(&g.record(CLIENT, "client", TO_CLIENT, Syscall::Read, &pong(id)));
        }
        p.sweep(g.now_ns + 10_000_000_000);
        assert_eq!(value(&registry, "mcp_probe_late_responses_total"), 2.0);
        assert_eq!(value(&registry, "mcp_client_responses_total"), 3.0);
        assert_eq!(value(&registry, "mcp_client_request_timeouts_total"), 0.0);
        assert_eq!(value(&registry, "mcp_probe_unpaired_responses_total"), 0.0);
    }

    #[test]
    fn series_and_error_types_are_capped() {
        let (mut p, registry) = pipeline_with(
            PipelineConfig::default(),
            CorrelatorConfig {
                max_series: 2,
                max_error_types: 1,
                ..CorrelatorConfig::default()
            },
        );
        let mut g = Generator::new();
        for n in 0..5u32 {
            let call = format!("{{\"jsonrpc\":\"2.0\",\"id\":{n},\"method\":\"tools/call\",\"params\":{{\"name\":\"t{n}\"}}}}\n");
            let err = format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{n},\"error\":{{\"code\":{},\"message\":\"x\"}}}}\n",
                -32000 - n as i64
            );
            exchange(&mut g, &mut p, call.as_bytes(), err.as_bytes());
        }
        p.sweep(g.now_ns + 10_000_000_000);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        let series = text
            .lines()
            .filter(|l| l.starts_with("mcp_client_requests_total{"))
            .count();
        assert_eq!(series, 3, "two admitted series and _other:\n{text}");
        assert_eq!(value(&registry, "mcp_client_requests_total"), 5.0);
        assert_eq!(
            value(
                &registry,
                "mcp_client_requests_total{mcp_server_name=\"weather\",mcp_method_name=\"_other\""
            ),
            3.0
        );
        // One error code admitted; the others are _other.
        assert_eq!(
            value(&registry, "mcp_client_responses_total{mcp_server_name=\"weather\",mcp_method_name=\"tools/call\",gen_ai_tool_name=\"t1\",gen_ai_prompt_name=\"\",outcome=\"error\",error_type=\"_other\""),
            1.0
        );
        assert!(
            value(
                &registry,
                "mcp_probe_label_overflow_total{label=\"series\"}"
            ) >= 6.0
        );
    }
}
