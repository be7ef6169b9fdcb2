//! Assertions shared by the tests, on their own server's series.

use super::*;

pub const CLIENT: &str = "mcp_client";
pub const SERVER: &str = "mcp_server";

pub fn requests(m: &Metrics, side: &str, server: &str, method: &str, tool: &str) -> f64 {
    m.sum(
        &format!("{side}_requests_total"),
        &[
            ("mcp_server_name", server),
            ("mcp_method_name", method),
            ("gen_ai_tool_name", tool),
        ],
    )
}

pub fn responses(
    m: &Metrics,
    side: &str,
    server: &str,
    method: &str,
    tool: &str,
    outcome: &str,
) -> f64 {
    m.sum(
        &format!("{side}_responses_total"),
        &[
            ("mcp_server_name", server),
            ("mcp_method_name", method),
            ("gen_ai_tool_name", tool),
            ("outcome", outcome),
        ],
    )
}

/// No byte lost anywhere, nothing unpaired, no parse error.
pub fn assert_clean(m: &Metrics) {
    for name in [
        "mcp_probe_lost_bytes_total",
        "mcp_probe_lost_records_total",
        "mcp_probe_unpaired_responses_total",
        "mcp_probe_parse_errors_total",
    ] {
        assert_eq!(
            m.sum(name, &[]),
            0.0,
            "{name} should be 0:\n{}",
            m.dump("mcp_probe")
        );
    }
}

/// The `basic` scenario's tool and prompt calls, on both sides.
pub fn assert_basic(m: &Metrics, server: &str, transport: &str) {
    for side in [CLIENT, SERVER] {
        assert_eq!(
            requests(m, side, server, "tools/call", "echo"),
            3.0,
            "{side} echo\n{}",
            m.dump("mcp_")
        );
        assert_eq!(
            requests(m, side, server, "tools/call", "add"),
            2.0,
            "{side} add"
        );
        assert_eq!(
            requests(m, side, server, "tools/call", "fail"),
            1.0,
            "{side} fail"
        );
        assert_eq!(
            responses(m, side, server, "tools/call", "echo", "ok"),
            3.0,
            "{side} echo ok"
        );
        assert_eq!(
            responses(m, side, server, "tools/call", "fail", "tool_error"),
            1.0,
            "{side} fail tool_error"
        );
        assert_eq!(
            m.sum(
                &format!("{side}_responses_total"),
                &[("mcp_server_name", server), ("error_type", "tool_error")]
            ),
            1.0
        );
        assert_eq!(
            m.sum(
                &format!("{side}_requests_total"),
                &[
                    ("mcp_server_name", server),
                    ("mcp_method_name", "prompts/get"),
                    ("gen_ai_prompt_name", "greet")
                ]
            ),
            1.0
        );
        assert_eq!(
            m.sum(
                &format!("{side}_operation_duration_seconds_count"),
                &[
                    ("mcp_server_name", server),
                    ("mcp_method_name", "tools/call")
                ]
            ),
            6.0
        );
        assert_eq!(
            m.sum(
                &format!("{side}_request_size_bytes_count"),
                &[
                    ("mcp_server_name", server),
                    ("mcp_method_name", "tools/call")
                ]
            ),
            6.0
        );
        assert_eq!(
            m.label_values(&format!("{side}_requests_total"), "network_transport"),
            vec![transport]
        );
    }
}

/// Every request the client put on the wire, per method, equals what both sides counted.
pub fn assert_matches_wire(m: &Metrics, server: &str, summary: &serde_json::Value) {
    let sent = summary["wire"]["sent"]["requests"]
        .as_object()
        .expect("wire.sent.requests");
    for (method, n) in sent {
        let n = n.as_f64().expect("count");
        for side in [CLIENT, SERVER] {
            let got = m.sum(
                &format!("{side}_requests_total"),
                &[("mcp_server_name", server), ("mcp_method_name", method)],
            );
            assert_eq!(
                got,
                n,
                "{side} {method}: client sent {n}, agent counted {got}\n{}",
                m.dump("mcp_")
            );
        }
    }
    // Nothing else: the only other requests are those the server sent to the client.
    let from_server = summary["wire"]["received"]["requests"]
        .as_object()
        .expect("wire.received.requests");
    let total: f64 = sent
        .values()
        .chain(from_server.values())
        .filter_map(|v| v.as_f64())
        .sum();
    for side in [CLIENT, SERVER] {
        assert_eq!(
            m.sum(
                &format!("{side}_requests_total"),
                &[("mcp_server_name", server)]
            ),
            total,
            "{side} total"
        );
    }
}

// ---- A host with many other TCP sockets (tests/tests/load.rs, the bench) ----
