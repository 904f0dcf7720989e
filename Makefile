# The README's two commands: `make run` and `make test`.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)

.PHONY: all deps configure build test run sim asan clean format bench-wal

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

# Long simulator campaign: make sim SEEDS=100000
SEEDS ?= 10000
sim: build
	$(BUILD_DIR)/tests/sim/raftkv-sim --seeds $(SEEDS)

# WAL group-commit benchmark (issue 3): appends/s and fsyncs/s with 1, 16, 256 writers.
bench-wal: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target wal_bench
	$(BUILD_DIR)/bench/wal_bench $(BENCH_ARGS)

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
