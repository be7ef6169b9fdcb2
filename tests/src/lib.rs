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

pub mod prometheus;
pub mod promql;

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

/// A parsed scrape: series name -> label set -> value.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut series = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').expect("metric line has a value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (
                    n.to_owned(),
                    parse_labels(rest.strip_suffix('}').expect("closing brace")),
                ),
                None => (name_labels.to_owned(), BTreeMap::new()),
            };
            series.push((name, labels, value));
        }
        Metrics { series }
    }

    /// Sum of `name` over series whose labels include every `(key, value)` in `filter`
    /// (an empty value matches an absent or empty label).
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && filter
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str).unwrap_or("") == *v)
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Distinct values of `label` among series of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .series
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, _)| l.get(label).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Every series name, with the label names its series carry.
    pub fn names(&self) -> BTreeMap<String, std::collections::BTreeSet<String>> {
        let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for (name, labels, _) in &self.series {
            out.entry(name.clone())
                .or_default()
                .extend(labels.keys().cloned());
        }
        out
    }

    pub fn dump(&self, prefix: &str) -> String {
        self.series
            .iter()
            .filter(|(n, _, _)| n.starts_with(prefix) && !n.ends_with("_bucket"))
            .map(|(n, l, v)| format!("{n}{l:?} {v}\n"))
            .collect()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label key");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = after[end..].trim_start_matches(',');
    }
    out
}

/// Runs the SDK client driver against a server command (stdio) and returns its summary.
pub fn run_client(python: &Path, args: &[&str], server: &[String]) -> serde_json::Value {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--");
    all.extend(server.iter().map(String::as_str));
    run_client_args(python, &all)
}

/// Runs the SDK client driver with exactly `args` (e.g. `--url ...`) and returns its JSON
/// summary, panicking if the scenario failed.
pub fn run_client_args(python: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python)
        .arg(harness("client.py"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "client.py printed no summary; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        out.status.success() && summary["passed"] == true,
        "client scenario failed: {summary}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    summary
}

/// Runs `tests/mcp/hostile.py` (plain python3: raw JSON-RPC no SDK would send) with `args`
/// and returns its summary.
pub fn run_hostile(args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(harness("hostile.py"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run hostile.py");
    assert!(
        out.status.success(),
        "hostile.py {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    summary_of(&String::from_utf8_lossy(&out.stdout))
}

/// The JSON after `summary: ` in a harness's output (the prefix keeps the line from looking
/// like JSON-RPC to the agent, which would follow the pipe it goes through).
pub fn summary_of(stdout: &str) -> serde_json::Value {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"))
}

/// A server process started for a test; it prints `READY` when it accepts connections and
/// is stopped with SIGTERM when dropped.
pub struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    pub fn start(program: &Path, args: &[&str]) -> Self {
        Self::start_in(None, program, args, &[])
    }

    /// Starts `program` (optionally inside network namespace `netns`) with extra env.
    pub fn start_in(
        netns: Option<&str>,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("server stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.trim() == "READY" {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!(
                "{} {args:?} did not print READY within 60 s",
                program.display()
            );
        }
        Self { child }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv with the official OTLP protobuf definitions (`opentelemetry-proto`).
pub fn otlp_python() -> PathBuf {
    let python = mcp_env().join("otlp/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `cargo xtask test` (tests/mcp/setup.sh installs it)",
        python.display()
    );
    python
}

/// A real OTLP/HTTP receiver (`tests/mcp/otlp_receiver.py`): decodes every export with
/// the official protobuf definitions and keeps the spans as JSON lines.
pub struct OtlpReceiver {
    _server: ServerProcess,
    pub port: u16,
    pub out: PathBuf,
}

impl OtlpReceiver {
    pub fn start() -> Self {
        let port = free_port();
        let out = std::env::temp_dir().join(format!("mcp-probe-spans-{port}.jsonl"));
        let _ = std::fs::remove_file(&out);
        let server = ServerProcess::start(
            &otlp_python(),
            &[
                &harness("otlp_receiver.py"),
                "--port",
                &port.to_string(),
                "--out",
                &out.to_string_lossy(),
            ],
        );
        Self {
            _server: server,
            port,
            out,
        }
    }

    /// The `--otlp-endpoint` for the agent.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far; panics on a request the receiver refused.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        let spans = json_lines(&self.out);
        if let Some(bad) = spans.iter().find(|s| s.get("error").is_some()) {
            panic!("the OTLP receiver refused an export: {bad}");
        }
        spans
    }
}

/// The JSON objects of a JSON-lines file (a request log, the receiver's spans).
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {l}", path.display()))
        })
        .collect()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

// ---- Assertions shared by the transport tests ----

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

/// `tests/mcp/prefill.py` (plain python3) holding `idle` idle loopback TCP connections
/// (both ends: 2 × `idle` sockets) and having left `time_wait` sockets in TIME_WAIT, in
/// this network namespace. Its worker processes share its process group, which is killed
/// when this is dropped (after closing its stdin, the orderly way out).
pub struct Prefill {
    child: Option<Child>,
    /// What the helper reported once everything was open: `idle`, `time_wait_made`,
    /// `workers`, `nofile`, and its count of the namespace's TCP table (`sockets`,
    /// `established`, `time_wait`).
    pub summary: serde_json::Value,
}

impl Prefill {
    pub fn start(idle: usize, time_wait: usize) -> Self {
        use std::io::BufRead as _;
        use std::os::unix::process::CommandExt as _;
        let mut child = Command::new("python3")
            .arg(harness("prefill.py"))
            .args(["--idle", &idle.to_string()])
            .args(["--time-wait", &time_wait.to_string()])
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start prefill.py: {e}"));
        let stdout = child.stdout.take().expect("prefill stdout");
        let mut guard = Prefill {
            child: Some(child),
            summary: serde_json::Value::Null,
        };
        // The helper prints READY (or dies) within seconds: 20,000 connections took 6 s here.
        let line = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("READY "))
            .unwrap_or_else(|| {
                panic!("prefill.py --idle {idle} --time-wait {time_wait} failed (see its stderr)")
            });
        guard.summary = serde_json::from_str(&line["READY ".len()..])
            .unwrap_or_else(|e| panic!("prefill.py summary {line}: {e}"));
        guard
    }
}

