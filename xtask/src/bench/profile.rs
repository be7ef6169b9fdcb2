//! Where the time goes: the kernel's per-program accounting and a profile of the agent.

use super::*;

/// run_cnt and run_time_ns of each of the agent's programs (bpftool, with
/// kernel.bpf_stats_enabled on).
fn prog_stats() -> Result<BTreeMap<String, (f64, f64)>> {
    let out = Command::new("bpftool")
        .args(["--json", "prog", "show"])
        .output()
        .context("bpftool (tests/mcp/setup.sh installs it)")?;
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut by = BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("");
        if !(name.starts_with("sys_") || name.starts_with("sched_")) {
            continue;
        }
        let e: &mut (f64, f64) = by.entry(name.to_owned()).or_default();
        e.0 += p["run_cnt"].as_f64().unwrap_or(0.0);
        e.1 += p["run_time_ns"].as_f64().unwrap_or(0.0);
    }
    Ok(by)
}

pub(super) fn kernel_profile(report: &mut String, bench: &Path) -> Result<()> {
    eprintln!("bench: kernel profile");
    let sysctl = |v: &str| {
        Command::new("sysctl")
            .args(["-q", "-w", &format!("kernel.bpf_stats_enabled={v}")])
            .status()
    };
    let agent = start_agent();
    if !sysctl("1").is_ok_and(|s| s.success()) {
        writeln!(
            report,
            "\n(kernel.bpf_stats_enabled could not be set: no per-program profile.)"
        )?;
        agent.stop();
        return Ok(());
    }
    writeln!(
        report,
        "\n## Where the time goes, per event\n\n\
         The kernel's own accounting of each program (`kernel.bpf_stats_enabled=1`, read \
         with `bpftool prog show`: runs and nanoseconds, so nanoseconds per run), during \
         2 s of one workload at a time. The accounting itself adds a little to each run, \
         which is why it is off in the measurements above.\n"
    )?;
    for (label, args) in [
        (
            "pipe write+read 4 KiB, not MCP",
            vec!["pipe", "--size", "4096"],
        ),
        (
            "pipe write+read 200 B, MCP (captured)",
            vec!["pipe", "--size", "200", "--json", "1"],
        ),
        (
            "pipe write+read 4 KiB, MCP (captured)",
            vec!["pipe", "--size", "4096", "--json", "1"],
        ),
        (
            "pipe write+read 64 KiB, MCP (captured)",
            vec!["pipe", "--size", "65536", "--json", "1"],
        ),
        (
            "stdio exchange 4 KiB",
            vec!["stdio", "--size", "4096", "--server-cpu", "0"],
        ),
    ] {
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let before = prog_stats()?;
        let cpu0 = agent.cpu_seconds();
        let r = run(bench, &args, 2.0)?;
        let agent_cpu = agent.cpu_seconds() - cpu0;
        let after = prog_stats()?;
        let ops = r["ops"].as_f64().unwrap_or(0.0);
        writeln!(
            report,
            "**{label}** ({ops:.0} operations; agent CPU {:.0} ns an operation):\n\n\
             | program | runs an operation | ns a run |\n|---|---|---|",
            agent_cpu * 1e9 / ops.max(1.0)
        )?;
        for (name, (cnt, ns)) in &after {
            let (c0, n0) = before.get(name).copied().unwrap_or_default();
            let (runs, time) = (cnt - c0, ns - n0);
            if runs < ops / 100.0 {
                continue;
            }
            writeln!(
                report,
                "| {name} | {:.2} | {:.0} |",
                runs / ops,
                time / runs
            )?;
        }
        writeln!(report)?;
    }
    let _ = sysctl("0");
    agent_profile(report, bench, &agent)?;
    agent.stop();
    Ok(())
}

/// The agent's own time, by function: perf samples of it following 100,000 messages/s.
fn agent_profile(report: &mut String, bench: &Path, agent: &Agent) -> Result<()> {
    let data = std::env::temp_dir().join(format!("mcp-bench-perf-{}.data", std::process::id()));
    let load = std::thread::spawn({
        let bench = bench.to_owned();
        move || {
            let args = ["ingest", "--size", "1024", "--rate", "100000"];
            run(&bench, &args.map(str::to_owned), 5.0)
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let recorded = Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "999",
            "-p",
            &agent.pid().to_string(),
            "-o",
        ])
        .arg(&data)
        .args(["--", "sleep", "3"])
        .output();
    let _ = load.join();
    let text = recorded
        .ok()
        .filter(|o| o.status.success())
        .and_then(|_| {
            Command::new("perf")
                .args([
                    "report",
                    "--stdio",
                    "--no-children",
                    "--sort",
                    "symbol",
                    "-i",
                ])
                .arg(&data)
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let _ = std::fs::remove_file(&data);
    let Some(text) = text else {
        writeln!(
            report,
            "(perf is not available here: no profile of the agent.)"
        )?;
        return Ok(());
    };
    writeln!(
        report,
        "**The agent's own CPU time, by function** (`perf record -F 999` of the agent for \
         3 s while it follows 100,000 messages/s of 1 KiB; the top entries):\n\n\
         | share | function |\n|---|---|"
    )?;
    for line in text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .take(15)
    {
        let mut parts = line.split_whitespace();
        let share = parts.next().unwrap_or("");
        let symbol: Vec<&str> = parts.skip(1).take_while(|p| *p != "-").collect();
        writeln!(report, "| {share} | `{}` |", symbol.join(" "))?;
    }
    Ok(())
}
