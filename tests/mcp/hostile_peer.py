#!/usr/bin/env python3
"""A raw JSON-RPC client/server pair over stdio pipes that injects bad input mid-session.

Run without arguments: spawns itself with --server, then as the client sends
  1. a valid tools/call "echo" request,
  2. garbage lines: plain text, truncated JSON, binary bytes, JSON that is not JSON-RPC,
  3. one line of --big-mib MiB (default 64) in a single write(),
  4. a second valid tools/call "echo" request,
and waits for both responses. The server answers valid requests and ignores the rest.
Prints one JSON line: {"responses": 2, "big_line_bytes": N}.
"""
import json
import os
import subprocess
import sys


def server() -> None:
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            msg = json.loads(line)
        except Exception:
            continue
        if isinstance(msg, dict) and msg.get("jsonrpc") == "2.0" and "id" in msg and "method" in msg:
            reply = {"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [{"type": "text", "text": "ok"}]}}
            out.write(json.dumps(reply).encode() + b"\n")
            out.flush()


def request(i: int) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"text": "hi"}}}).encode() + b"\n"


def client(big_mib: int) -> None:
    child = subprocess.Popen([sys.executable, __file__, "--server"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, bufsize=0)
    w, r = child.stdin.fileno(), child.stdout
    os.write(w, request(1))
    first = r.readline()
    for junk in (b"this is not json\n", b'{"jsonrpc": "2.0", "id": 5, "method": \n',
                 b"\x00\xff\xfe\x80{binary\n", b'{"level": "info", "msg": "a log line"}\n'):
        os.write(w, junk)
    prefix = b'{"jsonrpc":"2.0","method":"notifications/huge","params":{"blob":"'
    suffix = b'"}}\n'
    big = prefix + b"a" * (big_mib * 1024 * 1024) + suffix
    view = memoryview(big)
    while view:
        n = os.write(w, view)
        view = view[n:]
    os.write(w, request(2))
    second = r.readline()
    child.stdin.close()
    child.wait()
    ok = sum(1 for l in (first, second) if json.loads(l).get("result"))
    print(json.dumps({"responses": ok, "big_line_bytes": len(big) - 1}))


if __name__ == "__main__":
    if "--server" in sys.argv:
        server()
    else:
        client(int(sys.argv[sys.argv.index("--big-mib") + 1]) if "--big-mib" in sys.argv else 64)
