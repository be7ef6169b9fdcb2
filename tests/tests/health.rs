//! Root integration tests for server health: figures checked against /proc.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use integration_tests::{
    exclusive, free_port, harness, py2, run_client_args, Agent, ServerProcess,
};

/// Kills the child if the test fails half-way, so no session outlives it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proc_status(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

#[test]
fn server_process_figures_match_proc_and_go_away_after_exit() {
    let _guard = exclusive();
    let agent = Agent::start();
    let (mut client, stop_file, pid) = hold_session("health");
    let name = "probe-py2";
    let m = agent.wait_for("health series for the server", |m| {
        m.sum("mcp_server_processes", &[("mcp_server_name", name)]) == 1.0
            && m.sum("mcp_server_cpu_seconds_total", &[("mcp_server_name", name)]) >= 0.0
    });
    let rss = m.sum(
        "mcp_server_resident_memory_bytes",
        &[("mcp_server_name", name)],
    );
    let proc_rss = proc_status(pid, "VmRSS:") * 1024.0;
    assert!(
        (rss - proc_rss).abs() <= proc_rss * 0.2,
        "RSS {rss} vs /proc {proc_rss}"
    );
    let threads = m.sum("mcp_server_threads", &[("mcp_server_name", name)]);
    let proc_threads = proc_status(pid, "Threads:");
    assert!(
        (threads - proc_threads).abs() <= 2.0,
        "threads {threads} vs /proc {proc_threads}"
    );
    let fds = m.sum("mcp_server_open_fds", &[("mcp_server_name", name)]);
    let proc_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count() as f64;
    assert!(
        (fds - proc_fds).abs() <= 2.0,
        "fds {fds} vs /proc {proc_fds}"
    );
    let uptime = m.sum("mcp_server_uptime_seconds", &[("mcp_server_name", name)]);
    let elapsed = {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let start_ticks: f64 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        let boot_uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        boot_uptime - start_ticks / 100.0
    };
    assert!(
        (uptime - elapsed).abs() <= 3.0,
        "uptime {uptime} vs /proc {elapsed}"
    );
    assert!(m.sum("mcp_probe_resident_memory_bytes", &[]) > 0.0);
    // Every hook the agent attaches is listed (read/write family enter+exit, close, dup2,
    // dup3, fork, exec, exit).
    assert_eq!(m.sum("mcp_probe_hook_attached", &[]), 22.0);
    assert_eq!(
        m.sum("mcp_probe_ring_buffer_size_bytes", &[]),
        (8 << 20) as f64, // the default --ring-bytes
    );
    // Kernel map occupancy (counted at start, then every 30 s): every process's reads and
    // writes put descriptors in FDS.
    assert_eq!(m.sum("mcp_probe_map_capacity", &[("map", "FDS")]), 65536.0);
    let fds = m.sum("mcp_probe_map_entries", &[("map", "FDS")]);
    assert!(fds > 0.0 && fds <= 65536.0, "FDS entries {fds}");

    // The server exits with its client: its series go.
    std::fs::write(&stop_file, b"stop").expect("stop file");
    assert!(client.0.wait().expect("client exits").success());
    std::thread::sleep(Duration::from_millis(500));
    agent.wait_for("the exited server's series to go", |m| {
        m.sum("mcp_server_processes", &[("mcp_server_name", name)]) == 0.0
            && m.sum(
                "mcp_server_resident_memory_bytes",
                &[("mcp_server_name", name)],
            ) == 0.0
    });
    let _ = std::fs::remove_file(&stop_file);
    agent.stop();
}

