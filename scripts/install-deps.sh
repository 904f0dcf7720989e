#!/usr/bin/env bash
# Installs, with apt-get, the Debian 12 packages raftkv needs to build, test and run.
# Idempotent: packages already installed are left alone, and apt-get runs only when
# something is missing. No third-party source is downloaded or vendored.
set -euo pipefail

# What building the two programs needs (the Dockerfile's build stage: --build-only).
build_packages=(
  build-essential
  cmake
  ninja-build
  pkg-config
  libboost1.81-dev
  libboost-json1.81-dev
  libboost-program-options1.81-dev
  libxxhash-dev
  libspdlog-dev
  libjemalloc-dev
)

# Test dependencies and tools (make test, make run).
packages=(
  "${build_packages[@]}"
  ccache
  googletest
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  curl
  # tests/nemesis: its scripts, and the partitions between nodes (ctest runs it).
  python3
  iptables
  # tests/browser: a browser's EventSource on a watch (headless, through chromedriver).
  chromium
  chromium-driver
  # tests/ops: promtool checks /metrics, and a Prometheus server scrapes a cluster.
  prometheus
  # make package: man pages from --help, and the Debian package checked by lintian.
  help2man
  lintian
)

# Extra tools for `make bench` only (pass --bench), for scripts/sim-coverage.sh only
# (pass --coverage: lcov reads gcc's gcov data), and for make docker-test (pass --docker).
# --build-only installs just the build list above (cmake -DRAFTKV_TESTS=OFF builds with it).
for flag in "$@"; do
  [[ $flag == --build-only ]] && packages=("${build_packages[@]}")
done
for flag in "$@"; do
  case "$flag" in
    --build-only) ;;
    --bench) packages+=(wrk etcd-server etcd-client gnuplot-nox python3) ;;
    --coverage) packages+=(lcov) ;;
    # make docker-test only: Debian's Docker daemon and compose, and debootstrap for a
    # debian:12 base image made locally (no image registry is reachable).
    --docker) packages+=(docker.io docker-compose debootstrap) ;;
    *) echo "install-deps: unknown flag $flag (--build-only, --bench, --coverage, --docker)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Debian's prometheus package enables a system-wide server on :9090 where systemd runs.
# The tests start their own on a free port: stop the one this script just brought in.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null &&
   [[ -d /run/systemd/system ]]; then
  $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
