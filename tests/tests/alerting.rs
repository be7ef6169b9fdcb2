//! The paging path, with real software: the example Alertmanager configuration
//! (deploy/alertmanager) passes `amtool check-config` and routes by severity; and a real
//! Prometheus, evaluating the shipped rules over a live agent's scrape of real SDK
//! traffic, fires an alert that a real Alertmanager (Debian's `prometheus-alertmanager`)
//! delivers, through the example's routing tree, to a local webhook. (The example's
//! receivers are PagerDuty and Opsgenie, which cannot be reached from here: the test
//! points them at the webhook and shortens the grouping waits; the routes and inhibition
//! rules are the example's.)

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use integration_tests::{
    exclusive, free_port, harness, mcp_env, prometheus::Prometheus, py2, repo_root, run_client,
    Agent,
};

fn example() -> PathBuf {
    repo_root().join("deploy/alertmanager/alertmanager.yml")
}

fn amtool(args: &[&str]) -> String {
    let out = Command::new("amtool")
        .args(args)
        .output()
        .expect("amtool (Debian prometheus-alertmanager; tests/mcp/setup.sh installs it)");
    assert!(
        out.status.success(),
        "amtool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_example_alertmanager_configuration_routes_by_severity() {
    let config = example().display().to_string();
    assert!(amtool(&["check-config", &config]).contains("SUCCESS"));
    let route = |labels: &[&str]| {
        let mut args = vec!["config", "routes", "test", "--config.file", &config];
        args.extend(labels);
        amtool(&args).trim().to_owned()
    };
    assert_eq!(
        route(&["severity=critical", "alertname=MCPServerDown"]),
        "pagerduty"
    );
    assert_eq!(
        route(&["severity=warning", "alertname=MCPHighLatency"]),
        "opsgenie"
    );
    assert_eq!(route(&["alertname=SomethingElse"]), "opsgenie");
}

/// Notifications a webhook received: (path, JSON body).
type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// A webhook on loopback that keeps every POST it gets.
fn webhook() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook");
    let port = listener.local_addr().expect("address").port();
    let received: Received = Arc::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            if let Ok(json) = serde_json::from_slice(&body) {
                keep.lock().expect("webhook log").push((path, json));
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, received)
}

/// The example configuration with every receiver sent to the webhook at
/// `http://127.0.0.1:port/<receiver>`, and grouping waits of a second.
fn test_configuration(port: u16, path: &std::path::Path) {
    let script = format!(
        "import sys, yaml\n\
         c = yaml.safe_load(open(sys.argv[1]))\n\
         for r in c['receivers']:\n\
         \x20   name = r['name']\n\
         \x20   for k in [k for k in r if k.endswith('_configs')]: del r[k]\n\
         \x20   r['webhook_configs'] = [{{'url': 'http://127.0.0.1:{port}/' + name, 'send_resolved': False}}]\n\
         c['route']['group_wait'] = '1s'\n\
         c['route']['group_interval'] = '1s'\n\
         yaml.safe_dump(c, open(sys.argv[2], 'w'))\n"
    );
    let status = Command::new(mcp_env().join("k8s/bin/python"))
        .args(["-c", &script])
        .arg(example())
        .arg(path)
        .status()
        .expect("the k8s venv's python");
    assert!(status.success(), "could not write the test configuration");
}

struct Alertmanager(std::process::Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_error_spike_pages_through_prometheus_and_alertmanager() {
    let _guard = exclusive();
    let dir = std::env::temp_dir().join(format!("mcp-probe-alerting-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let (hook_port, received) = webhook();
    let config = dir.join("alertmanager.yml");
    test_configuration(hook_port, &config);
    assert!(amtool(&["check-config", &config.display().to_string()]).contains("SUCCESS"));
    let am_port = free_port();
    let _alertmanager = Alertmanager(
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("alertmanager.log")).expect("log"))
            .spawn()
            .expect("start prometheus-alertmanager"),
    );
    let agent = Agent::start();
    let rules = ["mcp-probe.rules.yml", "mcp-probe.alerts.yml"]
        .map(|f| repo_root().join("mcp-probe/rules").join(f));
    let prom = Prometheus::start_alerting(agent.port, &rules, Some(am_port));
    prom.wait_for("the agent to be scraped", Duration::from_secs(20), |p| {
        p.scalar(r#"up{job="mcp-probe"}"#).filter(|v| *v == 1.0)
    });
    // Real SDK traffic, one call in five failing: MCPHighErrorRate (critical) goes
    // pending at once and fires a minute later.
    run_client(
        &py2(),
        &["--scenario", "load", "--rounds", "12", "--mode", "legacy"],
        &[py2().display().to_string(), harness("py2_server.py")],
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let page = loop {
        let found = received
            .lock()
            .expect("webhook log")
            .iter()
            .find_map(|(path, body)| {
                body["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|a| {
                        (a["labels"]["alertname"] == "MCPHighErrorRate"
                            && a["labels"]["mcp_server_name"] == "probe-py2")
                            .then(|| (path.clone(), a.clone()))
                    })
            });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no page within 3 minutes; Prometheus alerts: {}\nAlertmanager log:\n{}",
            prom.api("alerts"),
            std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    // Critical: routed to the PagerDuty receiver, firing, with the rule's summary.
    assert_eq!(page.0, "/pagerduty", "{}", page.1);
    assert_eq!(page.1["status"], "firing");
    assert_eq!(page.1["labels"]["severity"], "critical");
    assert_eq!(
        page.1["annotations"]["summary"],
        "MCP server probe-py2: more than 5% of requests fail"
    );
    // Nothing went to Opsgenie: no warning fired.
    assert!(
        received
            .lock()
            .expect("webhook log")
            .iter()
            .all(|(path, _)| path == "/pagerduty"),
        "{:?}",
        received.lock().expect("webhook log")
    );
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
