#!/usr/bin/env bash
# Starts a local 3-server raftkv cluster from build/dev (run `bun run build.ts` first, or use
# `bun run cluster`, which does), finds the leader, writes and reads a key, then keeps the
# cluster running until Ctrl-C.  With --exit it stops after the demonstration.
#
#   RAFT_PORTS   Raft ports of the servers   (default 7001,7002,7003)
#   CLIENT_PORTS client ports of the servers (default 8001,8002,8003)
#   DATA_ROOT    working directory for the servers' data (default ./local-cluster)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/build/dev"
RAFT_PORTS="${RAFT_PORTS:-7001,7002,7003}"
CLIENT_PORTS="${CLIENT_PORTS:-8001,8002,8003}"
DATA_ROOT="${DATA_ROOT:-$PWD/local-cluster}"
IFS=, read -r -a clients <<<"$CLIENT_PORTS"

[ -x "$BIN/svr" ] && [ -x "$BIN/clt" ] || { echo "build/dev/svr or clt missing: run 'bun run build.ts'" >&2; exit 1; }
mkdir -p "$DATA_ROOT"

pids=()
stop() {
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null && wait "${pids[@]}" 2>/dev/null
  pids=()
}
trap stop EXIT
trap 'echo; echo "stopping the cluster"; exit 0' INT TERM

for id in "${!clients[@]}"; do
  (cd "$DATA_ROOT" && exec "$BIN/svr" -r "$RAFT_PORTS" -i "$id" -p "${clients[$id]}" --log-level info \
    2>>"$DATA_ROOT/server-$id.log") &
  pids+=($!)
done
# A server that cannot start (port taken, data directory in use by a cluster already running)
# exits at once: say so instead of carrying on against whatever else answers on those ports.
sleep 0.5
for id in "${!pids[@]}"; do
  if ! kill -0 "${pids[$id]}" 2>/dev/null; then
    echo "server $id did not start:" >&2
    tail -n 3 "$DATA_ROOT/server-$id.log" >&2
    exit 1
  fi
done
echo "started ${#clients[@]} servers, pids ${pids[*]} (logs and data in $DATA_ROOT)"

# Scripts find the leader with a GET of a missing key: the leader exits 3, followers exit 2.
leader=""
for _ in $(seq 1 100); do
  for port in "${clients[@]}"; do
    code=0; "$BIN/clt" -p "$port" -o GET -k no-such-key >/dev/null 2>&1 || code=$?
    if [ "$code" = 3 ]; then leader=$port; break 2; fi
  done
  sleep 0.1
done
[ -n "$leader" ] || { echo "no leader elected within 10 s; see $DATA_ROOT/server-*.log" >&2; exit 1; }
echo "leader: client port $leader"

set -x
"$BIN/clt" -p "$leader" -o PUT -k greeting -v "hello, raft"
"$BIN/clt" -p "$leader" -o GET -k greeting
"$BIN/clt" -p "${clients[0]}" -o DIRECT_GET -k greeting
"$BIN/clt" -s "$CLIENT_PORTS" -o PUT -k counter -v 1
"$BIN/clt" -s "$CLIENT_PORTS" -o GET -k counter
{ set +x; } 2>/dev/null

if [ "${1:-}" = "--exit" ]; then exit 0; fi
cat <<MSG

The cluster is running. In another terminal, for example:
  $BIN/clt -p $leader -o PUT -k mykey -v myvalue
  $BIN/clt -p $leader -o GET -k mykey
  $BIN/clt -s $CLIENT_PORTS -o GET -k mykey     # finds the leader by itself
Kill the leader (kill <pid>; pids ${pids[*]} are servers 0..${#pids[@]}-1) and watch another
take over. Ctrl-C stops the cluster.
MSG
wait
