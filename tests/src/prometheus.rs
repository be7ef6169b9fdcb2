//! A real Prometheus server (Debian `prometheus`, installed by tests/mcp/setup.sh) on a
//! free loopback port, scraping an agent every second with the shipped rule files, and a
//! small client for its HTTP API.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::free_port;

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

/// One sample of an instant vector.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Prometheus {
    /// Starts Prometheus scraping `127.0.0.1:agent_port` (job `mcp-probe`) and evaluating
    /// `rule_files`, both every second; waits until it is ready.
    pub fn start(agent_port: u16, rule_files: &[PathBuf]) -> Self {
        Self::start_alerting(agent_port, rule_files, None)
    }

    /// Like [`Prometheus::start`], sending its alerts to the Alertmanager on
    /// `127.0.0.1:alertmanager_port` when there is one.
    pub fn start_alerting(
        agent_port: u16,
        rule_files: &[PathBuf],
        alertmanager_port: Option<u16>,
    ) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("mcp-probe-prometheus-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let rules: String = rule_files
            .iter()
            .map(|f| format!("  - {}\n", f.display()))
            .collect();
        let alerting = alertmanager_port
            .map(|p| {
                format!(
                    "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{p}']\n"
                )
            })
            .unwrap_or_default();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{rules}\
             scrape_configs:\n  - job_name: mcp-probe\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n{alerting}"
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus: run `cargo xtask test` (tests/mcp/setup.sh installs it)");
        let mut p = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = p.child.try_wait().expect("poll prometheus") {
                panic!("prometheus exited ({status}):\n{}", p.log());
            }
            if p.http("/-/ready").is_some_and(|(status, _)| status == 200) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn http(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let (head, body) = buf.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    }

    /// `GET /api/v1/<path>`; panics unless Prometheus answers `"status": "success"`.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = self
            .http(&format!("/api/v1/{path}"))
            .unwrap_or_else(|| panic!("no answer from prometheus for {path}:\n{}", self.log()));
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: HTTP {status}, not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "{path}: HTTP {status}: {body}");
        v["data"].clone()
    }

    /// An instant query.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let data = self.api(&format!("query?query={}", encode(promql)));
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| Sample {
                labels: r["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect(),
                value: r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{promql}: bad value in {r}")),
            })
            .collect()
    }

    /// The value of a query that returns one sample, if it does.
    pub fn scalar(&self, promql: &str) -> Option<f64> {
        let samples = self.query(promql);
        assert!(samples.len() <= 1, "{promql} returned {samples:?}");
        samples.first().map(|s| s.value)
    }

    /// Polls until `done` returns `Some`, or panics after `timeout` with `what`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = done(self) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_encoding() {
        assert_eq!(
            super::encode(r#"sum(x{a="b c"}) > 0.5"#),
            "sum%28x%7Ba%3D%22b%20c%22%7D%29%20%3E%200.5"
        );
    }
}
