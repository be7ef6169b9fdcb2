//! The `pipeline` harness: fuzz-chosen records through the whole stream stage, from ring
//! buffer bytes to the scrape.

use mcp_probe_common::{EventKind, Syscall, EVENT_HEADER_LEN};
use prometheus_client::{encoding::text::encode, registry::Registry};

use super::{Cursor, SLACK_BYTES};
use crate::{
    decode,
    health::Health,
    host::{FakeHost, Host},
    lookups::Lookups,
    metrics::{AgentMetrics, Metrics},
    protocols::http,
    stitch::{StitchConfig, Stitcher},
    stream::{Pipeline, PipelineConfig},
    testing::{
        fake::FakeKernel,
        generator::{socket_info, Event, Generator, Stream, Task},
    },
};

/// Streams the `pipeline` target writes to: two pipes and two sockets.
const STREAMS: [Stream; 4] = [
    Stream::pipe(0xffff_8880_0000_1000, 11).on_fd(3),
    Stream::pipe(0xffff_8880_0000_2000, 12).on_fd(4),
    Stream::socket(0xffff_8880_0000_3000, 13).on_fd(5),
    Stream::socket(0xffff_8880_0000_4000, 14).on_fd(6),
];
/// Process ids above the kernel's `pid_max` limit (the fake host knows no process at all,
/// so the run does not depend on the machine either way).
const FIRST_TGID: u32 = 4_200_000;
const COMMS: [&[u8; 16]; 4] = [
    b"python3\0\0\0\0\0\0\0\0\0",
    b"node\0\0\0\0\0\0\0\0\0\0\0\0",
    b"claude\0\0\0\0\0\0\0\0\0\0",
    b"weather\0\0\0\0\0\0\0\0\0",
];

/// The `pipeline` target: the input is a sequence of records. Each starts with an op byte
/// (the record kind, or a sweep of the clock), a byte choosing stream, process, syscall
/// and whether bytes before it were lost, a byte of clock advance (in 10 ms), a length
/// byte, then that many payload bytes. One op passes a raw 96-byte header from the input.
///
/// Properties: no panic; the scrape parses as the exposition format whatever the traffic
/// put in labels; every captured byte is counted; buffered bytes stay within the views'
/// caps; and once everything has idled out, no stream, request or buffer is left.
pub fn pipeline(data: &[u8]) {
    const MAX: usize = 4096;
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let agent: AgentMetrics = metrics.agent.clone();
    let host: std::sync::Arc<dyn Host> = std::sync::Arc::new(FakeHost::new());
    let stitcher =
        Stitcher::recording(StitchConfig::default(), metrics.clone(), None, host.clone());
    let mut p = Pipeline::new(
        // Small bounds, so that eviction and the buffer budget are exercised too.
        PipelineConfig {
            max_message_bytes: MAX,
            max_streams: 6,
            max_buffered_bytes: 3 * MAX,
        },
        stitcher,
        Health::new(metrics.health.clone(), host.clone()).into(),
        metrics.agent,
        FakeKernel::on_host(host.clone()),
        host.clone(),
        Lookups::held(host, agent.clone()),
    );
    let mut c = Cursor(data);
    let mut g = Generator::manual_clock();
    let (mut records, mut captured) = (0u64, 0u64);
    while !c.is_empty() {
        let op = c.byte() % 10;
        let who = c.byte();
        g.advance(u64::from(c.byte()) * 10_000_000);
        let len = usize::from(c.byte());
        let payload = c.take(len);
        let stream = STREAMS[usize::from(who & 3)];
        let process = usize::from((who >> 2) & 3);
        let task = Task::with_comm(FIRST_TGID + process as u32, *COMMS[process]);
        let syscall = Syscall::try_from(u32::from((who >> 4) & 7)).unwrap_or(Syscall::Read);
        if who & 0x80 != 0 {
            // A record the ring buffer had no room for.
            g.lose(stream, syscall.direction(), 100);
        }
        let info;
        let event = match op {
            0..=2 => Event::Data(payload),
            3 => Event::Gap(len as u32 * 16),
            4 => Event::Close,
            5 => Event::Error([104, 32, 110, 103, 111][len % 5]), // ECONNRESET, EPIPE, ...
            6 => {
                info = socket_info(payload);
                Event::SocketInfo(&info)
            }
            7 => Event::Exit(u32::from(who) << 8),
            8 => {
                // The lookup thread answers what was asked so far (records that needed
                // it waited until now).
                p.release_lookups();
                p.sweep(g.now_ns);
                continue;
            }
            _ => {
                let raw = [c.take(EVENT_HEADER_LEN), payload].concat();
                records += 1;
                if let Ok(r) = decode::decode(&raw) {
                    if matches!(r.kind, EventKind::Data | EventKind::Gap) {
                        captured += r.payload.len() as u64;
                    }
                }
                p.on_record_bytes(&raw);
                continue;
            }
        };
        // Gaps carry no payload: only data records add captured bytes.
        if let Event::Data(bytes) = event {
            captured += bytes.len() as u64;
        }
        records += 1;
        p.on_record_bytes(&g.emit(task, stream, syscall, event));
    }
    p.release_lookups();
    assert_eq!(agent.records.get(), records, "records counted");
    assert_eq!(
        agent.captured_bytes.get(),
        captured,
        "captured bytes counted"
    );

    p.sweep(g.now_ns + 1_000_000_000);
    let views = agent.tracked_streams.get().max(0) as usize;
    // A view holds a framer: a line buffer (the cap) or an HTTP head or body (see `http`).
    let per_view = (2 * MAX + http::MAX_CHUNK_LINE_BYTES).max(http::MAX_HEAD_BYTES) + SLACK_BYTES;
    assert!(
        agent.buffered_bytes.get() as usize <= views * per_view,
        "{} bytes buffered in {views} views",
        agent.buffered_bytes.get()
    );
    check_exposition(&registry);

    // Two hours later: every request has timed out and every view idled away.
    p.sweep(g.now_ns + 7_200_000_000_000);
    p.sweep(g.now_ns + 7_201_000_000_000);
    assert_eq!(
        agent.tracked_streams.get(),
        0,
        "views left after idling out"
    );
    assert_eq!(
        agent.pending_requests.get(),
        0,
        "requests left after timing out"
    );
    assert_eq!(agent.buffered_bytes.get(), 0, "bytes left buffered");
    check_exposition(&registry);
}

