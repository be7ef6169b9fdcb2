"""stdio MCP server on the official Python SDK 1.x (mcp==1.30.0, FastMCP).

Run: $MCP_ENV/py1/bin/python tests/mcp/py1_server.py
serverInfo.name on the wire: "probe-py1".
"""

import os
import sys

sys.dont_write_bytecode = True  # keep tests/mcp free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mcp.server.fastmcp import FastMCP  # noqa: E402

from _tools import register  # noqa: E402

mcp = register(FastMCP("probe-py1"))

if __name__ == "__main__":
    mcp.run("stdio")
