#!/usr/bin/env bash
# make docker-test (issue 14): the Dockerfile and docker-compose.yml tried as a new user would
# try them, with Debian's docker.io daemon and docker-compose.
#
#  1. A Docker daemon: the running one, or one this script starts (and stops at the end).
#  2. The debian:12 base image: pulled if a registry answers, otherwise made here with
#     debootstrap (bookworm, from Debian's packages) and `docker import`. It is kept.
#  3. The image (docker build, once) and the compose cluster, under a project name of its
#     own; its HTTP ports are published on 127.0.0.1:4001-4003 and clients use only those.
#  4. The seed README session, then the election demo: SIGKILL the leader's container, write
#     through another node, start the container again and read the write back from it. Then
#     SIGKILL all three, start them, and read every write back (the WAL on each volume).
#  5. Everything it made is removed, even on failure: containers, network, volumes, the
#     image and the build stage's image.
#
# Root only. Environment: DOCKER, COMPOSE (the programs), DEBIAN_MIRROR (for debootstrap),
# DOCKER_TEST_DEADLINE (seconds each wait may take, 60).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-/usr/bin/docker}
COMPOSE=${COMPOSE:-/usr/bin/docker-compose}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEADLINE=${DOCKER_TEST_DEADLINE:-60}
BASE=debian:12
PROJECT=raftkv-docker-test
export RAFTKV_IMAGE=raftkv:docker-test # docker-compose.yml's image name
LOGS=$PWD/build/docker-test
PORTS=(4001 4002 4003)

say() { echo "docker-test: $*"; }
fail() {
  echo "docker-test: FAILED: $*" >&2
  exit 1
}
compose() { "$COMPOSE" -p "$PROJECT" -f docker-compose.yml "$@"; }

[[ $(id -u) -eq 0 ]] || fail "run as root: it starts containers and may run dockerd and debootstrap"
mkdir -p "$LOGS"
scripts/install-deps.sh --build-only --docker

