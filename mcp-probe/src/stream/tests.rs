//! The stream stage driven by the synthetic record generator (fake clock, advancing offsets)
//! and a fake kernel:
//! pairing across processes, losses, stream reuse, without a kernel.

use mcp_probe_common::{EventHeader, Syscall};
use prometheus_client::{encoding::text::encode, registry::Registry};

use super::*;
use crate::{
    decode::{decode, encode as encode_record},
    health::Health,
    metrics::Metrics,
    stitch::StitchConfig,
    testing::{
        fake::FakeKernel,
        generator::{header_of, Generator, Stream, Task},
    },
};

fn pipeline() -> (Pipeline<FakeKernel>, Registry) {
    pipeline_with(
        PipelineConfig {
            max_message_bytes: 1 << 20,
            ..PipelineConfig::default()
        },
        StitchConfig::default(),
    )
}

fn pipeline_with(
    config: PipelineConfig,
    stitcher: StitchConfig,
) -> (Pipeline<FakeKernel>, Registry) {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    // Its pids exist nowhere: names come from comm, as for a process already gone.
    let host: std::sync::Arc<dyn crate::host::Host> =
        std::sync::Arc::new(crate::host::FakeHost::new());
    let stitcher = Stitcher::recording(stitcher, metrics.clone(), None, host.clone());
    (
        Pipeline::new(
            config,
            stitcher,
            Health::new(metrics.health.clone(), host.clone()).into(),
            metrics.agent.clone(),
            FakeKernel::default(),
            host.clone(),
            Lookups::inline(host, metrics.agent),
        ),
        registry,
    )
}

fn value(registry: &Registry, series: &str) -> f64 {
    let mut text = String::new();
    encode(&mut text, registry).expect("encode");
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

const CLIENT: u32 = 4_000_000; // pids that do not exist: names come from comm
const SERVER: u32 = 4_000_001;
const TO_SERVER: (u64, u64) = (0xffff_0000_0000_1000, 11);
const TO_CLIENT: (u64, u64) = (0xffff_0000_0000_2000, 12);

/// One exchange, seen by both processes, in the order the kernel would report it.
fn exchange(g: &mut Generator, p: &mut Pipeline<FakeKernel>, request: &[u8], response: &[u8]) {
    let records = [
        g.record(CLIENT, "client", TO_SERVER, Syscall::Write, request),
        g.record(SERVER, "weather", TO_SERVER, Syscall::Read, request),
        g.record(SERVER, "weather", TO_CLIENT, Syscall::Write, response),
        g.record(CLIENT, "client", TO_CLIENT, Syscall::Read, response),
    ];
    for r in &records {
        p.on_record_bytes(r);
    }
}

#[test]
fn pairs_on_both_sides_with_kernel_timestamps() {
    let (mut p, registry) = pipeline();
    let mut g = Generator::new();
    exchange(&mut g, &mut p, b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"tools/call\",\"params\":{\"name\":\"forecast\"}}\n", b"{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"isError\":true}}\n");
    p.sweep(g.now_ns + 10_000_000_000); // settle the name (no handshake seen)
    let q = "{mcp_server_name=\"weather\",mcp_method_name=\"tools/call\",gen_ai_tool_name=\"forecast\",gen_ai_prompt_name=\"\",outcome=\"tool_error\",error_type=\"tool_error\",network_transport=\"pipe\"}";
    assert_eq!(
        value(&registry, &format!("mcp_client_responses_total{q}")),
        1.0
    );
    assert_eq!(
        value(&registry, &format!("mcp_server_responses_total{q}")),
        1.0
    );
    // Client: written at t+1ms, response read at t+4ms; server: read t+2, written t+3.
    assert!((value(&registry, "mcp_client_operation_duration_seconds_sum") - 0.003).abs() < 1e-9);
    assert!((value(&registry, "mcp_server_operation_duration_seconds_sum") - 0.001).abs() < 1e-9);
}

#[test]
fn a_loss_resynchronises_and_later_exchanges_still_pair() {
    let (mut p, registry) = pipeline();
    let mut g = Generator::new();
    let req =
        |id: u32| format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"ping\"}}\n").into_bytes();
    let resp =
        |id: u32| format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{}}}}\n").into_bytes();
    exchange(&mut g, &mut p, &req(1), &resp(1));
    // The kernel lost a record of the client's writes: half a request went missing.
    let half_message = b"{\"jsonrpc\":\"2.0\",\"id\":2,";
    let half = g.record(CLIENT, "client", TO_SERVER, Syscall::Write, half_message);
    p.on_record_bytes(&half);
    g.lose(TO_SERVER, Direction::Write, 20);
    p.on_record_bytes(&g.record(CLIENT, "client", TO_SERVER, Syscall::Write, b"\"tail\"}\n"));
    exchange(&mut g, &mut p, &req(3), &resp(3));
    p.sweep(g.now_ns + 10_000_000_000);
    assert_eq!(value(&registry, "mcp_client_requests_total"), 2.0);
    assert_eq!(value(&registry, "mcp_probe_parse_errors_total"), 0.0);
    let tail = b"\"tail\"}\n".len();
    assert_eq!(
        value(
            &registry,
            "mcp_probe_discarded_bytes_total{reason=\"resync\"}"
        ),
        (half_message.len() + tail) as f64
    );
}

