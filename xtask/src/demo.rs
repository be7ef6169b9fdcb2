//! `cargo xtask demo`: one real MCP session for a running agent to measure.
//!
//! It installs only what the session needs, the PyPI `mcp` SDK 2.x in the `py2` venv that
//! `tests/mcp/setup.sh` also creates (same directory, same stamp file and the version that
//! script pins, so the two never disagree), then runs the `basic` scenario of
//! `tests/mcp/client.py` against `tests/mcp/py2_server.py` over stdio, and shows what the
//! agent counted.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    path::Path,
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::run;

/// The metric the demo points at: one series per server, method, tool and prompt.
const METRIC: &str = "mcp_server_requests_total";

/// Runs the demo against the agent whose `/metrics` listens on `agent` (`host:port`).
pub fn demo(root: &Path, agent: &str) -> Result<()> {
    let addr = agent
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("cannot resolve the agent address {agent}"))?;
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        bail!(
            "no agent answers on {agent}: start it first, as root, in another terminal \
             (`cargo xtask run`), or pass its address with --agent"
        );
    }

    let python = install_py2(root)?;
    eprintln!("demo: a stdio session of the Python SDK 2.x client with its server (probe-py2)");
    // The client's JSON summary and both processes' diagnostics (among them the traceback
    // of the `fail` tool, which fails on purpose) go to a log, not to the terminal.
    let log_path = root.join("tests/.mcp-env/demo.log");
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let status = Command::new(&python)
        .arg(root.join("tests/mcp/client.py"))
        .args(["--scenario", "basic", "--"])
        .arg(&python)
        .arg(root.join("tests/mcp/py2_server.py"))
        .current_dir(root)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("cannot run tests/mcp/client.py")?;
    if !status.success() {
        bail!(
            "the demo session failed ({status}); see {}",
            log_path.display()
        );
    }
    eprintln!(
        "demo: the client listed the tools, called echo, add and fail (which fails on \
         purpose) and got a prompt; its log is {}",
        log_path.display()
    );

    // The agent drains its ring buffer on a timer (at most 100 ms apart) and counts a
    // request once its response is read: give it a moment before looking.
    thread::sleep(Duration::from_secs(1));
    let series: Vec<String> = scrape(addr)?
        .lines()
        .filter(|l| l.starts_with(METRIC) && l.contains("probe-py2"))
        .map(str::to_owned)
        .collect();
    if series.is_empty() {
        eprintln!("demo: the agent on {agent} has no {METRIC} series for probe-py2 yet");
    } else {
        println!("{}", series.join("\n"));
    }
    println!("\nSee them yourself:\n  curl -s http://{agent}/metrics | grep {METRIC}");
    Ok(())
}

/// The `py2` venv of `tests/mcp/setup.sh`, created when it is missing or holds another
/// version; returns its python.
fn install_py2(root: &Path) -> Result<std::path::PathBuf> {
    let setup = root.join("tests/mcp/setup.sh");
    let script =
        fs::read_to_string(&setup).with_context(|| format!("reading {}", setup.display()))?;
    let version = script
        .lines()
        .find_map(|l| l.strip_prefix("PY_SDK2_VERSION="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .with_context(|| format!("no PY_SDK2_VERSION in {}", setup.display()))?;
    let want = format!("mcp=={version}");

    let env_dir = root.join("tests/.mcp-env");
    let venv = env_dir.join("py2");
    let python = venv.join("bin/python");
    let stamp = env_dir.join(".stamp-py2");
    let current = fs::read_to_string(&stamp).unwrap_or_default();
    if current.trim() == want && python.exists() {
        return Ok(python);
    }

    eprintln!("demo: installing {want} into {} (once)", venv.display());
    fs::create_dir_all(&env_dir)?;
    if venv.exists() {
        fs::remove_dir_all(&venv)?;
    }
    let system_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(
        Command::new(&system_python).args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &want,
        ]),
        "pip install mcp",
    )?;
    fs::write(&stamp, format!("{want}\n"))?;
    Ok(python)
}

/// `GET /metrics` over plain HTTP/1.0 (the agent closes the connection after the body).
fn scrape(addr: SocketAddr) -> Result<String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: mcp-probe\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .context("reading /metrics")?;
    Ok(response)
}
