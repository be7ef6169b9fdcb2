//! Stitching: pairs each response with its request and turns completed exchanges into
//! metrics.
//!
//! Pairing is per observing process and direction, never a global id table: a request a
//! process *wrote* is answered by a response the same process *reads*, and vice versa.
//! When one process talks to several peers with the same ids (a client with several
//! servers), the candidate on the same stream, or on a stream of the same server, wins.
//!
//! A request is counted once its outcome is known (response, cancellation, timeout), so
//! every series of one exchange carries the same labels, including the server's name,
//! which is often learned from the handshake's response.

use std::collections::VecDeque;

use crate::{HashMap, HashSet};

use mcp_probe_common::Direction;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use crate::{
    identity::Processes,
    metrics::{
        ClientLabels, ConnectionErrorLabels, HttpStatusLabels, LabelCap, LabelNameLabels, Metrics,
        NotificationLabels, OperationLabels, RequestLabels, ResponseLabels, SeriesCap,
        ServerSideLabels, SessionLabels, SideMetrics, TransportLabels, UserLabels, OTHER,
    },
    model::{opposite, Observation, ServerRef, Side, StreamKey, Transport},
    protocols::jsonrpc::{Id, Message},
    sessions::{Role, Session, SessionId, SessionKey, Sessions, IDLE_NS},
    sinks::{self, CompletedRequest, NotificationEvent, RequestContext, Sinks},
};

/// Requests sent by the MCP server to its client (everything else goes client -> server).
const SERVER_TO_CLIENT_REQUESTS: &[&str] =
    &["roots/list", "sampling/createMessage", "elicitation/create"];
/// Notifications sent by the MCP server.
const SERVER_NOTIFICATIONS: &[&str] = &[
    "notifications/message",
    "notifications/resources/updated",
    "notifications/resources/list_changed",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/elicitation/complete",
];

#[derive(Debug)]
struct Pending {
    /// Arrival order within the correlator (for evicting the oldest).
    seq: u64,
    stream: StreamKey,
    method: String,
    tool: Option<String>,
    prompt: Option<String>,
    ts_ns: u64,
    size: u64,
    transport: Transport,
    /// The MCP server of this exchange is the observing process itself.
    server_is_observer: bool,
    session: Option<Box<str>>,
    /// Who sent the request (`cred:…` for HTTP credentials, `uid:N` for local clients),
    /// kept only where per-user requests are counted: in the server's own view, or in the
    /// client's when the server is not on this host.
    user: Option<String>,
    /// What only the sinks need (request log, spans); `None` when no sink is on.
    context: Option<Box<RequestContext>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PendingKey {
    tgid: u32,
    /// Direction of the *request* for the observing process.
    direction: Direction,
}

/// The requests one process sent (or received) that wait for their responses: the pairing
/// domain, bounded by `max_pending_per_process`.
#[derive(Debug, Default)]
struct Channel {
    by_id: HashMap<Id, Vec<Pending>>,
    /// `(seq, id)` in arrival order. Entries of requests already answered are skipped when
    /// met, and the queue is rebuilt when they outnumber the live ones.
    order: VecDeque<(u64, Id)>,
    len: usize,
}

impl Channel {
    fn compact(&mut self) {
        let mut live: Vec<(u64, Id)> = self
            .by_id
            .iter()
            .flat_map(|(id, list)| list.iter().map(move |p| (p.seq, id.clone())))
            .collect();
        live.sort_unstable_by_key(|(seq, _)| *seq);
        self.order = live.into();
    }
}

/// A response read before the record of its request arrived. A write is reported when the
/// syscall returns, and a write that blocked on a full pipe returns after the peer has
/// already read the first requests and answered them, so their responses come first. Held
/// for [`EARLY_HOLD_NS`], then counted as unpaired.
#[derive(Debug)]
struct EarlyResponse {
    tgid: u32,
    comm: String,
    direction: Direction,
    stream: StreamKey,
    transport: Transport,
    peer: Option<ServerRef>,
    session: Option<String>,
    user: Option<String>,
    ts_ns: u64,
    size: u64,
    outcome: Outcome,
    payload: Option<Box<str>>,
}

/// How long (kernel time) what was learned about an exited process is kept for its peers.
const PURGE_AFTER_NS: u64 = 2_000_000_000;
/// How long (kernel time) a response may wait for its request's record.
const EARLY_HOLD_NS: u64 = 1_000_000_000;
/// Responses held at once waiting for their requests.
const MAX_EARLY: usize = 4096;

/// Settings of the correlator.
#[derive(Debug, Clone)]
pub struct CorrelatorConfig {
    pub request_timeout_ns: u64,
    pub max_methods: usize,
    pub max_tools: usize,
    pub max_prompts: usize,
    pub max_servers: usize,
    /// Requests waiting for a response, across all processes.
    pub max_pending: usize,
    /// Requests waiting for a response, per process and direction.
    pub max_pending_per_process: usize,
    pub max_clients: usize,
    pub max_users: usize,
    /// Distinct `error_type` values (JSON-RPC error codes come from traffic).
    pub max_error_types: usize,
    /// Label combinations (series) per family of per-request metrics, per side.
    pub max_series: usize,
    /// Sessions tracked at once.
    pub max_sessions: usize,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        Self {
            request_timeout_ns: 300 * 1_000_000_000,
            max_methods: 256,
            max_tools: 1024,
            max_prompts: 256,
            max_servers: 256,
            max_pending: 100_000,
            max_pending_per_process: 10_000,
            max_clients: 256,
            max_users: 1024,
            max_error_types: 128,
            max_series: 5_000,
            max_sessions: 100_000,
        }
    }
}

/// What happened to a request.
#[derive(Debug, Clone)]
enum Ending {
    Response {
        outcome: Outcome,
        size: u64,
        duration_s: f64,
        /// The captured response (payload capture only).
        payload: Option<Box<str>>,
    },
    /// Cancelled at `at_ns` (a cancellation, a closed connection, the process's exit).
    Cancelled {
        at_ns: u64,
    },
    Timeout,
}

/// Something to count once the server's name is settled.
#[derive(Debug)]
enum Finished {
    Exchange {
        side: Side,
        pending: Pending,
        ending: Ending,
    },
    Notification {
        side: Side,
        method: String,
        transport: Transport,
        tgid: u32,
        ts_ns: u64,
        size: u64,
    },
    ConnectionError {
        side: Side,
        reason: &'static str,
        transport: Transport,
    },
    /// An HTTP response status; `side` is the process that read (client) or wrote (server) it.
    HttpStatus {
        side: Side,
        status: u16,
        transport: Transport,
    },
}

/// The metric handles of one exchange series (side, labels, outcome): clones share the
/// counters and histograms of the families, so counting a request through them costs one
/// map lookup instead of one per family.
#[derive(Clone)]
struct SeriesHandles {
    requests: Counter,
    request_size: Histogram,
    ending: EndingHandles,
}

#[derive(Clone)]
enum EndingHandles {
    /// Cancellations or timeouts.
    Counter(Counter),
    Response {
        responses: Counter,
        response_size: Histogram,
        duration: Histogram,
    },
}

/// Exchanges of a server whose name is not settled yet: the handshake is still going on
/// (e.g. `server/discover` refused, then `initialize` announces `serverInfo`).
struct Unsettled {
    since_ns: u64,
    finished: Vec<Finished>,
}

