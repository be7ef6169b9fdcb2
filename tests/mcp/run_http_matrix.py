#!/usr/bin/env python3
"""Run the HTTP client x server x scenario matrix (plain python3).

Usage: run_http_matrix.py [OUTDIR]      (default /tmp/mcp-http-matrix)
Filters (env, space separated, substring match on the combo label):
  COMBOS="py2auto-py2sse py1-py1sse"  SCENARIOS="basic cancel"  NO_TEE=1
Every case gets a fresh server (gate counters and sessions start at zero) and,
for TCP servers, a fresh http_tee.py between client and server, so
OUTDIR/<combo>.<scenario>.tee.log shows the raw bytes and per-connection use.
Prints one block per case: pass/fail, JSON-RPC wire counts (from client.py's
HTTP tap), HTTP status counts, and TCP connections seen by the tee.
Exit status 1 if any case failed.
"""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
E = os.path.abspath(os.environ.get("MCP_ENV_DIR", os.path.join(HERE, "..", ".mcp-env")))
PY1, PY2 = f"{E}/py1/bin/python", f"{E}/py2/bin/python"
EVERYTHING = f"{E}/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
OUT = sys.argv[1] if len(sys.argv) > 1 else "/tmp/mcp-http-matrix"
BASE_PORT = int(os.environ.get("BASE_PORT", "18900"))
STD = ["basic", "unknown-method", "big", "slow", "cancel", "timeout", "hold"]

CLIENTS = {
    "py2auto": [PY2, f"{HERE}/client.py", "--mode", "auto"],
    "py2legacy": [PY2, f"{HERE}/client.py", "--mode", "legacy"],
    "py2stateless": [PY2, f"{HERE}/client.py", "--mode", "stateless"],
    "py1": [PY1, f"{HERE}/client.py"],
}


def srv_py2(*extra):
    return lambda port: ([PY2, f"{HERE}/py2_server.py", "--http", str(port), *extra], {})


def srv_py1(flag, *extra):
    return lambda port: ([PY1, f"{HERE}/py1_server.py", flag, str(port), *extra], {})


def srv_everything(mode):
    return lambda port: (["node", "--require", f"{HERE}/node_loopback.cjs", EVERYTHING, mode], {"PORT": str(port)})


def srv_gate(mode, *extra):
    return lambda port: ([PY2, f"{HERE}/gate_server.py", "--port", str(port), "--mode", mode, *extra], {})


# label: (server factory, path, client, client extra args, scenarios)
COMBO_LIST = []
for srv_label, factory, clients in (
    ("py2http", srv_py2(), ("py2auto", "py2legacy", "py2stateless", "py1")),
    ("py2json", srv_py2("--json-response"), ("py2auto", "py2legacy", "py1")),
    ("py2stateless", srv_py2("--stateless"), ("py2auto", "py2legacy", "py1")),
    ("py1http", srv_py1("--http"), ("py2auto", "py2legacy", "py1")),
):
    for c in clients:
        COMBO_LIST.append((f"{c}-{srv_label}", factory, "/mcp", c, [], STD))
for c in ("py1", "py2legacy", "py2auto"):
    COMBO_LIST.append((f"{c}sse-py1sse", srv_py1("--sse"), "/sse", c, ["--transport", "sse"], STD))
for c in ("py2auto", "py2legacy", "py1"):
    COMBO_LIST.append((f"{c}-py2unix", "unix", "/mcp", c, [], STD))
for c in ("py2auto", "py2legacy", "py1"):
    COMBO_LIST.append((f"{c}-evhttp", srv_everything("streamableHttp"), "/mcp", c, [], ["everything-basic"]))
for c in ("py2auto", "py1"):
    COMBO_LIST.append((f"{c}sse-evsse", srv_everything("sse"), "/sse", c, ["--transport", "sse"], ["everything-basic"]))
for c in ("py2auto", "py2legacy", "py1"):
    COMBO_LIST.append((f"{c}-gateauth", srv_gate("auth"), "/mcp", c, [], ["auth-fail"]))
    COMBO_LIST.append((f"{c}-gateauth-token", srv_gate("auth"), "/mcp", c,
                       ["--header", "Authorization: Bearer good-token"], ["basic"]))
    COMBO_LIST.append((f"{c}-gaterl", srv_gate("ratelimit"), "/mcp", c, [], ["rate-limited"]))
    COMBO_LIST.append((f"{c}-gaterl10", srv_gate("ratelimit", "--limit", "10"), "/mcp", c, [], ["rate-limited"]))