#[test]
fn reused_inode_memory_is_a_new_stream() {
    let (mut p, registry) = pipeline();
    let mut g = Generator::new();
    let req = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
    let resp = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n";
    exchange(&mut g, &mut p, req, resp);
    // Same inode address, new inode number, offsets from 0 again.
    let reused = (TO_SERVER.0, 99);
    p.on_record_bytes(&g.record(CLIENT, "client", reused, Syscall::Write, req));
    p.on_record_bytes(&g.record(SERVER, "weather", reused, Syscall::Read, req));
    p.on_record_bytes(&g.record(SERVER, "weather", TO_CLIENT, Syscall::Write, resp));
    p.on_record_bytes(&g.record(CLIENT, "client", TO_CLIENT, Syscall::Read, resp));
    p.sweep(g.now_ns + 10_000_000_000);
    assert_eq!(value(&registry, "mcp_server_requests_total"), 2.0);
    assert_eq!(
        value(
            &registry,
            "mcp_probe_discarded_bytes_total{reason=\"resync\"}"
        ),
        0.0
    );
}

#[test]
fn json_that_is_not_jsonrpc_turns_the_stream_off() {
    let (mut p, registry) = pipeline();
    let mut g = Generator::new();
    for _ in 0..NON_JSONRPC_LINES_BEFORE_IGNORE {
        p.on_record_bytes(&g.record(
            7,
            "logger",
            TO_SERVER,
            Syscall::Write,
            b"{\"level\":\"info\"}\n",
        ));
    }
    assert_eq!(p.control.ignored, vec![TO_SERVER.0]);
    assert_eq!(value(&registry, "mcp_probe_parse_errors_total"), 0.0);
    assert_eq!(value(&registry, "mcp_probe_unconfirmed_lines_total"), 8.0);
}

#[test]
fn timeouts_and_unsettled_names_are_flushed_by_the_sweep() {
    let (mut p, registry) = pipeline();
    let mut g = Generator::new();
    let req = b"{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"tools/call\",\"params\":{\"name\":\"slow\"}}\n";
    p.on_record_bytes(&g.record(CLIENT, "client", TO_SERVER, Syscall::Write, req));
    p.on_record_bytes(&g.record(SERVER, "weather", TO_SERVER, Syscall::Read, req));
    p.sweep(g.now_ns + 301 * 1_000_000_000);
    assert_eq!(value(&registry, "mcp_client_request_timeouts_total"), 1.0);
    assert_eq!(value(&registry, "mcp_server_request_timeouts_total"), 1.0);
    // The answer arrives after all.
    let resp = b"{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"result\":{}}\n";
    p.on_record_bytes(&g.record(SERVER, "weather", TO_CLIENT, Syscall::Write, resp));
    p.on_record_bytes(&g.record(CLIENT, "client", TO_CLIENT, Syscall::Read, resp));
    assert_eq!(value(&registry, "mcp_probe_late_responses_total"), 2.0);
    assert_eq!(value(&registry, "mcp_probe_unpaired_responses_total"), 0.0);
}

