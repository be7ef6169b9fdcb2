//! Root integration tests for the operations kit's sinks: the request log and OTLP spans
//! of the real agent, for real SDK sessions (PyPI `mcp` 2.x over stdio and Streamable
//! HTTP), received by a real OTLP/HTTP receiver that decodes them with the official
//! protobuf definitions.
//!
//! The tests sit in a module named `ops` so that `cargo xtask test --filter ops` runs them
//! (with the rules, dashboards and Prometheus tests, whose modules share the name).

mod ops {
    use std::{collections::BTreeMap, path::PathBuf};

    use integration_tests::{
        exclusive, free_port, harness, json_lines, py2, run_client, run_client_args, Agent,
        Metrics, OtlpReceiver, ServerProcess, CLIENT, SERVER,
    };
    use serde_json::Value;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";

    fn temp_file(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("mcp-probe-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    fn wait_calls(agent: &Agent, transports: &[&str], n: f64) -> Metrics {
        agent.wait_for(&format!("{n} tools/call per side on {transports:?}"), |m| {
            [CLIENT, SERVER].iter().all(|side| {
                transports.iter().all(|t| {
                    m.sum(
                        &format!("{side}_requests_total"),
                        &[
                            ("mcp_server_name", "probe-py2"),
                            ("mcp_method_name", "tools/call"),
                            ("network_transport", t),
                        ],
                    ) >= n
                })
            })
        })
    }

    fn requests(lines: &[Value]) -> Vec<&Value> {
        lines.iter().filter(|l| l["event"] == "request").collect()
    }

    fn count(lines: &[&Value], filter: &[(&str, &str)]) -> usize {
        lines
            .iter()
            .filter(|l| filter.iter().all(|(k, v)| l[*k] == *v))
            .count()
    }

    /// A stdio session (with a caller's trace context) and a Streamable HTTP session: each
    /// request gives one log line and one span per side, matching the metrics exactly.
    #[test]
    fn request_log_and_spans_follow_both_sides_of_stdio_and_http() {
        let _guard = exclusive();
        let receiver = OtlpReceiver::start();
        let log = temp_file("requests.jsonl");
        let agent = Agent::start_with(&[
            "--request-log",
            &log.to_string_lossy(),
            "--request-log-notifications",
            "--otlp-endpoint",
            &receiver.endpoint(),
        ]);
        let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
        let stdio = run_client(
            &py2(),
            &[
                "--scenario",
                "basic",
                "--mode",
                "legacy",
                "--traceparent",
                &traceparent,
            ],
            &[py2().display().to_string(), harness("py2_server.py")],
        );
        let port = free_port().to_string();
        let server = ServerProcess::start(&py2(), &[&harness("py2_server.py"), "--http", &port]);
        let url = format!("http://127.0.0.1:{port}/mcp");
        let http = run_client_args(
            &py2(),
            &["--scenario", "basic", "--url", &url, "--mode", "legacy"],
        );
        wait_calls(&agent, &["pipe", "tcp"], 6.0);
        std::thread::sleep(std::time::Duration::from_millis(500));
        drop(server);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let m = agent.scrape();
        // Stopping flushes the log and the last batch of spans.
        agent.stop();
        let lines = json_lines(&log);
        let reqs = requests(&lines);
        let spans = receiver.spans();

        // Exactly one line per request and side, as many as the metrics counted.
        for side in ["client", "server"] {
            for transport in ["pipe", "tcp"] {
                let counted = m.sum(
                    &format!("mcp_{side}_requests_total"),
                    &[
                        ("mcp_server_name", "probe-py2"),
                        ("network_transport", transport),
                    ],
                );
                let logged = count(
                    &reqs,
                    &[
                        ("side", side),
                        ("server", "probe-py2"),
                        ("transport", transport),
                    ],
                );
                assert_eq!(
                    logged as f64,
                    counted,
                    "{side} {transport}: {logged} lines, {counted} counted\n{}",
                    m.dump("mcp_client_requests")
                );
                for (tool, n, outcome) in [
                    ("echo", 3, "ok"),
                    ("add", 2, "ok"),
                    ("fail", 1, "tool_error"),
                ] {
                    let filter = [
                        ("side", side),
                        ("transport", transport),
                        ("method", "tools/call"),
                        ("tool", tool),
                        ("outcome", outcome),
                    ];
                    assert_eq!(count(&reqs, &filter), n, "{filter:?}");
                }
            }
        }
        for l in &reqs {
            let d = l["duration_seconds"].as_f64().expect("duration_seconds");
            assert!((0.0..5.0).contains(&d), "duration {d} in {l}");
            assert!(
                l["ts"]
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
                "{l}"
            );
            for absent in ["request_payload", "response_payload"] {
                assert!(l.get(absent).is_none(), "{absent} at the defaults: {l}");
            }
            if l["outcome"] == "tool_error" {
                assert_eq!(l["error_type"], "tool_error", "{l}");
            }
        }
        // stdio: both sides name the same processes and carry the caller's trace.
        let client_pid = stdio["pid"].as_u64().expect("client pid");
        let pipe: Vec<&&Value> = reqs.iter().filter(|l| l["transport"] == "pipe").collect();
        let server_pid = pipe[0]["server_pid"].as_u64().expect("server_pid");
        assert_ne!(server_pid, client_pid);
        for l in &pipe {
            assert_eq!(l["client_pid"], client_pid, "{l}");
            assert_eq!(l["server_pid"], server_pid, "{l}");
            let pid = if l["side"] == "client" {
                client_pid
            } else {
                server_pid
            };
            assert_eq!(l["pid"], pid, "{l}");
            assert_eq!(l["trace_id"], TRACE_ID, "{l}");
            assert_eq!(l["parent_span_id"], CALLER_SPAN, "{l}");
            assert!(
                l["client_name"].as_str().is_some_and(|c| !c.is_empty()),
                "{l}"
            );
            if l["method"] == "initialize" {
                // The version the client asks for (2026-07-28 requests carry it in `_meta`).
                assert_eq!(l["protocol_version"], "2025-11-25", "{l}");
            }
        }
        let initialized = lines
            .iter()
            .filter(|l| {
                l["event"] == "notification"
                    && l["transport"] == "pipe"
                    && l["method"] == "notifications/initialized"
            })
            .count();
        assert_eq!(initialized, 2, "notifications/initialized on both sides");
        // HTTP: the session id is the same on both sides of each exchange.
        let http_pid = http["pid"].as_u64().expect("client pid");
        let tcp: Vec<&&Value> = reqs.iter().filter(|l| l["transport"] == "tcp").collect();
        let mut sessions: BTreeMap<String, usize> = BTreeMap::new();
        for l in &tcp {
            assert!(l.get("parent_span_id").is_none(), "no caller trace: {l}");
            if l["side"] == "client" {
                assert_eq!(l["pid"], http_pid, "{l}");
            }
            if l["method"] == "tools/call" {
                let s = l["session"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no session: {l}"));
                *sessions.entry(s.to_owned()).or_default() += 1;
            }
        }
        assert_eq!(
            sessions.values().copied().collect::<Vec<_>>(),
            vec![12],
            "one session, 6 calls per side: {sessions:?}"
        );

        // One span per line, joined by ids.
        assert_eq!(spans.len(), reqs.len(), "spans vs request lines");
        let by_id: BTreeMap<&str, &Value> = spans
            .iter()
            .map(|s| (s["span_id"].as_str().expect("span_id"), s))
            .collect();
        assert_eq!(by_id.len(), spans.len(), "span ids are unique");
        for l in &reqs {
            let id = l["span_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no span_id: {l}"));
            let s = by_id
                .get(id)
                .unwrap_or_else(|| panic!("no span {id} for {l}"));
            assert_eq!(s["trace_id"], l["trace_id"], "{s}");
            let a = &s["attributes"];
            assert_eq!(a["mcp.method.name"], l["method"], "{s}");
            assert_eq!(a["network.transport"], l["transport"], "{s}");
            assert_eq!(a["mcp_probe.side"], l["side"], "{s}");
            assert_eq!(a["jsonrpc.request.id"], l["request_id"], "{s}");
            let kind = if l["side"] == "server" { 2 } else { 3 };
            assert_eq!(s["kind"], kind, "SERVER or CLIENT kind: {s}");
            let name = match l["tool"].as_str().or(l["prompt"].as_str()) {
                Some(tool) => format!("{} {tool}", l["method"].as_str().unwrap_or("")),
                None => l["method"].as_str().unwrap_or("").to_owned(),
            };
            assert_eq!(s["name"], name.as_str(), "{s}");
            let (start, end) = (
                s["start_time_unix_nano"].as_u64().expect("start"),
                s["end_time_unix_nano"].as_u64().expect("end"),
            );
            assert!(end >= start && start > 1_700_000_000_000_000_000, "{s}");
            if l["transport"] == "pipe" {
                assert_eq!(s["parent_span_id"], CALLER_SPAN, "{s}");
            } else {
                assert_eq!(s["parent_span_id"], "", "{s}");
                assert_eq!(a["mcp.session.id"], l["session"], "{s}");
            }
            if l["outcome"] == "tool_error" {
                assert_eq!(a["error.type"], "tool_error", "{s}");
                assert_eq!(s["status"]["code"], 2, "status ERROR: {s}");
            } else {
                assert!(a.get("error.type").is_none(), "{s}");
            }
            if l["side"] == "server" {
                assert_eq!(s["resource"]["service.name"], "probe-py2", "{s}");
            }
            assert_eq!(s["resource"]["process.pid"], l["pid"], "{s}");
        }
        // The sinks' own counters agree.
        assert_eq!(
            m.sum("mcp_probe_sink_dropped_total", &[]),
            0.0,
            "{}",
            m.dump("mcp_probe_sink")
        );
    }

    /// `--request-log-payloads`: requests and responses are in the log, with the
    /// configured paths redacted and long ones capped.
    #[test]
    fn payload_capture_is_opt_in_redacted_and_capped() {
        let _guard = exclusive();
        let log = temp_file("payloads.jsonl");
        let agent = Agent::start_with(&[
            "--request-log",
            &log.to_string_lossy(),
            "--request-log-payloads",
            "--payload-max-bytes",
            "400",
            "--redact-path",
            "params.arguments.text",
            "--redact-path",
            "result.content.*.text",
            "--redact-path",
            "result.structuredContent",
        ]);
        let marker = format!("mcpprobecapture{}", std::process::id());
        let summary = run_client(
            &py2(),
            &[
                "--scenario",
                "markers",
                "--mode",
                "legacy",
                "--marker",
                &marker,
            ],
            &[py2().display().to_string(), harness("py2_server.py")],
        );
        wait_calls(&agent, &["pipe"], 3.0);
        std::thread::sleep(std::time::Duration::from_millis(300));
        agent.stop();
        let text = std::fs::read_to_string(&log).expect("request log");
        let lines = json_lines(&log);
        let reqs = requests(&lines);
        assert!(reqs.len() >= 10, "{text}");
        // The echo argument (params.arguments.text) and every result text are redacted.
        let echo_arg = format!("{marker}-echo");
        assert!(
            !text.contains(&echo_arg),
            "{echo_arg} was redacted:\n{text}"
        );
        // add's addends are captured; its sum is only in the (redacted) result.
        let markers: Vec<String> = summary["markers"]
            .as_array()
            .expect("markers")
            .iter()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect();
        let (x, y, sum) = (&markers[1], &markers[2], &markers[3]);
        let add = reqs
            .iter()
            .find(|l| l["side"] == "server" && l["tool"] == "add")
            .unwrap_or_else(|| panic!("add in {text}"));
        let request = add["request_payload"].as_str().expect("request_payload");
        assert!(
            request.contains(x.as_str()) && request.contains(y.as_str()),
            "{request}"
        );
        let response = add["response_payload"].as_str().expect("response_payload");
        assert!(
            response.contains("[REDACTED]") && !response.contains(sum.as_str()),
            "{response}"
        );
        assert!(
            !text.contains(sum.as_str()),
            "the sum was only in redacted results"
        );
        // The tool list is longer than the cap: cut, and marked with what was left out.
        let list = reqs
            .iter()
            .find(|l| l["method"] == "tools/list")
            .expect("tools/list line");
        let listed = list["response_payload"]
            .as_str()
            .expect("tools/list response");
        let (kept, rest) = listed
            .split_once('…')
            .unwrap_or_else(|| panic!("not capped: {listed}"));
        assert!(
            kept.len() <= 400 && rest.starts_with("[+") && rest.ends_with(" bytes]"),
            "{listed}"
        );
    }
}