def wait_ready(proc, timeout=15.0):
    t_end = time.time() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.time() < t_end:
        try:
            chunk = proc.stdout.read()
        except (BlockingIOError, TypeError):
            chunk = None
        if chunk:
            buf += chunk
            if b"READY\n" in buf:
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def stop(proc):
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode if proc else None


def compact(out):
    w = out.get("wire", {})
    parts = []
    for d, arrow in (("sent", "C>S"), ("received", "S>C")):
        for kind in ("requests", "notifications", "responses"):
            v = w.get(d, {}).get(kind) or {}
            if v:
                parts.append(f"{arrow} {kind}: " + json.dumps(v, sort_keys=True, separators=(",", ":")))
    if w.get("error_codes"):
        parts.append("error_codes: " + json.dumps(w["error_codes"], sort_keys=True, separators=(",", ":")))
    h = out.get("http", {})
    reqs = {}
    for ex in h.get("exchanges", []):
        k = f"{ex['method']} {ex.get('status')} {ex.get('content_type')}{' chunked' if ex.get('chunked') else ''}"
        reqs[k] = reqs.get(k, 0) + 1
    parts.append(f"http {h.get('requests')}: " + json.dumps(reqs, sort_keys=True, separators=(",", ":")))
    return parts


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    combos = os.environ.get("COMBOS", "").split()
    scen = os.environ.get("SCENARIOS", "").split()
    no_tee = bool(os.environ.get("NO_TEE"))
    port = BASE_PORT
    failed = 0
    for label, factory, path, client, cargs, scenarios in COMBO_LIST:
        if combos and not any(c == label for c in combos):
            continue
        for sc in scenarios:
            if scen and sc not in scen:
                continue
            port += 2
            name = f"{label}.{sc}"
            srv_err = open(f"{OUT}/{name}.server.log", "wb")
            env = dict(os.environ)
            if factory == "unix":
                sock = f"{OUT}/{name}.sock"
                cmd, extra_env = [PY2, f"{HERE}/py2_server.py", "--unix", sock], {}
            else:
                cmd, extra_env = factory(port)
            env.update(extra_env)
            srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=srv_err, env=env)
            tee = None
            if not wait_ready(srv):
                print(f"== {name}: SERVER NOT READY ({' '.join(cmd)})")
                stop(srv)
                failed += 1
                continue
            if factory == "unix":
                target = ["--unix", sock]
            else:
                cport = port
                if not no_tee:
                    tlog = f"{OUT}/{name}.tee.log"
                    if os.path.exists(tlog):
                        os.unlink(tlog)
                    tee = subprocess.Popen([sys.executable, f"{HERE}/http_tee.py", "--listen", str(port + 1),
                                            "--target", str(port), "--log", tlog], stdout=subprocess.PIPE)
                    wait_ready(tee)
                    cport = port + 1
                target = ["--url", f"http://127.0.0.1:{cport}{path}"]
            ccmd = CLIENTS[client] + ["--scenario", sc] + cargs + target
            stdin = subprocess.DEVNULL
            if sc == "hold":
                stopf = f"{OUT}/{name}.stop"
                if os.path.exists(stopf):
                    os.unlink(stopf)
                ccmd += ["--stop-file", stopf]
                subprocess.Popen(["sh", "-c", f"sleep 2.5; touch {stopf}"])
            t0 = time.time()
            r = subprocess.run(ccmd, stdin=stdin, capture_output=True, timeout=120)
            dt = time.time() - t0
            time.sleep(0.3)
            if tee:
                stop(tee)
            rc_srv = stop(srv)
            open(f"{OUT}/{name}.json", "wb").write(r.stdout)
            open(f"{OUT}/{name}.client.log", "wb").write(r.stderr)
            try:
                out = json.loads(r.stdout.decode().strip().splitlines()[-1])
            except Exception:
                out = {}
            ok = r.returncode == 0 and out.get("passed")
            failed += not ok
            conns = ""
            if tee:
                s = subprocess.run([sys.executable, f"{HERE}/http_tee.py", "--summarize", f"{OUT}/{name}.tee.log"],
                                   capture_output=True, text=True).stdout
                conns = f" tcp_conns={len(s.splitlines())}"
            print(f"== {name}: {'PASS' if ok else 'FAIL'} rc={r.returncode} server_rc={rc_srv} "
                  f"{dt:.1f}s server={out.get('server_name')} protocol={out.get('protocol_version')}{conns}")
            for p in compact(out):
                print("   " + p)
            for k in ("calls", "calls_ok", "failed_call", "failed_with_status", "connect_error", "failures",
                      "teardown_error"):
                if out.get(k) not in (None, [], {}):
                    print(f"   {k}: {json.dumps(out[k])}")
            sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
