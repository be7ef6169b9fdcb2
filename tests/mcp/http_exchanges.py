#!/usr/bin/env python3
"""Print the HTTP exchanges of a client.py JSON summary, one line each.

Usage: client.py ... --url URL | python3 http_exchanges.py     (or: http_exchanges.py FILE)
Line: METHOD PATH -> STATUS content-type [chunked|len=N] [sid>] [<sid] : sent => received
  sid> : request carried mcp-session-id;  <sid : response set mcp-session-id
Then the wire counts (JSON-RPC messages per direction/kind/method). Plain python3.
"""

import json
import sys


def main() -> None:
    src = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
    for line in src:
        line = line.strip()
        if not line.startswith("{"):
            continue
        out = json.loads(line)
        h = out.get("http", {})
        print(f"# {out.get('sdk')} {out.get('mode')} {out.get('transport')} {out.get('scenario')} "
              f"server={out.get('server_name')} protocol={out.get('protocol_version')} passed={out.get('passed')}")
        for ex in h.get("exchanges", []):
            framing = "chunked" if ex.get("chunked") else f"len={ex.get('content_length')}"
            flags = (" sid>" if ex.get("req_session_id") else "") + (" <sid" if ex.get("resp_session_id") else "")
            extra = "".join(f" {k}={ex[k]!r}" for k in ("www-authenticate", "retry-after", "content_encoding",
                                                         "exception") if ex.get(k))
            ended = "" if ex.get("ended", "eof") == "eof" else f" ({ex.get('ended')})"
            print(f"{ex['t']:7.3f} {ex['method']:6} {ex['path']} -> {ex.get('status')} {ex.get('content_type')} "
                  f"{framing}{flags}{extra}{ended} : {', '.join(ex['sent']) or '-'} => "
                  f"{', '.join(ex['received']) or '-'}")
        print(f"http requests={h.get('requests')} by_status={h.get('by_status')}")
        w = out.get("wire", {})
        for d in ("sent", "received"):
            for kind, v in w.get(d, {}).items():
                if v:
                    print(f"wire {d} {kind}: {json.dumps(v, sort_keys=True)}")
        if w.get("error_codes"):
            print(f"wire error_codes: {json.dumps(w['error_codes'], sort_keys=True)}")
        for k in ("calls_ok", "failed_call", "failed_with_status", "got_429", "connect_error", "calls",
                  "unknown_method_error", "failures", "teardown_error"):
            if k in out and out[k] not in (None, [], {}):
                print(f"{k}: {json.dumps(out[k])}")


if __name__ == "__main__":
    main()