/// Methods that belong to the handshake: their exchanges wait for the server's name.
const HANDSHAKE_METHODS: &[&str] = &["server/discover", "initialize"];
/// An unsettled server gets its derived name after this long (ns).
const SETTLE_AFTER_NS: u64 = 5_000_000_000;
/// Most exchanges held per unsettled server.
const MAX_UNSETTLED: usize = 256;

pub struct Correlator {
    config: CorrelatorConfig,
    metrics: Metrics,
    pub processes: Processes,
    pending: HashMap<PendingKey, Channel>,
    pending_count: usize,
    next_seq: u64,
    /// Requests finished without a response (cancelled or timed out): a late response is
    /// counted as late, not as unpaired.
    finished_early: HashMap<(PendingKey, Id), u64>,
    finished_early_order: VecDeque<(PendingKey, Id)>,
    early: HashMap<(PendingKey, Id), Vec<EarlyResponse>>,
    /// `(ts, key, id)` of the held responses, oldest first (entries of responses paired
    /// meanwhile are skipped when met).
    early_order: VecDeque<(u64, PendingKey, Id)>,
    early_count: usize,
    /// Processes that exited, with when: forgotten after [`PURGE_AFTER_NS`].
    exited: HashMap<u32, u64>,
    /// Stream -> the MCP server on that stream, learned from traffic.
    server_of_stream: HashMap<StreamKey, ServerRef>,
    /// `serverInfo.name` announced by each server.
    announced: HashMap<ServerRef, String>,
    /// Servers whose name will not change any more (announced, or used past the handshake).
    settled: HashSet<ServerRef>,
    unsettled: HashMap<ServerRef, Unsettled>,
    sessions: Sessions,
    /// Pipe -> the process writing into it (the client, for a server's stdin).
    writers: HashMap<StreamKey, u32>,
    /// Client process -> uid (read once per process).
    uids: HashMap<u32, u32>,
    users: LabelCap,
    methods: LabelCap,
    clients: LabelCap,
    tools: LabelCap,
    prompts: LabelCap,
    servers: LabelCap,
    errors: LabelCap,
    /// Series of the per-request families, per side (client, server).
    exchange_series: [SeriesCap; 2],
    notification_series: [SeriesCap; 2],
    user_series: SeriesCap,
    /// Handles of the admitted exchange series, by a hash of their labels.
    series: HashMap<u64, SeriesHandles>,
    series_hasher: foldhash::fast::RandomState,
    /// Where completed requests go besides the metrics (request log, OTLP spans).
    sinks: Option<Sinks>,
    /// Client process -> the `clientInfo.name` it sent (only with sinks), for the client
    /// side of a session whose handshake came before its server was known.
    client_names: HashMap<u32, String>,
}

const FINISHED_EARLY_CAP: usize = 10_000;
/// Pipes whose writer is remembered.
const MAX_WRITERS: usize = 65_536;

impl Correlator {
    pub fn new(config: CorrelatorConfig, metrics: Metrics) -> Self {
        Self {
            methods: LabelCap::new("mcp_method_name", config.max_methods),
            clients: LabelCap::new("client_name", config.max_clients),
            errors: LabelCap::new("error_type", config.max_error_types),
            exchange_series: [
                SeriesCap::new(config.max_series),
                SeriesCap::new(config.max_series),
            ],
            notification_series: [
                SeriesCap::new(config.max_series),
                SeriesCap::new(config.max_series),
            ],
            user_series: SeriesCap::new(config.max_series),
            series: HashMap::default(),
            series_hasher: foldhash::fast::RandomState::default(),
            tools: LabelCap::new("gen_ai_tool_name", config.max_tools),
            prompts: LabelCap::new("gen_ai_prompt_name", config.max_prompts),
            servers: LabelCap::new("mcp_server_name", config.max_servers),
            metrics,
            processes: Processes::new(std::sync::Arc::new(crate::host::ProcHost)),
            pending: HashMap::default(),
            pending_count: 0,
            next_seq: 0,
            finished_early: HashMap::default(),
            finished_early_order: VecDeque::new(),
            early: HashMap::default(),
            early_order: VecDeque::new(),
            early_count: 0,
            exited: HashMap::default(),
            server_of_stream: HashMap::default(),
            announced: HashMap::default(),
            settled: HashSet::default(),
            unsettled: HashMap::default(),
            sessions: Sessions::new(config.max_sessions),
            writers: HashMap::default(),
            uids: HashMap::default(),
            users: LabelCap::new("user", config.max_users),
            sinks: None,
            client_names: HashMap::default(),
            config,
        }
    }

    /// Completed requests (and notifications) also go to `sinks`.
    pub fn with_sinks(mut self, sinks: Option<Sinks>) -> Self {
        self.sinks = sinks;
        self
    }

    /// Handles one parsed message.
    pub fn on_message(&mut self, obs: &Observation<'_>, msg: Message<'_>) {
        self.on_message_bytes(obs, msg, None);
    }

