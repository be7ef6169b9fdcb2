#!/usr/bin/env python3
"""Summarize a tee_proxy.py log: message counts per direction and kind.

Usage: wire_count.py LOGFILE   (plain python3; truncated lines are handled)
Prints e.g.  C>S req server/discover 1 / S>C resp server/discover ok 1 / ...
"""

import json
import re
import sys
from collections import Counter


def main() -> None:
    counts: Counter = Counter()
    ids = {"C>S": {}, "S>C": {}}
    for raw in open(sys.argv[1], encoding="utf-8", errors="replace"):
        _ts, direction, body = raw.rstrip("\n").split(" ", 2)
        try:
            d = json.loads(body)
        except ValueError:
            # truncated: recover the essentials with regexes
            d = {}
            m = re.search(r'"method":"([^"]+)"', body)
            if m:
                d["method"] = m.group(1)
            m = re.search(r'"id":("?[^,"}]+"?)', body)
            if m:
                d["id"] = json.loads(m.group(1))
            if '"error":{' in body[:80] or '"error":{' in body[-160:]:
                d["error"] = {}
            elif '"result":' in body:
                d["result"] = {"isError": True} if '"isError":true' in body else {}
        other = "S>C" if direction == "C>S" else "C>S"
        if "method" in d and "id" in d:
            ids[direction][d["id"]] = d["method"]
            counts[(direction, "req", d["method"], "")] += 1
        elif "method" in d:
            counts[(direction, "notif", d["method"], "")] += 1
        else:
            method = ids[other].get(d.get("id"), "?")
            if "error" in d:
                kind = "error %s" % d["error"].get("code", "?")
            elif isinstance(d.get("result"), dict) and d["result"].get("isError"):
                kind = "tool_error"
            else:
                kind = "ok"
            counts[(direction, "resp", method, kind)] += 1
    for (direction, k, m, kind), n in sorted(counts.items()):
        print(f"{direction} {k:5} {m} {kind} x{n}".replace("  x", " x"))


if __name__ == "__main__":
    main()
