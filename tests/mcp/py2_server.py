"""stdio MCP server on the official Python SDK 2.x (mcp==2.3.0, MCPServer).

Run: $MCP_ENV/py2/bin/python tests/mcp/py2_server.py
serverInfo.name on the wire: "probe-py2".
"""

import os
import sys

sys.dont_write_bytecode = True  # keep tests/mcp free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mcp.server.mcpserver import MCPServer  # noqa: E402

from _tools import register  # noqa: E402

mcp = register(MCPServer("probe-py2"))

if __name__ == "__main__":
    mcp.run("stdio")
