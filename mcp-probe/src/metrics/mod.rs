//! The Prometheus registry: every metric the agent exports, built once at start-up.
//!
//! Naming follows the OpenTelemetry MCP semantic conventions where they exist
//! (`mcp.client.operation.duration` -> `mcp_client_operation_duration_seconds`): `client`
//! metrics are measured in the process that *sent* a request or notification, `server`
//! metrics in the process that *received* it. The agent's own health is under `mcp_probe_`.

mod label_sets;
pub mod recorder;

pub use label_sets::*;

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Buckets of the OpenTelemetry MCP operation and session duration histograms (seconds).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Message size buckets: 64 B to 64 MiB, powers of four.
pub const SIZE_BUCKETS: [f64; 11] = [
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

/// One side's (sender's or receiver's) traffic metrics.
#[derive(Clone)]
pub struct SideMetrics {
    pub operation_duration: HistFamily<OperationLabels>,
    pub requests: Family<RequestLabels, Counter>,
    pub responses: Family<ResponseLabels, Counter>,
    pub notifications: Family<NotificationLabels, Counter>,
    pub timeouts: Family<RequestLabels, Counter>,
    pub cancellations: Family<RequestLabels, Counter>,
    pub request_size: HistFamily<RequestLabels>,
    pub response_size: HistFamily<ResponseLabels>,
    /// Sessions, as seen by the MCP client (`client`) or the MCP server (`server`).
    pub session_duration: HistFamily<SessionLabels>,
    pub active_sessions: Family<SessionLabels, Gauge>,
}

impl SideMetrics {
    fn register(registry: &mut Registry, side: &str, who: &str) -> Self {
        let m = Self {
            operation_duration: Family::new_with_constructor(duration_histogram),
            requests: Family::default(),
            responses: Family::default(),
            notifications: Family::default(),
            timeouts: Family::default(),
            cancellations: Family::default(),
            request_size: Family::new_with_constructor(size_histogram),
            response_size: Family::new_with_constructor(size_histogram),
            session_duration: Family::new_with_constructor(duration_histogram),
            active_sessions: Family::default(),
        };
        registry.register(
            format!("mcp_{side}_operation_duration_seconds"),
            format!("Duration of MCP requests as observed by the {who}, from the request to its response (kernel timestamps)"),
            m.operation_duration.clone(),
        );
        registry.register(
            format!("mcp_{side}_requests"),
            format!("MCP requests observed by the {who}, counted when their outcome is known (response, cancellation or timeout)"),
            m.requests.clone(),
        );
        registry.register(
            format!("mcp_{side}_responses"),
            format!("MCP responses observed by the {who}, by outcome"),
            m.responses.clone(),
        );
        registry.register(
            format!("mcp_{side}_notifications"),
            format!("MCP notifications observed by the {who}"),
            m.notifications.clone(),
        );
        registry.register(
            format!("mcp_{side}_request_timeouts"),
            format!("MCP requests observed by the {who} that got no response within the request timeout"),
            m.timeouts.clone(),
        );
        registry.register(
            format!("mcp_{side}_request_cancellations"),
            format!("MCP requests cancelled with notifications/cancelled, observed by the {who}"),
            m.cancellations.clone(),
        );
        registry.register(
            format!("mcp_{side}_request_size_bytes"),
            format!("Size of MCP requests observed by the {who} (JSON bytes, without framing)"),
            m.request_size.clone(),
        );
        registry.register(
            format!("mcp_{side}_response_size_bytes"),
            format!("Size of MCP responses observed by the {who} (JSON bytes, without framing)"),
            m.response_size.clone(),
        );
        registry.register(
            format!("mcp_{side}_session_duration_seconds"),
            format!("Duration of MCP sessions as seen by the MCP {side} (HTTP session, session-less connection, or stdio channel)"),
            m.session_duration.clone(),
        );
        registry.register(
            format!("mcp_{side}_active_sessions"),
            format!("MCP sessions open now, as seen by the MCP {side}"),
            m.active_sessions.clone(),
        );
        m
    }
}

/// The agent's own counters.
#[derive(Clone)]
pub struct AgentMetrics {
    pub records: Counter,
    pub captured_bytes: Counter,
    pub kernel_records: Counter,
    pub lost_records: Family<ReasonLabels, Counter>,
    pub lost_bytes: Family<ReasonLabels, Counter>,
    pub followed_syscalls: Counter,
    pub streams_followed: Counter,
    pub streams_ignored: Family<ReasonLabels, Counter>,
    pub kernel_errors: Family<ReasonLabels, Counter>,
    pub parse_errors: Family<ReasonLabels, Counter>,
    pub messages: Counter,
    pub unconfirmed_lines: Counter,
    pub oversized_messages: Counter,
    pub oversized_message_size: Histogram,
    pub discarded_bytes: Family<ReasonLabels, Counter>,
    pub evictions: Family<WhatLabels, Counter>,
    pub kernel_events: Family<EventLabels, Counter>,
    pub limits: Family<LimitLabels, Gauge>,
    pub unpaired_responses: Family<TransportLabels, Counter>,
    pub late_responses: Counter,
    pub reordered_responses: Counter,
    pub tracked_streams: Gauge,
    pub pending_requests: Gauge,
    pub buffered_bytes: Gauge,
    pub ring_high_water: Gauge,
    pub ring_size: Gauge,
    pub hooks: Family<HookLabels, Gauge>,
    pub map_entries: Family<MapLabels, Gauge>,
    pub map_capacity: Family<MapLabels, Gauge>,
    pub label_overflow: Family<LabelNameLabels, Counter>,
    pub lookups: Family<LookupLabels, Counter>,
    pub lookups_shed: Family<ShedLookupLabels, Counter>,
    pub lookup_waiting_bytes: Gauge,
    pub build_info: Family<BuildInfoLabels, Gauge>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            records: Counter::default(),
            captured_bytes: Counter::default(),
            kernel_records: Counter::default(),
            lost_records: Family::default(),
            lost_bytes: Family::default(),
            followed_syscalls: Counter::default(),
            streams_followed: Counter::default(),
            streams_ignored: Family::default(),
            kernel_errors: Family::default(),
            parse_errors: Family::default(),
            messages: Counter::default(),
            unconfirmed_lines: Counter::default(),
            oversized_messages: Counter::default(),
            oversized_message_size: size_histogram(),
            discarded_bytes: Family::default(),
            evictions: Family::default(),
            kernel_events: Family::default(),
            limits: Family::default(),
            unpaired_responses: Family::default(),
            late_responses: Counter::default(),
            reordered_responses: Counter::default(),
            tracked_streams: Gauge::default(),
            pending_requests: Gauge::default(),
            buffered_bytes: Gauge::default(),
            ring_high_water: Gauge::default(),
            ring_size: Gauge::default(),
            hooks: Family::default(),
            map_entries: Family::default(),
            map_capacity: Family::default(),
            label_overflow: Family::default(),
            lookups: Family::default(),
            lookups_shed: Family::default(),
            lookup_waiting_bytes: Gauge::default(),
            build_info: Family::default(),
        }
    }
}

