//! Root integration tests for stdio capture: the real agent, the real eBPF programs, and the
//! official MCP SDKs (PyPI `mcp` 2.x and 1.x, npm server-everything) talking over pipes.

use integration_tests::{
    assert_basic, assert_clean, assert_matches_wire, everything_server, exclusive, harness, py1,
    py2, requests, responses, run_client, Agent, Metrics, CLIENT, SERVER,
};

fn wait_tool_calls(agent: &Agent, server: &str, n: f64) -> Metrics {
    agent.wait_for(&format!("{n} tools/call on both sides for {server}"), |m| {
        [CLIENT, SERVER].iter().all(|side| {
            m.sum(
                &format!("{side}_requests_total"),
                &[
                    ("mcp_server_name", server),
                    ("mcp_method_name", "tools/call"),
                ],
            ) >= n
        })
    })
}

#[test]
fn py2_sdk_stateless_discover_protocol() {
    let _guard = exclusive();
    let agent = Agent::start();
    let summary = run_client(
        &py2(),
        &["--scenario", "basic", "--mode", "auto"],
        &[py2().display().to_string(), harness("py2_server.py")],
    );
    assert_eq!(summary["protocol_version"], "2026-07-28");
    let m = wait_tool_calls(&agent, "probe-py2", 6.0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let m2 = agent.scrape();
    assert_eq!(
        m.dump("mcp_client"),
        m2.dump("mcp_client"),
        "counts still changing"
    );
    assert_basic(&m2, "probe-py2", "pipe");
    assert_matches_wire(&m2, "probe-py2", &summary);
    assert_eq!(
        requests(&m2, CLIENT, "probe-py2", "server/discover", ""),
        1.0
    );
    assert_eq!(requests(&m2, CLIENT, "probe-py2", "initialize", ""), 0.0);
    assert_clean(&m2);
    agent.stop();
}

#[test]
fn py2_sdk_initialize_handshake() {
    let _guard = exclusive();
    let agent = Agent::start();
    let summary = run_client(
        &py2(),
        &["--scenario", "basic", "--mode", "legacy"],
        &[py2().display().to_string(), harness("py2_server.py")],
    );
    assert_eq!(summary["protocol_version"], "2025-11-25");
    let m = wait_tool_calls(&agent, "probe-py2", 6.0);
    assert_basic(&m, "probe-py2", "pipe");
    assert_matches_wire(&m, "probe-py2", &summary);
    for side in [CLIENT, SERVER] {
        assert_eq!(requests(&m, side, "probe-py2", "initialize", ""), 1.0);
        assert_eq!(
            m.sum(
                &format!("{side}_notifications_total"),
                &[
                    ("mcp_server_name", "probe-py2"),
                    ("mcp_method_name", "notifications/initialized")
                ]
            ),
            1.0,
            "{side} initialized notification"
        );
    }
    assert_clean(&m);
    agent.stop();
}

#[test]
fn py1_fastmcp_unknown_method_and_error_types() {
    let _guard = exclusive();
    let agent = Agent::start();
    let server = [py1().display().to_string(), harness("py1_server.py")];
    let summary = run_client(&py1(), &["--scenario", "basic"], &server);
    let unknown = run_client(&py1(), &["--scenario", "unknown-method"], &server);
    let m = wait_tool_calls(&agent, "probe-py1", 7.0);
    for side in [CLIENT, SERVER] {
        assert_eq!(requests(&m, side, "probe-py1", "initialize", ""), 2.0);
        assert_eq!(
            requests(&m, side, "probe-py1", "probe/unknown", ""),
            1.0,
            "unknown method counted under its own name"
        );
        // FastMCP 1.x answers an unknown method with -32602 (observed on the wire).
        assert_eq!(
            m.sum(
                &format!("{side}_responses_total"),
                &[
                    ("mcp_server_name", "probe-py1"),
                    ("mcp_method_name", "probe/unknown"),
                    ("outcome", "error"),
                    ("error_type", "-32602")
                ]
            ),
            1.0,
            "{side}\n{}",
            m.dump("mcp_")
        );
        assert_eq!(
            m.sum(
                &format!("{side}_operation_duration_seconds_count"),
                &[("mcp_server_name", "probe-py1"), ("error_type", "-32602")]
            ),
            1.0
        );
        assert_eq!(requests(&m, side, "probe-py1", "tools/call", "echo"), 4.0);
    }
    let sent =
        |s: &serde_json::Value, k: &str| s["wire"]["sent"]["requests"][k].as_f64().unwrap_or(0.0);
    let total = |k| sent(&summary, k) + sent(&unknown, k);
    assert_eq!(
        requests(&m, CLIENT, "probe-py1", "tools/list", ""),
        total("tools/list")
    );
    assert_clean(&m);
    agent.stop();
}

#[test]
fn npm_server_everything_with_server_to_client_requests() {
    let _guard = exclusive();
    let agent = Agent::start();
    let summary = run_client(
        &py2(),
        &["--scenario", "everything-basic", "--roots"],
        &everything_server(),
    );
    let name = "mcp-servers/everything";
    let m = agent.wait_for("server-everything traffic", |m| {
        [CLIENT, SERVER].iter().all(|side| {
            m.sum(
                &format!("{side}_requests_total"),
                &[("mcp_server_name", name), ("mcp_method_name", "tools/call")],
            ) >= 4.0
                && m.sum(
                    &format!("{side}_requests_total"),
                    &[("mcp_server_name", name), ("mcp_method_name", "roots/list")],
                ) >= 1.0
        })
    });
    assert_matches_wire(&m, name, &summary);
    for side in [CLIENT, SERVER] {
        // The server asks the client for its roots: pairing works in both directions.
        assert_eq!(
            requests(&m, side, name, "roots/list", ""),
            1.0,
            "{side} roots/list"
        );
        assert_eq!(responses(&m, side, name, "roots/list", "", "ok"), 1.0);
        // One call to a tool that does not exist: an isError result.
        assert_eq!(
            m.sum(
                &format!("{side}_responses_total"),
                &[
                    ("mcp_server_name", name),
                    ("mcp_method_name", "tools/call"),
                    ("outcome", "tool_error")
                ]
            ),
            1.0
        );
        assert_eq!(
            m.sum(
                &format!("{side}_notifications_total"),
                &[
                    ("mcp_server_name", name),
                    ("mcp_method_name", "notifications/initialized")
                ]
            ),
            1.0
        );
    }
    assert_clean(&m);
    agent.stop();
}

#[test]
fn one_mebibyte_argument_is_reassembled() {
    let _guard = exclusive();
    let agent = Agent::start();
    run_client(
        &py2(),
        &["--scenario", "big"],
        &[py2().display().to_string(), harness("py2_server.py")],
    );
    let m = wait_tool_calls(&agent, "probe-py2", 1.0);
    for side in [CLIENT, SERVER] {
        assert_eq!(requests(&m, side, "probe-py2", "tools/call", "size"), 1.0);
        let bytes = m.sum(
            &format!("{side}_request_size_bytes_sum"),
            &[("mcp_method_name", "tools/call")],
        );
        assert!(
            (1_048_576.0..1_049_600.0).contains(&bytes),
            "{side} request size {bytes}"
        );
        // Lands in the (1 MiB, 4 MiB] bucket.
        let le = |b: &str| {
            m.sum(
                &format!("{side}_request_size_bytes_bucket"),
                &[("mcp_method_name", "tools/call"), ("le", b)],
            )
        };
        assert_eq!(
            (le("1048576.0"), le("4194304.0")),
            (0.0, 1.0),
            "{side} size buckets"
        );
    }
    assert_clean(&m);
    agent.stop();
}

#[test]
fn slow_tool_lands_in_its_latency_bucket() {
    let _guard = exclusive();
    let agent = Agent::start();
    run_client(
        &py2(),
        &["--scenario", "slow"],
        &[py2().display().to_string(), harness("py2_server.py")],
    );
    let m = wait_tool_calls(&agent, "probe-py2", 1.0);
    for side in [CLIENT, SERVER] {
        let le = |b: &str| {
            m.sum(
                &format!("{side}_operation_duration_seconds_bucket"),
                &[("gen_ai_tool_name", "slow"), ("le", b)],
            )
        };
        assert_eq!(
            (le("1.0"), le("2.0")),
            (0.0, 1.0),
            "{side}: a 1.5 s tool is in the (1, 2] bucket\n{}",
            m.dump("mcp_")
        );
        let sum = m.sum(
            &format!("{side}_operation_duration_seconds_sum"),
            &[("gen_ai_tool_name", "slow")],
        );
        assert!((1.5..1.9).contains(&sum), "{side} duration {sum}");
    }
    assert_clean(&m);
    agent.stop();
}

#[test]
fn a_request_past_the_deadline_is_a_timeout_and_its_answer_is_late() {
    let _guard = exclusive();
    let agent = Agent::start_with(&["--request-timeout-seconds", "1"]);
    run_client(
        &py2(),
        &["--scenario", "slow"],
        &[py2().display().to_string(), harness("py2_server.py")],
    );
    let m = agent.wait_for(
        "a timed-out slow call and its late answer on both sides",
        |m| {
            m.sum(
                "mcp_client_request_timeouts_total",
                &[("gen_ai_tool_name", "slow")],
            ) >= 1.0
                && m.sum(
                    "mcp_server_request_timeouts_total",
                    &[("gen_ai_tool_name", "slow")],
                ) >= 1.0
                && m.sum("mcp_probe_late_responses_total", &[]) >= 2.0
        },
    );
    for side in [CLIENT, SERVER] {
        assert_eq!(
            m.sum(
                &format!("{side}_request_timeouts_total"),
                &[
                    ("mcp_server_name", "probe-py2"),
                    ("gen_ai_tool_name", "slow")
                ]
            ),
            1.0
        );
        assert_eq!(requests(&m, side, "probe-py2", "tools/call", "slow"), 1.0);
        assert_eq!(
            responses(&m, side, "probe-py2", "tools/call", "slow", "ok"),
            0.0
        );
    }
    // The handshake can time out too on the client's side when the server's interpreter
    // takes over a second to start (it does here without bytecode caches): its answer is
    // then late as well. Every timed-out request of this session is answered late.
    let timeouts: f64 = [CLIENT, SERVER]
        .iter()
        .map(|side| m.sum(&format!("{side}_request_timeouts_total"), &[]))
        .sum();
    assert!(timeouts >= 2.0, "{timeouts} timeouts");
    assert_eq!(
        m.sum("mcp_probe_late_responses_total", &[]),
        timeouts,
        "the 1.5 s answer arrives after the 1 s deadline, on both sides"
    );
    assert_eq!(m.sum("mcp_probe_unpaired_responses_total", &[]), 0.0);
    agent.stop();
}

#[test]
fn cancelled_call_is_counted_and_the_session_goes_on() {
    let _guard = exclusive();
    let agent = Agent::start();
    run_client(
        &py2(),
        &["--scenario", "cancel"],
        &[py2().display().to_string(), harness("py2_server.py")],
    );
    let m = wait_tool_calls(&agent, "probe-py2", 2.0);
    for side in [CLIENT, SERVER] {
        let cancelled = m.sum(
            &format!("{side}_request_cancellations_total"),
            &[
                ("mcp_server_name", "probe-py2"),
                ("gen_ai_tool_name", "slow"),
            ],
        );
        assert_eq!(cancelled, 1.0, "{side} cancellations\n{}", m.dump("mcp_"));
        assert_eq!(
            responses(&m, side, "probe-py2", "tools/call", "echo", "ok"),
            1.0
        );
        assert_eq!(
            m.sum(
                &format!("{side}_notifications_total"),
                &[("mcp_method_name", "notifications/cancelled")]
            ),
            1.0
        );
    }
    assert_clean(&m);
    agent.stop();
}

#[test]
fn server_started_before_the_agent_is_named_from_its_command_line() {
    let _guard = exclusive();
    let stop_file = std::env::temp_dir().join(format!("mcp-probe-hold-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop_file);
    let mut client = std::process::Command::new(py1())
        .arg(harness("client.py"))
        .args([
            "--scenario",
            "hold",
            "--stop-file",
            &stop_file.display().to_string(),
            "--",
        ])
        .arg(py1())
        .arg(harness("py1_server.py"))
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start hold client");
    std::thread::sleep(std::time::Duration::from_secs(3)); // handshake done before the agent
    let agent = Agent::start();
    let name = "py1_server.py";
    let m = agent.wait_for("calls of a session that started before the agent", |m| {
        [CLIENT, SERVER]
            .iter()
            .all(|side| requests(m, side, name, "tools/call", "echo") >= 3.0)
    });
    std::fs::write(&stop_file, b"stop").expect("write stop file");
    let status = client.wait().expect("client exits");
    assert!(status.success());
    assert_eq!(
        requests(&m, CLIENT, "probe-py1", "tools/call", "echo"),
        0.0,
        "handshake was not seen"
    );
    assert_eq!(m.sum("mcp_probe_lost_bytes_total", &[]), 0.0);
    let _ = std::fs::remove_file(&stop_file);
    agent.stop();
}

#[test]
fn garbage_and_a_100_mb_line_are_counted_and_the_session_is_still_measured() {
    let _guard = exclusive();
    let agent = Agent::start();
    // 96 MiB: just over 100 MB, in one write().
    let mib = 96.0;
    let out = std::process::Command::new("python3")
        .arg(harness("hostile_peer.py"))
        .args(["--big-mib", "96"])
        .output()
        .expect("run hostile peer");
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("hostile peer summary");
    assert_eq!(summary["responses"], 2, "{summary}");
    let server = "hostile_peer.py";
    let m = agent.wait_for(
        "both requests around the garbage, and the kernel's truncation count",
        |m| {
            [CLIENT, SERVER]
                .iter()
                .all(|side| requests(m, side, server, "tools/call", "echo") >= 2.0)
                && m.sum("mcp_probe_lost_bytes_total", &[]) > 0.0
        },
    );
    for side in [CLIENT, SERVER] {
        assert_eq!(
            requests(&m, side, server, "tools/call", "echo"),
            2.0,
            "{side}\n{}",
            m.dump("mcp_")
        );
    }
    // Text, truncated JSON and binary on both sides; the JSON log line is not JSON-RPC.
    assert!(
        m.sum(
            "mcp_probe_parse_errors_total",
            &[("reason", "invalid_json")]
        ) >= 3.0,
        "{}",
        m.dump("mcp_probe")
    );
    assert!(m.sum("mcp_probe_parse_errors_total", &[("reason", "not_jsonrpc")]) >= 1.0);
    // The 100 MB line is too big to parse but is counted, on the reading side at least.
    assert!(
        m.sum("mcp_probe_oversized_messages_total", &[]) >= 1.0,
        "{}",
        m.dump("mcp_probe")
    );
    // ... with its exact size (each side that saw it whole reports the same length).
    let big = summary["big_line_bytes"].as_f64().expect("big_line_bytes");
    let sizes = m.sum("mcp_probe_oversized_message_size_bytes_sum", &[]);
    let count = m.sum("mcp_probe_oversized_message_size_bytes_count", &[]);
    assert_eq!(
        sizes,
        big * count,
        "oversized sizes {sizes} over {count} messages, line is {big} bytes"
    );
    // Whatever the kernel could not deliver is in the loss counters, never silent.
    let captured = m.sum("mcp_probe_captured_bytes_total", &[]);
    let lost = m.sum("mcp_probe_lost_bytes_total", &[]);
    assert!(
        captured + lost >= 2.0 * mib * 1024.0 * 1024.0,
        "captured {captured} + lost {lost}"
    );
    // Bounded memory: the line is never held whole.
    let (_, peak) = agent.memory();
    assert!(peak < 200 << 20, "agent peak RSS {peak} B");
    agent.stop();
}