fn ping(id: u32) -> Vec<u8> {
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"ping\"}}\n").into_bytes()
}

fn pong(id: u32) -> Vec<u8> {
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{}}}}\n").into_bytes()
}

#[test]
fn an_error_head_whose_body_was_never_read_still_answers_the_request() {
    let (mut p, registry) = pipeline();
    let mut g = Generator::new();
    let conn = (0xffff_0000_0006_0000, 401);
    let body = b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{}}";
    let mut post = format!(
        "POST /mcp HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    post.extend_from_slice(body);
    p.on_record_bytes(&g.record(CLIENT, "client", conn, Syscall::Write, &post));
    // The head of a 401 arrives; the client gives up and closes without its body.
    let head = b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n";
    p.on_record_bytes(&g.record(CLIENT, "client", conn, Syscall::Read, head));
    let empty = g.record(CLIENT, "client", conn, Syscall::Read, b"");
    let r = decode(&empty).expect("record");
    let close = EventHeader {
        kind: EventKind::Close as u32,
        ..header_of(&r)
    };
    p.on_record_bytes(&encode_record(&close, b""));
    p.sweep(g.now_ns + 10_000_000_000);
    assert_eq!(
        value(&registry, "mcp_client_responses_total{mcp_server_name=\"unknown\",mcp_method_name=\"initialize\",gen_ai_tool_name=\"\",gen_ai_prompt_name=\"\",outcome=\"error\",error_type=\"http_401\""),
        1.0
    );
    assert_eq!(
        value(&registry, "mcp_client_request_cancellations_total"),
        0.0
    );
}

#[test]
fn max_streams_evicts_the_least_recently_active_and_counts_their_bytes() {
    let (mut p, registry) = pipeline_with(
        PipelineConfig {
            max_streams: 4,
            ..PipelineConfig::default()
        },
        StitchConfig::default(),
    );
    let mut g = Generator::new();
    // Six pipes, each with the first 10 bytes of a message.
    for n in 0..6u64 {
        let pipe = (0xffff_0000_0001_0000 + n * 0x1000, 100 + n);
        p.on_record_bytes(&g.record(CLIENT, "client", pipe, Syscall::Write, b"{\"id\":1,\"a"));
    }
    assert!(
        p.connections.directions() <= 4,
        "{} views",
        p.connections.directions()
    );
    assert_eq!(
        value(&registry, "mcp_probe_evictions_total{what=\"stream\"}"),
        2.0
    );
    // The two oldest went, with their partial messages.
    assert_eq!(
        value(
            &registry,
            "mcp_probe_discarded_bytes_total{reason=\"evicted\"}"
        ),
        20.0
    );
    // A stream that comes back starts mid-message and resynchronises.
    let first = (0xffff_0000_0001_0000, 100);
    p.on_record_bytes(&g.record(CLIENT, "client", first, Syscall::Write, b"\":2}\n"));
    p.on_record_bytes(&g.record(CLIENT, "client", first, Syscall::Write, &ping(3)));
    assert_eq!(value(&registry, "mcp_probe_messages_total"), 1.0);
    assert_eq!(value(&registry, "mcp_probe_parse_errors_total"), 0.0);
}

