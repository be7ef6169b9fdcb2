//! Benchmark workloads for `cargo xtask bench`: each runs for a bounded time, pinned to a
//! CPU, and prints one line, `result: ` and a JSON object (the prefix keeps the line from
//! looking like JSON-RPC to the agent, which would otherwise follow the pipe it goes
//! through).
//!
//! ```text
//! mcp-bench getppid            [--seconds S] [--cpu C]
//! mcp-bench pipe  --size N     [--seconds S] [--cpu C] [--json 1]
//!                                        write+read of N bytes, one thread (JSON-RPC: MCP)
//! mcp-bench tcp   --size N     [--seconds S] [--cpu C]   the same over a loopback TCP pair
//! mcp-bench stdio --size N     [--seconds S] [--cpu C] [--server-cpu C]
//!                                                        MCP round trips with an echo server
//! mcp-bench http  --size N     [--seconds S] [--cpu C] [--server-cpu C]
//!                                                        the same over loopback HTTP
//! mcp-bench ingest --size N --rate R [--seconds S] [--cpu C]
//!                                        R JSON-RPC messages/s (requests and responses)
//! mcp-bench churn --rate R [--size N] [--seconds S] [--cpu C] [--server-cpu C] [--keepalive 1]
//!                                        R MCP exchanges/s over loopback HTTP, each on a new
//!                                        TCP connection (the client closes it first)
//! mcp-bench streams --count N --hold-file F              N pipes, one message each, held
//! mcp-bench stdio-server | http-server --port P          the servers, spawned by the above
//! ```
//!
//! The non-MCP workloads move `x` bytes, which the agent's kernel filter rejects from the
//! first chunk; the MCP ones move JSON-RPC lines padded to the requested size.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

struct Args {
    workload: String,
    size: usize,
    seconds: f64,
    cpu: Option<usize>,
    server_cpu: Option<usize>,
    rate: f64,
    count: usize,
    port: u16,
    hold_file: Option<String>,
    /// `pipe`: move JSON-RPC notifications (an MCP stream) instead of `x` bytes.
    json: bool,
    /// `churn`: every exchange on one keep-alive connection instead (the reference).
    keepalive: bool,
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let workload = it.next().unwrap_or_else(|| usage("no workload"));
    let mut a = Args {
        workload,
        size: 200,
        seconds: 1.0,
        cpu: None,
        server_cpu: None,
        rate: 1000.0,
        count: 10_000,
        port: 0,
        hold_file: None,
        json: false,
        keepalive: false,
    };
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = |v: &str| -> f64 { v.parse().unwrap_or_else(|_| usage(&format!("bad {flag}"))) };
        match flag.as_str() {
            "--size" => a.size = num(&value) as usize,
            "--seconds" => a.seconds = num(&value),
            "--cpu" => a.cpu = Some(num(&value) as usize),
            "--server-cpu" => a.server_cpu = Some(num(&value) as usize),
            "--rate" => a.rate = num(&value),
            "--count" => a.count = num(&value) as usize,
            "--port" => a.port = num(&value) as u16,
            "--hold-file" => a.hold_file = Some(value),
            "--json" => a.json = value != "0",
            "--keepalive" => a.keepalive = value != "0",
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!("mcp-bench: {why} (see the module documentation)");
    std::process::exit(2)
}

fn main() {
    let a = parse_args();
    if let Some(cpu) = a.cpu {
        pin(cpu);
    }
    let result = match a.workload.as_str() {
        "getppid" => getppid(&a),
        "pipe" => pipe(&a),
        "tcp" => tcp(&a),
        "stdio" => stdio(&a),
        "http" => http(&a),
        "ingest" => ingest(&a),
        "churn" => churn(&a),
        "streams" => streams(&a),
        "stdio-server" => return stdio_server(),
        "http-server" => return http_server(a.port),
        other => usage(&format!("unknown workload {other}")),
    };
    println!("result: {result}");
}

/// Pins the calling thread (and what it spawns) to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("mcp-bench: cannot pin to CPU {cpu}");
            std::process::exit(1);
        }
    }
}

/// Runs `op` until `seconds` have passed (checking the clock every `batch` calls) and
/// returns (calls, seconds taken).
fn timed(seconds: f64, batch: u64, mut op: impl FnMut()) -> (u64, f64) {
    let start = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    let mut n = 0u64;
    while start.elapsed() < limit {
        for _ in 0..batch {
            op();
        }
        n += batch;
    }
    (n, start.elapsed().as_secs_f64())
}

