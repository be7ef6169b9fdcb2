#!/usr/bin/env python3
"""Logging TCP proxy for observing HTTP MCP traffic (plain python3, asyncio).

Usage: http_tee.py --listen PORT --target PORT|HOST:PORT|unix:PATH --log FILE [--max-chunk N]
       http_tee.py --summarize FILE     (one line per TCP connection: its HTTP
                                         requests and response status/framing)

Listens on 127.0.0.1:PORT, opens one upstream connection per accepted client
connection (to 127.0.0.1:PORT by default, or a unix socket with unix:PATH),
and copies bytes both ways untouched. Every read() is logged raw:
  <unix_ts> conn=<n> C>S|S>C <len> <bytes as a Python bytes repr, truncated>
plus `open`/`close` lines per connection, so you see keep-alive reuse,
chunk framing, content-length, SSE event boundaries. Chunks longer than
--max-chunk (default 600) are logged as head ... tail. Prints READY on stdout.
Note: the client then talks to the proxy's port, so its Host header carries
that port (fine for the SDK servers' 127.0.0.1:* host check).
"""

import argparse
import asyncio
import itertools
import time

counter = itertools.count(1)


def summarize(path: str) -> None:
    import re

    conns: dict = {}
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"\S+ conn=(\d+) (.*)", line)
        if not m:
            continue
        cid, rest = int(m.group(1)), m.group(2)
        c = conns.setdefault(cid, [])
        for r in re.finditer(r"(GET|POST|DELETE|PUT) (\S+) HTTP/1\.1", rest):
            if rest.startswith("C>S"):
                c.append(f"{r.group(1)} {r.group(2)}")
        if rest.startswith("S>C"):
            for r in re.finditer(r"HTTP/1\.1 (\d+)", rest):
                head = rest[r.start():].split("\\r\\n\\r\\n")[0].lower()
                ct = re.search(r"content-type: ([^;\\]+)", head)
                framing = "chunked" if "transfer-encoding: chunked" in head else (
                    "len=" + re.search(r"content-length: (\d+)", head).group(1) if "content-length" in head else "close-delimited")
                c.append(f"-> {r.group(1)} {ct.group(1) if ct else '-'} {framing}")
    for cid in sorted(conns):
        print(f"conn {cid}: " + " | ".join(conns[cid]))


def main() -> None:
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--summarize":
        summarize(sys.argv[2])
        return
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--max-chunk", type=int, default=600)
    a = p.parse_args()
    log = open(a.log, "a", buffering=1)

    def rec(cid: int, what: str) -> None:
        log.write(f"{time.time():.6f} conn={cid} {what}\n")

    async def open_upstream():
        t = a.target
        if t.startswith("unix:"):
            return await asyncio.open_unix_connection(t[5:])
        host, _, port = t.rpartition(":")
        return await asyncio.open_connection(host or "127.0.0.1", int(port))

    async def pump(cid, reader, writer, direction):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if len(data) > a.max_chunk:
                    shown = repr(data[: a.max_chunk - 160]) + f" ...[{len(data)} bytes]... " + repr(data[-160:])
                else:
                    shown = repr(data)
                rec(cid, f"{direction} {len(data)} {shown}")
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            rec(cid, f"{direction} eof")
            try:
                if writer.can_write_eof():
                    writer.write_eof()
            except (OSError, RuntimeError):
                pass

    async def handle(cr, cw):
        cid = next(counter)
        rec(cid, "open")
        try:
            ur, uw = await open_upstream()
        except OSError as e:
            rec(cid, f"upstream connect failed: {e}")
            cw.close()
            return
        await asyncio.gather(pump(cid, cr, uw, "C>S"), pump(cid, ur, cw, "S>C"))
        for w in (cw, uw):
            w.close()
        rec(cid, "close")

    async def amain():
        srv = await asyncio.start_server(handle, "127.0.0.1", a.listen)
        print("READY", flush=True)
        async with srv:
            await srv.serve_forever()

    try:
        asyncio.run(amain())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