#[test]
fn the_buffer_budget_sheds_the_message_that_outgrows_it() {
    let (mut p, registry) = pipeline_with(
        PipelineConfig {
            max_buffered_bytes: 4096,
            ..PipelineConfig::default()
        },
        StitchConfig::default(),
    );
    let mut g = Generator::new();
    let a = (0xffff_0000_0002_0000, 201);
    let b = (0xffff_0000_0003_0000, 202);
    // A holds 3000 bytes of a message; B then grows past what is left.
    let mut big_a =
        b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\",\"params\":{\"p\":\"".to_vec();
    big_a.resize(3000, b'a');
    p.on_record_bytes(&g.record(CLIENT, "client", a, Syscall::Write, &big_a));
    let mut big_b = big_a.clone();
    big_b.resize(2000, b'b');
    p.on_record_bytes(&g.record(CLIENT, "client", b, Syscall::Write, &big_b));
    assert!(
        p.connections.buffered_total() <= 4096 + 4096,
        "{}",
        p.connections.buffered_total()
    );
    assert_eq!(
        value(
            &registry,
            "mcp_probe_evictions_total{what=\"message_buffer\"}"
        ),
        1.0
    );
    // B ends: sized exactly, not parsed. A ends: parsed.
    p.on_record_bytes(&g.record(CLIENT, "client", b, Syscall::Write, b"\"}}\n"));
    p.on_record_bytes(&g.record(CLIENT, "client", a, Syscall::Write, b"\"}}\n"));
    assert_eq!(value(&registry, "mcp_probe_oversized_messages_total"), 1.0);
    assert_eq!(
        value(&registry, "mcp_probe_oversized_message_size_bytes_sum"),
        2003.0
    );
    assert_eq!(value(&registry, "mcp_probe_messages_total"), 1.0);
    p.sweep(g.now_ns);
    assert_eq!(
        p.connections.buffered_total(),
        p.connections
            .halves()
            .map(|(_, _, h)| h.framer.buffered_bytes())
            .sum::<usize>()
    );
}

#[test]
fn a_writer_that_exits_mid_message_leaves_nothing_behind() {
    let (mut p, registry) = pipeline();
    let mut g = Generator::new();
    exchange(&mut g, &mut p, &ping(1), &pong(1));
    let half = b"{\"jsonrpc\":\"2.0\",\"id\":2,\"meth";
    p.on_record_bytes(&g.record(CLIENT, "client", TO_SERVER, Syscall::Write, half));
    p.on_record_bytes(&g.record(SERVER, "weather", TO_SERVER, Syscall::Read, half));
    // The client dies; the kernel reports it.
    p.control.exited.push(CLIENT);
    p.on_record_bytes(&g.exit(CLIENT));
    assert_eq!(
        value(
            &registry,
            "mcp_probe_parse_errors_total{reason=\"truncated\"}"
        ),
        1.0
    );
    // The server's read side of that pipe is given up once it has waited long enough.
    p.sweep(g.now_ns + ORPHAN_AFTER_NS / 2);
    assert_eq!(
        value(
            &registry,
            "mcp_probe_parse_errors_total{reason=\"truncated\"}"
        ),
        1.0
    );
    p.sweep(g.now_ns + 2 * ORPHAN_AFTER_NS);
    assert_eq!(
        value(
            &registry,
            "mcp_probe_parse_errors_total{reason=\"truncated\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &registry,
            "mcp_probe_discarded_bytes_total{reason=\"process_exit\"}"
        ),
        2.0 * half.len() as f64
    );
    assert_eq!(p.connections.buffered_total(), 0);
    assert_eq!(value(&registry, "mcp_probe_buffered_bytes"), 0.0);
    // The first exchange was counted; nothing was glued to anything.
    assert_eq!(value(&registry, "mcp_server_requests_total"), 1.0);
    assert_eq!(
        value(
            &registry,
            "mcp_probe_parse_errors_total{reason=\"invalid_json\"}"
        ),
        0.0
    );
}

