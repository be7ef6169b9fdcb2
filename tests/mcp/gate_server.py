"""Streamable HTTP MCP server behind a tiny gate (ASGI middleware), for
HTTP-level failure tests.

Run: $MCP_ENV/py2/bin/python tests/mcp/gate_server.py --port PORT --mode auth|ratelimit
         [--limit N] [--token TOKEN] [--sdk py2|py1] [--json-response] [--stateless]

The inner app is the real SDK app at /mcp: `probe-py2` (MCPServer, py2 venv,
default) or `probe-py1` (FastMCP, --sdk py1, run with the py1 venv).

--mode auth       every HTTP request (any method/path) without the header
                  `Authorization: Bearer good-token` (or --token TOKEN) gets
                  `401`, `WWW-Authenticate: Bearer`, `content-type: text/plain`,
                  body `unauthorized\\n` (13 bytes, content-length, not JSON-RPC).
--mode ratelimit  POSTs number N, N+1, ... (N = --limit, default 3; counted over
                  the whole server lifetime, all clients) get
                  `429`, `Retry-After: 1`, `content-type: text/plain`,
                  body `rate limited\\n` (13 bytes). GET/DELETE are never limited.
Rejected requests' bodies are read (drained) before answering, so keep-alive
connections stay usable. Prints `READY` on stdout once listening; exit 0 on SIGTERM.
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True  # keep tests/mcp free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

class Gate:
    def __init__(self, app, mode: str, limit: int, token: str = "good-token") -> None:
        self.app, self.mode, self.limit = app, mode, limit
        self.good = f"Bearer {token}".encode()
        self.posts = 0
        self.rejected = 0

    async def _reject(self, receive, send, status: int, headers: list, body: bytes) -> None:
        # drain the request body so the connection can be kept alive
        while True:
            msg = await receive()
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                break
        self.rejected += 1
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())] + headers,
        })
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # lifespan
        hdrs = dict(scope.get("headers") or [])
        if self.mode == "auth":
            if hdrs.get(b"authorization") != self.good:
                print(f"[gate] 401 {scope['method']} {scope['path']}", file=sys.stderr, flush=True)
                return await self._reject(receive, send, 401, [(b"www-authenticate", b"Bearer")], b"unauthorized\n")
        elif self.mode == "ratelimit" and scope["method"] == "POST":
            self.posts += 1
            if self.posts >= self.limit:
                print(f"[gate] 429 POST #{self.posts}", file=sys.stderr, flush=True)
                return await self._reject(receive, send, 429, [(b"retry-after", b"1")], b"rate limited\n")
        return await self.app(scope, receive, send)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=["auth", "ratelimit"], required=True)
    p.add_argument("--limit", type=int, default=3, help="first POST number that gets 429 (default 3)")
    p.add_argument("--token", default="good-token", help="the bearer token --mode auth accepts")
    p.add_argument("--sdk", choices=["py2", "py1"], default="py2")
    p.add_argument("--json-response", action="store_true")
    p.add_argument("--stateless", action="store_true")
    a = p.parse_args()
    if a.sdk == "py2":
        import py2_server

        inner = py2_server.http_app(a.json_response, a.stateless)
    else:
        import py1_server

        m = py1_server.mcp
        m.settings.streamable_http_path = "/mcp"
        m.settings.json_response = a.json_response
        m.settings.stateless_http = a.stateless
        inner = m.streamable_http_app()
    from _http_serve import serve

    return serve(Gate(inner, a.mode, a.limit, a.token), port=a.port)


if __name__ == "__main__":
    sys.exit(main())