fn per_op(n: u64, secs: f64) -> serde_json::Value {
    serde_json::json!({ "ops": n, "seconds": secs, "ns_per_op": secs * 1e9 / n as f64 })
}

fn getppid(a: &Args) -> serde_json::Value {
    let (n, secs) = timed(a.seconds, 4096, || {
        // SAFETY: no preconditions.
        unsafe { libc::getppid() };
    });
    per_op(n, secs)
}

fn pipe(a: &Args) -> serde_json::Value {
    let mut fds = [0i32; 2];
    // SAFETY: a valid two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    let buf = if a.json {
        padded(
            r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":""#,
            r#""}}"#,
            a.size,
        )
    } else {
        vec![b'x'; a.size]
    };
    let mut back = vec![0u8; a.size];
    let (n, secs) = timed(a.seconds, 64, || {
        // SAFETY: valid descriptors and buffers of a.size bytes.
        unsafe {
            let w = libc::write(fds[1], buf.as_ptr().cast(), buf.len());
            assert_eq!(w as usize, buf.len(), "pipe write");
            let mut got = 0usize;
            while got < a.size {
                let r = libc::read(fds[0], back[got..].as_mut_ptr().cast(), a.size - got);
                assert!(r > 0, "pipe read");
                got += r as usize;
            }
        }
    });
    per_op(n, secs)
}

fn tcp(a: &Args) -> serde_json::Value {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.set_nodelay(true).expect("nodelay");
    let buf = vec![b'x'; a.size];
    let mut back = vec![0u8; a.size];
    let (n, secs) = timed(a.seconds, 64, || {
        client.write_all(&buf).expect("tcp write");
        server.read_exact(&mut back).expect("tcp read");
    });
    per_op(n, secs)
}

/// A JSON-RPC line of exactly `size` bytes (newline included): `head`, padding, `tail`.
fn padded(head: &str, tail: &str, size: usize) -> Vec<u8> {
    let pad = size.saturating_sub(head.len() + tail.len() + 1);
    let mut line = Vec::with_capacity(size);
    line.extend_from_slice(head.as_bytes());
    line.resize(head.len() + pad, b'x');
    line.extend_from_slice(tail.as_bytes());
    line.push(b'\n');
    line
}

fn request(id: u64, size: usize) -> Vec<u8> {
    padded(
        &format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":""#
        ),
        r#""}}}"#,
        size,
    )
}

fn response(id: &str, size: usize) -> Vec<u8> {
    padded(
        &format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":""#),
        r#""}]}}"#,
        size,
    )
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcp-bench","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// The echo server's answer to `initialize` (its name, `mcp-bench-echo`), without newline.
fn initialize_result(id: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"2025-11-25","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"mcp-bench-echo","version":"1"}}}}}}"#
    )
}

/// The id of a request line (a number after `"id":`), as text.
fn id_of(line: &[u8]) -> Option<&str> {
    let at = line.windows(5).position(|w| w == b"\"id\":")? + 5;
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits]).ok()
}