#[test]
fn a_reused_pid_does_not_inherit_the_old_process_name() {
    let (mut p, registry) = pipeline();
    let mut g = Generator::new();
    let init = b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{}}\n";
    let announced =
        b"{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"serverInfo\":{\"name\":\"alpha\"}}}\n";
    exchange(&mut g, &mut p, init, announced);
    exchange(&mut g, &mut p, &ping(1), &pong(1));
    assert_eq!(
        value(
            &registry,
            "mcp_server_requests_total{mcp_server_name=\"alpha\""
        ),
        2.0
    );
    // The server exits and a new process gets its pid: it speaks without a handshake.
    p.on_record_bytes(&g.exit(SERVER));
    let (in2, out2) = ((0xffff_0000_0004_0000, 301), (0xffff_0000_0005_0000, 302));
    p.on_record_bytes(&g.record(CLIENT, "client", in2, Syscall::Write, &ping(7)));
    p.on_record_bytes(&g.record(SERVER, "beta", in2, Syscall::Read, &ping(7)));
    p.on_record_bytes(&g.record(SERVER, "beta", out2, Syscall::Write, &pong(7)));
    p.on_record_bytes(&g.record(CLIENT, "client", out2, Syscall::Read, &pong(7)));
    p.sweep(g.now_ns + 10_000_000_000);
    assert_eq!(
        value(
            &registry,
            "mcp_server_requests_total{mcp_server_name=\"alpha\""
        ),
        2.0
    );
    assert_eq!(
        value(
            &registry,
            "mcp_server_requests_total{mcp_server_name=\"beta\""
        ),
        1.0
    );
}

#[test]
fn pending_requests_per_process_are_bounded_and_evictions_are_not_outcomes() {
    let (mut p, registry) = pipeline_with(
        PipelineConfig::default(),
        StitchConfig {
            max_pending_per_process: 3,
            ..StitchConfig::default()
        },
    );
    let mut g = Generator::new();
    for id in 1..=5 {
        p.on_record_bytes(&g.record(CLIENT, "client", TO_SERVER, Syscall::Write, &ping(id)));
    }
    assert_eq!(
        value(
            &registry,
            "mcp_probe_evictions_total{what=\"pending_request\"}"
        ),
        2.0
    );
    assert_eq!(value(&registry, "mcp_probe_pending_requests"), 3.0);
    // Answers to the evicted ones are late; the others pair.
    for id in 1..=5 {
        p.on_record_bytes(&g.record(CLIENT, "client", TO_CLIENT, Syscall::Read, &pong(id)));
    }
    p.sweep(g.now_ns + 10_000_000_000);
    assert_eq!(value(&registry, "mcp_probe_late_responses_total"), 2.0);
    assert_eq!(value(&registry, "mcp_client_responses_total"), 3.0);
    assert_eq!(value(&registry, "mcp_client_request_timeouts_total"), 0.0);
    assert_eq!(value(&registry, "mcp_probe_unpaired_responses_total"), 0.0);
}

#[test]
fn series_and_error_types_are_capped() {
    let (mut p, registry) = pipeline_with(
        PipelineConfig::default(),
        StitchConfig {
            max_series: 2,
            max_error_types: 1,
            ..StitchConfig::default()
        },
    );
    let mut g = Generator::new();
    for n in 0..5u32 {
        let call = format!("{{\"jsonrpc\":\"2.0\",\"id\":{n},\"method\":\"tools/call\",\"params\":{{\"name\":\"t{n}\"}}}}\n");
        let err = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{n},\"error\":{{\"code\":{},\"message\":\"x\"}}}}\n",
            -32000 - n as i64
        );
        exchange(&mut g, &mut p, call.as_bytes(), err.as_bytes());
    }
    p.sweep(g.now_ns + 10_000_000_000);
    let mut text = String::new();
    encode(&mut text, &registry).expect("encode");
    let series = text
        .lines()
        .filter(|l| l.starts_with("mcp_client_requests_total{"))
        .count();
    assert_eq!(series, 3, "two admitted series and _other:\n{text}");
    assert_eq!(value(&registry, "mcp_client_requests_total"), 5.0);
    assert_eq!(
        value(
            &registry,
            "mcp_client_requests_total{mcp_server_name=\"weather\",mcp_method_name=\"_other\""
        ),
        3.0
    );
    // One error code admitted; the others are _other.
    assert_eq!(
        value(&registry, "mcp_client_responses_total{mcp_server_name=\"weather\",mcp_method_name=\"tools/call\",gen_ai_tool_name=\"t1\",gen_ai_prompt_name=\"\",outcome=\"error\",error_type=\"_other\""),
        1.0
    );
    assert!(
        value(
            &registry,
            "mcp_probe_label_overflow_total{label=\"series\"}"
        ) >= 6.0
    );
}

