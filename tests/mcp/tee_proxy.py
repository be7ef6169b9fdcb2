#!/usr/bin/env python3
"""Transparent stdio tee proxy for observing MCP traffic.

Usage: tee_proxy.py LOGFILE [--max-line N] -- <server command...>

Spawns the server command, copies our stdin to its stdin and its stdout to our
stdout byte-for-byte, and appends every newline-delimited message to LOGFILE as
"<unix_ts> <C>S|S>C <line>" (C>S = client to server). Lines longer than
--max-line (default 400) chars are truncated in the log: first N chars, then
"...[TOTAL bytes]...", then the last 160 chars.
Server stderr is passed through untouched. Plain python3 only.
"""

import os
import subprocess
import sys
import threading
import time


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv or len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sep = argv.index("--")
    opts, cmd = argv[:sep], argv[sep + 1 :]
    logfile = opts[0]
    max_line = 400
    if "--max-line" in opts:
        max_line = int(opts[opts.index("--max-line") + 1])
    log = open(logfile, "ab", buffering=0)
    lock = threading.Lock()

    def record(direction: str, line: bytes) -> None:
        body = line.rstrip(b"\r\n")
        if len(body) > max_line:
            # keep head and tail so ids/methods stay visible whatever the key order
            body = body[:max_line] + b"...[%d bytes]..." % len(body) + body[-160:]
        with lock:
            log.write(b"%.6f %s %s\n" % (time.time(), direction.encode(), body))

    child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def pump(src, dst, direction, close_dst):
        try:
            while True:
                line = src.readline()
                if not line:
                    break
                record(direction, line)
                dst.write(line)
                dst.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass
        finally:
            if close_dst:
                try:
                    dst.close()
                except OSError:
                    pass

    t_in = threading.Thread(
        target=pump, args=(sys.stdin.buffer, child.stdin, "C>S", True), daemon=True
    )
    t_out = threading.Thread(
        target=pump, args=(child.stdout, sys.stdout.buffer, "S>C", False), daemon=True
    )
    t_in.start()
    t_out.start()
    rc = child.wait()
    t_out.join(timeout=2)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