    /// Handles one parsed message whose JSON text is `bytes` (for payload capture).
    pub fn on_message_bytes(
        &mut self,
        obs: &Observation<'_>,
        msg: Message<'_>,
        bytes: Option<&[u8]>,
    ) {
        let payload = match (&self.sinks, bytes) {
            (Some(sinks), Some(bytes)) => sinks.capture(bytes),
            _ => None,
        };
        self.processes.observe(obs.tgid, obs.comm);
        if obs.direction == Direction::Write
            && obs.transport == Transport::Pipe
            && self.writers.len() < MAX_WRITERS
        {
            self.writers.insert(obs.stream, obs.tgid);
        }
        match msg {
            Message::Request { id, method, info } => {
                let server_to_client = SERVER_TO_CLIENT_REQUESTS.contains(&method.as_ref());
                // The observing process is the MCP server if it receives a client request
                // or sends a server request.
                let server_is_observer = server_to_client == (obs.direction == Direction::Write);
                // An HTTP session starts with the answer to `initialize`, which names it.
                let mut session_client = None;
                if !(method == "initialize"
                    && obs.session.is_none()
                    && obs.transport != Transport::Pipe)
                {
                    let session = self.touch_session(obs, server_is_observer);
                    if let (Some(key), Some(client)) = (&session, info.client_name.as_deref()) {
                        let client = self
                            .clients
                            .value(client, &self.metrics.agent.label_overflow);
                        self.sessions.name_client(key, client);
                    }
                    if self.sinks.is_some() {
                        session_client = session
                            .as_ref()
                            .and_then(|k| self.sessions.client_name(k))
                            .map(str::to_owned);
                    }
                }
                if server_is_observer {
                    self.server_of_stream
                        .insert(obs.stream, ServerRef::Process(obs.tgid));
                } else {
                    // Remember the server this client's socket is connected to, in case
                    // the request ends without a response.
                    let _ = self.server_of(obs, false, obs.stream);
                }
                let overflow = &self.metrics.agent.label_overflow;
                let method_label = self.methods.value(&method, overflow);
                let (tool, prompt) = match (method.as_ref(), info.name.as_deref()) {
                    ("tools/call", Some(n)) => (Some(self.tools.value(n, overflow)), None),
                    ("prompts/get", Some(n)) => (None, Some(self.prompts.value(n, overflow))),
                    _ => (None, None),
                };
                // Once per request: by the server, or by the client when the server is not on
                // this host (a loopback or unix-socket server is, even when its process could
                // not be identified, e.g. without CAP_SYS_PTRACE).
                let counts_users = server_is_observer
                    || matches!(
                        self.server_of(obs, false, obs.stream),
                        Some(ServerRef::Endpoint(e)) if !endpoint_is_local(&e)
                    );
                let user = if counts_users {
                    self.user_of(obs, server_is_observer)
                } else {
                    None
                };
                let context = if self.sinks.is_some() {
                    let client_pid = if server_is_observer {
                        self.writers.get(&obs.stream).copied()
                    } else {
                        Some(obs.tgid)
                    };
                    let client_name = info.client_name.as_deref().map(|c| sinks::bounded(c, 128));
                    if let (false, Some(name)) = (server_is_observer, &client_name) {
                        if self.client_names.len() < MAX_WRITERS {
                            self.client_names.insert(obs.tgid, name.clone());
                        }
                    }
                    let own = (!server_is_observer)
                        .then(|| self.client_names.get(&obs.tgid).cloned())
                        .flatten();
                    Some(Box::new(RequestContext {
                        pid: obs.tgid,
                        client_pid,
                        request_id: sinks::id_text(&id),
                        client_name: client_name.or(session_client).or(own),
                        user: self.user_raw(obs, server_is_observer),
                        protocol_version: info
                            .protocol_version
                            .as_deref()
                            .map(|v| sinks::bounded(v, 64)),
                        resource: info.uri.as_deref().map(sinks::payload::resource_uri),
                        trace: info
                            .traceparent
                            .as_deref()
                            .and_then(sinks::TraceParent::parse),
                        tracestate: info.tracestate.as_deref().map(|t| sinks::bounded(t, 512)),
                        payload,
                    }))
                } else {
                    None
                };
                let key = PendingKey {
                    tgid: obs.tgid,
                    direction: obs.direction,
                };
                self.add_pending(
                    key,
                    id.clone(),
                    Pending {
                        seq: 0,
                        stream: obs.stream,
                        method: method_label,
                        tool,
                        prompt,
                        ts_ns: obs.ts_ns,
                        size: obs.size,
                        transport: obs.transport,
                        server_is_observer,
                        session: obs.session.map(Box::from),
                        user,
                        context,
                    },
                );
                self.answer_early(key, id);
            }
            Message::Notification { method, info } => {
                if method == "notifications/cancelled" {
                    if let Some(id) = info.cancelled_id {
                        self.on_cancel(obs, id);
                    }
                }
                let from_server = SERVER_NOTIFICATIONS.contains(&method.as_ref());
                let server_is_observer = from_server == (obs.direction == Direction::Write);
                let server = self.server_of(obs, server_is_observer, obs.stream);
                let _ = self.touch_session(obs, server_is_observer);
                let method = self
                    .methods
                    .value(&method, &self.metrics.agent.label_overflow);
                let finished = Finished::Notification {
                    side: Side::of(obs.direction),
                    method,
                    transport: obs.transport,
                    tgid: obs.tgid,
                    ts_ns: obs.ts_ns,
                    size: obs.size,
                };
                self.finish(server, obs.ts_ns, finished);
            }
            Message::Response { id, info } => {
                if let Some(name) = info.server_name.as_deref() {
                    // Announced by the process that wrote it, i.e. the server of the stream.
                    let announcer = if obs.direction == Direction::Write {
                        Some(ServerRef::Process(obs.tgid))
                    } else {
                        self.server_of(obs, false, obs.stream)
                    };
                    if let Some(server) = announcer {
                        self.announced.insert(server.clone(), name.to_owned());
                        self.settle(&server);
                    }
                }
                let outcome = if info.is_error {
                    Outcome::ToolError
                } else {
                    Outcome::Ok
                };
                self.on_response(obs, Some(id), outcome, payload);
            }
            Message::Error { id, code } => {
                self.on_response(obs, id, Outcome::Error(code), payload);
            }
        }
    }

    fn add_pending(&mut self, key: PendingKey, id: Id, mut pending: Pending) {
        if self.pending_count >= self.config.max_pending {
            // Bounded: the oldest request of the busiest channel gives way.
            let busiest = self
                .pending
                .iter()
                .max_by_key(|(_, c)| c.len)
                .map(|(k, _)| *k);
            if let Some(busiest) = busiest {
                self.evict_oldest(busiest);
            }
        }
        if self
            .pending
            .get(&key)
            .is_some_and(|c| c.len >= self.config.max_pending_per_process)
        {
            self.evict_oldest(key);
        }
        pending.seq = self.next_seq;
        self.next_seq += 1;
        let channel = self.pending.entry(key).or_default();
        channel.order.push_back((pending.seq, id.clone()));
        channel.by_id.entry(id).or_default().push(pending);
        channel.len += 1;
        if channel.order.len() > 2 * channel.len + 64 {
            channel.compact();
        }
        self.pending_count += 1;
        self.metrics
            .agent
            .pending_requests
            .set(self.pending_count as i64);
    }

    /// Gives up on the oldest request of a channel: counted in `mcp_probe_evictions_total`,
    /// not as an MCP outcome (none is known). A response that still comes is late.
    fn evict_oldest(&mut self, key: PendingKey) {
        loop {
            let Some((seq, id)) = self.pending.get_mut(&key).and_then(|c| c.order.pop_front())
            else {
                return;
            };
            let index = self
                .pending
                .get(&key)
                .and_then(|c| c.by_id.get(&id))
                .and_then(|list| list.iter().position(|p| p.seq == seq));
            if let Some(p) = index.and_then(|i| self.take_at(key, &id, i)) {
                self.metrics.agent.evicted("pending_request", 1);
                self.remember_finished_early(key, id, p.ts_ns);
                return;
            }
        }
    }

    /// Index of the best candidate for `id`: same stream (sockets), else a stream of the
    /// same server (a client with several servers reusing ids), else the oldest.
    fn candidate(
        &self,
        key: PendingKey,
        id: &Id,
        stream: StreamKey,
        session: Option<&str>,
    ) -> Option<usize> {
        let list = self.pending.get(&key)?.by_id.get(id)?;
        let same_session = |p: &Pending| session.is_some() && p.session.as_deref() == session;
        let server = self.server_of_stream.get(&stream);
        let same_server =
            |p: &Pending| server.is_some() && self.server_of_stream.get(&p.stream) == server;
        Some(
            list.iter()
                .position(|p| p.stream == stream)
                .or_else(|| list.iter().position(same_session))
                .or_else(|| list.iter().position(same_server))
                .unwrap_or(0),
        )
    }

    fn take_at(&mut self, key: PendingKey, id: &Id, index: usize) -> Option<Pending> {
        let channel = self.pending.get_mut(&key)?;
        let list = channel.by_id.get_mut(id)?;
        if index >= list.len() {
            return None;
        }
        let p = list.remove(index);
        if list.is_empty() {
            channel.by_id.remove(id);
        }
        channel.len -= 1;
        if channel.len == 0 {
            self.pending.remove(&key);
        }
        self.pending_count -= 1;
        self.metrics
            .agent
            .pending_requests
            .set(self.pending_count as i64);
        Some(p)
    }

    fn take(&mut self, key: PendingKey, id: &Id, obs: &Observation<'_>) -> Option<Pending> {
        let index = self.candidate(key, id, obs.stream, obs.session)?;
        self.take_at(key, id, index)
    }

