//! The stitcher fed literal messages, observed through a real metrics recorder or a
//! collector of its events.

use std::sync::Arc;

use prometheus_client::{encoding::text::encode, registry::Registry};

use super::*;
use crate::{
    model::StreamKey,
    protocols::jsonrpc::{parse, Parsed},
};

fn message(text: &str) -> Message<'_> {
    match parse(text.as_bytes()) {
        Ok(Parsed::Single(m)) => m,
        other => panic!("{other:?}"),
    }
}

fn sum(registry: &Registry, series: &str) -> f64 {
    let mut text = String::new();
    encode(&mut text, registry).expect("encode");
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn loopback_and_unix_endpoints_are_on_this_host() {
    for local in [
        "127.0.0.1:8000",
        "127.3.2.1:1",
        "[::1]:9",
        "unix:/run/mcp.sock",
    ] {
        assert!(endpoint_is_local(local), "{local}");
    }
    for remote in ["10.0.0.9:8000", "[2001:db8::1]:443", "192.168.1.1:80"] {
        assert!(!endpoint_is_local(remote), "{remote}");
    }
}

/// Legacy HTTP+SSE: one client process, two sessions to the same server, the same
/// request id in both. Each response arrives on its session's GET stream and pairs with
/// the request of that session, not the oldest one.
#[test]
fn legacy_sessions_pair_by_session_id() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let mut c = Stitcher::recording(
        StitchConfig::default(),
        metrics,
        None,
        Arc::new(crate::host::FakeHost::new()),
    );
    let server = ServerRef::Endpoint(Arc::from("10.0.0.9:8000"));
    let stream = |n| StreamKey { addr: n, ino: n };
    let obs = |n: u64, direction, session, ts_ms: u64| Observation {
        tgid: 7,
        comm: "client",
        direction,
        stream: stream(n),
        transport: Transport::Tcp,
        peer: Some(&server),
        session: Some(session),
        user: None,
        ts_ns: ts_ms * 1_000_000,
        size: 10,
    };
    let call = |tool: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#)
    };
    let (call_a, call_b) = (call("a"), call("b"));
    let ok = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
    c.on_message(&obs(1, Direction::Write, "s1", 1), message(&call_a));
    c.on_message(&obs(2, Direction::Write, "s2", 50), message(&call_b));
    c.on_message(&obs(20, Direction::Read, "s2", 60), message(ok));
    c.on_message(&obs(10, Direction::Read, "s1", 200), message(ok));
    c.sweep(10_000_000_000); // settle the name
    let tool_b = r#"mcp_client_operation_duration_seconds_sum{mcp_server_name="10.0.0.9:8000",mcp_method_name="tools/call",gen_ai_tool_name="b""#;
    let tool_a = r#"mcp_client_operation_duration_seconds_sum{mcp_server_name="10.0.0.9:8000",mcp_method_name="tools/call",gen_ai_tool_name="a""#;
    assert!(
        (sum(&registry, tool_b) - 0.010).abs() < 1e-9,
        "tool b paired with its own session"
    );
    assert!(
        (sum(&registry, tool_a) - 0.199).abs() < 1e-9,
        "tool a paired with its own session"
    );
}

fn collecting() -> (Stitcher, Arc<std::sync::Mutex<Vec<Event>>>) {
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stitcher = Stitcher::new(
        StitchConfig::default(),
        Arc::new(crate::host::FakeHost::new()),
        SinkNeeds::default(),
        vec![Box::new(events.clone())],
    );
    (stitcher, events)
}

fn pipe_obs(tgid: u32, stream: u64, direction: Direction, ms: u64) -> Observation<'static> {
    Observation {
        tgid,
        comm: "proc",
        direction,
        stream: StreamKey {
            addr: stream,
            ino: stream,
        },
        transport: Transport::Pipe,
        peer: None,
        session: None,
        user: None,
        ts_ns: ms * 1_000_000,
        size: 10,
    }
}

