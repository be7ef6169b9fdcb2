//! The cost of a new connection, with many other sockets on the host, and the highest
//! connection-churn rate the agent follows with zero loss.

use super::*;

/// One paced `mcp-bench churn` run with the agent attached: waits until the agent has
/// counted every call on both sides (or has stopped counting for 3 s, at most 30 s), then
/// returns (run result, calls each side counted, ring-full records lost, parse errors and
/// unpaired responses, agent CPU seconds from the start to the end of the wait, and that
/// time).
fn churn_step(
    bench: &Path,
    agent: &Agent,
    rate: f64,
    seconds: f64,
    keepalive: bool,
) -> Result<(serde_json::Value, [f64; 2], f64, f64, f64, f64)> {
    let ring_full = |m: &Metrics| {
        m.sum(
            "mcp_probe_lost_records_total",
            &[("reason", "ringbuf_full")],
        )
    };
    let ring0 = ring_full(&agent.scrape());
    let before = snapshot(agent);
    let t0 = Instant::now();
    let mut args: Vec<String> = ["churn", "--size", "200", "--server-cpu", "1", "--rate"]
        .map(str::to_owned)
        .into();
    args.push(rate.to_string());
    if keepalive {
        args.extend(["--keepalive".into(), "1".into()]);
    }
    let r = run(bench, &args, seconds)?;
    let requests = r["requests"].as_f64().context("requests")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (-1.0, Instant::now());
    loop {
        let s = snapshot(agent);
        let counted = (s.client_requests - before.client_requests)
            .min(s.server_requests - before.server_requests);
        if counted != last {
            (last, since) = (counted, Instant::now());
        }
        if counted >= requests
            || since.elapsed() > Duration::from_secs(3)
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu = agent.cpu_seconds() - before.cpu;
    let wall = t0.elapsed().as_secs_f64();
    // The kernel's loss counters reach the agent once a second.
    std::thread::sleep(Duration::from_millis(1200));
    let after = snapshot(agent);
    let counted = [
        after.client_requests - before.client_requests,
        after.server_requests - before.server_requests,
    ];
    let lost = ring_full(&agent.scrape()) - ring0;
    let bad = (after.errors - before.errors) + (after.unpaired - before.unpaired);
    Ok((r, counted, lost, bad, cpu, wall))
}

/// Agent CPU per new MCP connection as the host's TCP table grows, and the churn rate the
/// agent follows with zero loss.
pub(super) fn connections(report: &mut String, bench: &Path) -> Result<()> {
    eprintln!("bench: cost per new connection");
    writeln!(
        report,
        "\n## Cost per new connection\n\n\
         A new TCP connection per MCP exchange is what the SDKs' HTTP clients do with SSE \
         responses. `mcp-bench churn` (CPU 1, its echo server too) opens a loopback \
         connection, posts a 200 B `tools/call`, reads the JSON answer and closes, 10 times \
         a second for 5 s (slow enough that the agent is never saturated, which would \
         let it share work between connections), while `tests/mcp/prefill.py` holds idle loopback connections: \
         the other sockets of the first column (both ends of each connection count), in the \
         same network namespace. The second column is the namespace's whole TCP table as \
         counted then, with what else was there (mostly TIME_WAIT of earlier work). The \
         agent (CPU 0) runs throughout; its CPU is taken from the start of the run until it \
         has counted every call on both sides (or stopped counting for 3 s) and divided by \
         the calls. The same paced exchanges on one keep-alive connection are the \
         reference: the difference is the cost of a new connection.\n\n\
         | other sockets held | TCP table | agent CPU per exchange, keep-alive | per exchange, a new connection each | cost of a new connection | counted (client, server) | ring-full losses |\n\
         |---|---|---|---|---|---|---|"
    )?;
    let agent = start_agent();
    let fmt_cpu = |s: f64| {
        if s >= 1e-3 {
            format!("{:.1} ms", s * 1e3)
        } else {
            fmt_ns(s * 1e9)
        }
    };
    for sockets in [1_000usize, 10_000, 50_000] {
        let prefill = Prefill::start(sockets / 2, 0);
        let table = prefill.summary["sockets"].as_f64().unwrap_or(f64::NAN);
        let (kr, _, klost, kbad, kcpu, _) = churn_step(bench, &agent, 10.0, 5.0, true)?;
        let (r, counted, lost, bad, cpu, _) = churn_step(bench, &agent, 10.0, 5.0, false)?;
        drop(prefill);
        let per =
            |r: &serde_json::Value, cpu: f64| cpu / r["requests"].as_f64().unwrap_or(1.0).max(1.0);
        let requests = r["requests"].as_f64().context("requests")?;
        let mut note = String::new();
        if counted.iter().any(|c| *c != requests) {
            note = format!(" of {requests:.0}");
        }
        if bad + kbad > 0.0 {
            note.push_str(&format!("; {:.0} parse errors or unpaired", bad + kbad));
        }
        writeln!(
            report,
            "| {} | {} | {} | {} | {} | {:.0}, {:.0}{note} | {:.0} |",
            thousands(sockets as f64),
            thousands(table),
            fmt_cpu(per(&kr, kcpu)),
            fmt_cpu(per(&r, cpu)),
            fmt_cpu(per(&r, cpu) - per(&kr, kcpu)),
            counted[0],
            counted[1],
            lost + klost,
        )?;
    }

    // The highest churn rate followed exactly, with 10,000 other sockets on the host.
    writeln!(
        report,
        "\nThe highest connection-churn rate the agent (one core) follows with zero loss and \
         exact counts on both sides, 10,000 other sockets on the host: steps of 3 s, rising \
         until one fails.\n\n\
         | highest zero-loss rate | agent CPU at that rate | next step | why it failed |\n\
         |---|---|---|---|"
    )?;
    let prefill = Prefill::start(5_000, 0);
    let mut best: Option<(f64, f64)> = None;
    let mut failed = ("—".to_owned(), "every step passed".to_owned());
    for rate in [250.0, 500.0, 1000.0, 2000.0, 4000.0] {
        let (r, counted, lost, bad, cpu, wall) = churn_step(bench, &agent, rate, 3.0, false)?;
        let requests = r["requests"].as_f64().context("requests")?;
        let answered = r["responses"].as_f64().context("responses")?;
        let reached = r["requests_per_second"].as_f64().context("rate")?;
        let mut why = Vec::new();
        if lost > 0.0 {
            why.push(format!("{lost:.0} records lost on a full ring"));
        }
        for (side, got) in ["client", "server"].iter().zip(counted) {
            if got != requests {
                why.push(format!("{side} side counted {got} of {requests}"));
            }
        }
        if answered != requests {
            why.push(format!("the server answered {answered} of {requests}"));
        }
        if bad > 0.0 {
            why.push("parse errors or unpaired responses".into());
        }
        if reached < 0.95 * rate {
            why.push(format!(
                "the workload reached only {reached:.0} connections/s"
            ));
        }
        if why.is_empty() {
            best = Some((reached, cpu / wall));
        } else {
            failed = (format!("{rate:.0}/s"), why.join("; "));
            break;
        }
    }
    drop(prefill);
    agent.stop();
    let (rate, cpu) = best.map_or(("none".into(), "—".into()), |(r, c)| {
        (
            format!("{r:.0} connections (exchanges)/s"),
            format!("{:.0} % of a core", c * 100.0),
        )
    });
    writeln!(report, "| {rate} | {cpu} | {} | {} |", failed.0, failed.1)?;
    Ok(())
}