impl AgentMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry;
        r.register(
            "mcp_probe_records",
            "Ring buffer records received by the agent",
            m.records.clone(),
        );
        r.register(
            "mcp_probe_captured_bytes",
            "Payload bytes received from the kernel",
            m.captured_bytes.clone(),
        );
        r.register(
            "mcp_probe_kernel_records",
            "Records the kernel programs submitted to the ring buffer",
            m.kernel_records.clone(),
        );
        r.register(
            "mcp_probe_lost_records",
            "Records the kernel could not deliver, by reason (ringbuf_full, read_failed)",
            m.lost_records.clone(),
        );
        r.register("mcp_probe_lost_bytes", "Bytes of followed streams the agent did not see, by reason (ringbuf_full, read_failed, truncated)", m.lost_bytes.clone());
        r.register(
            "mcp_probe_followed_syscalls",
            "read/write-family syscalls on followed streams",
            m.followed_syscalls.clone(),
        );
        r.register(
            "mcp_probe_streams_followed",
            "Pipes and sockets whose first bytes looked like JSON-RPC and that were followed",
            m.streams_followed.clone(),
        );
        r.register("mcp_probe_streams_ignored", "Streams dropped from capture, by reason (not_json: first bytes; not_jsonrpc: agent saw JSON that is not JSON-RPC)", m.streams_ignored.clone());
        r.register(
            "mcp_probe_kernel_errors",
            "Kernel-side failures that are not byte losses, by reason",
            m.kernel_errors.clone(),
        );
        r.register("mcp_probe_parse_errors", "Messages that could not be parsed, by reason (invalid_json, not_jsonrpc, oversized, decode)", m.parse_errors.clone());
        r.register(
            "mcp_probe_messages",
            "JSON-RPC messages parsed (each batch element counts)",
            m.messages.clone(),
        );
        r.register("mcp_probe_unconfirmed_lines", "Lines on followed streams that had not carried JSON-RPC yet and did not parse as JSON-RPC (other programs' JSON output; such streams are dropped after 8 lines)", m.unconfirmed_lines.clone());
        r.register("mcp_probe_oversized_messages", "Messages longer than --max-message-bytes or with uncaptured bytes; sized exactly but not parsed", m.oversized_messages.clone());
        r.register(
            "mcp_probe_oversized_message_size_bytes",
            "Exact sizes of oversized messages",
            m.oversized_message_size.clone(),
        );
        r.register(
            "mcp_probe_discarded_bytes",
            "Captured bytes that belong to no parsed message, by reason (resync: skipped to the next message boundary after a loss; evicted: partial message of a stream pushed out by --max-streams; process_exit: partial message left by a process that exited)",
            m.discarded_bytes.clone(),
        );
        r.register(
            "mcp_probe_evictions",
            "Entries a limit pushed out, by what (stream, pending_request, session, message_buffer)",
            m.evictions.clone(),
        );
        r.register(
            "mcp_probe_kernel_events",
            "Kernel-side bookkeeping, by event (blocked_syscall_captured, blocked_syscall_stale, fd_reclassified)",
            m.kernel_events.clone(),
        );
        r.register(
            "mcp_probe_limit",
            "The agent's configured bounds (max_streams, max_buffered_bytes, max_pending_requests, ...)",
            m.limits.clone(),
        );
        r.register(
            "mcp_probe_unpaired_responses",
            "Responses with no matching request on their channel",
            m.unpaired_responses.clone(),
        );
        r.register(
            "mcp_probe_late_responses",
            "Responses to requests already counted as cancelled or timed out",
            m.late_responses.clone(),
        );
        r.register(
            "mcp_probe_reordered_responses",
            "Responses whose request was reported after them (a write that blocked on a full pipe is reported when it returns) and that were paired once it was",
            m.reordered_responses.clone(),
        );
        r.register(
            "mcp_probe_tracked_streams",
            "Stream directions the agent is reassembling now",
            m.tracked_streams.clone(),
        );
        r.register(
            "mcp_probe_buffered_bytes",
            "Bytes held for partial messages across all streams",
            m.buffered_bytes.clone(),
        );
        r.register(
            "mcp_probe_ring_buffer_high_water_bytes",
            "Most unconsumed bytes in the kernel ring buffer during the last second (compare with mcp_probe_ring_buffer_size_bytes)",
            m.ring_high_water.clone(),
        );
        r.register(
            "mcp_probe_ring_buffer_size_bytes",
            "Size of the kernel ring buffer",
            m.ring_size.clone(),
        );
        r.register(
            "mcp_probe_map_entries",
            "Entries in the kernel's bookkeeping maps (FDS, STREAMS: LRU; WATCHED), counted every 30 s",
            m.map_entries.clone(),
        );
        r.register(
            "mcp_probe_map_capacity",
            "Capacity of the kernel's bookkeeping maps",
            m.map_capacity.clone(),
        );
        r.register(
            "mcp_probe_hook_attached",
            "1 for each kernel hook attached, 0 for an optional one (close, dup, fork, exec, exit) that could not be (category:tracepoint)",
            m.hooks.clone(),
        );
        r.register(
            "mcp_probe_lookups",
            "Lookups run off the drain thread, by lookup (peer: which server a new socket reaches, or that it was accepted; process: a new process's name and uid)",
            m.lookups.clone(),
        );
        r.register(
            "mcp_probe_lookups_shed",
            "Lookups not run or not waited for, by lookup and reason (queue_full, timed_out, waiting_full); the stream goes on named by its address, the process by its comm",
            m.lookups_shed.clone(),
        );
        r.register(
            "mcp_probe_lookup_waiting_bytes",
            "Bytes of records held until a lookup answers",
            m.lookup_waiting_bytes.clone(),
        );
        r.register(
            "mcp_probe_pending_requests",
            "Requests waiting for their response",
            m.pending_requests.clone(),
        );
        r.register(
            "mcp_probe_label_overflow",
            "Label values replaced by _other because the label reached its cardinality cap",
            m.label_overflow.clone(),
        );
        r.register(
            "mcp_probe_build_info",
            "Agent version and kernel release (always 1)",
            m.build_info.clone(),
        );
        m
    }
}