    fn on_response(
        &mut self,
        obs: &Observation<'_>,
        id: Option<Id>,
        outcome: Outcome,
        payload: Option<Box<str>>,
    ) {
        // The request went the other way for this process.
        let key = PendingKey {
            tgid: obs.tgid,
            direction: opposite(obs.direction),
        };
        let Some(id) = id else {
            self.unpaired(obs);
            return;
        };
        let Some(p) = self.take(key, &id, obs) else {
            if self.finished_early.remove(&(key, id.clone())).is_some() {
                // The answer to a request already counted as cancelled or timed out.
                self.metrics.agent.late_responses.inc();
            } else {
                self.hold_early(obs, key, id, outcome, payload);
            }
            return;
        };
        if obs.ts_ns.saturating_sub(p.ts_ns) > self.config.request_timeout_ns {
            // Past the deadline whether or not the sweep has run yet: a timeout, answered late.
            self.finish_early(key, id.clone(), p, Ending::Timeout);
            self.finished_early.remove(&(key, id));
            self.metrics.agent.late_responses.inc();
            return;
        }
        if p.server_is_observer {
            // The process that received the request answers it on this stream.
            self.server_of_stream
                .insert(obs.stream, ServerRef::Process(obs.tgid));
        } else if let Some(server) = self.server_of_stream.get(&p.stream).cloned() {
            self.server_of_stream.entry(obs.stream).or_insert(server);
        }
        let server = self.server_of(obs, p.server_is_observer, p.stream);
        let _ = self.touch_session(obs, p.server_is_observer);
        let handshake = HANDSHAKE_METHODS.contains(&p.method.as_str());
        let ending = Ending::Response {
            outcome,
            size: obs.size,
            duration_s: obs.ts_ns.saturating_sub(p.ts_ns) as f64 / 1e9,
            payload,
        };
        let finished = Finished::Exchange {
            side: Side::of(key.direction),
            pending: p,
            ending,
        };
        if !handshake {
            // Past the handshake: whatever name the server has now is its name.
            if let Some(server) = &server {
                self.settle(server);
            }
        }
        self.finish(server, obs.ts_ns, finished);
    }

    /// Holds a response whose request has not been seen (yet).
    fn hold_early(
        &mut self,
        obs: &Observation<'_>,
        key: PendingKey,
        id: Id,
        outcome: Outcome,
        payload: Option<Box<str>>,
    ) {
        self.expire_early(obs.ts_ns);
        if self.early_count >= MAX_EARLY {
            self.expire_early(u64::MAX);
        }
        self.early
            .entry((key, id.clone()))
            .or_default()
            .push(EarlyResponse {
                tgid: obs.tgid,
                comm: obs.comm.to_owned(),
                direction: obs.direction,
                stream: obs.stream,
                transport: obs.transport,
                peer: obs.peer.cloned(),
                session: obs.session.map(str::to_owned),
                user: obs.user.map(str::to_owned),
                ts_ns: obs.ts_ns,
                size: obs.size,
                outcome,
                payload,
            });
        self.early_order.push_back((obs.ts_ns, key, id));
        self.early_count += 1;
        if self.early_order.len() > 2 * self.early_count + 64 {
            let early = &self.early;
            self.early_order.retain(|(ts, k, id)| {
                early
                    .get(&(*k, id.clone()))
                    .is_some_and(|l| l.iter().any(|e| e.ts_ns == *ts))
            });
        }
    }

    /// The request `key`/`id` was just added: a response that came before it pairs now.
    fn answer_early(&mut self, key: PendingKey, id: Id) {
        let Some(list) = self.early.get_mut(&(key, id.clone())) else {
            return;
        };
        let e = list.remove(0);
        if list.is_empty() {
            self.early.remove(&(key, id.clone()));
        }
        self.early_count -= 1;
        self.metrics.agent.reordered_responses.inc();
        let obs = Observation {
            tgid: e.tgid,
            comm: &e.comm,
            direction: e.direction,
            stream: e.stream,
            transport: e.transport,
            peer: e.peer.as_ref(),
            session: e.session.as_deref(),
            user: e.user.as_deref(),
            ts_ns: e.ts_ns,
            size: e.size,
        };
        self.on_response(&obs, Some(id), e.outcome, e.payload);
    }

    /// Held responses older than [`EARLY_HOLD_NS`] at `now_ns` (all but the newest when
    /// `now_ns` is `u64::MAX`: one, to make room) are unpaired after all.
    fn expire_early(&mut self, now_ns: u64) {
        let make_room = now_ns == u64::MAX;
        while let Some((ts, key, id)) = self.early_order.front().cloned() {
            if !make_room && ts.saturating_add(EARLY_HOLD_NS) >= now_ns {
                return;
            }
            self.early_order.pop_front();
            let Some(list) = self.early.get_mut(&(key, id.clone())) else {
                continue;
            };
            let Some(index) = list.iter().position(|e| e.ts_ns == ts) else {
                continue;
            };
            let e = list.remove(index);
            if list.is_empty() {
                self.early.remove(&(key, id));
            }
            self.early_count -= 1;
            self.unpaired_on(e.transport);
            if make_room {
                return;
            }
        }
    }

    /// An HTTP response head: counted per status class, auth failure and rate limiting,
    /// under the server's settled name.
    pub fn on_http_response(&mut self, obs: &Observation<'_>, status: u16) {
        // The process writing the response is the server; the one reading it, the client.
        let observer_is_server = obs.direction == Direction::Write;
        let server = self.server_of(obs, observer_is_server, obs.stream);
        let side = Side::of_observer(observer_is_server);
        self.finish(
            server,
            obs.ts_ns,
            Finished::HttpStatus {
                side,
                status,
                transport: obs.transport,
            },
        );
    }

    /// An HTTP error response (4xx/5xx) ended the HTTP request that carried JSON-RPC
    /// request `id`, without a JSON-RPC response for it.
    pub fn on_http_error(&mut self, obs: &Observation<'_>, id: Id, status: u16) {
        let key = PendingKey {
            tgid: obs.tgid,
            direction: opposite(obs.direction),
        };
        if self.candidate(key, &id, obs.stream, obs.session).is_some() {
            self.on_response(obs, Some(id), Outcome::Http(status), None);
        }
    }

    fn unpaired(&self, obs: &Observation<'_>) {
        self.unpaired_on(obs.transport);
    }

    fn unpaired_on(&self, transport: Transport) {
        self.metrics
            .agent
            .unpaired_responses
            .get_or_create(&TransportLabels {
                network_transport: transport.label(),
            })
            .inc();
    }

    /// A connection carrying requests `ids` was closed before they were answered (how the
    /// 2026-07-28 HTTP transport cancels): each still pending is counted as cancelled,
    /// from the point of view of the process that sent or received it on this stream.
    pub fn on_abort(&mut self, obs: &Observation<'_>, ids: Vec<Id>) {
        for id in ids {
            for direction in [Direction::Write, Direction::Read] {
                let key = PendingKey {
                    tgid: obs.tgid,
                    direction,
                };
                let on_stream = self
                    .pending
                    .get(&key)
                    .and_then(|c| c.by_id.get(&id))
                    .and_then(|list| list.iter().position(|p| p.stream == obs.stream));
                if let Some(index) = on_stream {
                    if let Some(p) = self.take_at(key, &id, index) {
                        let ending = Ending::Cancelled { at_ns: obs.ts_ns };
                        self.finish_early(key, id.clone(), p, ending);
                    }
                }
            }
        }
    }

