//! The programs the tests run beside the agent: SDK clients and servers, the hostile
//! peers, the OTLP receiver, the socket prefill, and what they print.

use super::*;

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
    let mut cmd = Command::new(python);
    cmd.arg(harness("client.py")).args(args);
    client_summary(cmd)
}

/// Like [`run_client`], started through `wrapper` (e.g. `podman run ...`), which runs the
/// rest of the command line.
pub fn run_client_through(
    wrapper: &[String],
    python: &Path,
    args: &[&str],
    server: &[String],
) -> serde_json::Value {
    let mut cmd = Command::new(&wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg(python)
        .arg(harness("client.py"))
        .args(args)
        .arg("--")
        .args(server);
    client_summary(cmd)
}

fn client_summary(mut cmd: Command) -> serde_json::Value {
    let out = cmd.stdin(Stdio::null()).output().expect("run client.py");
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