/// HTTP-level outcomes of MCP's HTTP transports.
#[derive(Clone, Default)]
pub struct HttpMetrics {
    pub connection_errors: Family<ConnectionErrorLabels, Counter>,
    pub responses: Family<HttpStatusLabels, Counter>,
    pub auth_failures: Family<ServerSideLabels, Counter>,
    pub rate_limited: Family<ServerSideLabels, Counter>,
}

impl HttpMetrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "mcp_http_responses",
            "HTTP responses of MCP's HTTP transports, by status class, once per side that saw them",
            m.responses.clone(),
        );
        r.register(
            "mcp_auth_failures",
            "HTTP 401 and 403 responses of MCP servers",
            m.auth_failures.clone(),
        );
        r.register(
            "mcp_connection_errors",
            "Failed reads/writes on MCP connections (reset, broken_pipe, timeout, aborted, unreachable)",
            m.connection_errors.clone(),
        );
        r.register(
            "mcp_rate_limited",
            "HTTP 429 responses of MCP servers",
            m.rate_limited.clone(),
        );
        m
    }
}

type F64Gauge = Gauge<f64, AtomicU64>;
type F64Counter = Counter<f64, AtomicU64>;

/// Health of MCP server processes and of the agent, from /proc.
#[derive(Clone, Default)]
pub struct HealthMetrics {
    pub processes: Family<ServerLabels, Gauge>,
    pub uptime: Family<ServerLabels, F64Gauge>,
    pub resident_memory: Family<ServerLabels, Gauge>,
    pub open_fds: Family<ServerLabels, Gauge>,
    pub threads: Family<ServerLabels, Gauge>,
    pub cpu_seconds: Family<ServerLabels, F64Counter>,
    pub exits: Family<ExitLabels, Counter>,
    pub restarts: Family<ServerLabels, Counter>,
    pub agent_resident_memory: Gauge,
    pub agent_cpu_seconds: F64Counter,
}

