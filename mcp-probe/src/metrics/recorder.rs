//! The metrics recorder: turns the stitcher's events into series.
//!
//! Per-request series are the costly ones, so their labels are capped twice: each
//! traffic-derived value on its own (the stitcher caps names, the recorder error types),
//! and each family's label combinations ([`SeriesCap`]); past a cap the traffic-derived
//! labels fold into `_other`. Counting a request through a known series costs one map
//! lookup, through cached handles of all its families.

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use super::{
    ClientLabels, ConnectionErrorLabels, HttpStatusLabels, LabelNameLabels, Metrics,
    NotificationLabels, OperationLabels, RequestLabels, ResponseLabels, ServerSideLabels,
    SessionLabels, SideMetrics, TransportLabels, UserLabels, WhatLabels,
};
use crate::{
    events::{ActiveSession, Consumer, Ending, Event, Exchange},
    labels::{LabelCap, SeriesCap, OTHER},
    model::{Side, Transport},
    HashMap,
};

/// The metric handles of one exchange series (side, labels, outcome): clones share the
/// counters and histograms of the families.
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

pub struct Recorder {
    metrics: Metrics,
    errors: LabelCap,
    /// Series of the per-request families, per side (client, server).
    exchange_series: [SeriesCap; 2],
    notification_series: [SeriesCap; 2],
    user_series: SeriesCap,
    /// Handles of the admitted exchange series, by a hash of their labels.
    series: HashMap<u64, SeriesHandles>,
    series_hasher: foldhash::fast::RandomState,
    overflowed: Vec<&'static str>,
}

impl Recorder {
    /// `max_error_types` distinct `error_type` values, `max_series` label combinations per
    /// family and side.
    pub fn new(metrics: Metrics, max_error_types: usize, max_series: usize) -> Self {
        Self {
            metrics,
            errors: LabelCap::new("error_type", max_error_types),
            exchange_series: [SeriesCap::new(max_series), SeriesCap::new(max_series)],
            notification_series: [SeriesCap::new(max_series), SeriesCap::new(max_series)],
            user_series: SeriesCap::new(max_series),
            series: HashMap::default(),
            series_hasher: foldhash::fast::RandomState::default(),
            overflowed: Vec::new(),
        }
    }

    fn side(&self, side: Side) -> &SideMetrics {
        match side {
            Side::Client => &self.metrics.client,
            Side::Server => &self.metrics.server,
        }
    }

    fn label_overflow(&self, label: &'static str) {
        self.metrics
            .agent
            .label_overflow
            .get_or_create(&LabelNameLabels { label })
            .inc();
    }

    fn series_overflow(&self) {
        self.label_overflow("series");
    }

    fn notification(&mut self, side: Side, server: &str, method: &str, transport: Transport) {
        let mut labels = NotificationLabels {
            mcp_server_name: server.to_owned(),
            mcp_method_name: method.to_owned(),
            network_transport: transport.label(),
        };
        if !self.notification_series[side.index()].admit(&labels) {
            self.series_overflow();
            labels.mcp_method_name = OTHER.to_owned();
        }
        self.side(side).notifications.get_or_create(&labels).inc();
    }

    fn http_status(&self, side: Side, server: &str, status: u16, transport: Transport) {
        let http = &self.metrics.http;
        http.responses
            .get_or_create(&HttpStatusLabels {
                mcp_server_name: server.to_owned(),
                side: side.label(),
                status_class: status_class(status),
                network_transport: transport.label(),
            })
            .inc();
        let labels = ServerSideLabels {
            mcp_server_name: server.to_owned(),
            side: side.label(),
            status,
        };
        match status {
            401 | 403 => http.auth_failures.get_or_create(&labels).inc(),
            429 => http.rate_limited.get_or_create(&labels).inc(),
            _ => 0,
        };
    }

