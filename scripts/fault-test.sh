#!/usr/bin/env bash
# Runs the randomized fault test of test/cluster/linearizability.test.ts for longer than the
# ~30 s of the normal test run, with a chosen seed, to soak the cluster under crashes, pauses,
# partitions, one-way cuts and slow links, then check the history for linearizability.
#
#   scripts/fault-test.sh [seed] [seconds] [runs]
#
#   seed      FAULT_SEED for the nemesis and the clients (default: random; always printed, so a
#             failing run can be replayed; timing still varies between runs, so a replay makes
#             the same fault decisions but may not hit the same interleaving)
#   seconds   FAULT_SECONDS of faults and client traffic (default 300)
#   runs      how many runs, with seeds seed, seed+1, ... (default 1); stops at the first failure
#
# Examples:
#   scripts/fault-test.sh 7 300          # the same as FAULT_SEED=7 FAULT_SECONDS=300 bun test ... -t randomized
#   scripts/fault-test.sh "" 60 20       # 20 one-minute runs from a random seed
#
# It rebuilds build/dev first (the test runs the compiled svr/clt). On a shared machine, hold
# the cluster-test lock so that no other cluster test runs at the same time:
#   flock /tmp/raftkv-cluster.lock scripts/fault-test.sh 7 300
set -euo pipefail
cd "$(dirname "$0")/.."

seed="${1:-${FAULT_SEED:-}}"
seconds="${2:-${FAULT_SECONDS:-300}}"
runs="${3:-1}"
[ -n "$seed" ] || seed=$((RANDOM * 32768 + RANDOM))
for value in "$seed" "$seconds" "$runs"; do
  [[ "$value" =~ ^[0-9]+$ ]] || { echo "fault-test: seed, seconds and runs must be whole numbers, got '$value'" >&2; exit 1; }
done

bun run build.ts >/dev/null

# The test sets its own timeout from FAULT_SECONDS; --timeout only has to be no shorter.
timeout_ms=$(((seconds + 120) * 1000))
for ((run = 0; run < runs; run++)); do
  this_seed=$((seed + run))
  echo "fault-test: run $((run + 1))/$runs, FAULT_SEED=$this_seed FAULT_SECONDS=$seconds"
  if ! FAULT_SEED="$this_seed" FAULT_SECONDS="$seconds" \
    bun test test/cluster/linearizability.test.ts -t randomized --timeout "$timeout_ms"; then
    echo "fault-test: FAILED with FAULT_SEED=$this_seed FAULT_SECONDS=$seconds" >&2
    exit 1
  fi
done
echo "fault-test: $runs run(s) passed, seeds $seed..$((seed + runs - 1)), $seconds s each"
