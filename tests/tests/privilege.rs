//! Root integration tests for the privilege model and what the agent exposes: the real
//! agent started through `setpriv` (util-linux) as an unprivileged uid with only ambient
//! capabilities, or as root with capabilities dropped from its bounding set, driven with the
//! official Python SDK (PyPI `mcp` 2.x) over stdio and Streamable HTTP.
//!
//! The tests sit in a module named `privilege` so that `cargo xtask test --filter privilege`
//! runs this file.

mod privilege {
    use integration_tests::{
        agent_start_failure, assert_basic, assert_clean, assert_matches_wire, exclusive, free_port,
        harness, py2, run_client, run_client_args, setpriv_as, setpriv_root_without, Agent,
        Metrics, OtlpReceiver, ServerProcess, CLIENT, SERVER,
    };

    /// An unprivileged uid (`nobody`).
    const NOBODY: u32 = 65534;
    /// What the agent needs as a uid other than 0, in setpriv's names.
    const REQUIRED: &[&str] = &["bpf", "perfmon", "dac_read_search"];
    /// The required set plus the optional capability.
    const REDUCED: &[&str] = &["bpf", "perfmon", "dac_read_search", "sys_ptrace"];

    /// The capability bits of setpriv's names, as in /proc/PID/status.
    fn cap_bits(caps: &[&str]) -> u64 {
        caps.iter()
            .map(|c| match *c {
                "dac_read_search" => 1u64 << 2,
                "sys_ptrace" => 1 << 19,
                "sys_admin" => 1 << 21,
                "perfmon" => 1 << 38,
                "bpf" => 1 << 39,
                other => panic!("no bit for {other}"),
            })
            .fold(0, |a, b| a | b)
    }

    /// A line (`Uid:`, `CapEff:`, ...) of the agent's /proc/PID/status, without its key.
    fn status_field(pid: u32, key: &str) -> String {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {path}"))
            .trim()
            .to_owned()
    }

    /// Checks the agent really runs as `uid` with exactly `caps` effective and exports so.
    fn assert_runs_as(agent: &Agent, uid: u32, caps: &[&str]) {
        let uids = status_field(agent.pid(), "Uid:");
        assert!(
            uids.split_whitespace().all(|u| u == uid.to_string()),
            "agent uids (real, effective, saved, fs) {uids:?}, want all {uid}"
        );
        let eff = status_field(agent.pid(), "CapEff:");
        assert_eq!(
            u64::from_str_radix(&eff, 16).expect("CapEff is hex"),
            cap_bits(caps),
            "agent CapEff {eff}, want exactly {caps:?}"
        );
        let m = agent.scrape();
        for (cap, name) in [
            ("bpf", "CAP_BPF"),
            ("perfmon", "CAP_PERFMON"),
            ("dac_read_search", "CAP_DAC_READ_SEARCH"),
            ("sys_ptrace", "CAP_SYS_PTRACE"),
            ("sys_admin", "CAP_SYS_ADMIN"),
        ] {
            let want = if caps.contains(&cap) { 1.0 } else { 0.0 };
            assert_eq!(
                m.sum("mcp_probe_capability", &[("capability", name)]),
                want,
                "mcp_probe_capability{{capability={name}}}\n{}",
                m.dump("mcp_probe_capability")
            );
        }
    }

    fn wait_tool_calls(agent: &Agent, server: &str, n: f64) -> Metrics {
        agent.wait_for(&format!("{n} tools/call on both sides for {server}"), |m| {
            [CLIENT, SERVER].iter().all(|side| {
                m.sum(
                    &format!("{side}_requests_total"),
                    &[
                        ("mcp_server_name", server),
                        ("mcp_method_name", "tools/call"),
                    ],
                ) >= n
            })
        })
    }