/// Checks the scrape line by line against the text exposition format: a name, labels
/// with quoted and escaped values, and a number.
fn check_exposition(registry: &Registry) {
    let mut text = String::new();
    if encode(&mut text, registry).is_err() {
        panic!("the registry does not encode");
    }
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        assert!(sample_line(line), "not an exposition line: {line:?}");
    }
}

fn sample_line(line: &str) -> bool {
    let b = line.as_bytes();
    let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = b.iter().take_while(|&&c| is_name(c)).count();
    if i == 0 {
        return false;
    }
    if b.get(i) == Some(&b'{') {
        i += 1;
        loop {
            if b.get(i) == Some(&b'}') {
                i += 1;
                break;
            }
            let name = b[i..].iter().take_while(|&&c| is_name(c)).count();
            if name == 0 || b.get(i + name..i + name + 2) != Some(b"=\"") {
                return false;
            }
            i += name + 2;
            loop {
                match b.get(i) {
                    None => return false,
                    Some(b'\\') if matches!(b.get(i + 1), Some(b'\\' | b'"' | b'n')) => i += 2,
                    Some(b'\\') => return false,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return false,
            }
        }
    }
    let Some(rest) = line.get(i..).and_then(|r| r.strip_prefix(' ')) else {
        return false;
    };
    let value = rest.split(' ').next().unwrap_or_default();
    value.parse::<f64>().is_ok() || matches!(value, "+Inf" | "-Inf" | "NaN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_checker_rejects_broken_labels() {
        assert!(sample_line("a_total 1"));
        assert!(sample_line(r#"a{b="x\"y",c=""} 2.5"#));
        assert!(!sample_line(r#"a{b="x"y"} 1"#));
        assert!(!sample_line(r#"a{b="x} 1"#));
        assert!(!sample_line("a{b=\"x\\q\"} 1"));
    }
}
