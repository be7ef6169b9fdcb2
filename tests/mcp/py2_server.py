"""MCP server on the official Python SDK 2.x (mcp==2.3.0, MCPServer).

Run: $MCP_ENV/py2/bin/python tests/mcp/py2_server.py                  # stdio (default)
     ... py2_server.py --http PORT [--json-response] [--stateless]   # Streamable HTTP, http://127.0.0.1:PORT/mcp
     ... py2_server.py --unix PATH [--json-response] [--stateless]   # Streamable HTTP on a unix socket, path /mcp
serverInfo.name on the wire: "probe-py2".
HTTP modes print `READY` on stdout once listening and exit 0 on SIGTERM.
Default Streamable HTTP answers POSTed requests with text/event-stream;
--json-response makes them application/json; --stateless = stateless_http
(no mcp-session-id, a fresh transport per request, no GET stream).
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True  # keep tests/mcp free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mcp.server.mcpserver import MCPServer  # noqa: E402

from _tools import register  # noqa: E402

mcp = register(MCPServer("probe-py2"))


def http_app(json_response: bool = False, stateless: bool = False, unix: bool = False,
             host: str = "127.0.0.1"):
    """The SDK's own Starlette app for Streamable HTTP at /mcp (with its lifespan)."""
    kwargs = {}
    if host != "127.0.0.1":
        # Served on a test network (veth pair): accept that Host header.
        from mcp.server.transport_security import TransportSecuritySettings

        kwargs["transport_security"] = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    elif unix:
        from mcp.server.transport_security import TransportSecuritySettings

        from _http_serve import loopback_security

        kwargs["transport_security"] = loopback_security(TransportSecuritySettings)
    return mcp.streamable_http_app(
        streamable_http_path="/mcp", json_response=json_response, stateless_http=stateless,
        host="127.0.0.1", **kwargs,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--http", type=int, metavar="PORT")
    g.add_argument("--unix", metavar="PATH")
    p.add_argument("--json-response", action="store_true")
    p.add_argument("--stateless", action="store_true")
    p.add_argument("--host", default="127.0.0.1", help="address to bind with --http (tests bind a veth address)")
    a = p.parse_args()
    if a.http is None and a.unix is None:
        mcp.run("stdio")
        return 0
    from _http_serve import serve

    app = http_app(a.json_response, a.stateless, unix=a.unix is not None, host=a.host)
    return serve(app, port=a.http, uds=a.unix, host=a.host)


if __name__ == "__main__":
    sys.exit(main())
