# raftkv in a container (Debian 12). Build: docker build -t raftkv .
# Run a 3-node cluster on ports 4001-4003: docker compose up (docker-compose.yml).
#
# The process reads its settings from the environment (BIND, HTTP, DATA_DIR,
# BOOTSTRAP, JOIN, ID) or from flags; see `docker run --rm raftkv --help`.

FROM debian:12 AS build
WORKDIR /src
# The same packages as a developer machine (scripts/install-deps.sh is the list).
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY CMakeLists.txt ./
COPY src src
COPY tests tests
COPY bench bench
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    && cmake --build build --target raftkv \
    && strip -o /raftkv build/src/raftkv

FROM debian:12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       libboost-json1.81.0 libboost-program-options1.81.0 libspdlog1.10 libfmt9 libxxhash0 \
       libjemalloc2 curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /raftkv /usr/local/bin/raftkv
ENV DATA_DIR=/data
VOLUME /data
EXPOSE 4001 7001
HEALTHCHECK --interval=5s --timeout=2s CMD curl -fsS "http://${HTTP:-127.0.0.1:4001}/health" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/raftkv"]
