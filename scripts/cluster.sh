#!/usr/bin/env bash
# A local raftkv cluster on 127.0.0.1: node N serves HTTP on port 4000+N and
# Raft on 7000+N (node1: 4001/7001, node2: 4002/7002, node3: 4003/7003).
#
#   scripts/cluster.sh run        start the cluster in the foreground (this is `make run`);
#                                 each log line is prefixed with its node; Ctrl-C stops all
#   scripts/cluster.sh stop N     stop node N gracefully (SIGTERM); it stays down
#   scripts/cluster.sh kill N     kill node N with SIGKILL; it stays down
#   scripts/cluster.sh start N    start node N again (on its data directory); its log lines
#                                 appear in the `run` terminal
#   scripts/cluster.sh status     role, term and leader of every node
#   scripts/cluster.sh clean      delete the data directories (cluster stopped): the next
#                                 `run` founds a new, empty cluster
#
# The election demo, in a second terminal while `make run` runs:
#   scripts/cluster.sh status     # find the leader, say node1
#   scripts/cluster.sh kill 1     # the others elect a new leader (state=Leader ... in the log)
#   scripts/cluster.sh start 1    # node1 comes back as a follower and catches up
#
# Environment: NODES (default 3), RAFTKV_BIN (default build/src/raftkv),
# RUN_DIR (default build/run: pid files and data directories).
#
# Data directories are durable (the Raft log, fsynced) and kept between runs:
# a restarted node, or the whole cluster run again, resumes with its data.
# Use `clean` to start over.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODES=${NODES:-3}
BIN=${RAFTKV_BIN:-$ROOT/build/src/raftkv}
RUN_DIR=${RUN_DIR:-$ROOT/build/run}

usage() {
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

check_node() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && ((${1} >= 1 && ${1} <= NODES)) || {
    echo "cluster.sh: node must be 1..$NODES" >&2
    exit 2
  }
}

node_pid() {
  local f="$RUN_DIR/node$1.pid"
  [[ -f "$f" ]] && cat "$f"
}

# Runs node $1 until the cluster shuts down, restarting it whenever it is
# started again with `start` after a stop or kill.
supervise() {
  local i=$1 args rc pid
  # Ctrl-C reaches every process of the terminal's group: the nodes shut down
  # on it by themselves; the supervisors and the log prefixers must outlive
  # them to show their last lines.
  trap '' INT
  # Stop supervising if `run` itself is gone (killed without its trap).
  while [[ ! -e "$RUN_DIR/shutdown" ]] && kill -0 $$ 2> /dev/null; do
    if [[ -e "$RUN_DIR/node$i.down" ]]; then
      sleep 0.2
      continue
    fi
    args=(--bind "127.0.0.1:$((7000 + i))" --http "127.0.0.1:$((4000 + i))"
      --datadir "$RUN_DIR/data/node$i")
    # On a restart (existing data directory) raftkv ignores these.
    if ((i == 1)); then args+=(--bootstrap); else args+=(--join 127.0.0.1:4001); fi
    "$BIN" "${args[@]}" > >(trap '' INT TERM && exec sed -u "s/^/node$i | /") 2>&1 &
    pid=$!
    echo "$pid" > "$RUN_DIR/node$i.pid"
    rc=0
    wait "$pid" || rc=$?
    rm -f "$RUN_DIR/node$i.pid"
    sleep 0.3 # Let a Ctrl-C or a stop/kill command leave its marker first.
    if [[ ! -e "$RUN_DIR/shutdown" && ! -e "$RUN_DIR/node$i.down" ]]; then
      echo "node$i | exited with status $rc; start it again with: scripts/cluster.sh start $i"
      touch "$RUN_DIR/node$i.down"
    fi
  done
}

