# raftkv in a container (Debian 12). Build: docker build -t raftkv .
# Run a 3-node cluster on 127.0.0.1:4001-4003: docker-compose up (docker-compose.yml).
# make docker-test builds this image, runs the compose cluster through the README session
# and the election demo, and removes it all (scripts/docker-test.sh). Where no registry is
# reachable, it makes the debian:12 base image with debootstrap first.
#
# The process reads its settings from the environment (BIND, HTTP, DATA_DIR,
# BOOTSTRAP, JOIN, ID) or from flags; see `docker run --rm raftkv --help`.

FROM debian:12 AS build
LABEL raftkv.stage=build
WORKDIR /src
# Only what building the two programs needs (scripts/install-deps.sh is the list).
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh --build-only && rm -rf /var/lib/apt/lists/*
COPY CMakeLists.txt ./
COPY src src
COPY packaging packaging
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DRAFTKV_TESTS=OFF \
    && cmake --build build --target raftkv raftkvctl \
    && strip -o /raftkv build/src/raftkv \
    && strip -o /raftkvctl build/src/ctl/raftkvctl

FROM debian:12
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       libboost-json1.81.0 libboost-program-options1.81.0 libspdlog1.10 libfmt9 libxxhash0 \
       libjemalloc2 curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /raftkv /raftkvctl /usr/local/bin/
ENV DATA_DIR=/data
VOLUME /data
EXPOSE 4001 7001
HEALTHCHECK --interval=5s --timeout=2s CMD curl -fsS "http://${HTTP:-127.0.0.1:4001}/health" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/raftkv"]