    /// Counts one completed request: through the handles of its series when the series is
    /// known (one lookup), else through the families (admitting the series under the cap,
    /// or folding it into `_other`).
    fn exchange(&mut self, x: &mut Exchange) {
        let (outcome, error_type) = x.ending.labels();
        let error_type = error_type.map(|e| self.errors.value(&e, &mut self.overflowed));
        for label in std::mem::take(&mut self.overflowed) {
            self.label_overflow(label);
        }
        let server = x.server.as_str();
        let p = &mut x.request;
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
                x.side as u8,
                server,
                &p.method,
                &p.tool,
                &p.prompt,
                p.transport.label(),
                outcome,
                &error_type,
            );
            self.series_hasher.hash_one(series)
        };
        let handles = match self.series.get(&key) {
            Some(h) => h.clone(),
            None => {
                let request = RequestLabels {
                    mcp_server_name: server.to_owned(),
                    mcp_method_name: p.method.clone(),
                    gen_ai_tool_name: p.tool.clone(),
                    gen_ai_prompt_name: p.prompt.clone(),
                    network_transport: p.transport.label(),
                };
                let (handles, admitted) = self.series_handles(x.side, request, outcome, error_type);
                if admitted {
                    self.series.insert(key, handles.clone());
                }
                handles
            }
        };
        handles.requests.inc();
        handles.request_size.observe(x.request.size as f64);
        match (&x.ending, handles.ending) {
            (Ending::Cancelled { .. } | Ending::Timeout { .. }, EndingHandles::Counter(c)) => {
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
                response_size.observe(*size as f64);
                duration.observe(*duration_s);
            }
            _ => {} // the key includes the kind of ending: cannot happen
        }
    }

    /// The metric handles of an exchange series, and whether it was admitted under the
    /// series cap (else its traffic-derived labels were folded into `_other`).
    fn series_handles(
        &mut self,
        side: Side,
        mut request: RequestLabels,
        outcome: &'static str,
        mut error_type: Option<String>,
    ) -> (SeriesHandles, bool) {
        let admitted = self.exchange_series[side.index()].admit(&(&request, outcome, &error_type));
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

    /// Sets the active-session and active-client gauges from the open sessions.
    fn active_sessions(&self, sessions: &[ActiveSession]) {
        let mut active: HashMap<(Side, &str, Transport), i64> = HashMap::default();
        let mut clients: HashMap<(&str, &str), i64> = HashMap::default();
        for s in sessions {
            if s.counts_clients {
                let client = s.client.as_deref().unwrap_or("unknown");
                *clients.entry((&s.server, client)).or_default() += 1;
            }
            *active.entry((s.side, &s.server, s.transport)).or_default() += 1;
        }
        self.metrics.active_clients.clear();
        for ((server, client), n) in clients {
            self.metrics
                .active_clients
                .get_or_create(&ClientLabels {
                    mcp_server_name: server.to_owned(),
                    client_name: client.to_owned(),
                })
                .set(n);
        }
        self.metrics.client.active_sessions.clear();
        self.metrics.server.active_sessions.clear();
        for ((side, server, transport), n) in active {
            self.side(side)
                .active_sessions
                .get_or_create(&SessionLabels {
                    mcp_server_name: server.to_owned(),
                    network_transport: transport.label(),
                })
                .set(n);
        }
    }
}

impl Consumer for Recorder {
    fn consume(&mut self, event: &mut Event) {
        let agent = &self.metrics.agent;
        match event {
            Event::Exchange(x) => self.exchange(x),
            Event::Notification {
                side,
                server,
                method,
                transport,
                ..
            } => self.notification(*side, server, method, *transport),
            Event::HttpStatus {
                side,
                server,
                status,
                transport,
            } => self.http_status(*side, server, *status, *transport),
            Event::ConnectionError {
                side,
                server,
                reason,
                transport,
            } => {
                self.metrics
                    .http
                    .connection_errors
                    .get_or_create(&ConnectionErrorLabels {
                        mcp_server_name: server.clone(),
                        side: side.label(),
                        reason,
                        network_transport: transport.label(),
                    })
                    .inc();
            }
            Event::SessionEnded {
                side,
                server,
                transport,
                duration_s,
            } => {
                self.side(*side)
                    .session_duration
                    .get_or_create(&SessionLabels {
                        mcp_server_name: server.clone(),
                        network_transport: transport.label(),
                    })
                    .observe(*duration_s);
            }
            Event::ActiveSessions(sessions) => self.active_sessions(sessions),
            Event::PendingRequests(n) => {
                agent.pending_requests.set(*n as i64);
            }
            Event::Evicted { what, n } => {
                agent
                    .evictions
                    .get_or_create(&WhatLabels { what })
                    .inc_by(*n);
            }
            Event::LateResponse => {
                agent.late_responses.inc();
            }
            Event::ReorderedResponse => {
                agent.reordered_responses.inc();
            }
            Event::Unpaired { transport } => {
                agent
                    .unpaired_responses
                    .get_or_create(&TransportLabels {
                        network_transport: transport.label(),
                    })
                    .inc();
            }
            Event::LabelOverflow { label } => self.label_overflow(label),
        }
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
