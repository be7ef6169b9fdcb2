"""Connection churn with the official Python SDK 2.x (mcp==2.3.0): server and load driver.

Server: $MCP_ENV/py2/bin/python tests/mcp/churn.py serve --port P [--stateless] [--json-response]
  `MCPServer("probe-churn")` with one tool `echo(text)`, Streamable HTTP at
  http://127.0.0.1:P/mcp, by default with the SDK's defaults: stateful (sessions with
  mcp-session-id, the GET stream, DELETE at the end) and text/event-stream responses.
  Prints READY, exits 0 on SIGTERM (tests/mcp/_http_serve.py). `--stateless` costs the
  server more here (5.6 ms of CPU a call against 4.8 ms stateful, 64 sessions x 50 calls);
  `--json-response` keeps connections alive (no churn).

Driver: $MCP_ENV/py2/bin/python tests/mcp/churn.py drive --url URL
            [--processes P] [--concurrency C] [--calls N] [--max-seconds S]
  P processes x C concurrent sessions, each: `Client(URL, mode="legacy")` (initialize
  handshake), tools/list x1, then echo x N in sequence, then the session ends (DELETE).
  The SDK's own HTTP client is used unchanged (`streamable_http_client` makes an httpx2
  AsyncClient with the default pool): the SDK stops reading each SSE response after its
  JSON-RPC response and closes it, which closes the TCP connection, and it never reads the
  body of a 202 or of the DELETE either. So every HTTP request of a session is a new TCP
  connection, closed by the client (its end stays in TIME_WAIT): 1 (initialize) + 1
  (notifications/initialized) + 1 (GET stream, held for the session) + 1 (tools/list)
  + N (tools/call) + 1 (DELETE) connections per session. `--keepalive-check` only prints
  how many TCP connections one session of 5 calls opened (counted in the pool's
  connect events), to verify that claim.

  On the 2-core test machine the SDK costs about 8 ms of client CPU and 4.8 ms of server
  CPU a call, so 4 x 16 x 50 calls run at about 135 calls/s with both cores busy, without
  the agent.

  The explicit tools/list fills the SDK's output-schema cache, so call_tool never sends
  an implicit one: every request of the session is one the driver made and counted.

Prints one line `summary: {json}` on stdout: `answered` = requests answered ok per method
(from the SDK's results: a tools/call counts when its result has isError false and the
echoed text is right), `failed` = requests that raised or came back wrong, per method
and exception type, `sessions`, `seconds` (from the first connect to the last session's
end), `calls_per_second` (tools/call answered / seconds). Exit status 1 if anything failed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from typing import Any

sys.dont_write_bytecode = True  # keep tests/mcp free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SERVER_NAME = "probe-churn"


def serve(port: int, stateless: bool = False, json_response: bool = False) -> int:
    from mcp.server.mcpserver import MCPServer

    from _http_serve import serve as run

    mcp = MCPServer(SERVER_NAME)

    @mcp.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    app = mcp.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1", stateless_http=stateless,
                                  json_response=json_response)
    return run(app, port=port)


async def session(url: str, calls: int, tag: str, answered: Counter, failed: Counter) -> None:
    from mcp import Client

    method = "initialize"
    try:
        async with Client(url, mode="legacy") as c:
            answered["initialize"] += 1
            method = "tools/list"
            tools = await c.list_tools()
            if not any(t.name == "echo" for t in tools.tools):
                raise RuntimeError("echo not listed")
            answered["tools/list"] += 1
            method = "tools/call"
            for i in range(calls):
                text = f"{tag}-{i}"
                r = await c.call_tool("echo", {"text": text})
                got = r.content[0].text if r.content else None  # type: ignore[union-attr]
                if r.is_error or got != text:
                    failed[f"tools/call:wrong result {got!r}"] += 1
                    continue
                answered["tools/call"] += 1
            method = "session end"
    except Exception as e:  # noqa: BLE001 - every failure is counted and reported
        failed[f"{method}:{type(e).__name__}: {e}"[:200]] += 1


def worker(url: str, concurrency: int, calls: int, index: int, max_seconds: float, out: Any) -> None:
    import anyio

    answered: Counter = Counter()
    failed: Counter = Counter()

    async def run() -> None:
        with anyio.move_on_after(max_seconds) as scope:
            async with anyio.create_task_group() as tg:
                for j in range(concurrency):
                    tg.start_soon(session, url, calls, f"p{index}s{j}", answered, failed)
        if scope.cancelled_caught:
            failed[f"deadline: still running after {max_seconds} s"] += 1

    anyio.run(run)
    out.put({"answered": dict(answered), "failed": dict(failed)})


def keepalive_check(url: str) -> int:
    """One session of 5 calls on the SDK's default client; counts TCP connects."""
    import anyio
    from mcp import Client

    connects = 0

    async def trace(event: str, info: dict) -> None:
        nonlocal connects
        if event == "connection.connect_tcp.complete":
            connects += 1

    async def run() -> None:
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        # The SDK's own default client, with a trace hook on every request (the extension
        # httpcore offers for that); nothing about pooling is changed.
        client = create_mcp_http_client()

        async def add_trace(request: Any) -> None:
            request.extensions["trace"] = trace

        client.event_hooks["request"].append(add_trace)
        async with client:
            async with Client(streamable_http_client(url, http_client=client), mode="legacy") as c:
                await c.list_tools()
                for i in range(5):
                    await c.call_tool("echo", {"text": f"k{i}"})

    anyio.run(run)
    print(f"summary: {json.dumps({'tcp_connects': connects, 'calls': 5})}", flush=True)
    return 0


