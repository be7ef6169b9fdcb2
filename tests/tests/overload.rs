//! Root integration test: traffic far beyond what the agent can take. A writer floods a
//! pipe while the agent runs with a tiny ring buffer that it drains only every 100 ms.
//! The writer is never blocked by the agent (ring reservations fail instead, in the
//! kernel), the agent keeps running, every byte is either delivered or counted lost, every
//! delivered byte is either in a parsed message or counted as discarded while
//! resynchronising, and the exchange after the flood is measured exactly.
//!
//! The agent's counters are host-wide, and other processes on the host may move JSON over
//! pipes meanwhile. So the test also reads the agent's per-record trace (headers only):
//! the records of the flood's two processes give exact per-stream figures, and the
//! host-wide counters must equal them whenever nothing else was captured.

use std::collections::HashMap;

use integration_tests::{exclusive, requests, responses, run_hostile, Agent, CLIENT, SERVER};

const RAW: &str = "hostile.py";

/// One record as the agent's trace logs it.
struct Traced {
    tgid: u64,
    ino: u64,
    write: bool,
    offset: u64,
    captured: u64,
}

fn traced(log: &str) -> Vec<Traced> {
    log.lines()
        .filter(|l| l.contains(" record ") || l.ends_with(" record"))
        .filter_map(|l| {
            let field = |name: &str| -> Option<&str> {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            };
            Some(Traced {
                tgid: field("tgid")?.parse().ok()?,
                ino: field("ino")?.parse().ok()?,
                write: field("write")? == "true",
                offset: field("offset")?.parse().ok()?,
                captured: field("captured")?.parse().ok()?,
            })
        })
        .collect()
}

#[test]
fn overload_loses_exactly_what_it_counts_and_resynchronises() {
    let _guard = exclusive();
    let agent = Agent::start_with_env(
        &[
            "--ring-bytes",
            "524288",
            "--drain-interval-ms",
            "100",
            "--wakeup-bytes",
            "1073741824",
        ],
        "info,mcp_probe::stream=trace",
    );
    let s = run_hostile(&[
        "--scenario",
        "blast",
        "--seconds",
        "3",
        "--line-bytes",
        "200",
    ]);
    let num = |k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{k} in {s}"));
    agent.wait_for("the exchange after the flood, on both sides", |m| {
        [CLIENT, SERVER]
            .iter()
            .all(|side| requests(m, side, RAW, "tools/call", "after") >= 1.0)
    });
    // The kernel's loss counters reach the agent once a second.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let m = agent.scrape();
    let total = |name: &str| m.sum(name, &[]);
    let by = |name: &str, k: &str, v: &str| m.sum(name, &[(k, v)]);

    // It did overload.
    let lost_records = by("mcp_probe_lost_records_total", "reason", "ringbuf_full");
    assert!(
        lost_records > 0.0,
        "no loss: the test did not overload the agent"
    );

    // Per stream direction of the flood's two processes: what arrived, and the holes the
    // kernel's stream offsets show.
    let ours = [num("client_pid") as u64, num("server_pid") as u64];
    let records = traced(&agent.log_text());
    let mut views: HashMap<(u64, bool), (u64, u64)> = HashMap::new(); // -> (end, captured)
    let (mut captured_ours, mut captured_foreign) = (0u64, 0u64);
    for r in &records {
        if ours.contains(&r.tgid) {
            let v = views.entry((r.ino, r.write)).or_default();
            v.0 = v.0.max(r.offset + r.captured);
            v.1 += r.captured;
            captured_ours += r.captured;
        } else {
            captured_foreign += r.captured;
        }
    }
    assert_eq!(views.len(), 4, "two pipes, each written and read");
    // Every byte written to the two pipes was written once and read once.
    let on_the_wire = 2 * (num("client_bytes") as u64 + num("server_bytes") as u64);
    let ends: u64 = views.values().map(|v| v.0).sum();
    assert_eq!(ends, on_the_wire, "the stream offsets cover every byte");
    let lost_ours = on_the_wire - captured_ours;
    // The agent's counters: what it received is exactly what it traced; what it did not
    // receive is counted lost: exactly ours when nothing else was captured meanwhile.
    let captured = total("mcp_probe_captured_bytes_total");
    let lost = total("mcp_probe_lost_bytes_total");
    assert_eq!(captured, (captured_ours + captured_foreign) as f64);
    let quiet = captured_foreign == 0;
    if quiet {
        assert_eq!(lost, lost_ours as f64, "{}", m.dump("mcp_probe"));
    } else {
        assert!(lost >= lost_ours as f64, "lost {lost} < {lost_ours}");
    }

    // Every delivered byte is in a parsed message or was skipped to resynchronise; the one
    // blank line written before the last exchange is framing, in both views unless a
    // resynchronisation took it.
    let line = num("line_bytes");
    let blast: f64 = [CLIENT, SERVER]
        .iter()
        .map(|side| {
            m.sum(
                &format!("{side}_notifications_total"),
                &[("mcp_method_name", "notifications/blast")],
            )
        })
        .sum();
    let parsed = blast * line + 2.0 * num("exchange_bytes");
    let discarded = by("mcp_probe_discarded_bytes_total", "reason", "resync");
    let framing = captured_ours as f64 - parsed - discarded;
    let dump = || m.dump("mcp_probe");
    if quiet {
        assert!(
            (0.0..=2.0).contains(&framing),
            "captured {captured_ours} = parsed {parsed} + discarded {discarded} + blank lines {framing}?\n{}",
            dump()
        );
    } else {
        assert!(framing <= 2.0, "{framing}\n{}", dump());
    }
    assert!(blast < 2.0 * num("lines"), "some notifications were lost");

    // Nothing wrong came out of the resynchronisation, and the exchanges were measured.
    let ours_only = |name: &str| m.sum(name, &[("mcp_server_name", RAW)]);
    assert_eq!(
        ours_only("mcp_client_request_cancellations_total")
            + ours_only("mcp_server_request_cancellations_total"),
        0.0
    );
    if quiet {
        assert_eq!(total("mcp_probe_parse_errors_total"), 0.0, "{}", dump());
        assert_eq!(total("mcp_probe_unpaired_responses_total"), 0.0);
    }
    for side in [CLIENT, SERVER] {
        for tool in ["before", "after"] {
            assert_eq!(
                requests(&m, side, RAW, "tools/call", tool),
                1.0,
                "{side} {tool}"
            );
            assert_eq!(
                responses(&m, side, RAW, "tools/call", tool, "ok"),
                1.0,
                "{side} {tool}"
            );
        }
    }
    println!(
        "flood: {} lines of {line} B at {} MB/s; {lost_records} records ({lost_ours} B of the \
         flood) lost, {discarded} B skipped to resynchronise, {blast} of {} notifications \
         measured; {captured_foreign} B of other traffic captured meanwhile",
        s["lines"],
        s["blast_mb_per_s"],
        2.0 * num("lines")
    );
    agent.stop();
}
