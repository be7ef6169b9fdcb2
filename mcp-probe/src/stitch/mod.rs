//! Stitching: pairs each response with its request and hands every finished exchange to
//! the consumers (metrics recorder, sinks) as an [`Event`].
//!
//! A request is handed on once its outcome is known (response, cancellation, timeout), so
//! every series of one exchange carries the same labels, including the server's name,
//! which is often learned from the handshake's response. The parts, each with its own
//! tests: [`pending`] (the bounded table of requests waiting for responses), [`early`]
//! (responses that overtook their requests), [`naming`] (which server, and its settled
//! name), [`sessions`] and [`clients`]. This file handles messages; [`lifecycle`] handles
//! processes, connections and time.

pub mod clients;
pub mod early;
mod lifecycle;
pub mod naming;
pub mod pending;
mod requests;
mod responses;
pub mod sessions;

use std::sync::Arc;

use mcp_probe_common::Direction;

use crate::{
    events::{Consumer, Ending, Event, Exchange, Outcome, Request, SinkNeeds},
    host::Host,
    identity::Processes,
    labels::LabelCap,
    metrics::{recorder::Recorder, Metrics},
    model::{Observation, ServerRef, Side, Transport},
    protocols::jsonrpc::Message,
    sinks::Sinks,
    HashMap,
};
use clients::Clients;
use early::{EarlyResponses, Unanswered};
use naming::ServerNames;
use pending::PendingTable;
use sessions::{SessionId, SessionKey, Sessions};

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
/// Methods that belong to the handshake: their exchanges wait for the server's name.
const HANDSHAKE_METHODS: &[&str] = &["server/discover", "initialize"];

/// Settings of the stitcher.
#[derive(Debug, Clone)]
pub struct StitchConfig {
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

impl Default for StitchConfig {
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

/// Something to hand on once its server's name is settled.
#[derive(Debug)]
enum Finished {
    Exchange {
        side: Side,
        request: Request,
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
    HttpStatus {
        side: Side,
        status: u16,
        transport: Transport,
    },
}

/// Label values learned from traffic, each capped on its own.
struct Caps {
    methods: LabelCap,
    tools: LabelCap,
    prompts: LabelCap,
    clients: LabelCap,
    users: LabelCap,
    /// Labels that overflowed since the last event was handed on.
    overflowed: Vec<&'static str>,
}

pub struct Stitcher {
    config: StitchConfig,
    needs: SinkNeeds,
    consumers: Vec<Box<dyn Consumer>>,
    /// Who processes are (filled from the lookup thread's answers).
    processes: Processes,
    pending: PendingTable,
    /// The pending count last handed on.
    pending_reported: usize,
    unanswered: Unanswered,
    early: EarlyResponses,
    /// Processes that exited, with when: forgotten after `lifecycle::PURGE_AFTER_NS`.
    exited: HashMap<u32, u64>,
    names: ServerNames<Finished>,
    sessions: Sessions,
    clients: Clients,
    caps: Caps,
}

impl Stitcher {
    /// A stitcher handing its events to `consumers`, in order, and asking `host` whether
    /// processes still run.
    pub fn new(
        config: StitchConfig,
        host: Arc<dyn Host>,
        needs: SinkNeeds,
        consumers: Vec<Box<dyn Consumer>>,
    ) -> Self {
        Self {
            caps: Caps {
                methods: LabelCap::new("mcp_method_name", config.max_methods),
                tools: LabelCap::new("gen_ai_tool_name", config.max_tools),
                prompts: LabelCap::new("gen_ai_prompt_name", config.max_prompts),
                clients: LabelCap::new("client_name", config.max_clients),
                users: LabelCap::new("user", config.max_users),
                overflowed: Vec::new(),
            },
            needs,
            consumers,
            processes: Processes::new(host),
            pending: PendingTable::new(config.max_pending, config.max_pending_per_process),
            pending_reported: 0,
            unanswered: Unanswered::default(),
            early: EarlyResponses::default(),
            exited: HashMap::default(),
            names: ServerNames::new(config.max_servers),
            sessions: Sessions::new(config.max_sessions),
            clients: Clients::default(),
            config,
        }
    }

