#!/usr/bin/env bash
# Idempotent installer for the MCP test harness environment.
# Creates $MCP_ENV_DIR (default: <repo>/tests/.mcp-env) with:
#   py2/  venv with mcp==2.3.0   (official Python SDK 2.x, MCPServer)
#   py1/  venv with mcp==1.30.0  (official Python SDK 1.x, FastMCP)
#   node/ npm prefix with @modelcontextprotocol/server-everything and sdk
# Quiet when everything is already installed (stamp file per component).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENV_DIR="${MCP_ENV_DIR:-$HERE/../.mcp-env}"
mkdir -p "$ENV_DIR"
ENV_DIR="$(cd "$ENV_DIR" && pwd)"

PY_SDK2_VERSION="2.3.0"
PY_SDK1_VERSION="1.30.0"
NPM_EVERYTHING="@modelcontextprotocol/server-everything@2026.8.31"
NPM_SDK="@modelcontextprotocol/sdk@1.32.2"

PYTHON="${PYTHON:-python3}"

install_venv() { # name version
    local name="$1" version="$2"
    local dir="$ENV_DIR/$name" stamp="$ENV_DIR/.stamp-$name"
    local want="mcp==$version"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$dir/bin/python" ]]; then
        return 0
    fi
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$want" >"$ENV_DIR/$name-install.log" 2>&1 || {
        cat "$ENV_DIR/$name-install.log" >&2; echo "setup.sh: pip install $want failed" >&2; exit 1; }
    echo "$want" >"$stamp"
    echo "mcp-env: installed $name ($want) in $dir"
}

install_node() {
    local dir="$ENV_DIR/node" stamp="$ENV_DIR/.stamp-node"
    local want="$NPM_EVERYTHING $NPM_SDK"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -d "$dir/node_modules/@modelcontextprotocol/server-everything" ]]; then
        return 0
    fi
    command -v npm >/dev/null || { echo "setup.sh: npm not found" >&2; exit 1; }
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error $want >"$ENV_DIR/node-install.log" 2>&1 || {
        cat "$ENV_DIR/node-install.log" >&2; echo "setup.sh: npm install failed" >&2; exit 1; }
    echo "$want" >"$stamp"
    echo "mcp-env: installed node ($want) in $dir"
}

# `ip` (iproute2) for the network-namespace test.
install_iproute2() {
    command -v ip >/dev/null && return 0
    command -v apt-get >/dev/null || { echo "setup.sh: need iproute2 (ip)" >&2; exit 1; }
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2) >"$ENV_DIR/apt-install.log" 2>&1 || {
        cat "$ENV_DIR/apt-install.log" >&2; echo "setup.sh: apt-get install iproute2 failed" >&2; exit 1; }
    echo "mcp-env: installed iproute2"
}

# promtool (Debian package prometheus) for the recording-rule tests.
install_promtool() {
    command -v promtool >/dev/null && return 0
    command -v apt-get >/dev/null || { echo "setup.sh: need promtool (package prometheus)" >&2; exit 1; }
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >"$ENV_DIR/apt-prometheus.log" 2>&1 || {
        cat "$ENV_DIR/apt-prometheus.log" >&2; echo "setup.sh: apt-get install prometheus failed" >&2; exit 1; }
    echo "mcp-env: installed promtool"
}

# setpriv and unshare (util-linux) for the privilege tests.
install_setpriv() {
    command -v setpriv >/dev/null && command -v unshare >/dev/null && return 0
    command -v apt-get >/dev/null || { echo "setup.sh: need setpriv and unshare (util-linux)" >&2; exit 1; }
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux) >"$ENV_DIR/apt-util-linux.log" 2>&1 || {
        cat "$ENV_DIR/apt-util-linux.log" >&2; echo "setup.sh: apt-get install util-linux failed" >&2; exit 1; }
    echo "mcp-env: installed util-linux (setpriv, unshare)"
}

install_iproute2
install_promtool
install_setpriv
install_venv py2 "$PY_SDK2_VERSION"
install_venv py1 "$PY_SDK1_VERSION"
install_node
