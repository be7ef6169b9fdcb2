//! Root integration tests: the agent's own lifecycle, and the lifecycles of the processes
//! it watches. Stopping leaves nothing in the kernel; a restarted agent picks up a session
//! that is already running; reused descriptor numbers and reused pids are never mistaken
//! for the old stream or process.

use std::{collections::BTreeSet, process::Command, time::Duration};

use integration_tests::{exclusive, harness, py1, requests, run_hostile, Agent, CLIENT, SERVER};

/// BPF objects by (id, name).
type Objects = BTreeSet<(u64, String)>;

/// Ids of the BPF programs and maps loaded on the host now (`bpftool`).
fn bpf_objects() -> (Objects, Objects) {
    let list = |kind: &str| -> Objects {
        let out = Command::new("bpftool")
            .args(["--json", kind, "show"])
            .output()
            .expect("bpftool (tests/mcp/setup.sh installs it)");
        assert!(out.status.success(), "bpftool {kind} show failed");
        let items: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("bpftool prints JSON");
        items
            .as_array()
            .expect("a list")
            .iter()
            .map(|o| {
                (
                    o["id"].as_u64().expect("id"),
                    o["name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    (list("prog"), list("map"))
}

#[test]
fn sigterm_and_sigint_detach_every_program_and_free_every_map() {
    let _guard = exclusive();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let (progs_before, maps_before) = bpf_objects();
        let agent = Agent::start();
        let (progs, maps) = bpf_objects();
        let ours_p: BTreeSet<_> = progs.difference(&progs_before).cloned().collect();
        let ours_m: BTreeSet<_> = maps.difference(&maps_before).cloned().collect();
        let names = |s: &Objects| -> Vec<String> { s.iter().map(|(_, n)| n.clone()).collect() };
        for prog in ["sys_enter_read", "sys_exit_rw", "sched_process_e"] {
            assert!(
                names(&ours_p).iter().any(|n| n == prog),
                "{prog} not loaded: {ours_p:?}"
            );
        }
        for map in ["EVENTS", "STATS", "FDS", "STREAMS", "INFLIGHT", "WATCHED"] {
            assert!(
                names(&ours_m).iter().any(|n| n == map),
                "{map} not created: {ours_m:?}"
            );
        }
        agent.stop_with(signal);
        // The kernel frees programs and maps once their last reference goes, which can
        // take a moment after the process exits.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (progs, maps) = bpf_objects();
            let left_p: Vec<_> = ours_p.intersection(&progs).collect();
            let left_m: Vec<_> = ours_m.intersection(&maps).collect();
            if left_p.is_empty() && left_m.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "after signal {signal}: programs {left_p:?} and maps {left_m:?} are still there"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn a_restarted_agent_picks_up_a_running_session() {
    let _guard = exclusive();
    let stop_file = std::env::temp_dir().join(format!("mcp-probe-restart-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop_file);
    // A session that calls `echo` once a second, started before either agent.
    let mut client = Command::new(py1())
        .arg(harness("client.py"))
        .args(["--scenario", "hold", "--max-seconds", "120", "--stop-file"])
        .arg(&stop_file)
        .arg("--")
        .arg(py1())
        .arg(harness("py1_server.py"))
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start hold client");
    std::thread::sleep(Duration::from_secs(2));
    let name = "py1_server.py";
    let calls =
        |m: &integration_tests::Metrics, side: &str| requests(m, side, name, "tools/call", "echo");

    let first = Agent::start();
    first.wait_for("two calls seen by the first agent", |m| {
        calls(m, CLIENT) >= 2.0 && calls(m, SERVER) >= 2.0
    });
    first.stop();

    // The server and the client are now blocked in read(): the second agent finds them
    // and captures what those reads return.
    let second = Agent::start();
    let m = second.wait_for("three calls seen by the second agent", |m| {
        calls(m, CLIENT) >= 3.0 && calls(m, SERVER) >= 3.0
    });
    println!(
        "blocked syscalls captured after the restart: {} (stale: {})",
        m.sum(
            "mcp_probe_kernel_events_total",
            &[("event", "blocked_syscall_captured")]
        ),
        m.sum(
            "mcp_probe_kernel_events_total",
            &[("event", "blocked_syscall_stale")]
        )
    );
    std::fs::write(&stop_file, b"stop").expect("stop file");
    assert!(client.wait().expect("client exits").success());
    let m = second.wait_for("the session to end", |m| {
        m.sum(
            "mcp_client_session_duration_seconds_count",
            &[("mcp_server_name", name)],
        ) >= 1.0
    });
    // Every exchange the second agent saw is whole, on both sides: nothing unpaired, no
    // request left without its response.
    assert_eq!(calls(&m, CLIENT), calls(&m, SERVER), "{}", m.dump("mcp_"));
    for name in [
        "mcp_probe_unpaired_responses_total",
        "mcp_probe_lost_bytes_total",
        "mcp_probe_parse_errors_total",
        "mcp_client_request_cancellations_total",
        "mcp_server_request_cancellations_total",
    ] {
        assert_eq!(m.sum(name, &[]), 0.0, "{name}\n{}", m.dump("mcp_"));
    }
    let _ = std::fs::remove_file(&stop_file);
    second.stop();
}

#[test]
fn a_descriptor_number_reused_after_close_range_belongs_to_its_new_stream() {
    let _guard = exclusive();
    let agent = Agent::start();
    run_hostile(&["--scenario", "fdreuse"]);
    let m = agent.wait_for("beta's calls on both sides", |m| {
        [CLIENT, SERVER]
            .iter()
            .all(|side| requests(m, side, "beta", "tools/call", "echo") >= 3.0)
    });
    for side in [CLIENT, SERVER] {
        assert_eq!(
            requests(&m, side, "alpha", "tools/call", "echo"),
            2.0,
            "{side}\n{}",
            m.dump("mcp_")
        );
        assert_eq!(
            requests(&m, side, "beta", "tools/call", "echo"),
            3.0,
            "{side}"
        );
    }
    assert_eq!(m.sum("mcp_probe_unpaired_responses_total", &[]), 0.0);
    assert_eq!(m.sum("mcp_probe_parse_errors_total", &[]), 0.0);
    agent.stop();
}

#[test]
fn a_reused_pid_is_a_new_process() {
    let _guard = exclusive();
    let agent = Agent::start();
    let summary = run_hostile(&["--scenario", "pidreuse"]);
    println!(
        "pid {} reused after {} attempts",
        summary["pid"], summary["attempts"]
    );
    // The second server announces no name: it is named from its command line, and never
    // inherits the name the first process with its pid announced.
    let beta = "beta_server.py";
    let m = agent.wait_for("the second server's calls on both sides", |m| {
        [CLIENT, SERVER]
            .iter()
            .all(|side| requests(m, side, beta, "tools/call", "echo") >= 2.0)
    });
    std::thread::sleep(Duration::from_secs(6)); // past the agent's 5 s name settling
    let m2 = agent.scrape();
    for m in [&m, &m2] {
        for side in [CLIENT, SERVER] {
            assert_eq!(
                requests(m, side, "alpha", "tools/call", "echo"),
                1.0,
                "{side}\n{}",
                m.dump("mcp_")
            );
            assert_eq!(requests(m, side, beta, "tools/call", "echo"), 2.0, "{side}");
        }
    }
    agent.stop();
}

/// A start as root prints a few meaningful lines and no warning (the kernel's BTF report
/// on the eBPF object used to be logged, some 200 lines, on every start).
#[test]
fn a_start_prints_a_few_meaningful_lines() {
    let _guard = exclusive();
    let agent = Agent::start();
    std::thread::sleep(Duration::from_millis(500));
    let log = agent.stop_and_log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("WARN") && !l.contains("ERROR")),
        "{log}"
    );
    assert!(lines.len() <= 8, "{} lines:\n{log}", lines.len());
    for expected in ["eBPF programs attached", "serving metrics"] {
        assert!(log.contains(expected), "{expected:?} missing:\n{log}");
    }
}