/// A stdio exchange seen by both processes becomes one exchange event per side, held until
/// the server announces its name, and records no metric by itself.
#[test]
fn exchanges_are_handed_on_once_per_side_under_the_announced_name() {
    let (mut c, events) = collecting();
    let init =
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"clientInfo":{"name":"c"}}}"#;
    let answer = r#"{"jsonrpc":"2.0","id":0,"result":{"serverInfo":{"name":"weather"}}}"#;
    c.on_message(&pipe_obs(10, 1, Direction::Write, 1), message(init));
    c.on_message(&pipe_obs(20, 1, Direction::Read, 2), message(init));
    assert!(
        !events
            .lock()
            .expect("lock")
            .iter()
            .any(|e| matches!(e, Event::Exchange(_))),
        "nothing is handed on before the response"
    );
    c.on_message(&pipe_obs(20, 2, Direction::Write, 5), message(answer));
    c.on_message(&pipe_obs(10, 2, Direction::Read, 6), message(answer));
    let events = events.lock().expect("lock");
    let exchanges: Vec<&Exchange> = events
        .iter()
        .filter_map(|e| match e {
            Event::Exchange(x) => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(exchanges.len(), 2, "{events:?}");
    for x in &exchanges {
        assert_eq!(x.server, "weather");
        assert_eq!(x.request.method, "initialize");
        assert!(matches!(
            x.ending,
            Ending::Response {
                outcome: Outcome::Ok,
                ..
            }
        ));
    }
    let sides: Vec<Side> = exchanges.iter().map(|x| x.side).collect();
    assert!(sides.contains(&Side::Client) && sides.contains(&Side::Server));
    let server_side = exchanges
        .iter()
        .find(|x| x.side == Side::Server)
        .expect("server side");
    assert_eq!(server_side.server_ref, Some(ServerRef::Process(20)));
    assert!(
        (match server_side.ending {
            Ending::Response { duration_s, .. } => duration_s,
            _ => 0.0,
        } - 0.003)
            .abs()
            < 1e-9
    );
}

/// A response read before its request's record pairs once the request comes; one that
/// never gets its request is unpaired after the hold.
#[test]
fn an_early_response_pairs_late_or_is_unpaired() {
    let (mut c, events) = collecting();
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t"}}"#;
    let ok = r#"{"jsonrpc":"2.0","id":7,"result":{}}"#;
    let stray = r#"{"jsonrpc":"2.0","id":8,"result":{}}"#;
    c.on_message(&pipe_obs(10, 2, Direction::Read, 5), message(ok));
    c.on_message(&pipe_obs(10, 1, Direction::Write, 1), message(call));
    c.on_message(&pipe_obs(10, 2, Direction::Read, 6), message(stray));
    c.sweep(10_000_000_000);
    let events = events.lock().expect("lock");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::ReorderedResponse))
            .count(),
        1
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Unpaired { .. }))
            .count(),
        1
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Exchange(_)))
            .count(),
        1
    );
}

/// A cancelled request's answer is late, not unpaired; a process's exit cancels what it
/// was waiting for.
#[test]
fn a_cancelled_request_is_answered_late_and_an_exit_cancels() {
    let (mut c, events) = collecting();
    let call = |id: u32| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#;
    c.on_message(&pipe_obs(10, 1, Direction::Write, 1), message(&call(1)));
    c.on_message(&pipe_obs(10, 1, Direction::Write, 2), message(cancel));
    c.on_message(
        &pipe_obs(10, 2, Direction::Read, 3),
        message(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
    );
    c.on_message(&pipe_obs(10, 1, Direction::Write, 4), message(&call(2)));
    c.on_process_exit(10, 50_000_000);
    c.sweep(10_000_000_000);
    let events = events.lock().expect("lock");
    let cancelled_at = |at: u64| {
        events.iter().any(|e| {
            matches!(e, Event::Exchange(x) if matches!(x.ending, Ending::Cancelled { at_ns } if at_ns == at))
        })
    };
    assert!(cancelled_at(2_000_000), "{events:?}");
    assert!(cancelled_at(50_000_000), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::LateResponse)));
    assert!(!events.iter().any(|e| matches!(e, Event::Unpaired { .. })));
    assert!(matches!(
        events
            .iter()
            .rfind(|e| matches!(e, Event::PendingRequests(_))),
        Some(Event::PendingRequests(0))
    ));
}

/// 2026-07-28 stdio whose first exchange fails: the error carries no `serverInfo`, the next
/// result does (`_meta`); both exchanges count under the announced name, on both sides.
#[test]
fn a_session_whose_first_exchange_fails_has_one_name() {
    let (mut c, events) = collecting();
    let call = |id: u32| {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo"}}}}"#)
    };
    let error = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}"#;
    let result = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[],"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"weather"}}}}"#;
    let first = call(1);
    let second = call(2);
    c.on_message(&pipe_obs(10, 1, Direction::Write, 1), message(&first));
    c.on_message(&pipe_obs(20, 1, Direction::Read, 2), message(&first));
    c.on_message(&pipe_obs(20, 2, Direction::Write, 3), message(error));
    c.on_message(&pipe_obs(10, 2, Direction::Read, 4), message(error));
    c.on_message(&pipe_obs(10, 1, Direction::Write, 5), message(&second));
    c.on_message(&pipe_obs(20, 1, Direction::Read, 6), message(&second));
    c.on_message(&pipe_obs(20, 2, Direction::Write, 7), message(result));
    c.on_message(&pipe_obs(10, 2, Direction::Read, 8), message(result));
    let events = events.lock().expect("lock");
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Exchange(x) => Some(x.server.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["weather"; 4], "{events:?}");
}