impl HealthMetrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "mcp_server_processes",
            "Live processes of each MCP server (identified from its traffic)",
            m.processes.clone(),
        );
        r.register(
            "mcp_server_uptime_seconds",
            "Uptime of the youngest live process of each MCP server",
            m.uptime.clone(),
        );
        r.register(
            "mcp_server_resident_memory_bytes",
            "Resident memory of the live processes of each MCP server",
            m.resident_memory.clone(),
        );
        r.register(
            "mcp_server_open_fds",
            "Open file descriptors of the live processes of each MCP server",
            m.open_fds.clone(),
        );
        r.register(
            "mcp_server_threads",
            "Threads of the live processes of each MCP server",
            m.threads.clone(),
        );
        r.register(
            "mcp_server_cpu_seconds",
            "CPU time (user + system) used by each MCP server's processes while the agent watched",
            m.cpu_seconds.clone(),
        );
        r.register(
            "mcp_server_exits",
            "Exits of MCP server processes, by status (exit_<code> or signal_<number>)",
            m.exits.clone(),
        );
        r.register(
            "mcp_server_restarts",
            "A new process of an MCP server appeared within 5 minutes of one of its processes exiting",
            m.restarts.clone(),
        );
        r.register(
            "mcp_probe_resident_memory_bytes",
            "The agent's resident memory",
            m.agent_resident_memory.clone(),
        );
        r.register(
            "mcp_probe_cpu_seconds",
            "CPU time (user + system) the agent used",
            m.agent_cpu_seconds.clone(),
        );
        m
    }
}

