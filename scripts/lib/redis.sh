# Shared by the benchmark scripts (sourced): free ports and throwaway Redis deployments on
# loopback. Callers keep `pids` (killed on exit, last first) and read `redis_pids`.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts one redis-server; sets RPORT.
start_redis() {
  RPORT=$(free_port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  pids+=($!)
  redis_pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$RPORT" PING >/dev/null 2>&1 && break; sleep 0.1; done
}

# Starts a Redis Cluster of three masters (each needs its port + 10000 free for the
# cluster bus); sets CLUSTER_PORTS and CLUSTER_NODES (comma-separated host:port).
start_redis_cluster() {
  local rdir p nodes=()
  rdir=$(mktemp -d)
  CLUSTER_PORTS=()
  while [ ${#CLUSTER_PORTS[@]} -lt 3 ]; do
    p=$(free_port)
    [ "$p" -lt 55000 ] || continue
    python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',$p+10000))" 2>/dev/null || continue
    redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$rdir" \
      --cluster-enabled yes --cluster-config-file "nodes-$p.conf" >/dev/null &
    pids+=($!)
    redis_pids+=($!)
    CLUSTER_PORTS+=("$p")
    nodes+=("127.0.0.1:$p")
  done
  for p in "${CLUSTER_PORTS[@]}"; do
    for _ in $(seq 100); do redis-cli -p "$p" PING >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  for p in "${CLUSTER_PORTS[@]}"; do
    for _ in $(seq 200); do redis-cli -p "$p" CLUSTER INFO | grep -q cluster_state:ok && break; sleep 0.1; done
  done
  CLUSTER_NODES=$(IFS=,; echo "${nodes[*]}")
}

# CPU time (clock ticks) the Redis processes used so far.
redis_cpu_ticks() {
  local t=0 p
  for p in "${redis_pids[@]}"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

# Kills what was started, the last first (servers before Redis).
cleanup() { for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done; wait 2>/dev/null || true; }

# Waits until the servers on the given ports answer /ready.
wait_ready() {
  local p
  for p in "$@"; do
    for _ in $(seq 100); do curl -sf ${CURL_CA:+--cacert "$CURL_CA"} "${SCHEME:-http}://127.0.0.1:$p/ready" >/dev/null && break; sleep 0.1; done
  done
}
