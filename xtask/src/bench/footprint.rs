//! The agent's own footprint: CPU idle and under load, wake-ups, resident memory.

use super::*;

pub(super) fn footprint(report: &mut String, bench: &Path) -> Result<()> {
    eprintln!("bench: footprint");
    let agent = start_agent();
    let cpu0 = agent.cpu_seconds();
    std::thread::sleep(Duration::from_secs(20));
    let idle_cpu = (agent.cpu_seconds() - cpu0) / 20.0;
    let (idle_rss, _) = agent.memory();
    let mut at = Vec::new();
    for rate in [1000.0, 10_000.0] {
        let cpu0 = agent.cpu_seconds();
        let wakes0 = wake_ups(&agent);
        let t0 = Instant::now();
        run(
            bench,
            &[
                "ingest".into(),
                "--size".into(),
                "1024".into(),
                "--rate".into(),
                rate.to_string(),
            ],
            10.0,
        )?;
        let cpu = (agent.cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
        let secs = t0.elapsed().as_secs_f64();
        at.push((rate, cpu, (wake_ups(&agent) - wakes0) / secs));
    }
    let (steady_rss, _) = agent.memory();
    // 10,000 streams held open at once.
    let hold = std::env::temp_dir().join(format!("mcp-bench-hold-{}", std::process::id()));
    let _ = std::fs::remove_file(&hold);
    let mut streams = Command::new(bench)
        .args(["streams", "--count", "10000", "--hold-file"])
        .arg(&hold)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("streams workload")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tracked = 0.0;
    while Instant::now() < deadline {
        tracked = agent.scrape().sum("mcp_probe_tracked_streams", &[]);
        if tracked >= 20_000.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (streams_rss, _) = agent.memory();
    std::fs::write(&hold, b"done")?;
    let _ = streams.wait();
    let _ = std::fs::remove_file(&hold);
    agent.stop();
    let mb = |b: u64| b as f64 / 1e6;
    let check = |ok: bool| if ok { "met" } else { "**missed**" };
    writeln!(
        report,
        "\n## Footprint\n\n\
         The agent alone, then following 1 KiB messages at a paced rate for 10 s, then \
         10,000 pipes held open at once, each of which has carried one message (20,000 \
         stream directions: {tracked:.0} tracked).\n\n\
         | figure | measured | target |\n|---|---|---|\n\
         | agent CPU, idle (20 s) | {:.3} % of a core | at most 0.1 %: {} |\n\
         | agent CPU at 1,000 messages/s | {:.2} % ({:.0} wake-ups/s) | at most 1 %: {} |\n\
         | agent CPU at 10,000 messages/s | {:.2} % ({:.0} wake-ups/s) | — |\n\
         | resident memory, idle | {:.1} MB | — |\n\
         | resident memory, steady state (after the 10,000/s run) | {:.1} MB | at most 40 MB: {} |\n\
         | resident memory with 10,000 streams | {:.1} MB | at most 64 MB: {} |",
        idle_cpu * 100.0,
        check(idle_cpu <= 0.001),
        at[0].1 * 100.0,
        at[0].2,
        check(at[0].1 <= 0.01),
        at[1].1 * 100.0,
        at[1].2,
        mb(idle_rss),
        mb(steady_rss),
        check(mb(steady_rss) <= 40.0),
        mb(streams_rss),
        check(mb(streams_rss) <= 64.0),
    )?;
    Ok(())
}

/// Voluntary context switches of all the agent's threads so far (each one a wake-up).
fn wake_ups(agent: &Agent) -> f64 {
    std::fs::read_dir(format!("/proc/{}/task", agent.pid()))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .sum()
}
