#!/usr/bin/env bash
# The Debian package as a user gets it (issue 14): build it with CPack from this build
# tree, check its contents, extract it into a temporary root (dpkg-deb -x), run the
# installed binaries from there (a one-node cluster, a write and a read through the
# installed raftkvctl), and require that lintian reports no error. Every process started
# is stopped and the temporary root removed on every exit path.
# Usage: deb_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
work=$(mktemp -d /tmp/raftkv-deb.XXXXXX)
node_pid=
cleanup() {
  if [[ -n $node_pid ]]; then kill -9 "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

for tool in cpack dpkg-deb lintian; do
  command -v "$tool" >/dev/null || { echo "CANNOT RUN: $tool is missing (scripts/install-deps.sh)" >&2; exit 2; }
done

# 1. The package.
(cd "$work" && cpack --config "$build/CPackConfig.cmake" -B "$work/pkg" >"$work/cpack.log" 2>&1) ||
  { cat "$work/cpack.log" >&2; fail "cpack failed"; }
deb=$(ls "$work"/pkg/*.deb)
echo "package: $(basename "$deb") ($(stat -c %s "$deb") bytes)"
dpkg-deb --field "$deb" Package Version Architecture Depends Installed-Size
contents=$(dpkg-deb --contents "$deb" | awk '{print $NF}')
for f in ./usr/bin/raftkv ./usr/bin/raftkvctl ./usr/lib/systemd/system/raftkv@.service \
         ./usr/share/man/man1/raftkv.1.gz ./usr/share/man/man1/raftkvctl.1.gz \
         ./usr/share/doc/raftkv/copyright ./usr/share/doc/raftkv/changelog.gz \
         ./usr/share/doc/raftkv/examples/node.env; do
  grep -qxF "$f" <<<"$contents" || fail "the package lacks $f"
done
dpkg-deb --field "$deb" Depends | grep -q libboost-json || fail "Depends misses the Boost libraries"
echo "ok: contents and dependencies"

# 2. The installed binaries, run from the extracted root.
root="$work/root"
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/raftkv" --version | grep -q '^raftkv ' || fail "raftkv --version"
"$root/usr/bin/raftkvctl" --version >/dev/null || fail "raftkvctl --version"
"$root/usr/bin/raftkv" --help | grep -q -- '--ready-max-lag' || fail "raftkv --help"
zcat "$root/usr/share/man/man1/raftkv.1.gz" | grep -qF 'ready\-max\-lag' || fail "the man page"
read -r raft_port http_port < <(python3 -c '
import socket
ps = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ps.append(s)
print(*[s.getsockname()[1] for s in ps])')
"$root/usr/bin/raftkv" --id pkg1 --bind "127.0.0.1:$raft_port" --http "127.0.0.1:$http_port" \
  --datadir "$work/data" --bootstrap >"$work/node.log" 2>&1 &
node_pid=$!
ctl=("$root/usr/bin/raftkvctl" --endpoints "127.0.0.1:$http_port")
for i in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$http_port/ready" >/dev/null 2>&1; then break; fi
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.log" >&2; fail "the installed raftkv exited"; }
  [[ $i == 100 ]] && { cat "$work/node.log" >&2; fail "the installed raftkv never became ready"; }
  sleep 0.1
done
"${ctl[@]}" put pkg-key pkg-value >/dev/null || fail "raftkvctl put"
[[ $("${ctl[@]}" get pkg-key) == pkg-value ]] || fail "raftkvctl get"
"${ctl[@]}" status
echo "ok: the installed raftkv serves, the installed raftkvctl writes and reads"

# 3. lintian: no error (warnings and info are printed, not failed on).
lintian --info --fail-on error "$deb" | tee "$work/lintian.txt" || fail "lintian reports errors"
echo "ok: lintian: $(grep -c '^E:' "$work/lintian.txt" || true) errors, $(grep -c '^W:' "$work/lintian.txt" || true) warnings"
echo PASS
