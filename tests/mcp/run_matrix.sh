#!/usr/bin/env bash
# Run every client/server/scenario combination through tee_proxy.py and print
# the observed wire counts. Usage: run_matrix.sh [OUTDIR]  (default /tmp/mcp-matrix)
# Filter with COMBOS="py2auto-py2 ..." and SCENARIOS="basic ..." env vars.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/setup.sh"
E="$(cd "${MCP_ENV_DIR:-$HERE/../.mcp-env}" && pwd)"
OUT="${1:-/tmp/mcp-matrix}"
mkdir -p "$OUT"
PY1="$E/py1/bin/python"; PY2="$E/py2/bin/python"
EVERYTHING=(node "$E/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js" stdio)

declare -A CLIENT=(
  [py2auto]="$PY2 $HERE/client.py --mode auto"
  [py2legacy]="$PY2 $HERE/client.py --mode legacy"
  [py2stateless]="$PY2 $HERE/client.py --mode stateless"
  [py1]="$PY1 $HERE/client.py"
)
server_cmd() {
  case "$1" in
    py2) echo "$PY2 $HERE/py2_server.py" ;;
    py1) echo "$PY1 $HERE/py1_server.py" ;;
    everything) echo "${EVERYTHING[*]}" ;;
  esac
}
COMBOS="${COMBOS:-py2auto-py2 py2legacy-py2 py2stateless-py2 py1-py1 py2auto-py1 py2legacy-py1 py1-py2 py2auto-everything py2legacy-everything py1-everything}"
fail=0
for combo in $COMBOS; do
  c="${combo%%-*}"; s="${combo#*-}"
  if [[ "$s" == everything ]]; then scs="${SCENARIOS:-everything-basic}"; else scs="${SCENARIOS:-basic unknown-method big slow cancel timeout}"; fi
  for sc in $scs; do
    log="$OUT/$combo-$sc.log"; rm -f "$log"
    res=$(timeout 120 ${CLIENT[$c]} --scenario "$sc" -- python3 "$HERE/tee_proxy.py" "$log" --max-line 1500 -- $(server_cmd "$s") 2>"$OUT/$combo-$sc.stderr")
    rc=$?
    echo "$res" >"$OUT/$combo-$sc.json"
    echo "=== $combo $sc rc=$rc"
    [[ $rc == 0 ]] || { fail=1; echo "$res" | head -c 2000; echo; }
    python3 "$HERE/wire_count.py" "$log" | sed 's/^/    /'
  done
done
exit $fail