/// Everything exported.
#[derive(Clone)]
pub struct Metrics {
    pub client: SideMetrics,
    pub server: SideMetrics,
    pub http: HttpMetrics,
    pub health: HealthMetrics,
    pub active_clients: Family<ClientLabels, Gauge>,
    pub user_requests: Family<UserLabels, Counter>,
    pub agent: AgentMetrics,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        Self {
            client: SideMetrics::register(registry, "client", "sender"),
            server: SideMetrics::register(registry, "server", "receiver"),
            http: HttpMetrics::register(registry),
            health: HealthMetrics::register(registry),
            user_requests: {
                let f = Family::<UserLabels, Counter>::default();
                registry.register(
                    "mcp_user_requests",
                    "Requests per MCP server and user, for quota tracking (counted once, by the server, or by the client when the server is remote)",
                    f.clone(),
                );
                f
            },
            active_clients: {
                let f = Family::<ClientLabels, Gauge>::default();
                registry.register(
                    "mcp_active_clients",
                    "Open sessions per MCP server and client (clientInfo.name)",
                    f.clone(),
                );
                f
            },
            agent: AgentMetrics::register(registry),
        }
    }
}

impl AgentMetrics {
    pub fn evicted(&self, what: &'static str, n: u64) {
        if n > 0 {
            self.evictions.get_or_create(&WhatLabels { what }).inc_by(n);
        }
    }

    /// A lookup that was not run, or not waited for.
    pub fn shed_lookup(&self, lookup: &'static str, reason: &'static str) {
        self.lookups_shed
            .get_or_create(&ShedLookupLabels { lookup, reason })
            .inc();
    }

    pub fn discarded(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.discarded_bytes
                .get_or_create(&ReasonLabels { reason })
                .inc_by(n);
        }
    }

    pub fn parse_error(&self, reason: &'static str) {
        self.parse_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Creates the loss and eviction series at 0, so that they exist before the first
    /// loss: alerts and `increase()` then see the first one, and dashboards show a 0.
    pub fn init_loss_series(&self) {
        for reason in ["ringbuf_full", "read_failed"] {
            self.lost_records
                .get_or_create(&ReasonLabels { reason })
                .inc_by(0);
        }
        for reason in ["ringbuf_full", "read_failed", "truncated"] {
            self.lost_bytes
                .get_or_create(&ReasonLabels { reason })
                .inc_by(0);
        }
        for what in ["stream", "message_buffer", "pending_request", "session"] {
            self.evictions.get_or_create(&WhatLabels { what }).inc_by(0);
        }
        // At 0 from the start, so that the first shed lookup is an increase to alert on.
        for lookup in ["peer", "process"] {
            for reason in ["queue_full", "timed_out", "waiting_full"] {
                self.lookups_shed
                    .get_or_create(&ShedLookupLabels { lookup, reason })
                    .inc_by(0);
            }
        }
        self.lookups_shed
            .get_or_create(&ShedLookupLabels {
                lookup: "health",
                reason: "queue_full",
            })
            .inc_by(0);
    }

    pub fn set_limit(&self, limit: &'static str, value: usize) {
        self.limits
            .get_or_create(&LimitLabels { limit })
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }
}
