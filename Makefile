# The README's two commands: `make run` and `make test`.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)

.PHONY: all deps configure build test run sim asan clean format bench-wal bench nemesis install package docker-test

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	@if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	  cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE); \
	fi

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

# make install [PREFIX=/usr/local] [DESTDIR=/tmp/root]: raftkv, raftkvctl, their man pages,
# the systemd unit raftkv@.service and the docs (packaging/CMakeLists.txt).
PREFIX ?= /usr/local
install: build
	DESTDIR=$(DESTDIR) cmake --install $(BUILD_DIR) --prefix $(PREFIX)

# make package: the Debian package build/raftkv_<version>_<arch>.deb (CPack).
package: build
	cd $(BUILD_DIR) && cpack

# make docker-test (root; minutes; not part of make test): builds the Dockerfile's image,
# starts docker-compose.yml's cluster on 127.0.0.1:4001-4003, runs the README session and
# the election demo against it, and removes all it made (scripts/docker-test.sh). Makes the
# debian:12 base image with debootstrap when no registry gives one.
docker-test:
	scripts/docker-test.sh

# Long simulator campaign: make sim SEEDS=100000
SEEDS ?= 10000
sim: build
	$(BUILD_DIR)/tests/sim/raftkv-sim --seeds $(SEEDS)

# WAL group-commit benchmark (issue 3): appends/s and fsyncs/s with 1, 16, 256 writers.
bench-wal: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target wal_bench
	$(BUILD_DIR)/bench/wal_bench $(BENCH_ARGS)

# raftkv vs etcd (issue 5): a Release build of raftkv, a 3-node cluster of each on 127.0.0.1,
# the same wrk cells against both, a failover cell, a correctness check after every write
# cell; writes bench/results/latest.{md,png,json} (bench/README.md). RAFTKV_BIN=path skips
# the build; BENCH_SECONDS, BENCH_CONNS, BENCH_CELLS, BENCH_KILLS shorten a run.
bench:
	@scripts/install-deps.sh --bench
	@if [ -z "$(RAFTKV_BIN)" ]; then \
	  if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	    cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release || exit 1; \
	  fi; \
	  t=$$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' $(BUILD_DIR)/CMakeCache.txt); \
	  if [ "$$t" != Release ]; then \
	    echo "make bench: $(BUILD_DIR) is a '$$t' build, not Release; try BUILD_DIR=build-bench" >&2; \
	    exit 1; \
	  fi; \
	  cmake --build $(BUILD_DIR) -j $(JOBS) --target raftkv watch_load lease_load || exit 1; \
	fi
	BUILD_DIR=$(BUILD_DIR) RAFTKV_BIN=$(or $(RAFTKV_BIN),$(abspath $(BUILD_DIR))/src/raftkv) \
	  python3 bench/raftkv_vs_etcd.py

# Fault injection against real processes (issue 10, tests/nemesis/README.md): a cluster of
# NEMESIS_NODES (3 or 5) raftkv processes, clients reading and writing while nodes are
# killed, paused and partitioned (iptables) for NEMESIS_MINUTES, then a linearizability
# check and a table; exits non-zero on a violation. Root only. NEMESIS_ARGS="--seed N"
# replays a schedule.
NEMESIS_MINUTES ?= 3
NEMESIS_NODES ?= 3
nemesis: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target raftkv
	python3 tests/nemesis/nemesis.py --raftkv $(abspath $(BUILD_DIR))/src/raftkv \
	  --minutes $(NEMESIS_MINUTES) --nodes $(NEMESIS_NODES) \
	  --workdir $(abspath $(BUILD_DIR))/nemesis $(NEMESIS_ARGS)

asan:
	$(MAKE) test BUILD_DIR=build-asan BUILD_TYPE=Asan

# A 3-node cluster on 127.0.0.1 (HTTP 4001-4003, Raft 7001-7003) in the
# foreground; Ctrl-C stops it. scripts/cluster.sh stop/kill/start N from
# another terminal for the election demo.
run: build
	@RAFTKV_BIN=$(abspath $(BUILD_DIR))/src/raftkv RUN_DIR=$(abspath $(BUILD_DIR))/run scripts/cluster.sh run

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR) build-asan
