//! Root integration tests: hostile and odd input over real pipes, against the real agent.
//! Each test checks that what could be counted was counted exactly, that the rest became a
//! counted error, that memory stayed bounded, and that the session was still measured.
//! The traffic comes from `tests/mcp/hostile.py` (raw JSON-RPC that no SDK would send).

use integration_tests::{
    exclusive, harness, requests, responses, run_hostile, summary_of, Agent, Metrics, CLIENT,
    SERVER,
};

/// The raw server's name: derived from its command line (`python3 hostile.py --serve`).
const RAW: &str = "hostile.py";

/// The agent's documented memory bound with the default limits, for the checks below: the
/// 16 MiB ring, the 256 MiB budget for partial messages, and what the tables and metric
/// series take (README, "Limits and memory").
const DEFAULT_BOUND: u64 = 400 << 20;

fn wait_calls(agent: &Agent, tool: &str, n: f64) -> Metrics {
    agent.wait_for(&format!("{n} {tool} calls on both sides"), |m| {
        [CLIENT, SERVER]
            .iter()
            .all(|side| requests(m, side, RAW, "tools/call", tool) >= n)
    })
}

fn sum(m: &Metrics, name: &str, filter: &[(&str, &str)]) -> f64 {
    m.sum(name, filter)
}

#[test]
fn non_utf8_bytes_are_parse_errors_and_the_session_goes_on() {
    let _guard = exclusive();
    let agent = Agent::start();
    let summary = run_hostile(&["--scenario", "utf8"]);
    assert_eq!(summary["invalid_utf8_lines"], 2);
    let m = wait_calls(&agent, "echo", 2.0);
    for side in [CLIENT, SERVER] {
        assert_eq!(requests(&m, side, RAW, "tools/call", "echo"), 2.0, "{side}");
        // The escaped lone surrogate is valid JSON that Python accepts and answers; its tool
        // name cannot become a label, so the call is counted without one.
        assert_eq!(
            sum(
                &m,
                &format!("{side}_requests_total"),
                &[("mcp_method_name", "tools/call")]
            ),
            3.0,
            "{side}\n{}",
            m.dump("mcp_")
        );
    }
    // Two invalid lines, each seen by the writer and the reader.
    assert_eq!(
        sum(
            &m,
            "mcp_probe_parse_errors_total",
            &[("reason", "invalid_json")]
        ),
        4.0,
        "{}",
        m.dump("mcp_probe")
    );
    assert_eq!(sum(&m, "mcp_probe_unpaired_responses_total", &[]), 0.0);
    assert_eq!(sum(&m, "mcp_probe_lost_bytes_total", &[]), 0.0);
    agent.stop();
}

#[test]
fn deeply_nested_json_is_parsed_without_recursion() {
    let _guard = exclusive();
    let agent = Agent::start();
    let summary = run_hostile(&["--scenario", "nested", "--depth", "100000"]);
    assert_eq!(summary["deep_error"], -32700, "Python's json gave up on it");
    let m = wait_calls(&agent, "echo", 1.0);
    for side in [CLIENT, SERVER] {
        // 100,000 levels (600 KB) and 100 levels: both requests are valid JSON-RPC.
        assert_eq!(
            requests(&m, side, RAW, "tools/call", "deep"),
            2.0,
            "{side}\n{}",
            m.dump("mcp_")
        );
        assert_eq!(responses(&m, side, RAW, "tools/call", "deep", "ok"), 1.0);
        assert_eq!(
            sum(
                &m,
                &format!("{side}_responses_total"),
                &[("gen_ai_tool_name", "deep"), ("error_type", "-32700")]
            ),
            1.0
        );
    }
    assert_eq!(
        sum(&m, "mcp_probe_parse_errors_total", &[]),
        0.0,
        "{}",
        m.dump("mcp_probe")
    );
    agent.stop();
}

