#!/usr/bin/env bash
# Run every peer on both stores and collect JSON Lines in one file.
# Usage: benchmarks/peers/run_all.sh [OUT.jsonl] [extra peer args...]
# e.g.   benchmarks/peers/run_all.sh benchmarks/results/peers-latest.jsonl --runs 200 --rounds 3
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-benchmarks/results/peers-latest.jsonl}"
shift || true
py=benchmarks/.venv-peers/bin/python
pg_url="${PEERS_PG_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
mkdir -p "$(dirname "$out")"
: >"$out"
log="${out%.jsonl}.log"
: >"$log"
# The machine is shared (2 cores): wait (bounded) for other load to calm down
# before each script and log the load average, so noisy rows can be spotted.
wait_quiet() {
  python3 - <<'PY'
import time
def busy() -> float:
    def snap() -> tuple[int, int]:
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(f), f[3] + f[4]
    (t0, i0) = snap(); time.sleep(2); (t1, i1) = snap()
    return 1 - (i1 - i0) / max(1, t1 - t0)
deadline = time.time() + 300
while (b := busy()) > 0.15 and time.time() < deadline:
    pass
print(f"# cpu busy before start: {b:.0%}")
PY
}
for system in raw_floor langgraph_peer dbos_peer; do
  total=0
  for store in sqlite postgres; do
    wait_quiet >>"$log"
    echo "# ${system} ${store} start, load: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$log"
    start=$(date +%s)
    "$py" "benchmarks/peers/${system}.py" --store "$store" --pg-url "$pg_url" \
      --workdir benchmarks/.work "$@" >>"$out" 2>>"$log"
    took=$(( $(date +%s) - start ))
    total=$(( total + took ))
    echo "# ${system} ${store}: ${took}s, load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$log"
  done
  echo "# ${system}: ${total}s wall for both stores" | tee -a "$log" >&2
done