# --- The daemon -----------------------------------------------------------------------------
dockerd_pid=
cleanup() {
  local rc=$?
  set +e
  if [[ $rc -ne 0 ]] && "$DOCKER" info >/dev/null 2>&1; then
    compose logs --no-color --tail 40 >"$LOGS/compose.log" 2>&1 &&
      say "the containers' last log lines are in $LOGS/compose.log"
  fi
  if "$DOCKER" info >/dev/null 2>&1; then
    say "removing the containers, network, volumes and images it made"
    compose down -v --rmi all --remove-orphans >>"$LOGS/down.log" 2>&1
    "$DOCKER" image prune -f --filter label=raftkv.stage=build >>"$LOGS/down.log" 2>&1
  fi
  if [[ -n $dockerd_pid ]]; then
    say "stopping the dockerd it started (pid $dockerd_pid)"
    kill "$dockerd_pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if [[ $rc -eq 0 ]]; then say "PASSED"; else say "exit $rc"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# poll SECONDS COMMAND...: runs COMMAND until it succeeds or SECONDS pass.
poll() {
  local until=$((SECONDS + $1))
  shift
  while ! "$@" >/dev/null 2>&1; do
    ((SECONDS < until)) || return 1
    sleep 0.2
  done
}

if ! "$DOCKER" info >/dev/null 2>&1; then
  if [[ -d /run/systemd/system ]]; then
    say "starting docker.service"
    systemctl start docker
  else
    say "no Docker daemon answers and systemd does not run here: starting dockerd (log: $LOGS/dockerd.log)"
    setsid dockerd >"$LOGS/dockerd.log" 2>&1 </dev/null &
    dockerd_pid=$!
  fi
  poll "$DEADLINE" "$DOCKER" info || fail "the Docker daemon did not answer within ${DEADLINE}s"
fi

# --- The base image -------------------------------------------------------------------------
if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  if timeout 60 "$DOCKER" pull "$BASE" >"$LOGS/pull.log" 2>&1; then
    say "pulled $BASE"
  else
    say "no registry gave $BASE ($(tail -1 "$LOGS/pull.log")); making it with debootstrap from $MIRROR"
    root=$(mktemp -d /var/tmp/raftkv-debootstrap.XXXXXX)
    trap 'rm -rf "$root"; cleanup' EXIT
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$LOGS/debootstrap.log" 2>&1 ||
      fail "debootstrap failed; see $LOGS/debootstrap.log"
    cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | "$DOCKER" import --change 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf "$root"
    trap cleanup EXIT
    say "made $BASE ($("$DOCKER" run --rm "$BASE" cat /etc/debian_version))"
  fi
fi

# --- The image and the cluster --------------------------------------------------------------
for p in "${PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    fail "127.0.0.1:$p is in use (a make run cluster?); the compose cluster publishes 4001-4003"
  fi
done
# One build for the three services (docker-compose build would build the same image once
# per service, and a source file edited meanwhile would make them differ).
say "building $RAFTKV_IMAGE (log: $LOGS/build.log)"
"$DOCKER" build -t "$RAFTKV_IMAGE" . >"$LOGS/build.log" 2>&1 ||
  fail "docker build failed; see $LOGS/build.log"
say "starting the compose cluster"
compose up -d --no-build >"$LOGS/up.log" 2>&1 || fail "docker-compose up failed; see $LOGS/up.log"

# Clients reach the nodes only through 127.0.0.1; the Raft ports are not published.
for i in 1 2 3; do
  published=$(compose port "node$i" "400$i")
  [[ $published == "127.0.0.1:400$i" ]] || fail "node$i's HTTP port is published on '$published'"
  [[ -z $(compose port "node$i" "700$i" 2>/dev/null) ]] || fail "node$i's Raft port is published"
done

# json FIELD.PATH: reads JSON on stdin and prints the field ("" when absent or null).
json() {
  python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$1"
}
has_leader() { [[ -n $(curl -fsS --max-time 2 "127.0.0.1:$1/status" | json leader.http) ]]; }
members_are() {
  [[ $(curl -fsS --max-time 2 "127.0.0.1:$1/status" |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["members"]))') == "$2" ]]
}
for p in "${PORTS[@]}"; do
  poll "$DEADLINE" has_leader "$p" || fail "127.0.0.1:$p has no leader after ${DEADLINE}s"
done
poll "$DEADLINE" members_are 4001 3 || fail "the cluster did not reach three members"
say "three nodes up; leader $(curl -fsS 127.0.0.1:4001/status | json leader.id)"

# expect PORT METHOD PATH BODY WANT: the request's answer must be WANT, byte for byte.
expect() {
  local got
  if [[ $2 == GET ]]; then
    got=$(curl -sS --max-time 5 "127.0.0.1:$1$3")
  else
    got=$(curl -sS --max-time 5 -X"$2" "127.0.0.1:$1$3" -d "$4")
  fi
  [[ $got == "$5" ]] || {
    echo "  $2 127.0.0.1:$1$3 answered '$got', want '$5'" >&2
    return 1
  }
  echo "  $2 127.0.0.1:$1$3 -> $got"
}
# eventually PORT PATH WANT: GET until the answer is WANT (and show it).
eventually() {
  poll "$DEADLINE" expect "$1" GET "$2" "" "$3"
  expect "$1" GET "$2" "" "$3"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

say "the README session"
expect 4001 GET /keys/some-key/ "" '{"value":""}' || fail "README session"
expect 4001 POST /keys/some-key/ '{"value": "some-value"}' '{"value":"some-value"}' ||
  fail "README session"
for p in 4002 4003; do eventually "$p" /keys/some-key/ '{"value":"some-value"}' || fail "replication"; done

say "the containers' health checks"
healthy() {
  [[ $("$DOCKER" inspect -f '{{.State.Health.Status}}' "$(compose ps -q "node$1")") == healthy ]]
}
for i in 1 2 3; do poll "$DEADLINE" healthy "$i" || fail "node$i's HEALTHCHECK is not healthy"; done

say "raftkvctl inside node1's container"
compose exec -T node1 raftkvctl --endpoints node1:4001,node2:4002,node3:4003 status ||
  fail "raftkvctl status"

say "the election demo"
leader_http=$(curl -fsS 127.0.0.1:4001/status | json leader.http) # nodeN:400N
leader=${leader_http%%:*}
leader_port=${leader_http##*:}
other=4001
[[ $leader_port == 4001 ]] && other=4002
say "SIGKILL $leader's container (the leader), then write through 127.0.0.1:$other"
killed_at=$(now_ms)
compose kill -s SIGKILL "$leader" >>"$LOGS/up.log" 2>&1
demo='{"value":"written while the leader was down"}'
poll "$DEADLINE" expect "$other" POST /keys/election-demo/ "$demo" "$demo" ||
  fail "no write through 127.0.0.1:$other within ${DEADLINE}s of the leader's death"
new_leader=$(curl -fsS "127.0.0.1:$other/status" | json leader.id)
say "write accepted $(($(now_ms) - killed_at)) ms after the kill; the new leader is $new_leader"
[[ -n $new_leader && $new_leader != "$leader" ]] || fail "the leader is still '$new_leader'"
expect "$other" POST /keys/election-demo/ "$demo" "$demo" >/dev/null
say "start $leader again and read the write back from it"
compose start "$leader" >>"$LOGS/up.log" 2>&1
eventually "$leader_port" /keys/election-demo/ "$demo" || fail "$leader did not catch up"
eventually "$leader_port" /keys/some-key/ '{"value":"some-value"}' || fail "$leader lost some-key"

say "SIGKILL all three, start them, and read every write back"
compose kill -s SIGKILL >>"$LOGS/up.log" 2>&1
compose start >>"$LOGS/up.log" 2>&1
for p in "${PORTS[@]}"; do
  eventually "$p" /keys/some-key/ '{"value":"some-value"}' || fail "127.0.0.1:$p after a restart"
  eventually "$p" /keys/election-demo/ "$demo" || fail "127.0.0.1:$p after a restart"
done