#[test]
fn a_hundred_thousand_tool_names_stay_within_the_label_cap() {
    let _guard = exclusive();
    let agent = Agent::start();
    let n = 100_000.0;
    let summary = run_hostile(&["--scenario", "tools", "--count", "100000"]);
    assert_eq!(summary["responses"], 100_000);
    let m = agent.wait_for("100,000 calls on both sides", |m| {
        [CLIENT, SERVER].iter().all(|side| {
            sum(
                m,
                &format!("{side}_requests_total"),
                &[("mcp_server_name", RAW)],
            ) >= n
        })
    });
    let max_tools = 1024;
    for side in [CLIENT, SERVER] {
        assert_eq!(
            sum(
                &m,
                &format!("{side}_requests_total"),
                &[("mcp_server_name", RAW)]
            ),
            n
        );
        let tools = m.label_values(&format!("{side}_requests_total"), "gen_ai_tool_name");
        assert_eq!(tools.len(), max_tools + 1, "the cap, plus _other");
        assert!(tools.iter().any(|t| t == "_other"));
        assert_eq!(
            requests(&m, side, RAW, "tools/call", "_other"),
            n - max_tools as f64
        );
    }
    // Each side's observation of a call past the cap is one overflow.
    assert_eq!(
        sum(
            &m,
            "mcp_probe_label_overflow_total",
            &[("label", "gen_ai_tool_name")]
        ),
        2.0 * (n - max_tools as f64)
    );
    let (_, peak) = agent.memory();
    println!("agent peak RSS {} MiB", peak >> 20);
    assert!(peak < DEFAULT_BOUND, "peak RSS {peak}");
    assert_eq!(sum(&m, "mcp_probe_lost_bytes_total", &[]), 0.0);
    agent.stop();
}

#[test]
fn ten_thousand_concurrent_pipes_are_tracked_within_bounds() {
    let _guard = exclusive();
    let max_streams = 8192;
    let agent = Agent::start_with(&["--max-streams", &max_streams.to_string()]);
    let hold = std::env::temp_dir().join(format!("mcp-probe-pipes-{}", std::process::id()));
    let _ = std::fs::remove_file(&hold);
    let child = std::process::Command::new("python3")
        .arg(harness("hostile.py"))
        .args(["--scenario", "pipes", "--count", "10000", "--hold-file"])
        .arg(&hold)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start pipes scenario");
    let n = 10_000.0;
    let notifications = |m: &Metrics, side: &str| {
        sum(
            m,
            &format!("{side}_notifications_total"),
            &[("mcp_method_name", "notifications/message")],
        )
    };
    let m = agent.wait_for("a notification on each of 10,000 pipes, both ends", |m| {
        notifications(m, CLIENT) >= n && notifications(m, SERVER) >= n
    });
    for side in [CLIENT, SERVER] {
        assert_eq!(notifications(&m, side), n, "{side}");
    }
    // 20,000 stream directions, at most --max-streams of them tracked at once.
    let tracked = sum(&m, "mcp_probe_tracked_streams", &[]);
    assert!(tracked <= max_streams as f64, "{tracked} tracked");
    assert!(
        sum(&m, "mcp_probe_evictions_total", &[("what", "stream")]) >= 2.0 * n - max_streams as f64,
        "{}",
        m.dump("mcp_probe_evictions")
    );
    assert_eq!(sum(&m, "mcp_probe_parse_errors_total", &[]), 0.0);
    let (_, peak) = agent.memory();
    println!("agent peak RSS with 10,000 pipes: {} MiB", peak >> 20);
    assert!(peak < DEFAULT_BOUND, "peak RSS {peak}");
    std::fs::write(&hold, b"done").expect("hold file");
    let out = child.wait_with_output().expect("pipes scenario exits");
    assert!(out.status.success());
    summary_of(&String::from_utf8_lossy(&out.stdout));
    let _ = std::fs::remove_file(&hold);
    // The process is gone: so are its streams (the gauge is host-wide: other programs
    // on the host may hold a few streams of their own).
    agent.wait_for("the streams of the exited process to go", |m| {
        sum(m, "mcp_probe_tracked_streams", &[]) < 1_000.0
    });
    agent.stop();
}

