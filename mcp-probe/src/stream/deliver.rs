//! From frames to the stitcher: the HTTP exchange's steps, JSON-RPC parsing, and what a
//! stream's texts say about whether it carries JSON-RPC at all.

use mcp_probe_common::Direction;

use crate::{
    metrics::{AgentMetrics, ReasonLabels},
    model::Observation,
    protocols::{
        http::exchange::{HttpExchange, Step},
        jsonrpc::{self, Id, Message, Parsed},
        Frame,
    },
    stitch::Stitcher,
};

use super::connection::TextCounts;

/// One frame of direction `obs.direction`: through the connection's exchange, then to the
/// stitcher. `obs` is the record's observation (no session, user or size yet).
pub(crate) fn on_frame(
    frame: Frame<'_>,
    obs: &Observation<'_>,
    exchange: &mut HttpExchange,
    texts: &mut TextCounts,
    stitcher: &mut Stitcher,
    metrics: &AgentMetrics,
) {
    let d: Direction = obs.direction;
    match exchange.on_frame(d, frame) {
        Step::Nothing => {}
        Step::Text {
            bytes,
            ts_ns,
            session,
            user,
        } => {
            let obs = Observation {
                ts_ns,
                session,
                user,
                ..*obs
            };
            let result = handle_text(bytes, &obs, stitcher, metrics);
            if let Ok(ids) = &result {
                exchange.requests_carried(d, ids);
            }
            count_text(result.map(|ids| ids.len().max(1) as u64), texts, metrics);
        }
        Step::Oversized(len) => {
            metrics.oversized_messages.inc();
            metrics.oversized_message_size.observe(len as f64);
            // Its length says nothing about whether the stream is JSON-RPC.
            metrics.parse_error("oversized");
        }
        Step::SessionDelete(id) => stitcher.on_session_delete(obs, id),
        Step::Response(status) => stitcher.on_http_response(obs, status),
        Step::ErrorAnswered { status, ids } => {
            // Requests this HTTP error answered without a JSON-RPC response.
            for id in ids {
                stitcher.on_http_error(obs, id, status);
            }
        }
        Step::Unparsable(reason) => {
            metrics
                .parse_errors
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
        Step::Invalid => count_text(Err("invalid_http"), texts, metrics),
    }
}

/// Counts a text's outcome against its stream: JSON-RPC found, a broken message on a
/// stream that has carried JSON-RPC, or (before that) most likely another program's JSON.
fn count_text(result: Result<u64, &'static str>, texts: &mut TextCounts, metrics: &AgentMetrics) {
    match result {
        Ok(n) => texts.jsonrpc += n,
        Err(reason) if texts.jsonrpc > 0 => {
            metrics
                .parse_errors
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
        Err(_) => {
            texts.other += 1;
            metrics.unconfirmed_lines.inc();
        }
    }
}

/// Parses one JSON-RPC text (a line, a JSON body, an SSE event) and hands its messages to
/// the stitcher. Returns the ids of the requests in it, or why it was not JSON-RPC.
fn handle_text(
    bytes: &[u8],
    obs: &Observation<'_>,
    stitcher: &mut Stitcher,
    metrics: &AgentMetrics,
) -> Result<Vec<Id>, &'static str> {
    let mut ids = Vec::new();
    let mut deliver = |msg: Message<'_>, size: u64, text: Option<&[u8]>| {
        metrics.messages.inc();
        if let Message::Request { id, .. } = &msg {
            ids.push(id.clone());
        }
        stitcher.on_message_bytes(&Observation { size, ..*obs }, msg, text);
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