    /// A syscall on an MCP connection failed (reset, broken pipe, timeout, ...).
    pub fn on_connection_error(
        &mut self,
        obs: &Observation<'_>,
        observer_is_server: bool,
        reason: &'static str,
    ) {
        let server = self.server_of(obs, observer_is_server, obs.stream);
        let side = Side::of_observer(observer_is_server);
        self.finish(
            server,
            obs.ts_ns,
            Finished::ConnectionError {
                side,
                reason,
                transport: obs.transport,
            },
        );
    }

    fn on_cancel(&mut self, obs: &Observation<'_>, id: Id) {
        // The cancelled request travelled the same way as the cancellation.
        let key = PendingKey {
            tgid: obs.tgid,
            direction: obs.direction,
        };
        if let Some(p) = self.take(key, &id, obs) {
            self.finish_early(key, id, p, Ending::Cancelled { at_ns: obs.ts_ns });
        }
    }

    /// A response to this request, should it come, is late rather than unpaired.
    fn remember_finished_early(&mut self, key: PendingKey, id: Id, ts_ns: u64) {
        self.finished_early.insert((key, id.clone()), ts_ns);
        self.finished_early_order.push_back((key, id));
        while self.finished_early_order.len() > FINISHED_EARLY_CAP {
            if let Some(k) = self.finished_early_order.pop_front() {
                self.finished_early.remove(&k);
            }
        }
    }

    /// A request that ends without a response (cancelled, timed out).
    fn finish_early(&mut self, key: PendingKey, id: Id, p: Pending, ending: Ending) {
        self.remember_finished_early(key, id, p.ts_ns);
        let server = if p.server_is_observer {
            Some(ServerRef::Process(key.tgid))
        } else {
            self.server_of_stream.get(&p.stream).cloned()
        };
        let ts = p.ts_ns;
        self.finish(
            server,
            ts,
            Finished::Exchange {
                side: Side::of(key.direction),
                pending: p,
                ending,
            },
        );
    }

    /// Counts `finished` now, or holds it until its server's name is settled.
    fn finish(&mut self, server: Option<ServerRef>, now_ns: u64, finished: Finished) {
        if let Some(server) = &server {
            if !self.settled.contains(server) {
                let entry = self
                    .unsettled
                    .entry(server.clone())
                    .or_insert_with(|| Unsettled {
                        since_ns: now_ns,
                        finished: Vec::new(),
                    });
                if entry.finished.len() < MAX_UNSETTLED {
                    entry.finished.push(finished);
                    return;
                }
                self.settle(server);
            }
        }
        let name = self.server_name(server.as_ref());
        self.record(&name, server.as_ref(), finished);
    }

    /// The current name of a server, as a capped label value.
    pub fn server_name(&mut self, server: Option<&ServerRef>) -> String {
        let name = match server {
            Some(s) => match self.announced.get(s) {
                Some(n) => n.clone(),
                None => match s {
                    ServerRef::Process(tgid) => self.processes.server_name(*tgid),
                    ServerRef::Endpoint(e) => e.to_string(),
                },
            },
            None => "unknown".to_owned(),
        };
        self.servers
            .value(&name, &self.metrics.agent.label_overflow)
    }

    /// The server's name is final: count what was held for it.
    fn settle(&mut self, server: &ServerRef) {
        self.settled.insert(server.clone());
        if let Some(held) = self.unsettled.remove(server) {
            for finished in held.finished {
                self.finish(Some(server.clone()), 0, finished);
            }
        }
    }

    fn record(&mut self, server: &str, server_ref: Option<&ServerRef>, finished: Finished) {
        match finished {
            Finished::ConnectionError {
                side,
                reason,
                transport,
            } => {
                self.metrics
                    .http
                    .connection_errors
                    .get_or_create(&ConnectionErrorLabels {
                        mcp_server_name: server.to_owned(),
                        side: side.label(),
                        reason,
                        network_transport: transport.label(),
                    })
                    .inc();
            }
            Finished::HttpStatus {
                side,
                status,
                transport,
            } => {
                let side = match side {
                    Side::Client => "client",
                    Side::Server => "server",
                };
                let http = &self.metrics.http;
                http.responses
                    .get_or_create(&HttpStatusLabels {
                        mcp_server_name: server.to_owned(),
                        side,
                        status_class: status_class(status),
                        network_transport: transport.label(),
                    })
                    .inc();
                let labels = ServerSideLabels {
                    mcp_server_name: server.to_owned(),
                    side,
                    status,
                };
                match status {
                    401 | 403 => {
                        http.auth_failures.get_or_create(&labels).inc();
                    }
                    429 => {
                        http.rate_limited.get_or_create(&labels).inc();
                    }
                    _ => {}
                }
            }
            Finished::Notification {
                side,
                method,
                transport,
                tgid,
                ts_ns,
                size,
            } => {
                if let Some(sinks) = self.sinks.as_ref().filter(|s| s.wants_notifications()) {
                    sinks.on_notification(&NotificationEvent {
                        side: side.label(),
                        server,
                        transport: transport.label(),
                        method: &method,
                        ts_ns,
                        bytes: size,
                        pid: tgid,
                    });
                }
                let mut labels = NotificationLabels {
                    mcp_server_name: server.to_owned(),
                    mcp_method_name: method,
                    network_transport: transport.label(),
                };
                if !self.notification_series[side as usize].admit(&labels) {
                    self.series_overflow();
                    labels.mcp_method_name = OTHER.to_owned();
                }
                self.side(side).notifications.get_or_create(&labels).inc();
            }
            Finished::Exchange {
                side,
                pending: p,
                ending,
            } => {
                if let (Some(sinks), Some(context)) = (&self.sinks, &p.context) {
                    let timeout_ns = self.config.request_timeout_ns;
                    sinks.on_request(&completed(
                        server, server_ref, side, &p, &ending, context, timeout_ns,
                    ));
                }
                self.record_exchange(server, side, p, ending)
            }
        }
    }

    /// Counts one completed request of `side`: through the handles of its series when
    /// the series is known (one lookup), else through the families (admitting the series
    /// under the cap, or folding it into `_other`).
    fn record_exchange(&mut self, server: &str, side: Side, mut p: Pending, ending: Ending) {
        let overflow = &self.metrics.agent.label_overflow;
        let (outcome, error_type) = match &ending {
            Ending::Response { outcome, .. } => {
                let (name, error) = outcome.labels();
                (name, error.map(|e| self.errors.value(&e, overflow)))
            }
            Ending::Cancelled { .. } => ("cancelled", None),
            Ending::Timeout => ("timeout", None),
        };
        if let Some(user) = p.user.take() {
            let mut labels = UserLabels {
                mcp_server_name: server.to_owned(),
                user,
            };
            if !self.user_series.admit(&labels) {
                self.series_overflow();
                labels.user = OTHER.to_owned();
            }
            self.metrics.user_requests.get_or_create(&labels).inc();
        }
        let key = {
            use std::hash::BuildHasher as _;
            let series = (
                side as u8,
                server,
                &p.method,
                &p.tool,
                &p.prompt,
                p.transport,
                outcome,
                &error_type,
            );
            self.series_hasher.hash_one(series)
        };
        let handles = match self.series.get(&key) {
            Some(h) => h.clone(),
            None => {
                let (handles, admitted) =
                    self.series_handles(server, side, &p, outcome, error_type);
                if admitted {
                    self.series.insert(key, handles.clone());
                }
                handles
            }
        };
        handles.requests.inc();
        handles.request_size.observe(p.size as f64);
        match (ending, handles.ending) {
            (Ending::Cancelled { .. } | Ending::Timeout, EndingHandles::Counter(c)) => {
                c.inc();
            }
            (
                Ending::Response {
                    size, duration_s, ..
                },
                EndingHandles::Response {
                    responses,
                    response_size,
                    duration,
                },
            ) => {
                responses.inc();
                response_size.observe(size as f64);
                duration.observe(duration_s);
            }
            _ => {} // the key includes the kind of ending: cannot happen
        }
    }