/// A pipeline whose lookups answer only when released, as a slow lookup thread would,
/// on `host`.
fn pipeline_on(host: Arc<crate::host::FakeHost>) -> (Pipeline<FakeKernel>, Registry) {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let host: Arc<dyn crate::host::Host> = host;
    let stitcher =
        Stitcher::recording(StitchConfig::default(), metrics.clone(), None, host.clone());
    let pipeline = Pipeline::new(
        PipelineConfig::default(),
        stitcher,
        Health::new(metrics.health.clone(), host.clone()).into(),
        metrics.agent.clone(),
        FakeKernel::default(),
        host.clone(),
        Lookups::held(host, metrics.agent),
    );
    (pipeline, registry)
}

/// The kernel's record of a TCP socket from 127.0.0.1:`local` to 127.0.0.1:`remote`.
fn tcp_socket(local: u16, remote: u16) -> Vec<u8> {
    let info = mcp_probe_common::SocketInfo {
        family: mcp_probe_common::AF_INET,
        local_port: local,
        remote_port: remote,
        _pad: 0,
        local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        remote_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        unix_peer_path: [0; mcp_probe_common::UNIX_PATH_LEN],
    };
    // SAFETY: repr(C) integers and byte arrays, read as the bytes the kernel writes.
    unsafe {
        std::slice::from_raw_parts(
            (&info as *const mcp_probe_common::SocketInfo).cast::<u8>(),
            std::mem::size_of_val(&info),
        )
    }
    .to_vec()
}

/// A client that connects to a local server on port 8000, whose listener is found in the
/// client's namespace and owned by `weather_mcp`.
fn host_with_a_local_server() -> Arc<crate::host::FakeHost> {
    let host = Arc::new(crate::host::FakeHost::new());
    host.spawn(CLIENT, 1_000, &["python3", "client.py"]);
    host.spawn(SERVER, 900, &["python3", "-m", "weather_mcp"]);
    host.set_netns(CLIENT, 7);
    host.add_tcp_listener(CLIENT, "127.0.0.1:8000".parse().expect("address"), 555);
    host.set_socket_owner(555, SERVER);
    host
}

/// One ping on a new TCP connection from the client's port `local`, seen by the client.
fn ping_on_new_connection(g: &mut Generator, p: &mut Pipeline<FakeKernel>, local: u16, id: u32) {
    let task = Task::new(CLIENT, "python3");
    let socket = Stream::socket(0xffff_0000_0009_0000 + u64::from(local), u64::from(local));
    p.on_record_bytes(&g.socket_info(task, socket, &tcp_socket(local, 8000)));
    p.on_record_bytes(&g.record(CLIENT, "python3", socket, Syscall::Write, &ping(id)));
    p.on_record_bytes(&g.record(CLIENT, "python3", socket, Syscall::Read, &pong(id)));
}