    /// The agent's stitcher: its events go to the sinks (when any is on), then to the
    /// metrics recorder.
    pub fn recording(
        config: StitchConfig,
        metrics: Metrics,
        sinks: Option<Sinks>,
        host: Arc<dyn Host>,
    ) -> Self {
        let recorder = Recorder::new(metrics, config.max_error_types, config.max_series);
        let needs = sinks.as_ref().map(Sinks::needs).unwrap_or_default();
        let mut consumers: Vec<Box<dyn Consumer>> = Vec::new();
        if let Some(sinks) = sinks {
            consumers.push(Box::new(sinks));
        }
        consumers.push(Box::new(recorder));
        Self::new(config, host, needs, consumers)
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
        let payload = match (&self.needs.capture, bytes) {
            (Some(capture), Some(bytes)) => Some(capture.capture(bytes)),
            _ => None,
        };
        self.processes.observe(obs.tgid, obs.comm);
        if obs.direction == Direction::Write && obs.transport == Transport::Pipe {
            self.clients.wrote(obs.stream, obs.tgid);
        }
        match msg {
            Message::Request { id, method, info } => {
                self.on_request(obs, id, &method, &info, payload)
            }
            Message::Notification { method, info } => {
                if method == "notifications/cancelled" {
                    if let Some(id) = info.cancelled_id {
                        self.on_cancel(obs, id);
                    }
                }
                let from_server = SERVER_NOTIFICATIONS.contains(&method.as_ref());
                let server_is_observer = from_server == (obs.direction == Direction::Write);
                let server = self.server_of(obs, server_is_observer);
                let _ = self.touch_session(obs, server_is_observer);
                let method = self.caps.methods.value(&method, &mut self.caps.overflowed);
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
                        self.server_of(obs, false)
                    };
                    if let Some(server) = announcer {
                        let held = self.names.announce(server.clone(), name);
                        self.count_held(&server, held);
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
        self.flush();
    }

    /// Hands `finished` on now, or holds it until its server's name is settled.
    fn finish(&mut self, server: Option<ServerRef>, now_ns: u64, finished: Finished) {
        for finished in self.names.hold(server.as_ref(), now_ns, finished) {
            self.hand_on(server.as_ref(), finished);
        }
    }

    /// Hands on what waited for `server`'s name, now settled.
    fn count_held(&mut self, server: &ServerRef, held: Vec<Finished>) {
        for finished in held {
            self.hand_on(Some(server), finished);
        }
    }

    /// Names the server of `finished` and hands it to the consumers.
    fn hand_on(&mut self, server: Option<&ServerRef>, finished: Finished) {
        let name = self.server_name(server);
        let event = match finished {
            Finished::Exchange {
                side,
                request,
                ending,
            } => Event::Exchange(Exchange {
                side,
                server: name,
                server_ref: server.cloned(),
                request,
                ending,
            }),
            Finished::Notification {
                side,
                method,
                transport,
                tgid,
                ts_ns,
                size,
            } => Event::Notification {
                side,
                server: name,
                method,
                transport,
                tgid,
                ts_ns,
                size,
            },
            Finished::ConnectionError {
                side,
                reason,
                transport,
            } => Event::ConnectionError {
                side,
                server: name,
                reason,
                transport,
            },
            Finished::HttpStatus {
                side,
                status,
                transport,
            } => Event::HttpStatus {
                side,
                server: name,
                status,
                transport,
            },
        };
        self.emit(event);
    }

    /// The current name of a server, as a capped label value.
    fn server_name(&mut self, server: Option<&ServerRef>) -> String {
        self.names
            .name(server, &mut self.processes, &mut self.caps.overflowed)
    }

    /// The MCP server of the exchange `obs` belongs to, if known.
    fn server_of(&mut self, obs: &Observation<'_>, server_is_observer: bool) -> Option<ServerRef> {
        self.names
            .server_of(obs.tgid, server_is_observer, obs.stream, obs.peer)
    }

    /// The user behind a request before its label cap: its HTTP credential's keyed hash,
    /// else the uid of the local client process (the observer, or the process writing
    /// into the server's pipe).
    fn user_raw(&mut self, obs: &Observation<'_>, server_is_observer: bool) -> Option<String> {
        if let Some(user) = obs.user {
            return Some(user.to_owned());
        }
        let client = if server_is_observer {
            self.clients.writer(&obs.stream)?
        } else {
            obs.tgid
        };
        let processes = &self.processes;
        let uid = self.clients.uid(client, |tgid| processes.uid(tgid))?;
        Some(format!("uid:{uid}"))
    }

    /// Marks the session of a message active; returns its key.
    fn touch_session(
        &mut self,
        obs: &Observation<'_>,
        server_is_observer: bool,
    ) -> Option<SessionKey> {
        let server = self.server_of(obs, server_is_observer)?;
        let id = match (obs.session, obs.transport) {
            (Some(id), _) => SessionId::Http(id.into()),
            (None, Transport::Pipe) => SessionId::Channel,
            (None, _) => SessionId::Connection(obs.stream),
        };
        let key = SessionKey {
            role: Side::of_observer(server_is_observer),
            observer: obs.tgid,
            server,
            id,
        };
        let evicted = self.sessions.touch(key.clone(), obs.transport, obs.ts_ns);
        if !evicted.is_empty() {
            self.emit(Event::Evicted {
                what: "session",
                n: evicted.len() as u64,
            });
            self.end_sessions(evicted);
        }
        Some(key)
    }

    /// Hands `event` to every consumer, after the label overflows that came before it.
    fn emit(&mut self, mut event: Event) {
        self.flush();
        for consumer in &mut self.consumers {
            consumer.consume(&mut event);
        }
    }

    /// Hands on the label overflows not handed on yet.
    fn flush(&mut self) {
        while let Some(label) = self.caps.overflowed.pop() {
            let mut event = Event::LabelOverflow { label };
            for consumer in &mut self.consumers {
                consumer.consume(&mut event);
            }
        }
    }

    /// Hands on the number of pending requests when it changed.
    fn report_pending(&mut self) {
        let n = self.pending.len();
        if n != self.pending_reported {
            self.pending_reported = n;
            self.emit(Event::PendingRequests(n));
        }
    }
}

/// An endpoint (`host:port`, `unix:path`) that can only be served from this host: a unix
/// socket, or a loopback address (each network namespace has its own loopback).
fn endpoint_is_local(endpoint: &str) -> bool {
    endpoint.starts_with("unix:") || endpoint.starts_with("127.") || endpoint.starts_with("[::1]:")
}

#[cfg(test)]
mod tests;
