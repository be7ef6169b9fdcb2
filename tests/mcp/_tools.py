"""Shared tool/prompt definitions for the probe test servers (SDK-agnostic)."""

import asyncio


def register(server):
    """Register the common tool and prompt set on an MCPServer / FastMCP instance."""

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def fail(reason: str) -> str:
        """Always raise: the SDK turns this into a result with isError=true."""
        raise RuntimeError(f"fail requested: {reason}")

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep for `seconds` (asyncio.sleep), then return "done"."""
        await asyncio.sleep(seconds)
        return "done"

    @server.tool()
    def size(data: str) -> int:
        """Return len(data)."""
        return len(data)

    @server.prompt()
    def greet(name: str) -> str:
        """A greeting prompt."""
        return f"Please greet {name} warmly."

    return server
