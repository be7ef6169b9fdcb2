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

use std::collections::{HashMap, VecDeque};

use mcp_probe_common::Direction;

use crate::{
    identity::Processes,
    metrics::{
        LabelCap, Metrics, NotificationLabels, OperationLabels, RequestLabels, ResponseLabels,
        SideMetrics, TransportLabels,
    },
    protocols::jsonrpc::{Id, Message},
};

/// One message as observed by one process.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'c> {
    pub tgid: u32,
    pub comm: &'c str,
    /// `Write`: the process sent it; `Read`: the process received it.
    pub direction: Direction,
    pub stream_id: u64,
    pub transport: &'static str,
    /// Kernel time (CLOCK_MONOTONIC ns) at which the message was complete.
    pub ts_ns: u64,
    /// JSON bytes of the message (its share of a batch for batch elements).
    pub size: u64,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    /// Sender of the request.
    Client,
    /// Receiver of the request.
    Server,
}

impl Side {
    fn of(direction: Direction) -> Self {
        match direction {
            Direction::Write => Side::Client,
            Direction::Read => Side::Server,
        }
    }
}

#[derive(Debug)]
struct Pending {
    stream_id: u64,
    method: String,
    tool: Option<String>,
    prompt: Option<String>,
    ts_ns: u64,
    size: u64,
    transport: &'static str,
    /// The MCP server of this exchange, if it is the observing process itself.
    server_is_observer: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PendingKey {
    tgid: u32,
    /// Direction of the *request* for the observing process.
    direction: Direction,
}

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
        }
    }
}

pub struct Correlator {
    config: CorrelatorConfig,
    metrics: Metrics,
    pub processes: Processes,
    pending: HashMap<PendingKey, HashMap<Id, Vec<Pending>>>,
    pending_count: usize,
    /// Requests finished without a response (cancelled or timed out): a late response is
    /// counted as a response but not reported as unpaired.
    finished_early: HashMap<(PendingKey, Id), u64>,
    finished_early_order: VecDeque<((PendingKey, Id), u64)>,
    /// Stream id -> tgid of the MCP server on that stream, learned from traffic.
    server_of_stream: HashMap<u64, u32>,
    methods: LabelCap,
    tools: LabelCap,
    prompts: LabelCap,
    servers: LabelCap,
}

const FINISHED_EARLY_CAP: usize = 10_000;

impl Correlator {
    pub fn new(config: CorrelatorConfig, metrics: Metrics) -> Self {
        Self {
            methods: LabelCap::new("mcp_method_name", config.max_methods),
            tools: LabelCap::new("gen_ai_tool_name", config.max_tools),
            prompts: LabelCap::new("gen_ai_prompt_name", config.max_prompts),
            servers: LabelCap::new("mcp_server_name", config.max_servers),
            config,
            metrics,
            processes: Processes::default(),
            pending: HashMap::new(),
            pending_count: 0,
            finished_early: HashMap::new(),
            finished_early_order: VecDeque::new(),
            server_of_stream: HashMap::new(),
        }
    }

    /// Handles one parsed message.
    pub fn on_message(&mut self, obs: &Observation<'_>, msg: Message<'_>) {
        match msg {
            Message::Request { id, method, info } => {
                let server_to_client = SERVER_TO_CLIENT_REQUESTS.contains(&method.as_ref());
                // The observing process is the MCP server if it receives a client request
                // or sends a server request.
                let server_is_observer = server_to_client == (obs.direction == Direction::Write);
                if server_is_observer {
                    self.server_of_stream.insert(obs.stream_id, obs.tgid);
                }
                let overflow = &self.metrics.agent.label_overflow;
                let method_label = self.methods.value(&method, overflow);
                let name = info.name.as_deref().map(|n| n.to_owned());
                let (tool, prompt) = match method.as_ref() {
                    "tools/call" => (name.map(|n| self.tools.value(&n, overflow)), None),
                    "prompts/get" => (None, name.map(|n| self.prompts.value(&n, overflow))),
                    _ => (None, None),
                };
                self.add_pending(
                    PendingKey {
                        tgid: obs.tgid,
                        direction: obs.direction,
                    },
                    id,
                    Pending {
                        stream_id: obs.stream_id,
                        method: method_label,
                        tool,
                        prompt,
                        ts_ns: obs.ts_ns,
                        size: obs.size,
                        transport: obs.transport,
                        server_is_observer,
                    },
                );
            }
            Message::Notification { method, info } => {
                if method == "notifications/cancelled" {
                    if let Some(id) = info.cancelled_id {
                        self.on_cancel(obs, id);
                    }
                }
                let from_server = SERVER_NOTIFICATIONS.contains(&method.as_ref());
                let server_is_observer = from_server == (obs.direction == Direction::Write);
                let server = self.server_name(obs, server_is_observer, obs.stream_id);
                let method = self
                    .methods
                    .value(&method, &self.metrics.agent.label_overflow);
                self.side(Side::of(obs.direction))
                    .notifications
                    .get_or_create(&NotificationLabels {
                        mcp_server_name: server,
                        mcp_method_name: method,
                        network_transport: obs.transport,
                    })
                    .inc();
            }
            Message::Response { id, info } => {
                if let Some(name) = info.server_name.as_deref() {
                    if obs.direction == Direction::Write {
                        self.processes
                            .set_announced_server_name(obs.tgid, obs.comm, name);
                    }
                }
                let outcome = if info.is_error {
                    Outcome::ToolError
                } else {
                    Outcome::Ok
                };
                self.on_response(obs, Some(id), outcome);
            }
            Message::Error { id, code } => self.on_response(obs, id, Outcome::Error(code)),
        }
    }