#[test]
fn json_looking_garbage_at_full_speed_is_counted_and_the_session_is_still_measured() {
    let _guard = exclusive();
    let agent = Agent::start();
    let summary = run_hostile(&["--scenario", "garbage", "--seconds", "2"]);
    let kinds = &summary["kinds"];
    let count = |k: &str| kinds[k].as_f64().expect("count");
    // Responses whose request never came are held a second (a blocked write is reported
    // after the response it caused), then counted as unpaired.
    let m = agent.wait_for("the last exchange and every unpaired response", |m| {
        [CLIENT, SERVER]
            .iter()
            .all(|side| requests(m, side, RAW, "tools/call", "after") >= 1.0)
            && (m.sum("mcp_probe_lost_bytes_total", &[]) > 0.0
                || m.sum("mcp_probe_unpaired_responses_total", &[])
                    >= 2.0 * count("unpaired_response"))
    });
    for side in [CLIENT, SERVER] {
        assert_eq!(
            requests(&m, side, RAW, "tools/call", "before"),
            1.0,
            "{side}"
        );
        assert_eq!(
            requests(&m, side, RAW, "tools/call", "after"),
            1.0,
            "{side}"
        );
        assert_eq!(
            responses(&m, side, RAW, "tools/call", "after", "ok"),
            1.0,
            "{side}"
        );
    }
    let lost = sum(&m, "mcp_probe_lost_bytes_total", &[]);
    let exact = |got: f64, sent: f64, what: &str| {
        // Every line is seen twice: by its writer and by its reader. Lines in bytes the
        // ring buffer could not take are counted as lost bytes instead.
        if lost == 0.0 {
            assert_eq!(got, 2.0 * sent, "{what}\n{}", m.dump("mcp_probe"));
        } else {
            assert!(got <= 2.0 * sent && got > 0.0, "{what}: {got} of {sent}");
        }
    };
    exact(
        sum(&m, "mcp_probe_unpaired_responses_total", &[]),
        count("unpaired_response"),
        "unpaired responses",
    );
    exact(
        sum(
            &m,
            "mcp_probe_parse_errors_total",
            &[("reason", "invalid_json")],
        ),
        count("invalid_json"),
        "invalid JSON",
    );
    exact(
        sum(
            &m,
            "mcp_probe_parse_errors_total",
            &[("reason", "not_jsonrpc")],
        ),
        count("not_jsonrpc"),
        "not JSON-RPC",
    );
    let notes: f64 = [CLIENT, SERVER]
        .iter()
        .map(|side| {
            sum(
                &m,
                &format!("{side}_notifications_total"),
                &[("mcp_server_name", RAW)],
            )
        })
        .sum();
    exact(notes, count("new_method"), "notifications");
    // Tens of thousands of new method names: the label is capped.
    let methods = m.label_values("mcp_client_notifications_total", "mcp_method_name");
    assert!(methods.len() <= 257, "{} method values", methods.len());
    let (_, peak) = agent.memory();
    println!(
        "garbage: {} lines, lost {lost} bytes, agent peak RSS {} MiB",
        summary["garbage_lines"],
        peak >> 20
    );
    assert!(peak < DEFAULT_BOUND, "peak RSS {peak}");
    agent.stop();
}

#[test]
fn a_process_that_writes_half_a_message_and_exits_leaves_nothing_behind() {
    let _guard = exclusive();
    let agent = Agent::start();
    let summary = run_hostile(&["--scenario", "halfexit", "--linger", "4"]);
    let half = summary["half_bytes"].as_f64().expect("half_bytes");
    let m = agent.wait_for("both partial copies of the half message given up", |m| {
        sum(
            m,
            "mcp_probe_parse_errors_total",
            &[("reason", "truncated")],
        ) >= 2.0
    });
    // The writer's copy goes when it exits; the reader's, which can never be finished, a
    // second later.
    assert_eq!(
        sum(
            &m,
            "mcp_probe_parse_errors_total",
            &[("reason", "truncated")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &m,
            "mcp_probe_discarded_bytes_total",
            &[("reason", "process_exit")]
        ),
        2.0 * half
    );
    for side in [CLIENT, SERVER] {
        assert_eq!(requests(&m, side, RAW, "tools/call", "echo"), 1.0, "{side}");
    }
    // (Not `mcp_probe_buffered_bytes == 0`: it is host-wide, and other programs, rustc
    // among them, hold partial JSON lines on their pipes.)
    assert_eq!(
        sum(
            &m,
            "mcp_probe_parse_errors_total",
            &[("reason", "invalid_json")]
        ),
        0.0
    );
    agent.stop();
}