    /// The `basic` stdio scenario (py2 SDK client and MCPServer), counted exactly.
    fn assert_captures_stdio_session(agent: &Agent) {
        let summary = run_client(
            &py2(),
            &["--scenario", "basic", "--mode", "legacy"],
            &[py2().display().to_string(), harness("py2_server.py")],
        );
        let m = wait_tool_calls(agent, "probe-py2", 6.0);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let m2 = agent.scrape();
        // Request and response counts settled (a session's duration lands when the
        // client exits, so it may still appear).
        for series in ["mcp_client_requests", "mcp_client_responses"] {
            assert_eq!(m.dump(series), m2.dump(series), "{series} still changing");
        }
        assert_basic(&m2, "probe-py2", "pipe");
        assert_matches_wire(&m2, "probe-py2", &summary);
        assert_clean(&m2);
    }

    #[test]
    fn runs_as_nobody_with_only_the_reduced_capabilities() {
        let _guard = exclusive();
        let mut prefix = setpriv_as(NOBODY, REDUCED);
        prefix.push("--".into());
        let agent = Agent::start_wrapped(&prefix, "info");
        assert_runs_as(&agent, NOBODY, REDUCED);
        assert_captures_stdio_session(&agent);
        let log = agent.stop_and_log();
        assert!(
            !log.contains("WARN mcp_probe::privileges"),
            "nothing missing, nothing to warn about:\n{log}"
        );
    }