    fn add_pending(&mut self, key: PendingKey, id: Id, pending: Pending) {
        if self.pending_count >= self.config.max_pending {
            // Bounded: the oldest request of this process and direction gives way.
            self.evict_oldest(key);
        }
        self.pending
            .entry(key)
            .or_default()
            .entry(id)
            .or_default()
            .push(pending);
        self.pending_count += 1;
        self.metrics
            .agent
            .pending_requests
            .set(self.pending_count as i64);
    }

    fn evict_oldest(&mut self, key: PendingKey) {
        let Some(by_id) = self.pending.get_mut(&key) else {
            return;
        };
        let oldest = by_id
            .iter()
            .flat_map(|(id, list)| list.iter().map(move |p| (p.ts_ns, id.clone())))
            .min_by_key(|(ts, _)| *ts);
        if let Some((_, id)) = oldest {
            if let Some(p) = take_first(by_id, &id) {
                self.pending_count -= 1;
                self.finish_without_response(key, p, Ending::Timeout);
            }
        }
    }

    fn take_candidate(
        &mut self,
        key: PendingKey,
        id: &Id,
        response_stream: u64,
    ) -> Option<Pending> {
        let by_id = self.pending.get_mut(&key)?;
        let list = by_id.get_mut(id)?;
        let response_server = self.server_of_stream.get(&response_stream).copied();
        let index = list
            .iter()
            .position(|p| p.stream_id == response_stream)
            .or_else(|| {
                response_server.and_then(|s| {
                    list.iter()
                        .position(|p| self.server_of_stream.get(&p.stream_id) == Some(&s))
                })
            })
            .unwrap_or(0);
        let p = list.remove(index);
        if list.is_empty() {
            by_id.remove(id);
        }
        if by_id.is_empty() {
            self.pending.remove(&key);
        }
        self.pending_count -= 1;
        self.metrics
            .agent
            .pending_requests
            .set(self.pending_count as i64);
        Some(p)
    }

    fn on_response(&mut self, obs: &Observation<'_>, id: Option<Id>, outcome: Outcome) {
        // The request went the other way for this process.
        let key = PendingKey {
            tgid: obs.tgid,
            direction: opposite(obs.direction),
        };
        let Some(id) = id else {
            self.unpaired(obs);
            return;
        };
        let Some(p) = self.take_candidate(key, &id, obs.stream_id) else {
            if self.finished_early.remove(&(key, id)).is_some() {
                // The answer to a request already counted as cancelled or timed out.
                self.metrics.agent.late_responses.inc();
            } else {
                self.unpaired(obs);
            }
            return;
        };
        if p.server_is_observer {
            // The process that received the request answers it on this stream.
            self.server_of_stream.insert(obs.stream_id, obs.tgid);
        } else if let Some(&server) = self.server_of_stream.get(&p.stream_id) {
            self.server_of_stream.entry(obs.stream_id).or_insert(server);
        }
        let server = self.server_name(obs, p.server_is_observer, p.stream_id);
        let side = Side::of(key.direction);
        let duration_s = obs.ts_ns.saturating_sub(p.ts_ns) as f64 / 1e9;
        let (outcome_label, error_type) = outcome.labels();
        let request_labels = RequestLabels {
            mcp_server_name: server.clone(),
            mcp_method_name: p.method.clone(),
            gen_ai_tool_name: p.tool.clone(),
            gen_ai_prompt_name: p.prompt.clone(),
            network_transport: p.transport,
        };
        let response_labels = ResponseLabels {
            mcp_server_name: server.clone(),
            mcp_method_name: p.method.clone(),
            gen_ai_tool_name: p.tool.clone(),
            gen_ai_prompt_name: p.prompt.clone(),
            outcome: outcome_label,
            error_type: error_type.clone(),
            network_transport: p.transport,
        };
        let m = self.side(side);
        m.requests.get_or_create(&request_labels).inc();
        m.request_size
            .get_or_create(&request_labels)
            .observe(p.size as f64);
        m.responses.get_or_create(&response_labels).inc();
        m.response_size
            .get_or_create(&response_labels)
            .observe(obs.size as f64);
        m.operation_duration
            .get_or_create(&OperationLabels {
                mcp_server_name: server,
                mcp_method_name: p.method,
                gen_ai_tool_name: p.tool,
                gen_ai_prompt_name: p.prompt,
                error_type,
                network_transport: p.transport,
            })
            .observe(duration_s);
    }

