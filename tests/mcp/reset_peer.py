#!/usr/bin/env python3
"""An MCP-looking HTTP exchange whose server resets the connection.

Run without arguments: starts itself with --server PORT as a child, then as the client
POSTs one JSON-RPC tools/call (Streamable HTTP headers) and reads; the server reads the
request and closes with SO_LINGER 0, so the client's read fails with ECONNRESET.
Prints one JSON line: {"reset": true|false}.
"""
import json
import socket
import struct
import subprocess
import sys
import time


def server(port: int) -> None:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1)
    print("READY", flush=True)
    conn, _ = ls.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += conn.recv(65536)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # RST
    time.sleep(1)  # stay around so the agent can read our command line


def client() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    child = subprocess.Popen([sys.executable, __file__, "--server", str(port)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "READY"
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"text": "hi"}}}).encode()
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head + body)
    reset = False
    try:
        s.recv(65536)
    except ConnectionResetError:
        reset = True
    s.close()
    child.wait()
    print(json.dumps({"reset": reset}))


if __name__ == "__main__":
    if "--server" in sys.argv:
        server(int(sys.argv[sys.argv.index("--server") + 1]))
    else:
        client()