    #[test]
    fn runs_as_nobody_without_the_optional_capability_and_says_so() {
        let _guard = exclusive();
        let mut prefix = setpriv_as(NOBODY, REQUIRED);
        prefix.push("--".into());
        let agent = Agent::start_wrapped(&prefix, "info");
        assert_runs_as(&agent, NOBODY, REQUIRED);
        assert_captures_stdio_session(&agent);
        let log = agent.stop_and_log();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN mcp_probe::privileges"))
            .collect();
        assert_eq!(warnings.len(), 1, "one warning, for CAP_SYS_PTRACE:\n{log}");
        assert!(
            warnings[0].contains("missing CAP_SYS_PTRACE: without it"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn runs_as_root_with_only_bpf_and_perfmon() {
        // A container's root with every other capability dropped: tracefs is root's, so
        // CAP_DAC_READ_SEARCH is optional here.
        let _guard = exclusive();
        let caps = ["bpf", "perfmon"];
        let prefix: Vec<String> = [
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all,+bpf,+perfmon",
            "--",
        ]
        .map(String::from)
        .to_vec();
        let agent = Agent::start_wrapped(&prefix, "info");
        assert_runs_as(&agent, 0, &caps);
        assert_captures_stdio_session(&agent);
        let log = agent.stop_and_log();
        for cap in ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"] {
            assert!(
                log.lines().any(|l| l.contains("WARN mcp_probe::privileges")
                    && l.contains(&format!("missing {cap}: without it"))),
                "a warning for {cap}:\n{log}"
            );
        }
    }

    /// Starts the agent through `prefix`, expects a non-zero exit before anything is loaded,
    /// with `names` in its stderr and none of `not`; returns the stderr.
    fn assert_refuses(prefix: &[String], names: &[&str], not: &[&str]) -> String {
        let (status, stderr) = agent_start_failure(prefix);
        assert!(!status.success(), "exit status {status}:\n{stderr}");
        assert!(
            stderr.contains("mcp-probe lacks capabilities it needs"),
            "not the start-up check:\n{stderr}"
        );
        assert!(
            !stderr.contains("Operation not permitted")
                && !stderr.contains("eBPF programs attached"),
            "it should fail before touching the kernel:\n{stderr}"
        );
        for name in names {
            assert!(
                stderr.contains(name),
                "stderr should name {name}:\n{stderr}"
            );
        }
        for name in not {
            assert!(
                !stderr.contains(name),
                "stderr should not name {name}:\n{stderr}"
            );
        }
        stderr
    }

    #[test]
    fn refuses_to_start_without_a_required_capability() {
        let _guard = exclusive();
        let root_without = |caps: &[&str]| {
            let mut p = setpriv_root_without(caps);
            p.push("--".into());
            p
        };
        // CAP_SYS_ADMIN goes too: the kernel accepts it instead of CAP_BPF and CAP_PERFMON.
        assert_refuses(
            &root_without(&["bpf", "sys_admin"]),
            &["missing CAP_BPF (or CAP_SYS_ADMIN): needed to create the eBPF maps"],
            &["missing CAP_PERFMON", "missing CAP_DAC_READ_SEARCH"],
        );
        assert_refuses(
            &root_without(&["perfmon", "sys_admin"]),
            &["missing CAP_PERFMON (or CAP_SYS_ADMIN): needed to load tracing programs"],
            &["missing CAP_BPF", "missing CAP_DAC_READ_SEARCH"],
        );
        // As another uid, tracefs (root-only) needs CAP_DAC_READ_SEARCH.
        let mut nobody = setpriv_as(NOBODY, &["bpf", "perfmon", "sys_ptrace"]);
        nobody.push("--".into());
        assert_refuses(
            &nobody,
            &[
                "missing CAP_DAC_READ_SEARCH: needed to read tracefs at /sys/kernel/tracing",
                "as uid 65534",
            ],
            &["missing CAP_BPF", "missing CAP_PERFMON"],
        );
        // Root of a new user namespace holds every capability there, none the kernel takes
        // for eBPF.
        let userns: Vec<String> = ["unshare", "--user", "--map-root-user", "--"]
            .map(String::from)
            .to_vec();
        assert_refuses(
            &userns,
            &["missing CAP_BPF", "missing CAP_PERFMON", "user namespace"],
            &[],
        );
        // Root without CAP_BPF but with CAP_SYS_ADMIN is what the kernel accepts: it runs.
        let agent = Agent::start_wrapped(&root_without(&["bpf"]), "info");
        agent.stop();
    }

    /// A private mount namespace in which tracefs is unmounted, then `setpriv ...`.
    fn without_tracefs(setpriv: Vec<String>) -> Vec<String> {
        let mut p: Vec<String> = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "umount /sys/kernel/tracing && exec \"$@\"",
            "sh",
        ]
        .map(String::from)
        .to_vec();
        p.extend(setpriv);
        p.push("--".into());
        p
    }

    #[test]
    fn sys_admin_is_needed_only_to_mount_tracefs() {
        let _guard = exclusive();
        assert_refuses(
            &without_tracefs(setpriv_as(NOBODY, REDUCED)),
            &["missing CAP_SYS_ADMIN: tracefs is not mounted at /sys/kernel/tracing"],
            &["missing CAP_BPF", "missing CAP_PERFMON"],
        );
        // With it, the agent mounts tracefs (in its own mount namespace) and runs.
        let mut caps = REDUCED.to_vec();
        caps.push("sys_admin");
        let agent = Agent::start_wrapped(&without_tracefs(setpriv_as(NOBODY, &caps)), "info");
        assert_runs_as(&agent, NOBODY, &caps);
        agent.stop();
    }

    /// A string no traffic contains by chance.
    fn unique(what: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{what}{}x{nanos:x}", std::process::id())
    }

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// `text` (a scrape or a log) contains none of `markers`, as text or hex.
    fn assert_absent(what: &str, text: &str, markers: &[String]) {
        for marker in markers {
            for form in [marker.clone(), hex(marker)] {
                if let Some(at) = text.find(&form) {
                    let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
                    let to = text[at..].find('\n').map_or(text.len(), |i| at + i);
                    panic!(
                        "{what} contains {marker:?} (as {form:?}):\n{}",
                        &text[from..to]
                    );
                }
            }
        }
    }

    fn markers_of(summary: &serde_json::Value) -> Vec<String> {
        let list = summary["markers"]
            .as_array()
            .unwrap_or_else(|| panic!("client summary has no markers: {summary}"));
        list.iter()
            .map(|m| m.as_str().expect("marker is a string").to_owned())
            .collect()
    }

    #[test]
    fn exports_and_logs_no_payload_and_no_credential() {
        let _guard = exclusive();
        for level in ["info", "trace"] {
            let marker = unique("mcpprobemarker");
            let secret = unique("mcpprobesecret");
            let api_key = unique("mcpprobeapikey");
            // The request log and the spans at their defaults hold metadata only, too.
            let receiver = OtlpReceiver::start();
            let request_log = std::env::temp_dir().join(format!("{marker}.requests.jsonl"));
            let request_log_arg = request_log.to_string_lossy().into_owned();
            let endpoint = receiver.endpoint();
            let agent = Agent::start_with_env(
                &[
                    "--request-log",
                    &request_log_arg,
                    "--request-log-notifications",
                    "--otlp-endpoint",
                    &endpoint,
                ],
                level,
            );

            // stdio: tool arguments, tool results and a prompt argument carry markers.
            let stdio = run_client(
                &py2(),
                &[
                    "--scenario",
                    "markers",
                    "--mode",
                    "legacy",
                    "--marker",
                    &format!("{marker}stdio"),
                ],
                &[py2().display().to_string(), harness("py2_server.py")],
            );
            // HTTP: the same, behind a gate that only lets the secret bearer token through.
            let port = free_port().to_string();
            let server = ServerProcess::start(
                &py2(),
                &[
                    &harness("gate_server.py"),
                    "--port",
                    &port,
                    "--mode",
                    "auth",
                    "--token",
                    &secret,
                ],
            );
            let url = format!("http://127.0.0.1:{port}/mcp");
            let http = run_client_args(
                &py2(),
                &[
                    "--scenario",
                    "markers",
                    "--url",
                    &url,
                    "--marker",
                    &format!("{marker}http"),
                    "--header",
                    &format!("Authorization: Bearer {secret}"),
                    "--header",
                    &format!("X-Api-Key: {api_key}"),
                ],
            );
            assert_eq!(
                http["http"]["by_status"]["401"],
                serde_json::Value::Null,
                "the gate refused the token: {http}"
            );

            // The agent parsed all of it: per session (pipe, tcp), 3 tool calls and a
            // prompt on both sides, and a user keyed by the credential's hash.
            let count = |m: &Metrics, side: &str, transport: &str, labels: &[(&str, &str)]| {
                let mut filter = vec![
                    ("mcp_server_name", "probe-py2"),
                    ("network_transport", transport),
                ];
                filter.extend_from_slice(labels);
                m.sum(&format!("{side}_requests_total"), &filter)
            };
            let m = agent.wait_for("both sessions on both sides", |m| {
                [CLIENT, SERVER].iter().all(|side| {
                    ["pipe", "tcp"].iter().all(|t| {
                        count(m, side, t, &[("mcp_method_name", "tools/call")]) >= 3.0
                            && count(m, side, t, &[("mcp_method_name", "prompts/get")]) >= 1.0
                    })
                }) && m
                    .label_values("mcp_user_requests_total", "user")
                    .iter()
                    .any(|u| u.starts_with("cred:"))
            });
            for side in [CLIENT, SERVER] {
                for transport in ["pipe", "tcp"] {
                    for tool in ["echo", "add", "fail"] {
                        let labels = [
                            ("mcp_method_name", "tools/call"),
                            ("gen_ai_tool_name", tool),
                        ];
                        assert_eq!(
                            count(&m, side, transport, &labels),
                            1.0,
                            "{side} {transport} {tool}\n{}",
                            m.dump("mcp_")
                        );
                    }
                }
            }
            let scrape = agent.scrape_text();
            drop(server);
            let log = agent.stop_and_log();
            if level == "trace" {
                let traced = log.lines().filter(|l| l.contains(" TRACE ")).count();
                assert!(
                traced > 20 && log.contains("record"),
                "RUST_LOG=trace should log every record's header ({traced} TRACE lines):\n{log}"
            );
            }

            let requests = std::fs::read_to_string(&request_log).expect("request log");
            let _ = std::fs::remove_file(&request_log);
            let spans = std::fs::read_to_string(&receiver.out).expect("spans");
            // Both sessions, both sides: at least the 5 scenario requests each.
            assert!(
                requests.lines().count() >= 20 && spans.lines().count() >= 20,
                "request log and spans hold every request:\n{requests}\n{spans}"
            );
            let mut markers = markers_of(&stdio);
            markers.extend(markers_of(&http));
            markers.extend([marker, secret, api_key]);
            assert_absent(&format!("/metrics (RUST_LOG={level})"), &scrape, &markers);
            assert_absent(&format!("agent log (RUST_LOG={level})"), &log, &markers);
            assert_absent("request log (defaults)", &requests, &markers);
            assert_absent("OTLP spans (defaults)", &spans, &markers);
        }
    }
}