    /// The metric handles of an exchange series, and whether it was admitted under the
    /// series cap (else its traffic-derived labels were folded into `_other`).
    fn series_handles(
        &mut self,
        server: &str,
        side: Side,
        p: &Pending,
        outcome: &'static str,
        mut error_type: Option<String>,
    ) -> (SeriesHandles, bool) {
        let mut request = RequestLabels {
            mcp_server_name: server.to_owned(),
            mcp_method_name: p.method.clone(),
            gen_ai_tool_name: p.tool.clone(),
            gen_ai_prompt_name: p.prompt.clone(),
            network_transport: p.transport.label(),
        };
        let admitted = self.exchange_series[side as usize].admit(&(&request, outcome, &error_type));
        if !admitted {
            // Past the series cap: the traffic-derived labels fold into `_other`.
            self.series_overflow();
            request.mcp_method_name = OTHER.to_owned();
            request.gen_ai_tool_name = None;
            request.gen_ai_prompt_name = None;
            if error_type.is_some() {
                error_type = Some(OTHER.to_owned());
            }
        }
        let m = self.side(side);
        let ending = match outcome {
            "cancelled" => EndingHandles::Counter(m.cancellations.get_or_create(&request).clone()),
            "timeout" => EndingHandles::Counter(m.timeouts.get_or_create(&request).clone()),
            _ => {
                let response = ResponseLabels {
                    mcp_server_name: request.mcp_server_name.clone(),
                    mcp_method_name: request.mcp_method_name.clone(),
                    gen_ai_tool_name: request.gen_ai_tool_name.clone(),
                    gen_ai_prompt_name: request.gen_ai_prompt_name.clone(),
                    outcome,
                    error_type: error_type.clone(),
                    network_transport: request.network_transport,
                };
                let op = OperationLabels {
                    mcp_server_name: request.mcp_server_name.clone(),
                    mcp_method_name: request.mcp_method_name.clone(),
                    gen_ai_tool_name: request.gen_ai_tool_name.clone(),
                    gen_ai_prompt_name: request.gen_ai_prompt_name.clone(),
                    error_type,
                    network_transport: request.network_transport,
                };
                EndingHandles::Response {
                    responses: m.responses.get_or_create(&response).clone(),
                    response_size: m.response_size.get_or_create(&response).clone(),
                    duration: m.operation_duration.get_or_create(&op).clone(),
                }
            }
        };
        let handles = SeriesHandles {
            requests: m.requests.get_or_create(&request).clone(),
            request_size: m.request_size.get_or_create(&request).clone(),
            ending,
        };
        (handles, admitted)
    }

    /// Times out old requests and settles servers that never announced a name.
    /// `now_ns` is CLOCK_MONOTONIC, the clock of the kernel timestamps.
    pub fn sweep(&mut self, now_ns: u64) {
        self.expire_early(now_ns);
        let gone: Vec<u32> = self
            .exited
            .iter()
            .filter(|(_, &at)| now_ns.saturating_sub(at) > PURGE_AFTER_NS)
            .map(|(&tgid, _)| tgid)
            .collect();
        for tgid in gone {
            self.exited.remove(&tgid);
            self.forget_process(tgid);
        }
        let deadline = now_ns.saturating_sub(self.config.request_timeout_ns);
        let mut expired = Vec::new();
        for (key, channel) in &self.pending {
            for (id, list) in &channel.by_id {
                for (index, p) in list.iter().enumerate().rev() {
                    if p.ts_ns < deadline {
                        expired.push((*key, id.clone(), index));
                    }
                }
            }
        }
        for (key, id, index) in expired {
            if let Some(p) = self.take_at(key, &id, index) {
                self.finish_early(key, id, p, Ending::Timeout);
            }
        }
        let overdue: Vec<ServerRef> = self
            .unsettled
            .iter()
            .filter(|(server, u)| {
                now_ns.saturating_sub(u.since_ns) > SETTLE_AFTER_NS
                    || matches!(server, ServerRef::Process(tgid) if !self.processes.is_alive(*tgid))
            })
            .map(|(server, _)| server.clone())
            .collect();
        for server in overdue {
            self.settle(&server);
        }
        self.sweep_sessions(now_ns);
        // Forget servers whose process is gone (bounded memory; a reused pid starts fresh).
        // One /proc look per process, however many entries name it.
        let mut tgids: Vec<u32> = self
            .settled
            .iter()
            .chain(self.announced.keys())
            .chain(self.server_of_stream.values())
            .filter_map(|s| match s {
                ServerRef::Process(tgid) => Some(*tgid),
                ServerRef::Endpoint(_) => None,
            })
            .chain(self.writers.values().copied())
            .chain(self.uids.keys().copied())
            .chain(self.client_names.keys().copied())
            .collect();
        tgids.sort_unstable();
        tgids.dedup();
        let dead: HashSet<u32> = tgids
            .into_iter()
            .filter(|&t| !self.processes.is_alive(t))
            .collect();
        let alive = |s: &ServerRef| !matches!(s, ServerRef::Process(tgid) if dead.contains(tgid));
        self.settled.retain(alive);
        self.announced.retain(|s, _| alive(s));
        self.server_of_stream.retain(|_, s| alive(s));
        self.writers.retain(|_, tgid| !dead.contains(tgid));
        self.uids.retain(|tgid, _| !dead.contains(tgid));
        self.client_names.retain(|tgid, _| !dead.contains(tgid));
        self.processes.sweep();
    }

    /// The user behind a request: its HTTP credential's keyed hash, else the uid of the
    /// local client process (the observer, or the process writing into the server's pipe).
    fn user_of(&mut self, obs: &Observation<'_>, server_is_observer: bool) -> Option<String> {
        let user = self.user_raw(obs, server_is_observer)?;
        Some(self.users.value(&user, &self.metrics.agent.label_overflow))
    }

    /// [`Correlator::user_of`] before the label cap.
    fn user_raw(&mut self, obs: &Observation<'_>, server_is_observer: bool) -> Option<String> {
        if let Some(user) = obs.user {
            return Some(user.to_owned());
        }
        let client = if server_is_observer {
            self.writers.get(&obs.stream).copied()?
        } else {
            obs.tgid
        };
        let uid = match self.uids.get(&client) {
            Some(uid) => *uid,
            None => {
                let uid = procfs::process::Process::new(client as i32)
                    .ok()?
                    .uid()
                    .ok()?;
                if self.uids.len() < MAX_WRITERS {
                    self.uids.insert(client, uid);
                }
                uid
            }
        };
        Some(format!("uid:{uid}"))
    }