/// A minimal MCP server on stdio: answers `initialize` with its name, and every other
/// request with a result padded to the request's size. One write per response.
fn stdio_server() {
    let stdin = std::io::stdin();
    let mut input = BufReader::with_capacity(1 << 16, stdin.lock());
    let mut out = std::io::stdout().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.contains(&b'"') || !line.windows(8).any(|w| w == b"\"method\"") {
            continue;
        }
        let Some(id) = id_of(&line) else {
            continue; // a notification
        };
        let reply = if line.windows(12).any(|w| w == b"\"initialize\"") {
            initialize_result(id)
                .into_bytes()
                .into_iter()
                .chain(*b"\n")
                .collect()
        } else {
            response(id, line.len())
        };
        if out.write_all(&reply).and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// The echo server as a child on stdio pipes, after the initialize handshake.
struct StdioPeer {
    child: Child,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
}

impl StdioPeer {
    fn spawn(server_cpu: Option<usize>) -> Self {
        let mut cmd = Command::new(std::env::current_exe().expect("own path"));
        cmd.arg("stdio-server");
        if let Some(cpu) = server_cpu {
            cmd.args(["--cpu", &cpu.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn echo server");
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::with_capacity(1 << 16, child.stdout.take().expect("stdout"));
        let mut peer = StdioPeer {
            child,
            input,
            output,
        };
        peer.send(format!("{INITIALIZE}\n").as_bytes());
        let mut line = Vec::new();
        peer.receive(&mut line);
        peer.send(format!("{INITIALIZED}\n").as_bytes());
        peer
    }

    fn send(&mut self, bytes: &[u8]) {
        self.input.write_all(bytes).expect("write to server");
    }

    fn receive(&mut self, line: &mut Vec<u8>) {
        line.clear();
        let n = self
            .output
            .read_until(b'\n', line)
            .expect("read from server");
        assert!(n > 0, "the echo server closed its output");
    }

    fn close(self) {
        let StdioPeer {
            mut child, input, ..
        } = self;
        drop(input);
        let _ = child.wait();
    }
}

fn stdio(a: &Args) -> serde_json::Value {
    let mut peer = StdioPeer::spawn(a.server_cpu);
    let mut line = Vec::new();
    let mut id = 0u64;
    let requests: Vec<Vec<u8>> = (1..=64).map(|i| request(i, a.size)).collect();
    let (n, secs) = timed(a.seconds, 16, || {
        id += 1;
        let req = &requests[(id % 64) as usize];
        peer.send(req);
        peer.receive(&mut line);
    });
    peer.close();
    per_op(n, secs)
}

/// A minimal Streamable HTTP endpoint: `POST /mcp` with a JSON body gets a JSON response of
/// the same size (`initialize` gets the server's name), on a keep-alive connection. One
/// connection at a time.
fn http_server(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind http");
    println!(
        "ready: {}",
        listener.local_addr().map(|a| a.port()).unwrap_or(0)
    );
    let _ = std::io::stdout().flush();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_nodelay(true);
        let mut reader = BufReader::with_capacity(1 << 16, conn.try_clone().expect("clone"));
        let mut writer = conn;
        while let Some(body) = read_http_message(&mut reader) {
            let id = id_of(&body).unwrap_or("0").to_owned();
            let json = if body.windows(12).any(|w| w == b"\"initialize\"") {
                initialize_result(&id).into_bytes()
            } else {
                let mut line = response(&id, body.len() + 1);
                line.pop();
                line
            };
            let json = &json[..];
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                json.len()
            );
            let mut reply = head.into_bytes();
            reply.extend_from_slice(json);
            if writer.write_all(&reply).is_err() {
                break;
            }
        }
    }
}

/// Reads one HTTP/1.1 message (head parsed with httparse, body by Content-Length).
fn read_http_message(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let n = reader.read_until(b'\n', &mut head).ok()?;
        if n == 0 {
            return None;
        }
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let length = if head.starts_with(b"HTTP/") {
        let mut r = httparse::Response::new(&mut headers);
        r.parse(&head).ok()?;
        content_length(r.headers)
    } else {
        let mut r = httparse::Request::new(&mut headers);
        r.parse(&head).ok()?;
        content_length(r.headers)
    };
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

fn content_length(headers: &[httparse::Header<'_>]) -> usize {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// The echo server (`http-server`) as a child on a free loopback port: (child, port).
fn spawn_http_server(server_cpu: Option<usize>) -> (Child, u16) {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.args(["http-server", "--port", "0"]);
    if let Some(cpu) = server_cpu {
        cmd.args(["--cpu", &cpu.to_string()]);
    }
    let mut server = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn http server");
    let mut ready = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("server ready line");
    let port: u16 = ready
        .trim()
        .strip_prefix("ready: ")
        .and_then(|p| p.parse().ok())
        .expect("port");
    (server, port)
}

/// `body` as a Streamable HTTP POST to /mcp.
fn post(body: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

fn http(a: &Args) -> serde_json::Value {
    let (mut server, port) = spawn_http_server(a.server_cpu);
    let conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    let mut reader = BufReader::with_capacity(1 << 16, conn.try_clone().expect("clone"));
    let mut writer = conn;
    let init = post(INITIALIZE.as_bytes());
    writer.write_all(&init).expect("post initialize");
    read_http_message(&mut reader).expect("initialize response");
    let messages: Vec<Vec<u8>> = (1..=64)
        .map(|i| {
            let r = request(i, a.size);
            post(&r[..r.len() - 1])
        })
        .collect();
    let mut id = 0u64;
    let (n, secs) = timed(a.seconds, 16, || {
        id += 1;
        writer
            .write_all(&messages[(id % 64) as usize])
            .expect("post");
        read_http_message(&mut reader).expect("response");
    });
    drop(writer);
    let _ = server.kill();
    let _ = server.wait();
    per_op(n, secs)
}

/// `rate` MCP exchanges a second (a `tools/call` POST and its JSON answer, `size` bytes
/// each), each on a new loopback TCP connection that the client closes first, as the SDKs'
/// HTTP clients do after every SSE response. Before them, `initialize` on a connection of
/// its own names the server (`mcp-bench-echo`). `--keepalive 1` sends the same paced
/// exchanges on one connection instead: the reference without the connection's cost.
/// Reports the calls made and answered and the connections opened.
fn churn(a: &Args) -> serde_json::Value {
    let (mut server, port) = spawn_http_server(a.server_cpu);
    let connect = || {
        let conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        conn.set_nodelay(true).expect("nodelay");
        let reader = BufReader::with_capacity(1 << 16, conn.try_clone().expect("clone"));
        (reader, conn)
    };
    let (mut reader, mut writer) = connect();
    writer
        .write_all(&post(INITIALIZE.as_bytes()))
        .expect("post initialize");
    read_http_message(&mut reader).expect("initialize response");
    let mut connections = 1u64;
    let messages: Vec<Vec<u8>> = (1..=64)
        .map(|i| {
            let r = request(i, a.size);
            post(&r[..r.len() - 1])
        })
        .collect();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(a.seconds);
    let (mut sent, mut answered) = (0u64, 0u64);
    while start.elapsed() < limit {
        let due = (start.elapsed().as_secs_f64() * a.rate) as u64;
        while sent < due {
            if !a.keepalive {
                // Dropping both halves closes the socket: the client's end goes to TIME_WAIT.
                (reader, writer) = connect();
                connections += 1;
            }
            sent += 1;
            writer
                .write_all(&messages[(sent % 64) as usize])
                .expect("post");
            if read_http_message(&mut reader).is_some() {
                answered += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop((reader, writer));
    let _ = server.kill();
    let _ = server.wait();
    serde_json::json!({
        "requests": sent,
        "responses": answered,
        "connections": connections,
        "seconds": elapsed,
        "requests_per_second": sent as f64 / elapsed,
    })
}

/// Requests at `rate / 2` per second (one write each), answered one by one by the echo
/// server: `rate` JSON-RPC messages per second in all. Reports what was sent and answered.
fn ingest(a: &Args) -> serde_json::Value {
    let StdioPeer {
        mut child,
        mut input,
        mut output,
    } = StdioPeer::spawn(a.cpu);
    let answered = Arc::new(AtomicU64::new(0));
    let reader = {
        let answered = answered.clone();
        let cpu = a.cpu;
        std::thread::spawn(move || {
            if let Some(cpu) = cpu {
                pin(cpu);
            }
            let mut line = Vec::new();
            loop {
                line.clear();
                match output.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let per_second = a.rate / 2.0;
    let templates: Vec<Vec<u8>> = (1..=64).map(|i| request(i, a.size)).collect();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(a.seconds);
    let (mut sent, mut bytes) = (0u64, 0u64);
    while start.elapsed() < limit {
        let due = (start.elapsed().as_secs_f64() * per_second) as u64;
        while sent < due {
            sent += 1;
            let req = &templates[(sent % 64) as usize];
            input.write_all(req).expect("write to server");
            bytes += req.len() as u64;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(input); // the server answers what is left, then sees EOF
    let _ = reader.join();
    let _ = child.wait();
    serde_json::json!({
        "requests": sent,
        "responses": answered.load(Ordering::Relaxed),
        "seconds": elapsed,
        "messages_per_second": 2.0 * sent as f64 / elapsed,
        "request_bytes": bytes,
    })
}

/// `count` pipes, over processes of at most 4,000 pipes each (two descriptors a pipe, and
/// RLIMIT_NOFILE may be low), each carrying one notification written and read back, held
/// open until `hold_file` exists.
fn streams(a: &Args) -> serde_json::Value {
    let hold = a
        .hold_file
        .clone()
        .unwrap_or_else(|| usage("streams needs --hold-file"));
    let note = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"bench\"}}\n";
    let per = 4000;
    let mut children = Vec::new();
    let mut left = a.count;
    while left > 0 {
        let share = left.min(per);
        left -= share;
        // SAFETY: fork in a single-threaded process; the child only makes syscalls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut fds = Vec::with_capacity(share);
            for _ in 0..share {
                let mut p = [0i32; 2];
                let mut back = [0u8; 256];
                // SAFETY: valid arrays; the descriptors are this process's.
                unsafe {
                    if libc::pipe(p.as_mut_ptr()) != 0 {
                        libc::_exit(3);
                    }
                    libc::write(p[1], note.as_ptr().cast(), note.len());
                    libc::read(p[0], back.as_mut_ptr().cast(), back.len());
                }
                fds.push(p);
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            while !std::path::Path::new(&hold).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        children.push(pid);
    }
    println!("ready: {}", a.count);
    let _ = std::io::stdout().flush();
    for pid in children {
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    serde_json::json!({ "pipes": a.count })
}
