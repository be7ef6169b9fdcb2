//! Root integration tests for the network transports: the real agent and real HTTP peers
//! on loopback.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use integration_tests::{
    assert_basic, assert_clean, assert_matches_wire, everything_entry, exclusive, free_port,
    harness, py1, py2, run_client_args, Agent, Metrics, ServerProcess, CLIENT, SERVER,
};

/// A plain HTTP download of 64 MiB on loopback: the kernel filter rejects it from its
/// first bytes, so none of it reaches the agent.
#[test]
fn plain_http_download_never_reaches_userspace() {
    let _guard = exclusive();
    let dir = std::env::temp_dir().join(format!("mcp-probe-download-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("big.bin");
    std::fs::write(&file, vec![b'x'; 64 << 20]).expect("write 64 MiB");
    let port = 20_000 + (std::process::id() % 10_000) as u16;
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start http.server");
    // Every record the agent receives is logged with its process id.
    let agent = Agent::start_with_env(&[], "info,mcp_probe::stream=trace");
    std::thread::sleep(Duration::from_secs(1));
    let before = agent.scrape();
    let script = format!(
        "import urllib.request,time\n\
         for _ in range(50):\n\
         \x20   try:\n\
         \x20       n=len(urllib.request.urlopen('http://127.0.0.1:{port}/big.bin').read()); break\n\
         \x20   except OSError: time.sleep(0.2)\n\
         print(n)"
    );
    let client = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("download");
    let client_pid = client.id();
    let out = client.wait_with_output().expect("download finishes");
    let downloaded: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("byte count");
    assert_eq!(downloaded, 64 << 20, "the workload ran");
    std::thread::sleep(Duration::from_millis(1500)); // kernel counters are mirrored every second
    let after = agent.scrape();
    // Not one record came from the download's two processes...
    let log = agent.log_text();
    for pid in [client_pid, server.id()] {
        assert!(
            !log.contains(&format!("tgid={pid} ")),
            "a record of process {pid} reached the agent"
        );
    }
    // ... and whatever else ran on this host meanwhile, far less than 64 MiB did.
    let captured = after.sum("mcp_probe_captured_bytes_total", &[])
        - before.sum("mcp_probe_captured_bytes_total", &[]);
    assert!(
        captured < (1 << 20) as f64,
        "{captured} bytes captured during a non-MCP download"
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    agent.stop();
}

/// HTTP statuses the client saw (from its own tap), against what both sides counted.
fn assert_statuses(m: &Metrics, server: &str, summary: &serde_json::Value) {
    let by_status = summary["http"]["by_status"]
        .as_object()
        .expect("http.by_status");
    let mut by_class = std::collections::BTreeMap::<String, f64>::new();
    for (status, n) in by_status {
        *by_class.entry(format!("{}xx", &status[..1])).or_default() += n.as_f64().expect("count");
    }
    for side in ["client", "server"] {
        for (class, n) in &by_class {
            let got = m.sum(
                "mcp_http_responses_total",
                &[
                    ("mcp_server_name", server),
                    ("side", side),
                    ("status_class", class),
                ],
            );
            assert_eq!(got, *n, "{side} {class} responses\n{}", m.dump("mcp_http"));
        }
    }
}

fn wait_both_sides(agent: &Agent, server: &str, method: &str, n: f64) -> Metrics {
    let m = agent.wait_for(&format!("{n} {method} on both sides for {server}"), |m| {
        [CLIENT, SERVER].iter().all(|side| {
            m.sum(
                &format!("{side}_requests_total"),
                &[("mcp_server_name", server), ("mcp_method_name", method)],
            ) >= n
        })
    });
    // Let the last responses and connection closes drain, then take the final figures.
    std::thread::sleep(Duration::from_millis(500));
    let _ = m;
    agent.scrape()
}

fn basic_over_http(
    server_args: &[&str],
    client_python: &std::path::Path,
    client_args: &[&str],
    name: &str,
) {
    let _guard = exclusive();
    let agent = Agent::start();
    let port = free_port().to_string();
    let mut args = server_args.to_vec();
    args.extend(["--http", &port]);
    let python = if server_args.first() == Some(&"py1") {
        py1()
    } else {
        py2()
    };
    let script = harness(if python == py1() {
        "py1_server.py"
    } else {
        "py2_server.py"
    });
    let mut full = vec![script.as_str()];
    full.extend(args.iter().filter(|a| **a != "py1" && **a != "py2"));
    let _server = ServerProcess::start(&python, &full);
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut cargs = vec!["--scenario", "basic", "--url", &url];
    cargs.extend(client_args);
    let summary = run_client_args(client_python, &cargs);
    let m = wait_both_sides(&agent, name, "tools/call", 6.0);
    assert_basic(&m, name, "tcp");
    assert_matches_wire(&m, name, &summary);
    assert_statuses(&m, name, &summary);
    assert_clean(&m);
    agent.stop();
}

#[test]
fn streamable_http_sse_responses_with_initialize_handshake() {
    basic_over_http(&["py2"], &py2(), &["--mode", "legacy"], "probe-py2");
}

#[test]
fn streamable_http_json_responses_2026_protocol() {
    basic_over_http(&["py2", "--json-response"], &py2(), &[], "probe-py2");
}

#[test]
fn streamable_http_stateless_server() {
    // No session and no handshake: the name comes from the `_meta` of every result.
    basic_over_http(&["py2", "--stateless"], &py2(), &[], "probe-py2");
}

#[test]
fn streamable_http_sdk_1x() {
    basic_over_http(&["py1"], &py1(), &[], "probe-py1");
}

#[test]
fn legacy_http_sse_transport_pairs_through_the_get_stream() {
    let _guard = exclusive();
    let agent = Agent::start();
    let port = free_port().to_string();
    let _server = ServerProcess::start(&py1(), &[&harness("py1_server.py"), "--sse", &port]);
    let url = format!("http://127.0.0.1:{port}/sse");
    let summary = run_client_args(
        &py1(),
        &["--scenario", "basic", "--url", &url, "--transport", "sse"],
    );
    let m = wait_both_sides(&agent, "probe-py1", "tools/call", 6.0);
    // Every POST is answered 202; the JSON-RPC responses come back on the GET stream.
    assert_basic(&m, "probe-py1", "tcp");
    assert_matches_wire(&m, "probe-py1", &summary);
    assert_statuses(&m, "probe-py1", &summary);
    assert_clean(&m);
    agent.stop();
}

#[test]
fn server_everything_over_streamable_http_and_sse() {
    let _guard = exclusive();
    let agent = Agent::start();
    let name = "mcp-servers/everything";
    let mut expected = 0.0;
    for transport in ["streamableHttp", "sse"] {
        let port = free_port().to_string();
        let preload = harness("node_loopback.cjs");
        let entry = everything_entry();
        let _server = ServerProcess::start_in(
            None,
            std::path::Path::new("node"),
            &["--require", &preload, &entry, transport],
            &[("PORT", &port)],
        );
        let (url, client_transport) = match transport {
            "sse" => (format!("http://127.0.0.1:{port}/sse"), "sse"),
            _ => (format!("http://127.0.0.1:{port}/mcp"), "streamable-http"),
        };
        run_client_args(
            &py2(),
            &[
                "--scenario",
                "everything-basic",
                "--url",
                &url,
                "--transport",
                client_transport,
                "--mode",
                "legacy",
            ],
        );
        expected += 4.0;
        let m = wait_both_sides(&agent, name, "tools/call", expected);
        for side in [CLIENT, SERVER] {
            assert_eq!(
                m.sum(
                    &format!("{side}_requests_total"),
                    &[("mcp_server_name", name), ("mcp_method_name", "tools/call")]
                ),
                expected,
                "{side} after {transport}\n{}",
                m.dump("mcp_")
            );
            assert_eq!(
                m.sum(
                    &format!("{side}_responses_total"),
                    &[("mcp_server_name", name), ("outcome", "tool_error")]
                ),
                expected / 4.0,
                "{side} unknown tool after {transport}"
            );
        }
    }
    assert_clean(&agent.scrape());
    agent.stop();
}

#[test]
fn unauthorized_requests_are_auth_failures() {
    let _guard = exclusive();
    let agent = Agent::start();
    let port = free_port().to_string();
    let _server = ServerProcess::start(
        &py2(),
        &[
            &harness("gate_server.py"),
            "--port",
            &port,
            "--mode",
            "auth",
        ],
    );
    let url = format!("http://127.0.0.1:{port}/mcp");
    let summary = run_client_args(
        &py2(),
        &["--scenario", "auth-fail", "--url", &url, "--mode", "legacy"],
    );
    let rejected = summary["http"]["by_status"]["401"]
        .as_f64()
        .expect("401 count");
    assert!(rejected >= 1.0);
    let name = "gate_server.py";
    let m = agent.wait_for("401s on both sides", |m| {
        ["client", "server"].iter().all(|side| {
            m.sum(
                "mcp_auth_failures_total",
                &[("mcp_server_name", name), ("side", side), ("status", "401")],
            ) >= rejected
        })
    });
    for side in ["client", "server"] {
        assert_eq!(
            m.sum("mcp_auth_failures_total", &[("side", side)]),
            rejected,
            "{side}\n{}",
            m.dump("mcp_")
        );
    }
    for side in [CLIENT, SERVER] {
        // The initialize the 401 answered ends with error_type http_401.
        assert_eq!(
            m.sum(
                &format!("{side}_responses_total"),
                &[
                    ("mcp_server_name", name),
                    ("mcp_method_name", "initialize"),
                    ("error_type", "http_401")
                ]
            ),
            1.0,
            "{side}\n{}",
            m.dump("mcp_")
        );
    }
    agent.stop();
}

#[test]
fn rate_limited_requests_are_counted() {
    let _guard = exclusive();
    let agent = Agent::start();
    let port = free_port().to_string();
    let _server = ServerProcess::start(
        &py2(),
        &[
            &harness("gate_server.py"),
            "--port",
            &port,
            "--mode",
            "ratelimit",
            "--limit",
            "10",
        ],
    );
    let url = format!("http://127.0.0.1:{port}/mcp");
    let summary = run_client_args(
        &py2(),
        &[
            "--scenario",
            "rate-limited",
            "--url",
            &url,
            "--mode",
            "legacy",
        ],
    );
    let limited = summary["http"]["by_status"]["429"]
        .as_f64()
        .expect("429 count");
    assert!(limited >= 1.0, "{summary}");
    let m = agent.wait_for("429s on both sides", |m| {
        ["client", "server"]
            .iter()
            .all(|side| m.sum("mcp_rate_limited_total", &[("side", side)]) >= limited)
    });
    for side in ["client", "server"] {
        assert_eq!(
            m.sum(
                "mcp_rate_limited_total",
                &[("side", side), ("status", "429")]
            ),
            limited,
            "{side}\n{}",
            m.dump("mcp_")
        );
        assert_eq!(
            m.sum(
                "mcp_http_responses_total",
                &[("side", side), ("status_class", "4xx")]
            ),
            limited,
            "{side} 4xx"
        );
    }
    for side in [CLIENT, SERVER] {
        let ok = m.sum(
            &format!("{side}_responses_total"),
            &[("mcp_method_name", "tools/call"), ("outcome", "ok")],
        );
        assert_eq!(
            ok,
            summary["calls_ok"].as_f64().expect("calls_ok"),
            "{side} successful calls"
        );
    }
    agent.stop();
}

#[test]
fn streamable_http_on_a_unix_socket() {
    let _guard = exclusive();
    let agent = Agent::start();
    let path = std::env::temp_dir().join(format!("mcp-probe-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let path = path.display().to_string();
    let _server = ServerProcess::start(&py2(), &[&harness("py2_server.py"), "--unix", &path]);
    let summary = run_client_args(&py2(), &["--scenario", "basic", "--unix", &path]);
    let m = wait_both_sides(&agent, "probe-py2", "tools/call", 6.0);
    assert_basic(&m, "probe-py2", "unix");
    assert_matches_wire(&m, "probe-py2", &summary);
    assert_clean(&m);
    agent.stop();
}

/// A network namespace joined to the host by a veth pair, removed on drop.
struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    fn create(tag: u32) -> Self {
        let name = format!("mcpprobe{tag}");
        let host_if = format!("mcpa{tag}");
        let peer_if = format!("mcpb{tag}");
        let ns = Netns { name, host_if };
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &ns.host_if])
            .status();
        for cmd in [
            vec!["netns", "add", &ns.name],
            vec![
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer_if,
            ],
            vec!["link", "set", &peer_if, "netns", &ns.name],
            vec!["addr", "add", "10.231.7.1/24", "dev", &ns.host_if],
            vec!["link", "set", &ns.host_if, "up"],
            vec![
                "netns",
                "exec",
                &ns.name,
                "ip",
                "addr",
                "add",
                "10.231.7.2/24",
                "dev",
                &peer_if,
            ],
            vec![
                "netns", "exec", &ns.name, "ip", "link", "set", &peer_if, "up",
            ],
            vec!["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"],
        ] {
            let status = Command::new("ip")
                .args(&cmd)
                .status()
                .expect("run ip (iproute2)");
            assert!(status.success(), "ip {cmd:?} failed");
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
    }
}

/// The client runs in its own network namespace and reaches the server over a veth pair:
/// the traffic crosses a real interface, and each end's socket lives in a different
/// namespace. Both sides are still counted exactly once each.
#[test]
fn client_in_another_network_namespace_over_a_veth_pair() {
    let _guard = exclusive();
    let ns = Netns::create(std::process::id() % 10_000);
    let agent = Agent::start();
    let port = free_port().to_string();
    let _server = ServerProcess::start(
        &py2(),
        &[
            &harness("py2_server.py"),
            "--http",
            &port,
            "--host",
            "10.231.7.1",
            "--json-response",
        ],
    );
    let url = format!("http://10.231.7.1:{port}/mcp");
    let py = py2().display().to_string();
    let client = harness("client.py");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            &py,
            &client,
            "--scenario",
            "basic",
            "--url",
            &url,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run the client in the namespace");
    let summary: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no summary; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(summary["passed"], true, "{summary}");
    let m = wait_both_sides(&agent, "probe-py2", "tools/call", 6.0);
    assert_basic(&m, "probe-py2", "tcp");
    assert_matches_wire(&m, "probe-py2", &summary);
    assert_statuses(&m, "probe-py2", &summary);
    assert_clean(&m);
    agent.stop();
}

/// A server that resets the connection mid-request: the client's failed read is a
/// connection error, and the request that never got an answer is a cancellation on both
/// sides.
#[test]
fn connection_reset_is_a_connection_error_and_aborts_the_request() {
    let _guard = exclusive();
    let agent = Agent::start();
    let out = Command::new("python3")
        .arg(harness("reset_peer.py"))
        .output()
        .expect("run reset_peer.py");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["reset"], true, "the client saw ECONNRESET");
    let m = agent.wait_for("the reset and both aborted requests", |m| {
        m.sum("mcp_connection_errors_total", &[("reason", "reset")]) >= 1.0
            && m.sum(
                "mcp_client_request_cancellations_total",
                &[("gen_ai_tool_name", "echo")],
            ) >= 1.0
            && m.sum(
                "mcp_server_request_cancellations_total",
                &[("gen_ai_tool_name", "echo")],
            ) >= 1.0
    });
    assert_eq!(
        m.sum(
            "mcp_connection_errors_total",
            &[
                ("mcp_server_name", "reset_peer.py"),
                ("side", "client"),
                ("reason", "reset")
            ]
        ),
        1.0,
        "{}",
        m.dump("mcp_")
    );
    for side in [CLIENT, SERVER] {
        assert_eq!(
            m.sum(
                &format!("{side}_request_cancellations_total"),
                &[("gen_ai_tool_name", "echo")]
            ),
            1.0,
            "{side}"
        );
        assert_eq!(
            m.sum(&format!("{side}_responses_total"), &[]),
            0.0,
            "{side}"
        );
    }
    agent.stop();
}
