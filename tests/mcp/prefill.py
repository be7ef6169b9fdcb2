"""Fill this network namespace's TCP table with sockets that are not MCP (plain python3).

Run: python3 tests/mcp/prefill.py --idle N [--time-wait M]

- `--idle N`: N idle loopback TCP connections (2N sockets: both ends are here), held open
  until stdin reaches EOF or SIGTERM. Spread over worker processes so that none needs more
  descriptors than RLIMIT_NOFILE's hard limit (each raises its soft limit up to the hard
  limit; 20,000 on the test machine), each worker with a listener of its own on
  127.0.0.1 (its own port, so the connections of different workers never compete for the
  same 4-tuples in the ephemeral range).
- `--time-wait M`: M loopback connections opened and closed client side first, which leaves
  M sockets in TIME_WAIT (60 s on Linux) and no descriptor.

Nothing is ever written on these connections. Prints one line `READY {json}` when
everything is in place: what was asked, and the TCP table of the namespace as counted from
/proc/net/tcp and /proc/net/tcp6 (`sockets`, `established`, `time_wait`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import struct
import sys

TCP_STATES = {"01": "established", "06": "time_wait"}
LINGER_0 = struct.pack("ii", 1, 0)


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def table() -> dict[str, int]:
    counts = {"sockets": 0, "established": 0, "time_wait": 0}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f, None)
                for line in f:
                    counts["sockets"] += 1
                    state = TCP_STATES.get(line.split()[3])
                    if state:
                        counts[state] += 1
        except FileNotFoundError:
            pass
    return counts


def pairs(n: int, close: bool) -> list[socket.socket]:
    """n loopback connections to a fresh listener; the open sockets (empty if `close`)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    addr = listener.getsockname()
    held: list[socket.socket] = []
    for _ in range(n):
        c = socket.create_connection(addr)
        s, _ = listener.accept()
        if close:
            # The client closes first: its end goes to TIME_WAIT, the server's end to
            # CLOSE_WAIT, then LAST_ACK and gone once it closes too.
            c.close()
            s.close()
        else:
            # Linger 0: closing them at the end resets them instead of leaving 2N more
            # sockets in TIME_WAIT for a minute after the test.
            for end in (c, s):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            held.extend((c, s))
    listener.close()
    return held


def wait_for_end(stop_r: int) -> None:
    """Blocks until the parent's pipe closes (EOF) or a signal ends the process."""
    try:
        os.read(stop_r, 1)
    except OSError:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--idle", type=int, default=0, help="idle connections to hold (2 sockets each)")
    p.add_argument("--time-wait", type=int, default=0, help="connections to leave in TIME_WAIT")
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    limit = raise_nofile()
    per_worker = max(1, (limit - 64) // 2)
    workers: list[int] = []
    # Workers hold the idle connections; each reports on its pipe when its share is open
    # and exits when the pipe from the parent closes (the parent exits or is killed).
    stop_r, stop_w = os.pipe()
    left = a.idle
    ready_fds = []
    while left > 0:
        share = min(left, per_worker)
        left -= share
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.close(stop_w)
            os.close(ready_r)
            try:
                held = pairs(share, close=False)
                os.write(ready_w, b"%d\n" % (len(held) // 2))
            except OSError as e:
                os.write(ready_w, f"error {e}\n".encode())
                os._exit(1)
            wait_for_end(stop_r)
            os._exit(0)
        os.close(ready_w)
        ready_fds.append(ready_r)
        workers.append(pid)
    os.close(stop_r)
    opened = 0
    for fd in ready_fds:
        answer = os.read(fd, 200).decode().strip()
        if not answer.isdigit():
            print(f"prefill: a worker failed: {answer or 'no answer'} (RLIMIT_NOFILE {limit})",
                  file=sys.stderr, flush=True)
            return 1
        opened += int(answer)
    for start in range(0, a.time_wait, 20_000):
        # One listener per 20,000: its TIME_WAIT 4-tuples stay within the ephemeral range.
        pairs(min(20_000, a.time_wait - start), close=True)
    summary = {"idle": opened, "time_wait_made": a.time_wait, "workers": len(workers),
               "nofile": limit, **table()}
    print("READY " + json.dumps(summary), flush=True)
    try:
        sys.stdin.read()  # until EOF (or SIGTERM)
    finally:
        os.close(stop_w)
        for pid in workers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