#[test]
fn a_new_connection_waits_for_its_server_name_then_is_counted_exactly() {
    let (mut p, registry) = pipeline_on(host_with_a_local_server());
    let mut g = Generator::new();
    let named = "mcp_client_requests_total{mcp_server_name=\"weather_mcp\"";

    ping_on_new_connection(&mut g, &mut p, 40_001, 1);
    // The lookups (the client's identity, the connection's peer) are not answered yet:
    // the records wait, nothing is counted under a wrong name.
    assert_eq!(value(&registry, "mcp_client_requests_total"), 0.0);
    assert!(value(&registry, "mcp_probe_lookup_waiting_bytes") > 0.0);
    p.release_lookups();
    assert_eq!(value(&registry, named), 1.0);
    assert_eq!(value(&registry, "mcp_client_requests_total"), 1.0);
    assert_eq!(value(&registry, "mcp_probe_lookup_waiting_bytes"), 0.0);
    // Latency from the kernel's timestamps, not from when the answer came.
    assert!((value(&registry, "mcp_client_operation_duration_seconds_sum") - 0.001).abs() < 1e-9);

    // The next connections to the same server need no lookup: counted at once.
    for (n, local) in (40_002..40_012).enumerate() {
        ping_on_new_connection(&mut g, &mut p, local, 2 + n as u32);
    }
    assert_eq!(value(&registry, named), 11.0);
    assert_eq!(
        value(&registry, "mcp_probe_lookups_total{lookup=\"peer\"}"),
        1.0
    );
    assert_eq!(
        value(&registry, "mcp_probe_lookups_total{lookup=\"process\"}"),
        1.0
    );
}

#[test]
fn an_exit_waits_for_the_records_of_its_process() {
    let (mut p, registry) = pipeline_on(host_with_a_local_server());
    let mut g = Generator::new();
    let task = Task::new(CLIENT, "python3");
    let socket = Stream::socket(0xffff_0000_0009_0000, 1);
    p.on_record_bytes(&g.socket_info(task, socket, &tcp_socket(40_001, 8000)));
    p.on_record_bytes(&g.record(CLIENT, "python3", socket, Syscall::Write, &ping(1)));
    // The client exits before its lookups answer: its records are handled first (its
    // request, then its connection's end under the server's name), then its exit.
    p.on_record_bytes(&g.exit(CLIENT));
    assert_eq!(value(&registry, "mcp_client_requests_total"), 0.0);
    p.release_lookups();
    assert_eq!(
        value(&registry, "mcp_client_request_cancellations_total"),
        1.0
    );
    assert_eq!(
        value(
            &registry,
            "mcp_client_session_duration_seconds_count{mcp_server_name=\"weather_mcp\""
        ),
        1.0
    );
    assert_eq!(value(&registry, "mcp_probe_tracked_streams"), 0.0);
    assert_eq!(value(&registry, "mcp_probe_lookup_waiting_bytes"), 0.0);
}

#[test]
fn records_that_wait_too_long_go_on_without_the_name() {
    let (mut p, registry) = pipeline_on(host_with_a_local_server());
    let mut g = Generator::new();
    ping_on_new_connection(&mut g, &mut p, 40_001, 1);
    // The lookup thread never answers (stuck): past the longest wait the stream is
    // handled as if the lookup had been shed, named by its address, and counted.
    std::thread::sleep(waiting::WAIT_AT_MOST + std::time::Duration::from_millis(50));
    p.sweep(g.now_ns);
    p.sweep(g.now_ns + 10_000_000_000);
    assert_eq!(
        value(
            &registry,
            "mcp_client_requests_total{mcp_server_name=\"127.0.0.1:8000\""
        ),
        1.0
    );
    assert_eq!(
        value(
            &registry,
            "mcp_probe_lookups_shed_total{lookup=\"process\",reason=\"timed_out\"}"
        ),
        1.0
    );
    assert_eq!(value(&registry, "mcp_probe_lookup_waiting_bytes"), 0.0);
}

#[test]
fn waiting_keeps_the_order_across_processes() {
    // What the server's read teaches (which server reads the pipe) names the client's
    // exchange: records wait in ring order, whichever lookup is answered first.
    let (mut p, registry) = pipeline_on(host_with_a_local_server());
    let mut g = Generator::new();
    exchange(&mut g, &mut p, &ping(1), &pong(1));
    assert_eq!(value(&registry, "mcp_client_requests_total"), 0.0);
    p.release_lookups();
    p.sweep(g.now_ns + 10_000_000_000);
    for side in ["client", "server"] {
        assert_eq!(
            value(
                &registry,
                &format!("mcp_{side}_requests_total{{mcp_server_name=\"weather_mcp\"")
            ),
            1.0,
            "{side}"
        );
    }
}
