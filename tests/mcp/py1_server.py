"""MCP server on the official Python SDK 1.x (mcp==1.30.0, FastMCP).

Run: $MCP_ENV/py1/bin/python tests/mcp/py1_server.py                 # stdio (default)
     ... py1_server.py --http PORT [--json-response] [--stateless]  # Streamable HTTP, http://127.0.0.1:PORT/mcp
     ... py1_server.py --sse PORT                                    # legacy HTTP+SSE: GET /sse, POST /messages/?session_id=
serverInfo.name on the wire: "probe-py1".
HTTP modes print `READY` on stdout once listening and exit 0 on SIGTERM.
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True  # keep tests/mcp free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mcp.server.fastmcp import FastMCP  # noqa: E402

from _tools import register  # noqa: E402

mcp = register(FastMCP("probe-py1"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--http", type=int, metavar="PORT")
    g.add_argument("--sse", type=int, metavar="PORT")
    p.add_argument("--json-response", action="store_true")
    p.add_argument("--stateless", action="store_true")
    a = p.parse_args()
    if a.http is None and a.sse is None:
        mcp.run("stdio")
        return 0
    from _http_serve import serve

    mcp.settings.host = "127.0.0.1"
    if a.http is not None:
        mcp.settings.streamable_http_path = "/mcp"
        mcp.settings.json_response = a.json_response
        mcp.settings.stateless_http = a.stateless
        return serve(mcp.streamable_http_app(), port=a.http)
    return serve(mcp.sse_app(), port=a.sse)


if __name__ == "__main__":
    sys.exit(main())
