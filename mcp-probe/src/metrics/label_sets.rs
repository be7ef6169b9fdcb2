//! The label sets of the exported families, one typed struct each.

use prometheus_client::encoding::EncodeLabelSet;

/// Labels of one request's operation (duration histogram, response counters).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub mcp_server_name: String,
    pub mcp_method_name: String,
    pub gen_ai_tool_name: Option<String>,
    pub gen_ai_prompt_name: Option<String>,
    /// JSON-RPC error code, `tool_error`, or absent for success.
    pub error_type: Option<String>,
    pub network_transport: &'static str,
}

/// Labels of a request without its outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub mcp_server_name: String,
    pub mcp_method_name: String,
    pub gen_ai_tool_name: Option<String>,
    pub gen_ai_prompt_name: Option<String>,
    pub network_transport: &'static str,
}

/// Labels of a response count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub mcp_server_name: String,
    pub mcp_method_name: String,
    pub gen_ai_tool_name: Option<String>,
    pub gen_ai_prompt_name: Option<String>,
    /// `ok`, `error` (JSON-RPC error) or `tool_error` (`isError: true`).
    pub outcome: &'static str,
    pub error_type: Option<String>,
    pub network_transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub mcp_server_name: String,
    pub mcp_method_name: String,
    pub network_transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub network_transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// `mcp_probe_lookups_total{lookup}`: what was looked up off the drain thread.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub lookup: &'static str,
}

/// `mcp_probe_lookups_shed_total{lookup,reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLookupLabels {
    pub lookup: &'static str,
    pub reason: &'static str,
}

/// `mcp_probe_evictions_total{what}`: what a limit pushed out.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabels {
    pub what: &'static str,
}

/// `mcp_probe_kernel_events_total{event}`: kernel-side bookkeeping worth seeing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

/// `mcp_probe_limit{limit}`: the configured bounds, so dashboards can compare usage to them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LabelNameLabels {
    pub label: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    /// `category:tracepoint`, e.g. `syscalls:sys_enter_read`.
    pub hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfoLabels {
    pub version: &'static str,
    pub kernel_release: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    pub mcp_server_name: String,
    /// `clientInfo.name`, or `unknown` when the session's handshake was not seen.
    pub client_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabels {
    pub mcp_server_name: String,
    /// `uid:N` for a local client process, `cred:<hash>` for an HTTP credential.
    pub user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    pub mcp_server_name: String,
    pub network_transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpStatusLabels {
    pub mcp_server_name: String,
    /// `client` (the process that read the response) or `server` (the one that wrote it).
    pub side: &'static str,
    pub status_class: &'static str,
    pub network_transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerSideLabels {
    pub mcp_server_name: String,
    pub side: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionErrorLabels {
    pub mcp_server_name: String,
    pub side: &'static str,
    /// `reset`, `broken_pipe`, `timeout`, `aborted`, `unreachable`.
    pub reason: &'static str,
    pub network_transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub mcp_server_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExitLabels {
    pub mcp_server_name: String,
    /// `exit_<code>` or `signal_<number>`.
    pub status: String,
}