    fn unpaired(&self, obs: &Observation<'_>) {
        self.metrics
            .agent
            .unpaired_responses
            .get_or_create(&TransportLabels {
                network_transport: obs.transport,
            })
            .inc();
    }

    fn on_cancel(&mut self, obs: &Observation<'_>, id: Id) {
        // The cancelled request travelled the same way as the cancellation.
        let key = PendingKey {
            tgid: obs.tgid,
            direction: obs.direction,
        };
        if let Some(p) = self.take_candidate(key, &id, obs.stream_id) {
            self.finish_without_response(key, p, Ending::Cancelled);
            self.remember_finished(key, id, obs.ts_ns);
        }
    }

    fn remember_finished(&mut self, key: PendingKey, id: Id, ts_ns: u64) {
        self.finished_early.insert((key, id.clone()), ts_ns);
        self.finished_early_order.push_back(((key, id), ts_ns));
        while self.finished_early_order.len() > FINISHED_EARLY_CAP {
            if let Some((k, _)) = self.finished_early_order.pop_front() {
                self.finished_early.remove(&k);
            }
        }
    }

    fn finish_without_response(&mut self, key: PendingKey, p: Pending, ending: Ending) {
        let obs_stub = Observation {
            tgid: key.tgid,
            comm: "",
            direction: key.direction,
            stream_id: p.stream_id,
            transport: p.transport,
            ts_ns: p.ts_ns,
            size: p.size,
        };
        let server = self.server_name(&obs_stub, p.server_is_observer, p.stream_id);
        let labels = RequestLabels {
            mcp_server_name: server,
            mcp_method_name: p.method,
            gen_ai_tool_name: p.tool,
            gen_ai_prompt_name: p.prompt,
            network_transport: p.transport,
        };
        let m = self.side(Side::of(key.direction));
        m.requests.get_or_create(&labels).inc();
        m.request_size.get_or_create(&labels).observe(p.size as f64);
        match ending {
            Ending::Cancelled => m.cancellations.get_or_create(&labels).inc(),
            Ending::Timeout => m.timeouts.get_or_create(&labels).inc(),
        };
    }

    /// Times out requests older than the request timeout. `now_ns` is CLOCK_MONOTONIC.
    pub fn sweep(&mut self, now_ns: u64) {
        let deadline = now_ns.saturating_sub(self.config.request_timeout_ns);
        let mut expired = Vec::new();
        for (key, by_id) in &mut self.pending {
            for (id, list) in by_id.iter_mut() {
                while let Some(pos) = list.iter().position(|p| p.ts_ns < deadline) {
                    expired.push((*key, id.clone(), list.remove(pos)));
                }
            }
            by_id.retain(|_, l| !l.is_empty());
        }
        self.pending.retain(|_, m| !m.is_empty());
        for (key, id, p) in expired {
            self.pending_count -= 1;
            let ts = p.ts_ns;
            self.finish_without_response(key, p, Ending::Timeout);
            self.remember_finished(key, id, ts);
        }
        self.metrics
            .agent
            .pending_requests
            .set(self.pending_count as i64);
        self.processes.sweep();
    }

    /// Forgets what was learned about a stream that is no longer followed.
    pub fn forget_stream(&mut self, stream_id: u64) {
        self.server_of_stream.remove(&stream_id);
    }

    fn server_name(
        &mut self,
        obs: &Observation<'_>,
        server_is_observer: bool,
        stream_id: u64,
    ) -> String {
        let (tgid, comm) = if server_is_observer {
            (Some(obs.tgid), obs.comm)
        } else {
            (self.server_of_stream.get(&stream_id).copied(), "")
        };
        let raw = match tgid {
            Some(t) => self.processes.server_name(t, comm),
            None => "unknown".to_owned(),
        };
        self.servers.value(&raw, &self.metrics.agent.label_overflow)
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
}

impl Outcome {
    fn labels(self) -> (&'static str, Option<String>) {
        match self {
            Outcome::Ok => ("ok", None),
            Outcome::ToolError => ("tool_error", Some("tool_error".to_owned())),
            Outcome::Error(code) => ("error", Some(code.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Cancelled,
    Timeout,
}

fn opposite(d: Direction) -> Direction {
    match d {
        Direction::Read => Direction::Write,
        Direction::Write => Direction::Read,
    }
}

fn take_first(by_id: &mut HashMap<Id, Vec<Pending>>, id: &Id) -> Option<Pending> {
    let list = by_id.get_mut(id)?;
    let p = if list.is_empty() {
        None
    } else {
        Some(list.remove(0))
    };
    if list.is_empty() {
        by_id.remove(id);
    }
    p
}