impl Drop for Prefill {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        drop(child.stdin.take()); // EOF: the helper closes everything and exits
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: signalling the process group our own child leads (process_group(0)).
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
    }
}

/// The TCP line of `ss -s` (iproute2): `(total, established, time_wait)` sockets in this
/// network namespace.
pub fn ss_tcp_summary() -> (u64, u64, u64) {
    let out = Command::new("ss")
        .arg("-s")
        .output()
        .unwrap_or_else(|e| panic!("run ss -s (iproute2): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    // "TCP:   40052 (estab 40002, closed 48, orphaned 0, timewait 48)"
    let line = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .unwrap_or_else(|| panic!("no TCP line in ss -s:\n{text}"));
    let number_after = |key: &str| -> u64 {
        line.split(key)
            .nth(1)
            .and_then(|rest| {
                rest.trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {key:?} in {line:?}"))
    };
    (
        number_after("TCP:"),
        number_after("estab"),
        number_after("timewait"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openmetrics_lines() {
        let m = Metrics::parse(
            "# HELP x y\nmcp_a_total{s=\"p\",t=\"\"} 3\nmcp_a_total{s=\"q\\\"x\",t=\"e\"} 2\nmcp_b 1.5\n# EOF\n",
        );
        assert_eq!(m.sum("mcp_a_total", &[]), 5.0);
        assert_eq!(m.sum("mcp_a_total", &[("s", "p"), ("t", "")]), 3.0);
        assert_eq!(m.sum("mcp_a_total", &[("s", "q\"x")]), 2.0);
        assert_eq!(m.sum("mcp_b", &[]), 1.5);
        assert_eq!(
            m.label_values("mcp_a_total", "t"),
            vec!["".to_owned(), "e".to_owned()]
        );
    }
}
