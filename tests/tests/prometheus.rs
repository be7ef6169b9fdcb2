//! Root integration tests for the shipped rules and dashboards against the real agent:
//! every metric and label name they use is one a live agent exports, and a real
//! Prometheus (Debian `prometheus`) scraping the agent with the shipped rules computes the
//! right rates and quantiles and raises the high-error-rate alert.
//!
//! Module `ops`, like tests/tests/ops.rs: `cargo xtask test --filter ops` runs both.

mod ops {
    use std::{
        collections::{BTreeMap, BTreeSet},
        path::PathBuf,
        process::{Child, Command, Stdio},
        time::Duration,
    };

    use integration_tests::{
        exclusive, free_port, harness, prometheus::Prometheus, promql, py1, py2, repo_root,
        run_client, run_client_args, Agent, Metrics, OtlpReceiver, ServerProcess,
    };

    /// A child process killed when dropped.
    struct Background(Child);

    impl Drop for Background {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn rule_files() -> Vec<PathBuf> {
        ["mcp-probe.rules.yml", "mcp-probe.alerts.yml"]
            .iter()
            .map(|f| repo_root().join("mcp-probe/rules").join(f))
            .collect()
    }

    fn dashboards() -> Vec<(String, serde_json::Value)> {
        let dir = repo_root().join("mcp-probe/dashboards");
        let mut out: Vec<(String, serde_json::Value)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("dashboard");
                let json = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", p.display()));
                (
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    json,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Labels Prometheus adds to every scraped series.
    const TARGET_LABELS: &[&str] = &["job", "instance"];

    /// What is wrong with the names `names` uses, given a live scrape and the recording
    /// rules defined.
    fn problems(
        names: &promql::Names,
        exported: &BTreeMap<String, BTreeSet<String>>,
        recorded: &BTreeSet<String>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut labels_of_used: BTreeSet<String> = BTreeSet::new();
        let mut raw = 0;
        for m in &names.metrics {
            if m.contains(':') {
                if !recorded.contains(m) {
                    out.push(format!("recording rule {m} is not defined"));
                }
            } else if m == "up" {
                // Prometheus's own series for each target.
            } else if let Some(labels) = exported.get(m) {
                raw += 1;
                labels_of_used.extend(labels.iter().cloned());
            } else {
                out.push(format!("metric {m} is not exported"));
            }
        }
        let known: BTreeSet<String> = if raw > 0 {
            labels_of_used
        } else {
            exported.values().flatten().cloned().collect()
        };
        for l in &names.labels {
            if !known.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                out.push(format!("label {l} is on none of {:?}", names.metrics));
            }
        }
        out
    }

    /// Starts a py2 stdio client holding a session open until `stop_file` exists.
    fn hold(stop_file: &std::path::Path) -> Background {
        let _ = std::fs::remove_file(stop_file);
        Background(
            Command::new(py2())
                .arg(harness("client.py"))
                .args(["--scenario", "hold", "--mode", "legacy", "--stop-file"])
                .arg(stop_file)
                .arg("--")
                .arg(py2())
                .arg(harness("py2_server.py"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the hold client"),
        )
    }

    /// Real traffic that makes the agent export every family the dashboards and rules use:
    /// stdio and HTTP sessions, a failing tool, a timeout, a reset connection, a 401, a
    /// 429, a server restart, a session held open, a label past its cap, and both sinks.
    /// Then every name in every dashboard query and rule expression must be in the scrape.
    #[test]
    fn dashboards_and_rules_use_only_names_a_live_agent_exports() {
        let _guard = exclusive();
        let receiver = OtlpReceiver::start();
        let log =
            std::env::temp_dir().join(format!("mcp-probe-names-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let agent = Agent::start_with(&[
            "--request-timeout-seconds",
            "1",
            // echo, add, fail, then `slow` is folded into _other.
            "--max-tools",
            "3",
            "--request-log",
            &log.to_string_lossy(),
            "--otlp-endpoint",
            &receiver.endpoint(),
        ]);
        let py2_server = [py2().display().to_string(), harness("py2_server.py")];
        run_client(
            &py2(),
            &["--scenario", "basic", "--mode", "legacy"],
            &py2_server,
        );
        // py1 sends no cancellation when its read times out: the agent's 1 s timeout ends it.
        run_client(
            &py1(),
            &["--scenario", "timeout"],
            &[py1().display().to_string(), harness("py1_server.py")],
        );
        let reset = Command::new("python3")
            .arg(harness("reset_peer.py"))
            .output()
            .expect("run reset_peer.py");
        assert!(reset.status.success(), "reset_peer.py failed");
        for (mode, scenario, extra) in [
            ("auth", "auth-fail", None),
            ("ratelimit", "rate-limited", Some("3")),
        ] {
            let port = free_port().to_string();
            let mut args = vec![harness("gate_server.py"), "--port".into(), port.clone()];
            args.extend(["--mode".into(), mode.into()]);
            if let Some(limit) = extra {
                args.extend(["--limit".into(), limit.into()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _gate = ServerProcess::start(&py2(), &args);
            let url = format!("http://127.0.0.1:{port}/mcp");
            run_client_args(
                &py2(),
                &["--scenario", scenario, "--url", &url, "--mode", "legacy"],
            );
        }
        // A new probe-py2 process within 5 minutes of the first one's exit: a restart; its
        // session stays open for the session and health gauges.
        let stop =
            std::env::temp_dir().join(format!("mcp-probe-names-stop-{}", std::process::id()));
        let client = hold(&stop);
        let wanted = [
            "mcp_server_restarts_total",
            "mcp_server_active_sessions",
            "mcp_active_clients",
            "mcp_server_uptime_seconds",
            "mcp_client_request_timeouts_total",
            "mcp_connection_errors_total",
            "mcp_auth_failures_total",
            "mcp_rate_limited_total",
            "mcp_probe_label_overflow_total",
            "mcp_server_session_duration_seconds_bucket",
        ];
        let m: Metrics = agent.wait_for("every family the traffic makes", |m| {
            let names = m.names();
            wanted.iter().all(|w| names.contains_key(*w))
                && m.sum("mcp_server_cpu_seconds_total", &[]) >= 0.0
                && m.sum("mcp_probe_sink_records_total", &[("sink", "otlp")]) > 0.0
        });
        std::fs::write(&stop, b"").expect("stop file");
        drop(client);
        agent.stop();
        let _ = std::fs::remove_file(&log);
        let exported = m.names();

        let mut recorded = BTreeSet::new();
        let mut exprs: Vec<(String, String)> = Vec::new();
        for file in rule_files() {
            let text = std::fs::read_to_string(&file).expect("rule file");
            let (records, list) = promql::rule_file(&text);
            recorded.extend(records);
            let name = file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            exprs.extend(list.into_iter().map(|e| (name.clone(), e)));
        }
        let mut failures = Vec::new();
        let mut checked = 0;
        for (file, expr) in &exprs {
            checked += 1;
            for p in problems(&promql::names(expr), &exported, &recorded) {
                failures.push(format!("{file}: {p}\n    in {expr}"));
            }
        }
        let boards = dashboards();
        assert_eq!(
            boards.len(),
            4,
            "Executive, Operations, Development, Security"
        );
        let mut uids = BTreeSet::new();
        for (file, board) in &boards {
            assert!(
                uids.insert(board["uid"].as_str().unwrap_or_default().to_owned()),
                "{file}: duplicate uid"
            );
            let queries = promql::dashboard_queries(board);
            assert!(queries.len() >= 8, "{file}: only {} queries", queries.len());
            for (query, template) in queries {
                checked += 1;
                let names = if template {
                    promql::template_query_names(&query)
                } else {
                    promql::names(&query)
                };
                assert!(!names.metrics.is_empty(), "{file}: no metric in {query}");
                for p in problems(&names, &exported, &recorded) {
                    failures.push(format!("{file}: {p}\n    in {query}"));
                }
            }
        }
        assert!(checked > 100, "only {checked} expressions checked");
        assert!(
            failures.is_empty(),
            "{} problems in the dashboards and rules:\n{}\n\nexported: {:?}",
            failures.len(),
            failures.join("\n"),
            exported.keys().collect::<Vec<_>>()
        );
    }

    fn alert_state(prom: &Prometheus, alert: &str, server: &str) -> Option<String> {
        let data = prom.api("alerts");
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["labels"]["alertname"] == alert && a["labels"]["mcp_server_name"] == server)
            .map(|a| a["state"].as_str().unwrap_or_default().to_owned())
    }

    /// The agent, a real Prometheus scraping it every second with the shipped rules, and
    /// 12 rounds of real SDK calls (20 % failing, 20 % taking 0.15 s): Prometheus has the
    /// exact counts, rates and quantiles that fit them, every rule evaluates without error,
    /// and the high-error-rate alert goes pending (it fires after 1 minute).
    #[test]
    fn prometheus_computes_rates_quantiles_and_the_error_alert_from_a_live_agent() {
        let _guard = exclusive();
        let agent = Agent::start();
        let prom = Prometheus::start(agent.port, &rule_files());
        prom.wait_for("the agent to be scraped", Duration::from_secs(20), |p| {
            p.scalar(r#"up{job="mcp-probe"}"#).filter(|v| *v == 1.0)
        });
        let rounds = 12.0;
        let summary = run_client(
            &py2(),
            &["--scenario", "load", "--rounds", "12", "--mode", "legacy"],
            &[py2().display().to_string(), harness("py2_server.py")],
        );
        let sent: f64 = summary["wire"]["sent"]["requests"]
            .as_object()
            .expect("wire.sent.requests")
            .values()
            .filter_map(|v| v.as_f64())
            .sum();
        let server = r#"mcp_server_name="probe-py2""#;
        let total = format!("sum(mcp_server_requests_total{{{server}}})");
        prom.wait_for("every request scraped", Duration::from_secs(20), |p| {
            p.scalar(&total).filter(|v| *v == sent)
        });
        // Exact counts, per tool and on both sides.
        for side in ["client", "server"] {
            for (tool, n) in [("echo", 2.0), ("add", 1.0), ("slow", 1.0), ("fail", 1.0)] {
                let q = format!(
                    r#"sum(mcp_{side}_requests_total{{{server},mcp_method_name="tools/call",gen_ai_tool_name="{tool}"}})"#
                );
                assert_eq!(prom.scalar(&q), Some(n * rounds), "{q}");
            }
            let q = format!(r#"sum(mcp_{side}_responses_total{{{server},outcome="tool_error"}})"#);
            assert_eq!(prom.scalar(&q), Some(rounds), "{q}");
        }
        // Quantiles over the cumulative buckets: all slow(0.15) calls are in (0.1, 0.2],
        // and with 20 % of the calls there, so is the p99 of all calls.
        let slow = format!(
            r#"histogram_quantile(0.5, sum by (le) (mcp_server_operation_duration_seconds_bucket{{{server},gen_ai_tool_name="slow"}}))"#
        );
        let p50_slow = prom.scalar(&slow).expect("p50 of slow");
        assert!((0.1..=0.2).contains(&p50_slow), "{slow} = {p50_slow}");
        let all = format!(
            r#"histogram_quantile(0.99, sum by (le) (mcp_server_operation_duration_seconds_bucket{{{server},mcp_method_name="tools/call"}}))"#
        );
        let p99 = prom.scalar(&all).expect("p99 of tools/call");
        assert!((0.1..=0.2).contains(&p99), "{all} = {p99}");
        let fast = format!(
            r#"histogram_quantile(0.5, sum by (le) (mcp_server_operation_duration_seconds_bucket{{{server},mcp_method_name="tools/call"}}))"#
        );
        let p50 = prom.scalar(&fast).expect("p50 of tools/call");
        assert!(p50 <= 0.1, "{fast} = {p50}: most calls are fast");

        // The recording rules: a request rate that fits the traffic, its error ratio,
        // quantiles within the same buckets.
        let rate = prom.wait_for("the request rate rule", Duration::from_secs(10), |p| {
            p.scalar(r#"mcp_server:requests:rate5m{mcp_server_name="probe-py2"}"#)
                .filter(|v| *v > 0.0)
        });
        // rate() over 5 minutes of a counter that exists for a few seconds: the increase
        // between the first and last scrape, extrapolated by at most half a scrape each way.
        assert!(
            rate * 300.0 > 0.5 * sent && rate * 300.0 < 1.3 * sent,
            "rate5m {rate}/s for {sent} requests"
        );
        let ratio = prom
            .scalar(r#"mcp_server:error_ratio:rate5m{mcp_server_name="probe-py2"}"#)
            .expect("error ratio");
        let exact = rounds / sent;
        assert!(
            (ratio - exact).abs() < 0.1,
            "error ratio {ratio}, the traffic's {exact}"
        );
        let rule_p99 = prom.wait_for("the p99 rule", Duration::from_secs(10), |p| {
            p.scalar(r#"mcp_server:operation_duration_seconds:p99_5m{mcp_server_name="probe-py2"}"#)
                .filter(|v| v.is_finite())
        });
        assert!((0.1..=0.2).contains(&rule_p99), "p99 rule {rule_p99}");
        let state = prom.wait_for(
            "MCPHighErrorRate pending or firing",
            Duration::from_secs(20),
            |p| alert_state(p, "MCPHighErrorRate", "probe-py2"),
        );
        assert!(
            state == "pending" || state == "firing",
            "MCPHighErrorRate is {state}"
        );
        assert_eq!(
            alert_state(&prom, "MCPHighLatency", "probe-py2"),
            None,
            "p99 {rule_p99} s is under the 1 s threshold"
        );
        // Every rule of the shipped files loaded and evaluates without error.
        let groups = prom.api("rules");
        let mut rules = 0;
        for g in groups["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                rules += 1;
                assert_ne!(
                    r["health"], "err",
                    "rule {} fails: {}",
                    r["name"], r["lastError"]
                );
            }
        }
        let shipped: usize = rule_files()
            .iter()
            .map(|f| {
                std::fs::read_to_string(f)
                    .expect("read a rule file")
                    .lines()
                    .filter(|l| {
                        let l = l.trim_start();
                        l.starts_with("- record:") || l.starts_with("- alert:")
                    })
                    .count()
            })
            .sum();
        assert_eq!(rules, shipped, "every shipped rule loaded: {groups}");
        agent.stop();
    }
}
