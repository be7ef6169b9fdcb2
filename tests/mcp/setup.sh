#!/usr/bin/env bash
# Idempotent installer for the MCP test harness environment.
# Creates $MCP_ENV_DIR (default: <repo>/tests/.mcp-env) with:
#   py2/  venv with mcp==2.3.0   (official Python SDK 2.x, MCPServer)
#   py1/  venv with mcp==1.30.0  (official Python SDK 1.x, FastMCP)
#   node/ npm prefix with @modelcontextprotocol/server-everything and sdk
#   otlp/ venv with opentelemetry-proto (the OTLP receiver of the trace tests)
#   k8s/  venv with kubernetes-validate (the Kubernetes API schemas the manifests are
#         checked against, offline)
# Quiet when everything is already installed (stamp file per component).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENV_DIR="${MCP_ENV_DIR:-$HERE/../.mcp-env}"
mkdir -p "$ENV_DIR"
ENV_DIR="$(cd "$ENV_DIR" && pwd)"

PY_SDK2_VERSION="2.3.0"
PY_SDK1_VERSION="1.30.0"
OTLP_PROTO_VERSION="1.45.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
NPM_EVERYTHING="@modelcontextprotocol/server-everything@2026.8.31"
NPM_SDK="@modelcontextprotocol/sdk@1.32.2"

PYTHON="${PYTHON:-python3}"

install_venv() { # name version [requirement]
    local name="$1" version="$2"
    local dir="$ENV_DIR/$name" stamp="$ENV_DIR/.stamp-$name"
    local want="${3:-mcp==$version}"
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

# Debian packages the root tests use, installed only when one of their commands is missing:
#   iproute2 (ip): the network-namespace test; prometheus (prometheus, promtool): the rules
#   and the end-to-end Prometheus test; prometheus-alertmanager (prometheus-alertmanager,
#   amtool): the paging test;
#   bpftool: the lifecycle tests; util-linux (setpriv, unshare): the privilege tests;
#   podman, runc: the container tests (podman's default runtime, crun, refuses this kind of
#   host's hybrid cgroups).
install_deb() { # package command...
    local pkg="$1" cmd missing=
    shift
    for cmd in "$@"; do command -v "$cmd" >/dev/null || missing=1; done
    [[ -z "$missing" ]] && return 0
    command -v apt-get >/dev/null || { echo "setup.sh: need $* (Debian package $pkg)" >&2; exit 1; }
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${NO_RECOMMENDS---no-install-recommends} "$pkg") >"$ENV_DIR/apt-$pkg.log" 2>&1 || {
        cat "$ENV_DIR/apt-$pkg.log" >&2; echo "setup.sh: apt-get install $pkg failed" >&2; exit 1; }
    echo "mcp-env: installed $pkg ($*)"
}

install_deb iproute2 ip
install_deb prometheus promtool prometheus
install_deb prometheus-alertmanager prometheus-alertmanager amtool
install_deb bpftool bpftool
install_deb util-linux setpriv unshare
# podman with its recommended packages (conmon, netavark, ...), as a user would have it.
NO_RECOMMENDS= install_deb podman podman
install_deb runc runc
install_venv py2 "$PY_SDK2_VERSION"
install_venv py1 "$PY_SDK1_VERSION"
install_venv otlp "$OTLP_PROTO_VERSION" "opentelemetry-proto==$OTLP_PROTO_VERSION"
install_venv k8s "$KUBERNETES_VALIDATE_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
install_node
