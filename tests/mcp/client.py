#!/usr/bin/env python3
"""MCP client driver (stdio or HTTP) for the mcp-probe tests.

Runs under either venv: the official Python SDK major version is detected at
import time (py1 venv: mcp==1.30.0, py2 venv: mcp==2.3.0).

Usage:
  client.py --scenario NAME [--mode auto|legacy|stateless] [--roots]
            [--stop-file PATH] [--max-seconds N] -- <server command...>
  client.py --scenario NAME [...] --url URL [--transport streamable-http|sse]
            [--header NAME:VALUE ...]
  client.py --scenario NAME [...] --unix PATH [--url http://localhost/mcp]

Scenarios: basic, unknown-method, big, slow, cancel, timeout, hold,
           markers (arguments and results carry --marker, for exposure tests),
           everything-basic (for @modelcontextprotocol/server-everything),
           auth-fail, rate-limited (for gate_server.py; exit 0 when the
           expected HTTP failure happened).

HTTP: the SDK's own client transport (streamable_http_client / sse_client)
runs on an httpx client (py2 SDK: httpx2) whose transport is wrapped by a tap
that parses the real request/response bodies (JSON or SSE events): `wire` is
counted there, and `http` lists every HTTP exchange (method, path, status,
content type, chunked, content-length, session-id headers, and the JSON-RPC
messages each one carried).

--mode (py2 SDK only; py1 always does the initialize handshake):
  auto       SDK default: sends `server/discover` first, falls back to
             `initialize` + `notifications/initialized` when refused.
  legacy     Client(mode="legacy"): initialize handshake only, no discover.
  stateless  Client(mode="2026-07-28"): adopt the 2026-07-28 protocol with no
             handshake at all (every request carries protocol/client info in
             params._meta). Only meaningful against a 2026-capable server.
--roots      advertise the roots capability (provides a list_roots callback
             returning one root), so servers like server-everything send
             `roots/list` to the client.

Everything diagnostic goes to stderr. Exactly one line is printed on stdout at
the end: a JSON summary with
  requests : explicit requests made by the scenario, per method, with outcome
             counts {ok, error, tool_error, cancelled, timeout}
  tools    : same outcome counts per tool name (tools/call only)
  wire     : every JSON-RPC message the client transport actually sent and
             received (stdio: counted by wrapping the SDK's streams; HTTP:
             parsed from the HTTP bodies): handshake,
             implicit tools/list the SDK does for output-schema validation,
             notifications/cancelled, server->client requests, etc.
  passed   : whether the scenario's own checks held (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import defaultdict
from importlib.metadata import version as _pkg_version
from typing import Any

import anyio

SDK_VERSION = _pkg_version("mcp")
SDK_MAJOR = int(SDK_VERSION.split(".")[0])

import mcp.types as types  # noqa: E402  (py2: re-export of mcp_types)
from pydantic import BaseModel  # noqa: E402

if SDK_MAJOR >= 2:
    import httpx2 as hx
    from mcp import Client
    from mcp.client.sse import sse_client
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError as SdkError
else:
    import httpx as hx
    from mcp import ClientSession
    from mcp.client.sse import sse_client
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import McpError as SdkError

OUTCOMES = ("ok", "error", "tool_error", "cancelled", "timeout")
BIG_LEN = 1024 * 1024


def log(*a: Any) -> None:
    print("[client]", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Wire counting: wrap the transport's read/write streams.
# --------------------------------------------------------------------------


def _as_dict(session_message: Any) -> dict[str, Any] | None:
    msg = getattr(session_message, "message", None)
    if msg is None:
        return None
    msg = getattr(msg, "root", msg)  # py1: RootModel
    try:
        return msg.model_dump(by_alias=True, mode="json", exclude_none=True)
    except Exception:  # pragma: no cover
        return None


class Wire:
    """Counts JSON-RPC messages in both directions, as the client sees them."""

    def __init__(self) -> None:
        self.sent: dict[str, dict[str, int]] = {
            "requests": defaultdict(int),
            "notifications": defaultdict(int),
            "responses": defaultdict(int),
        }
        self.received: dict[str, dict[str, Any]] = {
            "requests": defaultdict(int),
            "notifications": defaultdict(int),
            "responses": defaultdict(lambda: defaultdict(int)),
        }
        self.out_ids: dict[Any, str] = {}  # our request id -> method
        self.in_ids: dict[Any, str] = {}  # server request id -> method
        self.error_codes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def on_send(self, m: Any) -> None:
        d = _as_dict(m)
        if d is not None:
            self.on_send_dict(d)

    def on_send_dict(self, d: dict[str, Any]) -> None:
        if "method" in d and "id" in d:
            self.sent["requests"][d["method"]] += 1
            self.out_ids[d["id"]] = d["method"]
        elif "method" in d:
            self.sent["notifications"][d["method"]] += 1
        else:
            method = self.in_ids.get(d.get("id"), "?")
            kind = "error" if "error" in d else "ok"
            self.sent["responses"][f"{method}:{kind}"] += 1

    def on_recv(self, m: Any) -> None:
        if isinstance(m, Exception):
            return
        d = _as_dict(m)
        if d is not None:
            self.on_recv_dict(d)

    def on_recv_dict(self, d: dict[str, Any]) -> None:
        if "method" in d and "id" in d:
            self.received["requests"][d["method"]] += 1
            self.in_ids[d["id"]] = d["method"]
        elif "method" in d:
            self.received["notifications"][d["method"]] += 1
        else:
            method = self.out_ids.get(d.get("id"), "?")
            if "error" in d:
                kind = "error"
                self.error_codes[method][str(d["error"].get("code"))] += 1
            elif isinstance(d.get("result"), dict) and d["result"].get("isError"):
                kind = "tool_error"
            else:
                kind = "ok"
            self.received["responses"][method][kind] += 1

    def summary(self) -> dict[str, Any]:
        def plain(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: plain(v) for k, v in sorted(x.items())}
            return x

        return {
            "sent": plain(self.sent),
            "received": plain(self.received),
            "error_codes": plain(self.error_codes),
        }


class _CountingRead:
    def __init__(self, inner: Any, wire: Wire) -> None:
        self._inner, self._wire = inner, wire

    async def receive(self) -> Any:
        m = await self._inner.receive()
        self._wire.on_recv(m)
        return m

    def __aiter__(self) -> _CountingRead:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _CountingRead:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _CountingWrite:
    def __init__(self, inner: Any, wire: Wire) -> None:
        self._inner, self._wire = inner, wire

    async def send(self, item: Any) -> None:
        self._wire.on_send(item)
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _CountingWrite:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CountingTransport:
    """Async context manager yielding stdio_client streams wrapped with counters."""

    def __init__(self, params: Any, wire: Wire) -> None:
        self._cm = stdio_client(params)
        self._wire = wire

    async def __aenter__(self) -> tuple[Any, Any]:
        read, write = await self._cm.__aenter__()
        return _CountingRead(read, self._wire), _CountingWrite(write, self._wire)

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._cm.__aexit__(*exc)


# --------------------------------------------------------------------------
# HTTP: count at the HTTP layer (a wrapping httpx transport that parses the
# real request bodies and response bodies / SSE events). Stream-level
# counting would be wrong over HTTP: the SDK transports synthesize JSON-RPC
# errors for HTTP failures (401/429/404 -> -32603/-32601/-32600 that never
# were on the wire), and the py2 transport swallows notifications/cancelled
# at protocol 2026-07-28 (it aborts the POST instead).
# --------------------------------------------------------------------------


def _msgs(obj: Any) -> list[dict[str, Any]]:
    if isinstance(obj, list):
        return [m for m in obj if isinstance(m, dict)]
    return [obj] if isinstance(obj, dict) else []


def _brief(d: dict[str, Any]) -> str:
    if "method" in d and "id" in d:
        return f"req {d['method']} id={d['id']}"
    if "method" in d:
        return f"notif {d['method']}"
    if "error" in d:
        return f"resp id={d.get('id')} error {d['error'].get('code')}"
    r = d.get("result")
    return f"resp id={d.get('id')} " + ("tool_error" if isinstance(r, dict) and r.get("isError") else "ok")


class _SseParser:
    def __init__(self) -> None:
        self.buf = b""
        self.event = ""
        self.id_seen = False
        self.data: list[str] = []
        self.events: list[tuple[str, str]] = []  # (event, data) incl. non-message events

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        out = []
        self.buf += chunk
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                break
            line, self.buf = self.buf[:i].rstrip(b"\r").decode("utf-8", "replace"), self.buf[i + 1 :]
            if line == "":
                if self.data:
                    ev = (self.event or "message", "\n".join(self.data))
                    if ev[1] == "":
                        # e.g. the TS server's priming event `id: X` + `data: ` (resumability)
                        ev = ("empty-data", "")
                    out.append(ev)
                    self.events.append(ev)
                elif self.event or self.id_seen:
                    out.append(("no-data", ""))
                self.event, self.data, self.id_seen = "", [], False
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    self.event = value
                elif field == "id":
                    self.id_seen = True
                elif field == "data":
                    self.data.append(value)
        return out


class HttpLog:
    """Every HTTP exchange the client made, plus JSON-RPC counting into `wire`."""

    MAX_EXCHANGES = 400

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.exchanges: list[dict[str, Any]] = []
        self.count = 0
        self.by_status: dict[str, int] = defaultdict(int)
        self.t0 = time.monotonic()

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.count,
            "by_status": dict(sorted(self.by_status.items())),
            "exchanges": self.exchanges,
        }


class _TapStream(hx.AsyncByteStream):
    def __init__(self, inner: Any, log_: HttpLog, ex: dict[str, Any], kind: str, encoding: str) -> None:
        self.inner, self.log, self.ex, self.kind = inner, log_, ex, kind
        self.body = b""
        self.sse = _SseParser()
        self.dec = None
        if encoding in ("gzip", "deflate"):
            import zlib

            self.dec = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        self.done = False

    def _recv(self, d: dict[str, Any]) -> None:
        self.log.wire.on_recv_dict(d)
        self.ex["received"].append(_brief(d))

    async def __aiter__(self) -> Any:
        try:
            async for chunk in self.inner:
                self.ex["body_bytes"] += len(chunk)
                data = self.dec.decompress(chunk) if self.dec else chunk
                if self.kind == "sse":
                    for event, payload in self.sse.feed(data):
                        if event != "message":
                            self.ex["received"].append(f"sse-event {event}")
                            continue
                        try:
                            for d in _msgs(json.loads(payload)):
                                self._recv(d)
                        except ValueError:
                            self.ex["received"].append("sse-unparsed")
                else:
                    self.body += data
                yield chunk
            self._finish()
        finally:
            self.ex.setdefault("ended", "eof" if self.done else "client-closed")

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.kind == "json" and self.body:
            try:
                for d in _msgs(json.loads(self.body)):
                    self._recv(d)
            except ValueError:
                self.ex["received"].append("json-unparsed")

    async def aclose(self) -> None:
        await self.inner.aclose()


class TapTransport(hx.AsyncBaseTransport):
    def __init__(self, inner: Any, log_: HttpLog) -> None:
        self.inner, self.log = inner, log_

    async def handle_async_request(self, request: Any) -> Any:
        try:
            body = request.content
        except Exception:  # streaming body
            body = await request.aread()
        ex: dict[str, Any] = {
            "t": round(time.monotonic() - self.log.t0, 3),
            "method": request.method,
            "path": request.url.raw_path.decode(),
            "req_session_id": "mcp-session-id" in request.headers,
            "req_protocol_version": request.headers.get("mcp-protocol-version"),
            "sent": [],
            "received": [],
            "body_bytes": 0,
        }
        if body:
            try:
                for d in _msgs(json.loads(body)):
                    self.log.wire.on_send_dict(d)
                    ex["sent"].append(_brief(d))
            except ValueError:
                ex["sent"].append(f"unparsed {len(body)} bytes")
        self.log.count += 1
        if len(self.log.exchanges) < HttpLog.MAX_EXCHANGES:
            self.log.exchanges.append(ex)
        try:
            resp = await self.inner.handle_async_request(request)
        except BaseException as e:  # incl. cancellation (py2 aborts a POST to cancel at 2026-07-28)
            ex["status"] = None
            ex["exception"] = f"{type(e).__name__}: {e}"[:200]
            self.log.by_status["no-response"] += 1
            raise
        h = resp.headers
        ctype = h.get("content-type", "")
        ex["status"] = resp.status_code
        ex["content_type"] = ctype.split(";")[0] or None
        ex["chunked"] = "chunked" in h.get("transfer-encoding", "").lower()
        ex["content_length"] = int(h["content-length"]) if "content-length" in h else None
        ex["content_encoding"] = h.get("content-encoding")
        ex["resp_session_id"] = "mcp-session-id" in h
        for k in ("www-authenticate", "retry-after"):
            if k in h:
                ex[k] = h[k]
        self.log.by_status[str(resp.status_code)] += 1
        kind = "sse" if ctype.startswith("text/event-stream") else "json" if ctype.startswith("application/json") else "other"
        stream = _TapStream(resp.stream, self.log, ex, kind, h.get("content-encoding", "").lower())
        return hx.Response(status_code=resp.status_code, headers=resp.headers, stream=stream,
                           extensions=resp.extensions)

    async def aclose(self) -> None:
        await self.inner.aclose()


def make_http_client(a: argparse.Namespace, log_: HttpLog, headers: dict[str, str] | None = None,
                     timeout: Any = None, auth: Any = None) -> Any:
    inner = hx.AsyncHTTPTransport(uds=a.unix) if a.unix else hx.AsyncHTTPTransport()
    merged = dict(a.headers)
    merged.update(headers or {})
    return hx.AsyncClient(
        transport=TapTransport(inner, log_),
        headers=merged,
        timeout=timeout if timeout is not None else hx.Timeout(30.0, read=300.0),
        auth=auth,
    )


class HttpTransport:
    """Async context manager yielding (read, write) of the SDK's HTTP client
    transport (streamable-http or legacy sse), on our tapped httpx client."""

    def __init__(self, a: argparse.Namespace, log_: HttpLog) -> None:
        self.a, self.log = a, log_
        self._stack: Any = None

    async def __aenter__(self) -> tuple[Any, Any]:
        from contextlib import AsyncExitStack

        self._stack = AsyncExitStack()
        await self._stack.__aenter__()
        try:
            if self.a.transport == "sse":
                def factory(headers: Any = None, timeout: Any = None, auth: Any = None) -> Any:
                    return make_http_client(self.a, self.log, headers, timeout, auth)

                streams = await self._stack.enter_async_context(sse_client(self.a.url, httpx_client_factory=factory))
            else:
                client = await self._stack.enter_async_context(make_http_client(self.a, self.log))
                streams = await self._stack.enter_async_context(streamable_http_client(self.a.url, http_client=client))
        except BaseException:
            await self._stack.__aexit__(*sys.exc_info())
            raise
        return streams[0], streams[1]  # py1 streamable_http_client yields a 3-tuple

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._stack.__aexit__(*exc)


# --------------------------------------------------------------------------
# SDK adapters
# --------------------------------------------------------------------------


class RawRequest(BaseModel):
    """An arbitrary request (py1 send_request takes any model with method/params)."""

    method: str
    params: dict[str, Any] | None = None


class AnyResult(BaseModel):
    model_config = {"extra": "allow"}


async def _list_roots(*_a: Any, **_k: Any) -> Any:
    return types.ListRootsResult(roots=[types.Root(uri="file:///tmp", name="tmp")])


class Conn:
    """Uniform facade over the py1 ClientSession / py2 Client."""

    def __init__(self, impl: Any, session: Any) -> None:
        self.impl = impl
        self.session = session

    @property
    def server_info(self) -> Any:
        if SDK_MAJOR >= 2:
            return self.impl.server_info
        return self.impl_init.serverInfo

    @property
    def protocol_version(self) -> str | None:
        if SDK_MAJOR >= 2:
            return self.impl.protocol_version
        return self.impl_init.protocolVersion

    async def list_tools(self) -> Any:
        return await self.impl.list_tools()

    async def call_tool(self, name: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        if SDK_MAJOR >= 2:
            return await self.impl.call_tool(name, args, read_timeout_seconds=timeout)
        from datetime import timedelta

        return await self.session.call_tool(
            name, args, read_timeout_seconds=None if timeout is None else timedelta(seconds=timeout)
        )

    async def get_prompt(self, name: str, args: dict[str, str]) -> Any:
        return await self.impl.get_prompt(name, args)

    async def raw_request(self, method: str) -> Any:
        if SDK_MAJOR >= 2:
            # The typed `Request` base accepts any method string; the session's
            # stamp adds `_meta` on 2026 connections like for any request.
            return await self.session.send_request(types.Request(method=method, params=None), AnyResult)
        return await self.session.send_request(RawRequest(method=method), AnyResult)

    def next_request_id(self) -> Any:
        """py1 only: the id the next request will get (to build notifications/cancelled)."""
        return self.session._request_id  # noqa: SLF001

    async def send_cancelled(self, request_id: Any, reason: str) -> None:
        note: Any = types.CancelledNotification(
            params=types.CancelledNotificationParams(requestId=request_id, reason=reason)
        )
        if SDK_MAJOR < 2:
            note = types.ClientNotification(note)
        await self.session.send_notification(note)


class _Py1Connect:
    def __init__(self, transport: Any, roots: bool) -> None:
        self.transport, self.roots = transport, roots
        self._stack: Any = None

    async def __aenter__(self) -> Conn:
        from contextlib import AsyncExitStack

        self._stack = AsyncExitStack()
        await self._stack.__aenter__()
        try:
            read, write = await self._stack.enter_async_context(self.transport)
            kwargs: dict[str, Any] = {}
            if self.roots:
                kwargs["list_roots_callback"] = _list_roots
            session = await self._stack.enter_async_context(ClientSession(read, write, **kwargs))
            init = await session.initialize()
        except BaseException:
            await self._stack.__aexit__(*sys.exc_info())
            raise
        conn = Conn(session, session)
        conn.impl_init = init  # type: ignore[attr-defined]
        return conn

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._stack.__aexit__(*exc)


class _Py2Connect:
    def __init__(self, transport: Any, roots: bool, mode: str) -> None:
        sdk_mode = {"auto": "auto", "legacy": "legacy", "stateless": "2026-07-28"}[mode]
        kwargs: dict[str, Any] = {"mode": sdk_mode}
        if roots:
            kwargs["list_roots_callback"] = _list_roots
        # Client accepts any Transport: our counting wrapper around stdio_client,
        # or the SDK's HTTP transport on our tapped httpx client.
        self.client = Client(transport, **kwargs)

    async def __aenter__(self) -> Conn:
        c = await self.client.__aenter__()
        return Conn(c, c.session)

    async def __aexit__(self, *exc: Any) -> Any:
        return await self.client.__aexit__(*exc)


def connect(a: argparse.Namespace, wire: Wire, http_log: HttpLog | None) -> Any:
    if http_log is not None:
        transport: Any = HttpTransport(a, http_log)
    else:
        params = StdioServerParameters(command=a.cmd[0], args=a.cmd[1:], env=dict(os.environ))
        transport = CountingTransport(params, wire)
    if SDK_MAJOR >= 2:
        return _Py2Connect(transport, a.roots, a.mode)
    return _Py1Connect(transport, a.roots)


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.requests: dict[str, dict[str, int]] = defaultdict(lambda: {k: 0 for k in OUTCOMES})
        self.tools: dict[str, dict[str, int]] = defaultdict(lambda: {k: 0 for k in OUTCOMES})
        self.failures: list[str] = []
        self.extra: dict[str, Any] = {}

    def add(self, method: str, outcome: str, tool: str | None = None) -> None:
        self.requests[method][outcome] += 1
        if tool is not None:
            self.tools[tool][outcome] += 1

    def check(self, cond: bool, what: str) -> None:
        if not cond:
            self.failures.append(what)
            log("CHECK FAILED:", what)


def _text(result: Any) -> str:
    for c in getattr(result, "content", []) or []:
        t = getattr(c, "text", None)
        if t is not None:
            return t
    return ""


def _is_error(result: Any) -> bool:
    return bool(getattr(result, "is_error", None) or getattr(result, "isError", None))


async def call(conn: Conn, t: Tally, tool: str, args: dict[str, Any], *, expect: str = "ok",
               timeout: float | None = None) -> Any:
    try:
        r = await conn.call_tool(tool, args, timeout=timeout)
    except SdkError as e:
        code = e.error.code
        outcome = "timeout" if code in (408, -32001) and timeout is not None else "error"
        t.add("tools/call", outcome, tool)
        t.extra.setdefault("errors", []).append({"tool": tool, "code": code, "message": e.error.message[:200]})
        t.check(outcome == expect, f"tools/call {tool}: expected {expect}, got {outcome} ({code} {e.error.message!r})")
        return e
    outcome = "tool_error" if _is_error(r) else "ok"
    t.add("tools/call", outcome, tool)
    if outcome == "tool_error":
        t.extra.setdefault("tool_errors", []).append({"tool": tool, "text": _text(r)[:200]})
    t.check(outcome == expect, f"tools/call {tool}: expected {expect}, got {outcome}: {_text(r)[:200]!r}")
    return r


async def sc_basic(conn: Conn, t: Tally, a: argparse.Namespace) -> None:
    tools = await conn.list_tools()
    t.add("tools/list", "ok")
    names = sorted(x.name for x in tools.tools)
    t.extra["tool_names"] = names
    for i in range(3):
        r = await call(conn, t, "echo", {"text": f"hello {i}"})
        t.check(_text(r) == f"hello {i}", f"echo {i} text {_text(r)!r}")
    for a_, b_ in ((1, 2), (40, 2)):
        r = await call(conn, t, "add", {"a": a_, "b": b_})
        t.check(_text(r) == str(a_ + b_), f"add text {_text(r)!r}")
    await call(conn, t, "fail", {"reason": "requested by test"}, expect="tool_error")
    p = await conn.get_prompt("greet", {"name": "probe"})
    t.add("prompts/get", "ok")
    t.check("probe" in json.dumps(p.model_dump(mode="json")), "greet prompt mentions name")


async def sc_markers(conn: Conn, t: Tally, a: argparse.Namespace) -> None:
    """Tool arguments, tool results and a prompt argument that carry --marker.

    `markers` in the summary lists every string that was on the wire only
    because of this scenario: the arguments, the servers' result texts that
    quote them, and the sum `add` returns, which appears in no request.
    """
    m = a.marker
    t.check(bool(m), "--marker is required")
    await conn.list_tools()
    t.add("tools/list", "ok")
    markers = []
    arg = f"{m}-echo"
    r = await call(conn, t, "echo", {"text": arg})
    t.check(_text(r) == arg, f"echo text {_text(r)!r}")
    markers.append(arg)
    # Two random 15-digit addends: their sum is in the result only.
    x, y = (int.from_bytes(os.urandom(6), "big") + 10**14 for _ in range(2))
    r = await call(conn, t, "add", {"a": x, "b": y})
    t.check(_text(r) == str(x + y), f"add text {_text(r)!r}")
    markers += [str(x), str(y), str(x + y)]
    reason = f"{m}-fail"
    # probe-py2 does not quote the reason in its error result; probe-py1 does.
    await call(conn, t, "fail", {"reason": reason}, expect="tool_error")
    markers.append(reason)
    name = f"{m}-prompt"
    p = await conn.get_prompt("greet", {"name": name})
    t.add("prompts/get", "ok")
    greeting = f"greet {name} warmly"
    t.check(greeting in json.dumps(p.model_dump(mode="json")), "greet prompt quotes the name")
    markers += [name, greeting]
    t.extra["markers"] = markers


async def sc_unknown_method(conn: Conn, t: Tally, a: argparse.Namespace) -> None:
    try:
        await conn.raw_request("probe/unknown")
        t.add("probe/unknown", "ok")
        t.check(False, "probe/unknown unexpectedly succeeded")
    except SdkError as e:
        t.add("probe/unknown", "error")
        t.extra["unknown_method_error"] = {"code": e.error.code, "message": e.error.message}
        # py2 servers / TS servers answer -32601; the 1.x FastMCP server answers -32602.
        t.check(e.error.code in (-32601, -32602), f"probe/unknown error code {e.error.code}")
    r = await call(conn, t, "echo", {"text": "after unknown"})
    t.check(_text(r) == "after unknown", "echo after unknown method")


async def sc_big(conn: Conn, t: Tally, a: argparse.Namespace) -> None:
    r = await call(conn, t, "size", {"data": "x" * BIG_LEN})
    t.check(_text(r) == str(BIG_LEN), f"size returned {_text(r)!r}")


async def sc_slow(conn: Conn, t: Tally, a: argparse.Namespace) -> None:
    t0 = time.monotonic()
    r = await call(conn, t, "slow", {"seconds": 1.5})
    t.extra["slow_elapsed_s"] = round(time.monotonic() - t0, 3)
    t.check(_text(r) == "done", f"slow returned {_text(r)!r}")


async def sc_cancel(conn: Conn, t: Tally, a: argparse.Namespace) -> None:
    """Cancel an in-flight tools/call the way each SDK does it.

    py2: cancelling the caller's anyio scope makes the SDK dispatcher write
    `notifications/cancelled` {requestId, reason: "caller cancelled"} itself.
    py1: the SDK never sends notifications/cancelled on its own (neither on
    scope cancel nor on read timeout); the application sends it explicitly
    with session.send_notification(CancelledNotification), as done here.
    """
    t0 = time.monotonic()
    rid = conn.next_request_id() if SDK_MAJOR < 2 else None
    with anyio.move_on_after(0.5) as scope:
        await conn.call_tool("slow", {"seconds": 30})
    if scope.cancelled_caught:
        t.add("tools/call", "cancelled", "slow")
        if SDK_MAJOR < 2:
            await conn.send_cancelled(rid, "caller cancelled")
    else:
        t.add("tools/call", "ok", "slow")
        t.check(False, "slow(30) was not cancelled")
    t.extra["cancel_after_s"] = round(time.monotonic() - t0, 3)
    r = await call(conn, t, "echo", {"text": "after cancel"})
    t.check(_text(r) == "after cancel", "echo after cancel")


async def sc_timeout(conn: Conn, t: Tally, a: argparse.Namespace) -> None:
    """Request timeout (read_timeout_seconds=0.5) on slow(2), then echo, then
    wait until t0+2.6 s so a late slow() response, if any, is on the wire
    before the client exits (deterministic counts; see README).

    py2 SDK: sends `notifications/cancelled` (reason "timed out after 0.5s")
    and raises MCPError 408. py1 SDK: raises McpError 408 and sends nothing,
    so the server finishes slow(2) and its late response arrives (and is
    dropped by the client).
    """
    t0 = time.monotonic()
    await call(conn, t, "slow", {"seconds": 2}, expect="timeout", timeout=0.5)
    r = await call(conn, t, "echo", {"text": "after timeout"})
    t.check(_text(r) == "after timeout", "echo after timeout")
    await anyio.sleep(max(0.0, t0 + 2.6 - time.monotonic()))


async def sc_hold(conn: Conn, t: Tally, a: argparse.Namespace) -> None:
    """echo once, then once per second until the stop condition.

    Stop condition: the file --stop-file exists (when given), otherwise EOF on
    the client's stdin. Always bounded by --max-seconds.
    """
    stdin_closed = threading.Event()
    if not a.stop_file:
        def watch() -> None:
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except Exception:
                pass
            stdin_closed.set()

        threading.Thread(target=watch, daemon=True).start()

    def stop() -> bool:
        if a.stop_file:
            return os.path.exists(a.stop_file)
        return stdin_closed.is_set()

    deadline = time.monotonic() + a.max_seconds
    n = 0
    while True:
        await call(conn, t, "echo", {"text": f"hold {n}"})
        n += 1
        # sleep ~1 s, polling the stop condition every 50 ms
        until = time.monotonic() + 1.0
        while time.monotonic() < until and not stop():
            await anyio.sleep(0.05)
        if stop() or time.monotonic() > deadline:
            break
    t.extra["calls"] = n
    log(f"hold: {n} calls")


async def sc_everything_basic(conn: Conn, t: Tally, a: argparse.Namespace) -> None:
    """For @modelcontextprotocol/server-everything: its real tool names.

    Waits 1 s first so that anything the server does on its own after
    `notifications/initialized` (tools/list_changed, roots/list at +350 ms when
    the client has --roots) has happened before the calls: deterministic counts.
    """
    await anyio.sleep(1.0)
    tools = await conn.list_tools()
    t.add("tools/list", "ok")
    names = sorted(x.name for x in tools.tools)
    t.extra["tool_names"] = names
    t.check("echo" in names and "get-sum" in names, f"everything tools {names}")
    for i in range(2):
        r = await call(conn, t, "echo", {"message": f"hi {i}"})
        t.check(_text(r) == f"Echo: hi {i}", f"everything echo text {_text(r)!r}")
    r = await call(conn, t, "get-sum", {"a": 2, "b": 3})
    t.check("5" in _text(r), f"get-sum text {_text(r)!r}")
    # Unknown tool: the TS SDK McpServer answers with a CallToolResult isError=true
    # (not a JSON-RPC error); record whichever shape arrives.
    try:
        r = await conn.call_tool("no-such-tool", {})
        outcome = "tool_error" if _is_error(r) else "ok"
        t.add("tools/call", outcome, "no-such-tool")
        t.extra["unknown_tool"] = {"shape": "result", "isError": _is_error(r), "text": _text(r)[:200]}
    except SdkError as e:
        t.add("tools/call", "error", "no-such-tool")
        t.extra["unknown_tool"] = {"shape": "jsonrpc-error", "code": e.error.code, "message": e.error.message[:200]}
    await anyio.sleep(0.2)


def _failed_status(a: argparse.Namespace) -> int | None:
    """HTTP status of the last >=400 response the client got (None if none)."""
    for ex in reversed(a.http_log.exchanges if a.http_log else []):
        if ex.get("status") and ex["status"] >= 400:
            return ex["status"]
    return None


async def sc_rate_limited(conn: Conn, t: Tally, a: argparse.Namespace) -> None:
    """For gate_server.py --mode ratelimit: echo until a call fails (max 50).

    The SDKs turn the HTTP 429 into a JSON-RPC error that never was on the
    wire (py2: -32603 "Server returned an error response"; py1: -32603 too);
    the HTTP log tells the real status. The failing call may also be the
    SDK's implicit tools/list inside the first call_tool.
    """
    ok = 0
    failed: dict[str, Any] | None = None
    for i in range(50):
        try:
            r = await conn.call_tool("echo", {"text": f"rl {i}"})
        except SdkError as e:
            t.add("tools/call", "error", "echo")
            failed = {"call_index": i, "code": e.error.code, "message": e.error.message[:200]}
            break
        if _is_error(r):
            t.add("tools/call", "tool_error", "echo")
            failed = {"call_index": i, "tool_error": _text(r)[:200]}
            break
        t.add("tools/call", "ok", "echo")
        ok += 1
        t.extra["calls_ok"] = ok
    status = _failed_status(a)
    t.extra["calls_ok"] = ok
    t.extra["failed_call"] = failed
    t.extra["failed_with_status"] = status
    t.extra["got_429"] = any(ex.get("status") == 429 for ex in a.http_log.exchanges) if a.http_log else False
    t.check(failed is not None, "no call failed (is the server rate limited?)")
    t.check(status == 429, f"expected an HTTP 429, last error status {status}")


async def sc_load(conn: Conn, t: Tally, a: argparse.Namespace) -> None:
    """--rounds N rounds of: echo x2, add, slow(0.15), fail (tool_error), then 0.3 s
    of rest; steady traffic across several scrapes for the Prometheus test. Per round
    5 tools/call, 1 of them failing (20 %), 1 in the (0.1, 0.2] s bucket."""
    await conn.list_tools()
    t.add("tools/list", "ok")
    for i in range(a.rounds):
        for j in range(2):
            r = await call(conn, t, "echo", {"text": f"load {i}.{j}"})
            t.check(_text(r) == f"load {i}.{j}", f"echo text {_text(r)!r}")
        await call(conn, t, "add", {"a": i, "b": 1})
        await call(conn, t, "slow", {"seconds": 0.15})
        await call(conn, t, "fail", {"reason": "load"}, expect="tool_error")
        await anyio.sleep(0.3)
    t.extra["rounds"] = a.rounds


SCENARIOS = {
    "basic": sc_basic,
    "load": sc_load,
    "unknown-method": sc_unknown_method,
    "big": sc_big,
    "slow": sc_slow,
    "cancel": sc_cancel,
    "timeout": sc_timeout,
    "hold": sc_hold,
    "markers": sc_markers,
    "everything-basic": sc_everything_basic,
    "rate-limited": sc_rate_limited,
    "auth-fail": None,  # handled in run(): the connect itself must fail
}


async def run(a: argparse.Namespace) -> dict[str, Any]:
    wire = Wire()
    t = Tally()
    http_log = HttpLog(wire) if a.url else None
    a.http_log = http_log
    out: dict[str, Any] = {
        "sdk": f"py{SDK_MAJOR}",
        "sdk_version": SDK_VERSION,
        "mode": a.mode if SDK_MAJOR >= 2 else "legacy",
        "scenario": a.scenario,
    }
    if http_log is not None:
        out["transport"] = a.transport
        out["url"] = a.url
        if a.unix:
            out["unix"] = a.unix
    done = False
    if a.scenario == "auth-fail":
        await run_auth_fail(a, wire, t, out)
        return finish(out, t, wire, http_log)
    try:
        async with connect(a, wire, http_log) as conn:
            si = conn.server_info
            out["server_name"] = getattr(si, "name", None)
            out["server_version"] = getattr(si, "version", None)
            out["protocol_version"] = conn.protocol_version
            await SCENARIOS[a.scenario](conn, t, a)
            # let late responses / notifications (e.g. after a cancel) arrive
            await anyio.sleep(0.2)
            done = True
    except Exception as e:  # noqa: BLE001
        if done:
            # e.g. py1 stdio_client raising BrokenResourceError when the server
            # writes a message while the session is already closing.
            out["teardown_error"] = f"{type(e).__name__}: {e}"
            log("teardown error (ignored)", repr(e))
        elif a.scenario == "rate-limited" and _failed_status(a) == 429:
            # py1 SDK: the POST task calls raise_for_status(); the HTTPStatusError
            # tears down the whole transport task group (no JSON-RPC error, the
            # pending call never returns): the expected outcome, not a failure.
            exc: BaseException = e
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]
            t.add("tools/call", "error", "echo")
            t.extra.setdefault("calls_ok", 0)
            t.extra["failed_call"] = {"call_index": t.extra["calls_ok"], "exception": type(exc).__name__,
                                      "message": str(exc).splitlines()[0][:200]}
            t.extra["failed_with_status"] = 429
            t.extra["got_429"] = True
            log("rate-limited: transport failed as expected:", repr(exc))
        else:
            t.failures.append(f"exception: {type(e).__name__}: {e}")
            log("EXCEPTION", repr(e))
    return finish(out, t, wire, http_log)


async def run_auth_fail(a: argparse.Namespace, wire: Wire, t: Tally, out: dict[str, Any]) -> None:
    """Connect (handshake only) to a server that rejects us; failing is the expected outcome."""
    try:
        with anyio.fail_after(30):
            async with connect(a, wire, a.http_log) as conn:
                out["server_name"] = getattr(conn.server_info, "name", None)
        t.check(False, "connected although authentication should have failed")
    except Exception as e:  # noqa: BLE001
        exc: BaseException = e
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        err: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)[:300]}
        if isinstance(exc, SdkError):
            err["code"] = exc.error.code
        out["connect_error"] = err
        log("connect failed as expected:", repr(exc))
    status = _failed_status(a)
    out["failed_with_status"] = status
    t.check(status == 401, f"expected HTTP 401, got {status}")


def finish(out: dict[str, Any], t: Tally, wire: Wire, http_log: HttpLog | None) -> dict[str, Any]:
    out["requests"] = {k: v for k, v in sorted(t.requests.items())}
    out["tools"] = {k: v for k, v in sorted(t.tools.items())}
    totals = {k: 0 for k in OUTCOMES}
    for v in t.requests.values():
        for k in OUTCOMES:
            totals[k] += v[k]
    out["totals"] = totals
    out.update(t.extra)
    out["wire"] = wire.summary()
    if http_log is not None:
        out["http"] = http_log.summary()
    out["pid"] = os.getpid()
    out["failures"] = t.failures
    out["passed"] = not t.failures
    return out


def attach_trace_context(traceparent: str) -> None:
    """Makes `traceparent` the current span context. The py2 SDK wraps each request in a
    span of the global tracer (a no-op one here, which reuses the current span) and
    injects the current context into `params._meta` (SEP-414)."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    _, trace_id, span_id, flags = traceparent.split("-")
    span = NonRecordingSpan(SpanContext(trace_id=int(trace_id, 16), span_id=int(span_id, 16),
                                        is_remote=True, trace_flags=TraceFlags(int(flags, 16))))
    otel_context.attach(trace.set_span_in_context(span))