def drive(a: argparse.Namespace) -> int:
    # Import the SDK once, before the fork: the import alone costs ~2.4 s of CPU (measured
    # with cProfile here), which every worker would pay again, during the run.
    import anyio  # noqa: F401
    from mcp import Client  # noqa: F401

    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    t0 = time.monotonic()
    procs = [
        ctx.Process(target=worker, args=(a.url, a.concurrency, a.calls, i, a.max_seconds, out))
        for i in range(a.processes)
    ]
    for p in procs:
        p.start()
    answered: Counter = Counter()
    failed: Counter = Counter()
    for _ in procs:
        try:
            r = out.get(timeout=a.max_seconds + 30)
        except Exception:  # noqa: BLE001
            failed["a worker never reported"] += 1
            break
        answered.update(r["answered"])
        failed.update(r["failed"])
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            failed["a worker did not exit"] += 1
        elif p.exitcode != 0:
            failed[f"a worker exited with {p.exitcode}"] += 1
    seconds = time.monotonic() - t0
    summary = {
        "server_name": SERVER_NAME,
        "processes": a.processes,
        "concurrency": a.concurrency,
        "calls": a.calls,
        "sessions": a.processes * a.concurrency,
        "answered": dict(answered),
        "failed": dict(failed),
        "seconds": round(seconds, 3),
        "calls_per_second": round(answered["tools/call"] / seconds, 1),
    }
    print(f"summary: {json.dumps(summary)}", flush=True)
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--stateless", action="store_true")
    s.add_argument("--json-response", action="store_true")
    d = sub.add_parser("drive")
    d.add_argument("--url", required=True)
    d.add_argument("--processes", type=int, default=4)
    d.add_argument("--concurrency", type=int, default=16)
    d.add_argument("--calls", type=int, default=200)
    d.add_argument("--max-seconds", type=float, default=120.0)
    d.add_argument("--keepalive-check", action="store_true")
    a = p.parse_args()
    if a.cmd == "serve":
        return serve(a.port, a.stateless, a.json_response)
    if a.keepalive_check:
        return keepalive_check(a.url)
    return drive(a)


if __name__ == "__main__":
    sys.exit(main())
