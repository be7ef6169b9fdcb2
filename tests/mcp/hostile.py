#!/usr/bin/env python3
"""Hostile and odd JSON-RPC traffic over stdio pipes, for mcp-probe's robustness tests.

Runs as the client of a raw JSON-RPC server it spawns (itself with --serve). The server
answers every request it can parse with a result (tools/call: a text content), answers a
request too deep for Python's json with error -32700 (pairing by the id it finds), and
ignores everything else. Plain python3, no SDK: these messages are what an SDK refuses to
send.

Scenarios (--scenario):
  utf8      valid requests around requests with invalid UTF-8 in the method and in the
            tool name, and one with an escaped lone surrogate in the tool name.
  nested    a request whose arguments nest --depth levels (default 100000), one of depth
            100, then a valid one.
  tools     --count (default 100000) tools/call requests, each with its own tool name.
  pipes     opens --count (default 10000) pipes over 4 processes, writes one
            notification into each and reads it back, then holds them open until
            --hold-file exists.
  garbage   one valid exchange, then JSON-looking garbage at full speed for --seconds
            (unpaired responses, notifications with ever new methods, invalid JSON, JSON
            that is not JSON-RPC), then a final valid exchange.
  blast     one valid exchange, then fixed-size notifications (--line-bytes, newline
            included) in 64 KiB writes for --seconds, a blank line, then a final exchange.
  halfexit  one valid exchange, then half a request, then the client dies (os._exit);
            the server lingers --linger seconds after EOF.
  fdreuse   initialize + 2 calls to a server named "alpha", close its pipes with
            close_range(2), put new pipes to a server named "beta" on the same descriptor
            numbers, then initialize + 3 calls to it.
  pidreuse  initialize + 1 call to a server named "alpha"; once it has exited, start a
            server that announces no name (a copy of this script, beta_server.py) with the
            same pid (through /proc/sys/kernel/ns_last_pid, root only), then 2 calls to it.

Prints one line on stdout, "summary: " and a JSON object: what was sent, per kind, and
byte counts. (The prefix keeps the line from looking like JSON-RPC to the agent.)
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time


# ---- server -------------------------------------------------------------------------

def serve(linger: float, name) -> None:
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        reply = answer(line, name)
        if reply is not None:
            out.write(reply)
            out.flush()
    time.sleep(linger)


def answer(line: bytes, name=None):
    try:
        msg = json.loads(line)
    except RecursionError:
        found = re.match(rb'\s*\{"jsonrpc":\s*"2.0",\s*"id":\s*(\d+)', line)
        if not found:
            return None
        return encode({"jsonrpc": "2.0", "id": int(found.group(1)),
                       "error": {"code": -32700, "message": "nested too deep"}})
    except Exception:
        return None
    if not (isinstance(msg, dict) and msg.get("jsonrpc") == "2.0" and "id" in msg
            and isinstance(msg.get("method"), str)):
        return None
    if msg["method"] == "initialize" and name:
        return encode({"jsonrpc": "2.0", "id": msg["id"],
                       "result": {"protocolVersion": "2025-11-25", "capabilities": {},
                                  "serverInfo": {"name": name, "version": "1"}}})
    return encode({"jsonrpc": "2.0", "id": msg["id"],
                   "result": {"content": [{"type": "text", "text": "ok"}]}})


def encode(msg) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


# ---- client -------------------------------------------------------------------------

def initialize(i: int) -> bytes:
    return encode({"jsonrpc": "2.0", "id": i, "method": "initialize",
                   "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                              "clientInfo": {"name": "hostile", "version": "1"}}})


def call(i: int, tool: str = "echo") -> bytes:
    return encode({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                   "params": {"name": tool, "arguments": {"text": "hi"}}})


class Peer:
    """The spawned server, with counts of what went each way. The pipes are raw
    descriptors this process owns (no file object closes them behind its back)."""

    def __init__(self, linger: float = 0.0, name=None, script=__file__):
        cmd = [sys.executable, script, "--serve", "--linger", str(linger)]
        if name:
            cmd += ["--name", name]
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        self.child = subprocess.Popen(cmd, stdin=in_r, stdout=out_w)
        os.close(in_r)
        os.close(out_w)
        self.w = in_w
        self.attach_reader(out_r)
        self.sent_bytes = 0
        self.received_bytes = 0

    def attach_reader(self, fd: int) -> None:
        self.rfd = fd
        self.r = open(fd, "rb", closefd=False)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.w, view)
            view = view[n:]
        self.sent_bytes += len(data)

    def read_line(self) -> bytes:
        line = self.r.readline()
        self.received_bytes += len(line)
        return line

    def exchange(self, i: int, tool: str = "echo", req=None) -> int:
        """A request and its response; returns the bytes of both lines."""
        req = req or call(i, tool)
        self.write(req)
        resp = self.read_line()
        if not resp:
            raise SystemExit("server closed the pipe")
        return len(req) + len(resp)

    def close(self) -> None:
        os.close(self.w)
        rest = self.r.read()
        self.received_bytes += len(rest)
        os.close(self.rfd)
        self.child.wait()


def sc_utf8(a, out):
    p = Peer()
    p.exchange(1)
    p.write(b'{"jsonrpc":"2.0","id":2,"method":"tools/\xff\xfecall","params":{"name":"echo"}}\n')
    p.write(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"ec\xc3\x28ho"}}\n')
    p.write(b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"\\ud800x"}}\n')
    assert json.loads(p.read_line())["id"] == 4
    p.exchange(5)
    p.close()
    out.update(valid_requests=3, invalid_utf8_lines=2, surrogate_requests=1)


def nested(depth: int) -> bytes:
    return (b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"deep","arguments":'
            % depth + b'{"a":' * depth + b'1' + b'}' * depth + b'}}\n')


def sc_nested(a, out):
    p = Peer()
    p.write(nested(a.depth))
    deep = json.loads(p.read_line())
    p.write(nested(100))
    shallow = json.loads(p.read_line())
    p.exchange(7)
    p.close()
    out.update(deep_error=deep.get("error", {}).get("code"), shallow_ok="result" in shallow,
               deep_bytes=len(nested(a.depth)) - 1)


def sc_tools(a, out):
    p = Peer()
    got = [0]

    def reader():
        while p.read_line():
            got[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    batch = []
    for i in range(a.count):
        batch.append(call(i, f"tool-{i}"))
        if len(batch) == 256:
            p.write(b"".join(batch))
            batch = []
    p.write(b"".join(batch))
    os.close(p.w)
    t.join()
    os.close(p.rfd)
    p.child.wait()
    out.update(requests=a.count, responses=got[0])


def sc_pipes(a, out):
    # Spread over 4 processes: 2 descriptors a pipe, and RLIMIT_NOFILE may be 20,000 with
    # no capability to raise it.
    procs = 4
    note = encode({"jsonrpc": "2.0", "method": "notifications/message",
                   "params": {"level": "info", "data": "pipe"}})
    ready_r, ready_w = os.pipe()
    children = []
    for k in range(procs):
        share = a.count // procs + (1 if k < a.count % procs else 0)
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            pipes = []
            for _ in range(share):
                r, w = os.pipe()
                os.write(w, note)
                assert os.read(r, 4096) == note
                pipes.append((r, w))
            os.write(ready_w, b"r")
            deadline = time.monotonic() + 120
            while not os.path.exists(a.hold_file) and time.monotonic() < deadline:
                time.sleep(0.05)
            os._exit(0)
        children.append(pid)
    os.close(ready_w)
    got = b""
    while len(got) < procs:
        chunk = os.read(ready_r, procs)
        if not chunk:
            raise SystemExit("a pipes worker died")
        got += chunk
    print("ready: " + json.dumps({"pipes": a.count, "processes": procs}), flush=True)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise SystemExit(f"pipes worker {pid} failed: {status}")
    out.update(pipes=a.count, notification_bytes=len(note))


def sc_garbage(a, out):
    p = Peer()
    p.exchange(1, "before")
    kinds = {"unpaired_response": 0, "new_method": 0, "invalid_json": 0, "not_jsonrpc": 0}
    deadline = time.monotonic() + a.seconds
    n = 0
    while time.monotonic() < deadline:
        chunk = []
        for _ in range(64):
            n += 1
            k = n % 4
            if k == 0:
                chunk.append(b'{"jsonrpc":"2.0","id":%d,"result":{}}\n' % (10_000_000 + n))
                kinds["unpaired_response"] += 1
            elif k == 1:
                chunk.append(b'{"jsonrpc":"2.0","method":"garbage/%d"}\n' % n)
                kinds["new_method"] += 1
            elif k == 2:
                chunk.append(b'{{{{"jsonrpc":"2.0",,,"id":[[[\n')
                kinds["invalid_json"] += 1
            else:
                chunk.append(b'{"jsonrpc":"1.0","id":%d,"foo":"bar"}\n' % n)
                kinds["not_jsonrpc"] += 1
        p.write(b"".join(chunk))
    time.sleep(0.5)
    p.write(b"\n")
    p.exchange(2, "after")
    p.close()
    out.update(kinds=kinds, garbage_lines=sum(kinds.values()))


def sc_blast(a, out):
    p = Peer()
    first = p.exchange(1, "before")
    size = a.line_bytes
    head = b'{"jsonrpc":"2.0","method":"notifications/blast","params":{"pad":"'
    tail = b'"}}\n'
    line = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(line) == size
    per_write = max(1, 65536 // size)
    block = line * per_write
    lines = 0
    started = time.monotonic()
    deadline = started + a.seconds
    while time.monotonic() < deadline:
        p.write(block)
        lines += per_write
    elapsed = time.monotonic() - started
    time.sleep(0.5)
    p.write(b"\n")
    last = p.exchange(2, "after")
    p.close()
    out.update(client_pid=os.getpid(), server_pid=p.child.pid,
               lines=lines, line_bytes=size, exchange_bytes=first + last,
               client_bytes=p.sent_bytes, server_bytes=p.received_bytes,
               blast_mb_per_s=round(lines * size / elapsed / 1e6, 1))


def sc_halfexit(a, out):
    p = Peer(linger=a.linger)
    p.exchange(1)
    half = call(2)[:25]
    p.write(half)
    print("summary: " + json.dumps({"half_bytes": len(half), "server_pid": p.child.pid}),
          flush=True)
    os._exit(0)


def sc_fdreuse(a, out):
    alpha = Peer(name="alpha")
    w, r = alpha.w, alpha.rfd
    alpha.exchange(0, req=initialize(0))
    alpha.exchange(1)
    alpha.exchange(2)
    # Close both descriptors with close_range(2) (os.closerange uses it), which the agent's
    # close hook does not see, then wait for alpha to exit.
    os.closerange(min(w, r), max(w, r) + 1)
    alpha.child.wait()
    # New pipes to beta on the same descriptor numbers (the lowest free ones: usually the
    # same by themselves).
    beta = Peer(name="beta")
    for old, new in ((beta.w, w), (beta.rfd, r)):
        if old != new:
            os.dup2(old, new)
            os.close(old)
    beta.w = w
    beta.attach_reader(r)
    beta.exchange(0, req=initialize(0))
    for i in range(1, 4):
        beta.exchange(i)
    beta.close()
    out.update(fds=[w, r], alpha_calls=2, beta_calls=3)


def sc_pidreuse(a, out):
    alpha = Peer(name="alpha")
    pid = alpha.child.pid
    alpha.exchange(0, req=initialize(0))
    alpha.exchange(1)
    alpha.close()
    beta_script = os.path.join("/tmp", "beta_server.py")
    with open(__file__, "rb") as src, open(beta_script, "wb") as dst:
        dst.write(src.read())
    beta = None
    for attempt in range(200):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        candidate = Peer(script=beta_script)
        if candidate.child.pid == pid:
            beta = candidate
            break
        candidate.close()
    if beta is None:
        raise SystemExit(f"could not get pid {pid} again")
    beta.exchange(1)
    beta.exchange(2)
    beta.close()
    out.update(pid=pid, attempts=attempt + 1, alpha_calls=1, beta_calls=2)


SCENARIOS = {"utf8": sc_utf8, "nested": sc_nested, "tools": sc_tools, "pipes": sc_pipes,
             "garbage": sc_garbage, "blast": sc_blast, "halfexit": sc_halfexit,
             "fdreuse": sc_fdreuse, "pidreuse": sc_pidreuse}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--linger", type=float, default=0.0)
    ap.add_argument("--name", help="--serve: the serverInfo.name to announce")
    ap.add_argument("--scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--depth", type=int, default=100_000)
    ap.add_argument("--count", type=int)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--line-bytes", type=int, default=200)
    ap.add_argument("--hold-file")
    a = ap.parse_args()
    if a.serve:
        serve(a.linger, a.name)
        return
    if a.count is None:
        a.count = 10_000 if a.scenario == "pipes" else 100_000
    out = {"scenario": a.scenario}
    SCENARIOS[a.scenario](a, out)
    print("summary: " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