    /// Marks the session of a message active; returns its key.
    fn touch_session(
        &mut self,
        obs: &Observation<'_>,
        server_is_observer: bool,
    ) -> Option<SessionKey> {
        let server = self.server_of(obs, server_is_observer, obs.stream)?;
        let id = match (obs.session, obs.transport) {
            (Some(id), _) => SessionId::Http(id.into()),
            (None, Transport::Pipe) => SessionId::Channel,
            (None, _) => SessionId::Connection(obs.stream),
        };
        let role = if server_is_observer {
            Role::Server
        } else {
            Role::Client
        };
        let key = SessionKey {
            role,
            observer: obs.tgid,
            server,
            id,
        };
        let evicted = self.sessions.touch(key.clone(), obs.transport, obs.ts_ns);
        if !evicted.is_empty() {
            self.metrics.agent.evicted("session", evicted.len() as u64);
            self.end_sessions(evicted);
        }
        Some(key)
    }

    /// An HTTP DELETE for `session` (the client ends it; both sides see the request).
    pub fn on_session_delete(&mut self, obs: &Observation<'_>, session: &str) {
        let ended = self.sessions.end(|k| {
            k.observer == obs.tgid && matches!(&k.id, SessionId::Http(id) if &**id == session)
        });
        self.end_sessions_at(ended, obs.ts_ns);
    }

    /// A process exited. The requests it was waiting on will never be answered for it
    /// (counted as cancelled, as when a connection closes), the responses it read before
    /// their requests were reported never will be paired, and its sessions end now. What
    /// was learned about it (its name, its streams) is kept for its peers, which may still
    /// be reading what it wrote, until [`PURGE_AFTER_NS`] has passed or a new process
    /// with its pid shows up ([`Correlator::on_process_seen`]), whichever comes first.
    pub fn on_process_exit(&mut self, tgid: u32, ts_ns: u64) {
        for direction in [Direction::Write, Direction::Read] {
            let key = PendingKey { tgid, direction };
            let Some(channel) = self.pending.remove(&key) else {
                continue;
            };
            self.pending_count -= channel.len;
            for (id, list) in channel.by_id {
                for p in list {
                    self.finish_early(key, id.clone(), p, Ending::Cancelled { at_ns: ts_ns });
                }
            }
        }
        self.metrics
            .agent
            .pending_requests
            .set(self.pending_count as i64);
        self.finished_early.retain(|(k, _), _| k.tgid != tgid);
        let held: Vec<(PendingKey, Id)> = self
            .early
            .keys()
            .filter(|(k, _)| k.tgid == tgid)
            .cloned()
            .collect();
        for key in held {
            for e in self.early.remove(&key).unwrap_or_default() {
                self.early_count -= 1;
                self.unpaired_on(e.transport);
            }
        }
        let server = ServerRef::Process(tgid);
        // Its sessions end, under the name it had.
        let ended = self
            .sessions
            .end(|k| k.observer == tgid || k.server == server);
        if !ended.is_empty() {
            self.end_sessions_at(ended, ts_ns);
            self.refresh_session_gauges();
        }
        self.exited.insert(tgid, ts_ns);
    }

    /// A record of `tgid` arrived. If a process with that pid exited before, this is a new
    /// process that reuses the pid: the old one is forgotten first.
    pub fn on_process_seen(&mut self, tgid: u32) {
        if self.exited.remove(&tgid).is_some() {
            self.forget_process(tgid);
        }
    }

    fn forget_process(&mut self, tgid: u32) {
        let server = ServerRef::Process(tgid);
        let was_server = self.settled.contains(&server)
            || self.unsettled.contains_key(&server)
            || self.announced.contains_key(&server);
        if was_server {
            // Count what waited for its name under the name it had, then forget it; keep
            // the streams of requests still waiting for an answer from it.
            self.settle(&server);
            self.settled.remove(&server);
            self.announced.remove(&server);
            let waiting: HashSet<StreamKey> = self
                .pending
                .values()
                .flat_map(|c| c.by_id.values().flatten().map(|p| p.stream))
                .collect();
            self.server_of_stream
                .retain(|stream, s| *s != server || waiting.contains(stream));
        }
        self.writers.retain(|_, t| *t != tgid);
        self.uids.remove(&tgid);
        self.client_names.remove(&tgid);
        self.processes.forget(tgid);
    }

    /// A process closed a connection: its session-less sessions on it are over.
    pub fn on_connection_closed(&mut self, tgid: u32, stream: StreamKey, ts_ns: u64) {
        let ended = self
            .sessions
            .end(|k| k.observer == tgid && k.id == SessionId::Connection(stream));
        self.end_sessions_at(ended, ts_ns);
    }

    /// Ends sessions at `ts_ns` (explicit ends) instead of at their last message.
    fn end_sessions_at(&mut self, mut ended: Vec<(SessionKey, Session)>, ts_ns: u64) {
        for (_, s) in &mut ended {
            s.last_ns = s.last_ns.max(ts_ns);
        }
        self.end_sessions(ended);
    }

    fn end_sessions(&mut self, ended: Vec<(SessionKey, Session)>) {
        for (key, session) in ended {
            let name = self.server_name(Some(&key.server));
            let m = match key.role {
                Role::Client => &self.metrics.client,
                Role::Server => &self.metrics.server,
            };
            m.session_duration
                .get_or_create(&SessionLabels {
                    mcp_server_name: name,
                    network_transport: session.transport.label(),
                })
                .observe(session.last_ns.saturating_sub(session.start_ns) as f64 / 1e9);
        }
    }

    /// Ends sessions whose processes are gone or that went idle, and refreshes the
    /// active-session gauges.
    fn sweep_sessions(&mut self, now_ns: u64) {
        let processes = &self.processes;
        // One /proc look per process, not per session.
        let mut alive: HashMap<u32, bool> = HashMap::default();
        let mut is_alive = |tgid: u32| {
            *alive
                .entry(tgid)
                .or_insert_with(|| processes.is_alive(tgid))
        };
        let idle: HashSet<SessionKey> = self
            .sessions
            .iter()
            .filter(|(k, s)| {
                !is_alive(k.observer)
                    || matches!(k.server, ServerRef::Process(tgid) if !is_alive(tgid))
                    || now_ns.saturating_sub(s.last_ns) > IDLE_NS
            })
            .map(|(k, _)| k.clone())
            .collect();
        let ended = self.sessions.end(|k| idle.contains(k));
        self.end_sessions(ended);
        self.refresh_session_gauges();
    }

    /// Sets the active-session and active-client gauges from the live sessions.
    fn refresh_session_gauges(&mut self) {
        let mut active: HashMap<(Role, String, Transport), i64> = HashMap::default();
        let mut clients: HashMap<(String, String), i64> = HashMap::default();
        let live: Vec<(SessionKey, Transport, Option<String>)> = self
            .sessions
            .iter()
            .map(|(k, s)| (k.clone(), s.transport, s.client_name.clone()))
            .collect();
        for (key, transport, client) in live {
            let name = self.server_name(Some(&key.server));
            // Clients are counted from the server's side, or the client's for a remote server.
            if key.role == Role::Server || matches!(key.server, ServerRef::Endpoint(_)) {
                let client = client.unwrap_or_else(|| "unknown".to_owned());
                *clients.entry((name.clone(), client)).or_default() += 1;
            }
            *active.entry((key.role, name, transport)).or_default() += 1;
        }
        self.metrics.active_clients.clear();
        for ((server, client), n) in clients {
            self.metrics
                .active_clients
                .get_or_create(&ClientLabels {
                    mcp_server_name: server,
                    client_name: client,
                })
                .set(n);
        }
        self.metrics.client.active_sessions.clear();
        self.metrics.server.active_sessions.clear();
        for ((role, name, transport), n) in active {
            let m = match role {
                Role::Client => &self.metrics.client,
                Role::Server => &self.metrics.server,
            };
            m.active_sessions
                .get_or_create(&SessionLabels {
                    mcp_server_name: name,
                    network_transport: transport.label(),
                })
                .set(n);
        }
    }

