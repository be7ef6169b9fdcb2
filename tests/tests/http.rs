//! Root integration tests for the network transports: the real agent and real HTTP peers
//! on loopback.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use integration_tests::{exclusive, Agent};

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
    let agent = Agent::start_with_env(&[], "info,mcp_probe::pipeline=trace");
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
