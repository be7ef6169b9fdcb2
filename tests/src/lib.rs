//! Support for the root integration tests: start the real agent, run real MCP SDK
//! programs from the environment `tests/mcp/setup.sh` installs, scrape and parse metrics.
//!
//! Tests panic with a clear message when something is missing (no root, no agent binary,
//! no SDK environment) rather than pass without testing anything.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

mod assertions;
mod kubernetes;
mod processes;
pub mod prometheus;
pub mod promql;
mod scrape;

pub use assertions::*;
pub use kubernetes::*;
pub use processes::*;
pub use scrape::*;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repo")
        .to_path_buf()
}

/// The SDK environment made by tests/mcp/setup.sh.
pub fn mcp_env() -> PathBuf {
    let dir = std::env::var_os("MCP_ENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/.mcp-env"));
    assert!(
        dir.join("py2/bin/python").exists(),
        "MCP SDK environment missing at {}: run `cargo xtask test` (it runs tests/mcp/setup.sh)",
        dir.display()
    );
    dir
}

pub fn py2() -> PathBuf {
    mcp_env().join("py2/bin/python")
}

pub fn py1() -> PathBuf {
    mcp_env().join("py1/bin/python")
}

pub fn harness(file: &str) -> String {
    repo_root()
        .join("tests/mcp")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

/// The server-everything entry point (`node <entry> stdio|streamableHttp|sse`).
pub fn everything_entry() -> String {
    mcp_env()
        .join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        .to_string_lossy()
        .into_owned()
}

pub fn everything_server() -> Vec<String> {
    let entry =
        mcp_env().join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    vec![
        "node".into(),
        entry.to_string_lossy().into_owned(),
        "stdio".into(),
    ]
}

/// Serialises tests host-wide: each starts its own agent, and an agent sees all MCP traffic
/// on the host, so two at once (threads of one test binary, or two test runs) would count
/// each other's traffic. The lock is an `flock` on a file, released when the guard drops.
pub fn exclusive() -> HostLock {
    let path = std::env::temp_dir().join("mcp-probe-integration-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    use std::os::fd::AsRawFd as _;
    // SAFETY: a valid descriptor; flock blocks until the lock is ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {}", path.display());
    HostLock { _file: file }
}

/// Holds the host-wide test lock (see [`exclusive`]).
pub struct HostLock {
    _file: std::fs::File,
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A running agent.
pub struct Agent {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Agent {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_with_env(extra, "info")
    }

    /// Starts the agent with `RUST_LOG=log_filter` (e.g. to trace every record's header).
    pub fn start_with_env(extra: &[&str], log_filter: &str) -> Self {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "integration tests load eBPF programs and must run as root"
        );
        let port = next_test_port();
        let mut cmd = Command::new(agent_bin());
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("RUST_LOG", log_filter)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null());
        Self::spawn(cmd, port, "agent")
    }

    /// Spawns `cmd` (the agent, listening on `port`) with its stderr in a log file, and
    /// waits until it serves /metrics.
    fn spawn(mut cmd: Command, port: u16, what: &str) -> Self {
        let log = std::env::temp_dir().join(format!("mcp-probe-test-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create agent log");
        let child = cmd
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let mut agent = Agent { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = agent.child.try_wait().expect("poll agent") {
                panic!(
                    "{what} exited during start-up ({status}):\n{}",
                    agent.log_text()
                );
            }
            if agent.try_scrape().is_some() {
                return agent;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not serve /metrics within 60 s:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// CPU time the agent's threads have used, in seconds (from each thread's
    /// `schedstat`, which counts nanoseconds, where `stat` counts 10 ms ticks).
    pub fn cpu_seconds(&self) -> f64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap_or_else(|e| panic!("agent tasks: {e}"));
        let ns: u64 = tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        ns as f64 / 1e9
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's resident memory now (`VmRSS`) and at its peak (`VmHWM`), in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("agent status: {e}\n{}", self.log_text()));
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{field} missing in agent status"))
        };
        (kib("VmRSS:") * 1024, kib("VmHWM:") * 1024)
    }

    /// Sends `signal` and waits for a clean exit.
    pub fn stop_with(mut self, signal: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll agent") {
                assert!(
                    status.success(),
                    "agent exited with {status} on signal {signal}:\n{}",
                    self.log_text()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not stop on signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_scrape(&self) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let (head, body) = buf.split_once("\r\n\r\n")?;
        head.lines()
            .next()
            .is_some_and(|l| l.contains(" 200 "))
            .then(|| body.to_owned())
    }

    pub fn scrape(&self) -> Metrics {
        Metrics::parse(
            &self
                .try_scrape()
                .unwrap_or_else(|| panic!("scrape failed:\n{}", self.log_text())),
        )
    }

    /// Scrapes until `done` holds (the agent drains every few ms), or panics after 20 s
    /// with the last scrape.
    pub fn wait_for(&self, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = self.scrape();
            if done(&m) {
                return m;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last scrape:\n{}",
                    m.dump("mcp_")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the agent with SIGTERM and checks it exits cleanly.
    pub fn stop(self) {
        self.stop_with(libc::SIGTERM);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent binary: `MCP_PROBE_BIN`, or the release build.
pub fn agent_bin() -> PathBuf {
    let bin = std::env::var_os("MCP_PROBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/mcp-probe"));
    assert!(
        bin.exists(),
        "agent binary {} missing: run `cargo xtask test`",
        bin.display()
    );
    bin
}

// ---- The agent with other privileges (tests/tests/privilege.rs) ----

/// The agent binary copied to a directory every uid can enter and execute from, so the
/// agent can run as an unprivileged uid whatever the permissions of the checkout. The
/// copy is replaced atomically (rename), so an agent still running keeps its binary.
pub fn agent_bin_for_any_uid() -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = agent_bin();
    let dir = std::env::temp_dir().join("mcp-probe-any-uid");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(&dir, open.clone())
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
    let tmp = dir.join(format!("mcp-probe.{}", std::process::id()));
    std::fs::copy(&bin, &tmp).unwrap_or_else(|e| panic!("copy {}: {e}", bin.display()));
    std::fs::set_permissions(&tmp, open).unwrap_or_else(|e| panic!("chmod {}: {e}", tmp.display()));
    let copy = dir.join("mcp-probe");
    std::fs::rename(&tmp, &copy).unwrap_or_else(|e| panic!("rename to {}: {e}", copy.display()));
    copy
}

/// `setpriv` arguments that run a program as `uid` (gid `uid`, no supplementary groups)
/// with exactly `caps` (setpriv's names: `bpf`, `perfmon`, ...) in every capability set
/// (inheritable, ambient, bounding, hence permitted and effective), with no_new_privs.
pub fn setpriv_as(uid: u32, caps: &[&str]) -> Vec<String> {
    let set: String = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
        "--no-new-privs".into(),
    ]
}

/// `setpriv` arguments that keep uid 0 but drop `caps` from the bounding set, so the
/// program it runs never holds them.
pub fn setpriv_root_without(caps: &[&str]) -> Vec<String> {
    let set: String = caps
        .iter()
        .map(|c| format!("-{c}"))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "setpriv".into(),
        "--inh-caps=-all".into(),
        format!("--bounding-set={set}"),
    ]
}

fn any_uid_agent_command(prefix: &[String], port: u16, log_filter: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "privilege tests start the agent with setpriv and must run as root"
    );
    let (program, args) = prefix.split_first().expect("a wrapper command");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(agent_bin_for_any_uid())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", log_filter)
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

fn next_test_port() -> u16 {
    19_464 + (std::process::id() % 500) as u16 * 8 + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 8
}

impl Agent {
    /// Starts the agent through `prefix` (e.g. [`setpriv_as`] with `setpriv` first), which
    /// must end by exec'ing its arguments, so the child is the agent itself (its pid, its
    /// /proc/PID/status, SIGTERM go to the agent).
    pub fn start_wrapped(prefix: &[String], log_filter: &str) -> Self {
        let port = next_test_port();
        let cmd = any_uid_agent_command(prefix, port, log_filter);
        Self::spawn(cmd, port, &format!("agent (through {prefix:?})"))
    }

    /// The raw text of a scrape of /metrics.
    pub fn scrape_text(&self) -> String {
        self.try_scrape()
            .unwrap_or_else(|| panic!("scrape failed:\n{}", self.log_text()))
    }

    /// Stops the agent like [`Agent::stop`] and returns everything it logged.
    pub fn stop_and_log(self) -> String {
        let log = self.log.clone();
        self.stop();
        std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("read {}: {e}", log.display()))
    }
}

/// Runs the agent through `prefix` expecting it to exit during start-up; returns its exit
/// status and stderr. Panics if it serves /metrics instead, or is still running after 30 s.
pub fn agent_start_failure(prefix: &[String]) -> (std::process::ExitStatus, String) {
    let port = next_test_port();
    let mut child = any_uid_agent_command(prefix, port, "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start agent through {prefix:?}: {e}"));
    let mut stderr = child.stderr.take().expect("agent stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll agent") {
            break status;
        }
        let serving = TcpStream::connect(("127.0.0.1", port)).is_ok();
        if serving || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = reader.join().unwrap_or_default();
            panic!(
                "agent through {prefix:?} {} instead of failing:\n{text}",
                if serving { "started" } else { "kept running" }
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, reader.join().expect("stderr reader"))
}