    /// The current name of `tgid` if it has served MCP (announced a name, or had its
    /// exchanges counted or held under it).
    pub fn name_if_server(&mut self, tgid: u32) -> Option<String> {
        let server = ServerRef::Process(tgid);
        let known = self.settled.contains(&server)
            || self.unsettled.contains_key(&server)
            || self.announced.contains_key(&server);
        known.then(|| self.server_name(Some(&server)))
    }

    /// Every server process known from traffic, with its current (capped) name.
    pub fn server_processes(&mut self) -> Vec<(u32, String)> {
        let mut tgids: Vec<u32> = self
            .server_of_stream
            .values()
            .chain(self.settled.iter())
            .filter_map(|s| match s {
                ServerRef::Process(tgid) => Some(*tgid),
                ServerRef::Endpoint(_) => None,
            })
            .collect();
        tgids.sort_unstable();
        tgids.dedup();
        tgids
            .into_iter()
            .map(|t| (t, self.server_name(Some(&ServerRef::Process(t)))))
            .collect()
    }

    /// Forgets what was learned about a stream that is no longer followed.
    pub fn forget_stream(&mut self, stream: StreamKey) {
        self.server_of_stream.remove(&stream);
        self.writers.remove(&stream);
    }

    /// The MCP server of an exchange, if known: the observer itself, the server learned
    /// for the stream, or the address the observer's socket is connected to.
    fn server_of(
        &mut self,
        obs: &Observation<'_>,
        server_is_observer: bool,
        stream: StreamKey,
    ) -> Option<ServerRef> {
        if server_is_observer {
            return Some(ServerRef::Process(obs.tgid));
        }
        if let Some(s) = self.server_of_stream.get(&stream) {
            return Some(s.clone());
        }
        let peer = obs.peer?.clone();
        self.server_of_stream.insert(stream, peer.clone());
        Some(peer)
    }

    fn series_overflow(&self) {
        self.metrics
            .agent
            .label_overflow
            .get_or_create(&LabelNameLabels { label: "series" })
            .inc();
    }

    fn side(&self, side: Side) -> &SideMetrics {
        match side {
            Side::Client => &self.metrics.client,
            Side::Server => &self.metrics.server,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    ToolError,
    Error(i64),
    /// An HTTP error status answered the request instead of a JSON-RPC response.
    Http(u16),
}

impl Outcome {
    fn labels(self) -> (&'static str, Option<String>) {
        match self {
            Outcome::Ok => ("ok", None),
            Outcome::ToolError => ("tool_error", Some("tool_error".to_owned())),
            Outcome::Error(code) => ("error", Some(code.to_string())),
            Outcome::Http(status) => ("error", Some(format!("http_{status}"))),
        }
    }
}

/// An endpoint (`host:port`, `unix:path`) that can only be served from this host: a unix
/// socket, or a loopback address (each network namespace has its own loopback).
fn endpoint_is_local(endpoint: &str) -> bool {
    endpoint.starts_with("unix:") || endpoint.starts_with("127.") || endpoint.starts_with("[::1]:")
}

/// The sinks' view of a completed exchange: the metrics' labels plus the request's
/// context.
fn completed<'a>(
    server: &'a str,
    server_ref: Option<&'a ServerRef>,
    side: Side,
    p: &'a Pending,
    ending: &'a Ending,
    context: &'a RequestContext,
    timeout_ns: u64,
) -> CompletedRequest<'a> {
    let (outcome, error_type, end_ns, response_bytes, response_payload) = match ending {
        Ending::Response {
            outcome,
            size,
            duration_s,
            payload,
        } => {
            let (name, error) = outcome.labels();
            (
                name,
                error,
                p.ts_ns.saturating_add((duration_s * 1e9) as u64),
                Some(*size),
                payload.as_deref(),
            )
        }
        Ending::Cancelled { at_ns } => ("cancelled", None, *at_ns, None, None),
        Ending::Timeout => (
            "timeout",
            None,
            p.ts_ns.saturating_add(timeout_ns),
            None,
            None,
        ),
    };
    CompletedRequest {
        side: side.label(),
        server,
        server_pid: match server_ref {
            Some(ServerRef::Process(tgid)) => Some(*tgid),
            _ => None,
        },
        server_address: match server_ref {
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

fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;
    use crate::protocols::jsonrpc::{parse, Parsed};

    fn message(text: &str) -> Message<'_> {
        match parse(text.as_bytes()) {
            Ok(Parsed::Single(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    fn sum(registry: &Registry, series: &str) -> f64 {
        let mut text = String::new();
        encode(&mut text, registry).expect("encode");
        text.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    #[test]
    fn loopback_and_unix_endpoints_are_on_this_host() {
        for local in [
            "127.0.0.1:8000",
            "127.3.2.1:1",
            "[::1]:9",
            "unix:/run/mcp.sock",
        ] {
            assert!(endpoint_is_local(local), "{local}");
        }
        for remote in ["10.0.0.9:8000", "[2001:db8::1]:443", "192.168.1.1:80"] {
            assert!(!endpoint_is_local(remote), "{remote}");
        }
    }

    /// Legacy HTTP+SSE: one client process, two sessions to the same server, the same
    /// request id in both. Each response arrives on its session's GET stream and pairs with
    /// the request of that session, not the oldest one.
    #[test]
    fn legacy_sessions_pair_by_session_id() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let mut c = Correlator::new(CorrelatorConfig::default(), metrics);
        let server = ServerRef::Endpoint(Arc::from("10.0.0.9:8000"));
        let stream = |n| StreamKey { addr: n, ino: n };
        let obs = |n: u64, direction, session, ts_ms: u64| Observation {
            tgid: 7,
            comm: "client",
            direction,
            stream: stream(n),
            transport: Transport::Tcp,
            peer: Some(&server),
            session: Some(session),
            user: None,
            ts_ns: ts_ms * 1_000_000,
            size: 10,
        };
        let call = |tool: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#
            )
        };
        let (call_a, call_b) = (call("a"), call("b"));
        let ok = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        c.on_message(&obs(1, Direction::Write, "s1", 1), message(&call_a));
        c.on_message(&obs(2, Direction::Write, "s2", 50), message(&call_b));
        c.on_message(&obs(20, Direction::Read, "s2", 60), message(ok));
        c.on_message(&obs(10, Direction::Read, "s1", 200), message(ok));
        c.sweep(10_000_000_000); // settle the name
        let tool_b = r#"mcp_client_operation_duration_seconds_sum{mcp_server_name="10.0.0.9:8000",mcp_method_name="tools/call",gen_ai_tool_name="b""#;
        let tool_a = r#"mcp_client_operation_duration_seconds_sum{mcp_server_name="10.0.0.9:8000",mcp_method_name="tools/call",gen_ai_tool_name="a""#;
        assert!(
            (sum(&registry, tool_b) - 0.010).abs() < 1e-9,
            "tool b paired with its own session"
        );
        assert!(
            (sum(&registry, tool_a) - 0.199).abs() < 1e-9,
            "tool a paired with its own session"
        );
    }
}
