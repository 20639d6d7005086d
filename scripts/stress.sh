#!/usr/bin/env bash
# `make test-stress`: the whole suite (`make test`) while two busy-loop processes hog the CPUs, one
# pinned to each of the first two cores, at the suite's own priority. A test that only passes on a
# quiet machine fails here instead of in CI. STRESS_LOOPS changes the number of loops (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

loops=${STRESS_LOOPS:-2}
cores=$(nproc)
pids=()
stop_loops() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop_loops EXIT

for ((i = 0; i < loops; i++)); do
  if command -v taskset >/dev/null; then
    taskset -c $((i % cores)) python3 -c 'while True: pass' &
  else
    python3 -c 'while True: pass' &
  fi
  pids+=($!)
done
echo "stress: ${loops} busy loop(s) running (pids ${pids[*]}) beside the suite"
start=$(date +%s)
status=0
make test || status=$?
echo "stress: make test exited ${status} after $(( $(date +%s) - start )) s under ${loops} busy loop(s)"
exit "$status"