def main() -> int:
    argv = sys.argv[1:]
    if "--" in argv:
        i = argv.index("--")
        opts, cmd = argv[:i], argv[i + 1 :]
    else:
        opts, cmd = argv, []
    p = argparse.ArgumentParser(description="MCP test client driver")
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    p.add_argument("--mode", default="auto", choices=["auto", "legacy", "stateless"])
    p.add_argument("--roots", action="store_true")
    p.add_argument("--stop-file", default=None)
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument("--marker", default="", help="string the markers scenario puts in arguments")
    p.add_argument("--url", default=None, help="connect over HTTP instead of spawning a stdio server")
    p.add_argument("--transport", default="streamable-http", choices=["streamable-http", "sse"])
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    p.add_argument("--unix", default=None, metavar="PATH",
                   help="HTTP over this unix socket (URL defaults to http://localhost/mcp)")
    p.add_argument("--rounds", type=int, default=10, help="rounds of the load scenario")
    p.add_argument("--traceparent", default=None, metavar="00-TRACE-SPAN-01",
                   help="run under this W3C trace context: the py2 SDK puts it in every request's params._meta")
    a = p.parse_args(opts)
    a.cmd = cmd
    if a.traceparent:
        attach_trace_context(a.traceparent)
    if a.unix and not a.url:
        a.url = "http://localhost/mcp"
    if a.url and a.cmd:
        p.error("give either --url/--unix or '-- <server command>', not both")
    if not a.url and not a.cmd:
        print(__doc__, file=sys.stderr)
        return 2
    a.headers = {}
    for h in a.header:
        name, sep, value = h.partition(":")
        if not sep:
            p.error(f"--header needs NAME:VALUE, got {h!r}")
        a.headers[name.strip()] = value.strip()
    if SDK_MAJOR < 2 and a.mode != "auto" and a.mode != "legacy":
        p.error("py1 SDK only supports the initialize handshake (--mode legacy/auto)")
    out = anyio.run(run, a)
    sys.stdout.write(json.dumps(out, sort_keys=False) + "\n")
    sys.stdout.flush()
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