/// Starts a `hold` session of the py2 server; returns the client and the server's pid.
fn hold_session(tag: &str) -> (KillOnDrop, std::path::PathBuf, u32) {
    let stop_file = std::env::temp_dir().join(format!("mcp-probe-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop_file);
    let client = KillOnDrop(
        Command::new(py2())
            .arg(harness("client.py"))
            .args([
                "--scenario",
                "hold",
                "--stop-file",
                &stop_file.display().to_string(),
                "--",
            ])
            .arg(py2())
            .arg(harness("py2_server.py"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hold client"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("pgrep")
            .args(["-P", &client.0.id().to_string()])
            .output()
            .expect("pgrep");
        let server = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .split('\0')
                    .nth(1)
                    .is_some_and(|a| a.ends_with("py2_server.py"))
            });
        if let Some(pid) = server {
            return (client, stop_file, pid);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server process did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server that exits and comes back is a restart; exits are counted with their status,
/// including a kill by signal.
#[test]
fn server_exits_and_restarts_are_counted() {
    let _guard = exclusive();
    let agent = Agent::start();
    let name = "probe-py2";
    let exits = |m: &integration_tests::Metrics, status: &str| {
        m.sum(
            "mcp_server_exits_total",
            &[("mcp_server_name", name), ("status", status)],
        )
    };

    let (mut first, stop_file, _) = hold_session("exit");
    agent.wait_for("the first server to be watched", |m| {
        m.sum("mcp_server_processes", &[("mcp_server_name", name)]) == 1.0
    });
    std::fs::write(&stop_file, b"stop").expect("stop file");
    assert!(first.0.wait().expect("client exits").success());
    agent.wait_for("a clean exit", |m| exits(m, "exit_0") == 1.0);

    let (_second, _stop, pid) = hold_session("restart");
    let m = agent.wait_for("the restart", |m| {
        m.sum("mcp_server_restarts_total", &[("mcp_server_name", name)]) == 1.0
    });
    assert_eq!(
        m.sum("mcp_server_processes", &[("mcp_server_name", name)]),
        1.0
    );
    // SAFETY: signalling the test's own grandchild.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let m = agent.wait_for("a kill by signal 9", |m| exits(m, "signal_9") == 1.0);
    assert_eq!(exits(&m, "exit_0"), 1.0);
    assert_eq!(
        m.sum("mcp_server_restarts_total", &[("mcp_server_name", name)]),
        1.0
    );
    let _ = std::fs::remove_file(&stop_file);
    agent.stop();
}

/// Sessions: a stdio channel is open while its client and server run and is measured when
/// they exit; an HTTP session ends with the client's DELETE. Each side counts its own.
#[test]
fn sessions_are_counted_open_and_measured_when_closed() {
    let _guard = exclusive();
    let agent = Agent::start();
    let name = "probe-py2";
    let active = |m: &integration_tests::Metrics, side: &str, transport: &str| {
        m.sum(
            &format!("mcp_{side}_active_sessions"),
            &[("mcp_server_name", name), ("network_transport", transport)],
        )
    };
    let ended = |m: &integration_tests::Metrics, side: &str, transport: &str| {
        m.sum(
            &format!("mcp_{side}_session_duration_seconds_count"),
            &[("mcp_server_name", name), ("network_transport", transport)],
        )
    };

    let (mut client, stop_file, _) = hold_session("sessions");
    agent.wait_for("one open stdio session per side", |m| {
        active(m, "client", "pipe") == 1.0 && active(m, "server", "pipe") == 1.0
    });
    // The server's one client, by the clientInfo.name the SDK sends in `_meta` ("mcp").
    let m = agent.scrape();
    assert_eq!(
        m.sum(
            "mcp_active_clients",
            &[("mcp_server_name", name), ("client_name", "mcp")]
        ),
        1.0,
        "{}",
        m.dump("mcp_active")
    );
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&stop_file, b"stop").expect("stop file");
    assert!(client.0.wait().expect("client exits").success());
    let m = agent.wait_for("the stdio session to end on both sides", |m| {
        ended(m, "client", "pipe") == 1.0 && ended(m, "server", "pipe") == 1.0
    });
    for side in ["client", "server"] {
        assert_eq!(active(&m, side, "pipe"), 0.0, "{side}");
        let seconds = m.sum(
            &format!("mcp_{side}_session_duration_seconds_sum"),
            &[("network_transport", "pipe")],
        );
        assert!(seconds >= 2.0, "{side} session lasted {seconds} s");
    }

    // Users: the stdio client runs as root; every request the server received is its.
    let received = |m: &integration_tests::Metrics, transport: &str| {
        m.sum(
            "mcp_server_requests_total",
            &[("mcp_server_name", name), ("network_transport", transport)],
        )
    };
    assert!(received(&m, "pipe") >= 2.0);
    assert_eq!(
        m.sum(
            "mcp_user_requests_total",
            &[("mcp_server_name", name), ("user", "uid:0")]
        ),
        received(&m, "pipe")
    );

    let port = free_port().to_string();
    let _server = ServerProcess::start(&py2(), &[&harness("py2_server.py"), "--http", &port]);
    let url = format!("http://127.0.0.1:{port}/mcp");
    run_client_args(
        &py2(),
        &[
            "--scenario",
            "basic",
            "--url",
            &url,
            "--mode",
            "legacy",
            "--header",
            "Authorization: Bearer secret-token",
        ],
    );
    let m = agent.wait_for(
        "the HTTP session to end with its DELETE on both sides",
        |m| ended(m, "client", "tcp") == 1.0 && ended(m, "server", "tcp") == 1.0,
    );
    // An HTTP user is a keyed hash of the credential, never the credential.
    let users = m.label_values("mcp_user_requests_total", "user");
    let credential_users: Vec<&String> = users.iter().filter(|u| u.starts_with("cred:")).collect();
    assert_eq!(credential_users.len(), 1, "{users:?}");
    assert!(!users.iter().any(|u| u.contains("secret")));
    let user = credential_users[0].as_str();
    assert_eq!(
        m.sum(
            "mcp_user_requests_total",
            &[("mcp_server_name", name), ("user", user)]
        ),
        received(&m, "tcp"),
        "{}",
        m.dump("mcp_user")
    );
    let _ = std::fs::remove_file(&stop_file);
    agent.stop();
}