cmd_run() {
  [[ -x "$BIN" ]] || {
    echo "cluster.sh: $BIN not found; run 'make build' first" >&2
    exit 1
  }
  for i in $(seq 1 "$NODES"); do
    if pid=$(node_pid "$i") && kill -0 "$pid" 2> /dev/null; then
      echo "cluster.sh: node$i is already running (pid $pid); is another 'make run' active?" >&2
      exit 1
    fi
  done
  # Keep the data directories (the cluster resumes); drop the run markers.
  rm -f "$RUN_DIR"/node*.pid "$RUN_DIR"/node*.down "$RUN_DIR/shutdown"
  mkdir -p "$RUN_DIR/data"
  if [[ -n "$(ls -A "$RUN_DIR/data")" ]]; then
    echo "raftkv: resuming the cluster in $RUN_DIR/data ('scripts/cluster.sh clean' starts over)"
  fi
  echo "raftkv: starting $NODES nodes; HTTP on 127.0.0.1:4001-$((4000 + NODES)); Ctrl-C stops all"
  echo "raftkv: try   curl -XGET localhost:4001/keys/some-key/"
  echo "raftkv:       curl -XPOST localhost:4001/keys/some-key/ -d '{\"value\": \"some-value\"}'"
  local sups=()
  shutdown() {
    trap '' INT TERM
    touch "$RUN_DIR/shutdown"
    for i in $(seq 1 "$NODES"); do
      if pid=$(node_pid "$i"); then kill -TERM "$pid" 2> /dev/null || true; fi
    done
    wait "${sups[@]}" 2> /dev/null || true
    echo "raftkv: all nodes stopped"
    exit 0
  }
  trap shutdown INT TERM
  supervise 1 &
  sups+=($!)
  # The first node bootstraps; the others join it (they retry until it is up).
  for i in $(seq 2 "$NODES"); do
    supervise "$i" &
    sups+=($!)
  done
  wait "${sups[@]}" || true
}

cmd_stop_or_kill() {
  local sig=$1 i=$2 pid
  check_node "$i"
  touch "$RUN_DIR/node$i.down"
  if pid=$(node_pid "$i") && kill -0 "$pid" 2> /dev/null; then
    kill "-$sig" "$pid"
    echo "node$i (pid $pid): sent SIG$sig"
  else
    echo "node$i is not running"
  fi
}

cmd_start() {
  local i=$1
  check_node "$i"
  [[ -d "$RUN_DIR" && ! -e "$RUN_DIR/shutdown" ]] || {
    echo "cluster.sh: no cluster running (start one with 'make run')" >&2
    exit 1
  }
  rm -f "$RUN_DIR/node$i.down"
  echo "node$i: starting (its log appears in the 'make run' terminal)"
}

cmd_clean() {
  for i in $(seq 1 "$NODES"); do
    if pid=$(node_pid "$i") && kill -0 "$pid" 2> /dev/null; then
      echo "cluster.sh: node$i is running (pid $pid); stop the cluster first" >&2
      exit 1
    fi
  done
  rm -rf "$RUN_DIR/data"
  echo "cluster.sh: deleted $RUN_DIR/data; the next run starts a new cluster"
}

cmd_status() {
  for i in $(seq 1 "$NODES"); do
    local s
    if s=$(curl -s -m 1 "http://127.0.0.1:$((4000 + i))/status"); then
      local role term leader
      role=$(grep -o '"role":"[A-Za-z]*"' <<< "$s" | head -1 | cut -d'"' -f4)
      term=$(grep -o '"term":[0-9]*' <<< "$s" | head -1 | cut -d: -f2)
      leader=$(grep -o '"leader":{"id":"[^"]*"' <<< "$s" | cut -d'"' -f6)
      echo "node$i  role=$role term=$term leader=${leader:-none}"
    else
      echo "node$i  down"
    fi
  done
}

case "${1:-}" in
  run) cmd_run ;;
  stop) cmd_stop_or_kill TERM "${2:-}" ;;
  kill) cmd_stop_or_kill KILL "${2:-}" ;;
  start) cmd_start "${2:-}" ;;
  status) cmd_status ;;
  clean) cmd_clean ;;
  *) usage ;;
esac
