# Builds every binary of the crate in release mode and ships them in a slim
# runtime image that runs as an unprivileged user.
#
#   docker build -t causal-grid .
#   docker build --build-arg RUST_IMAGE=rust:1.95.0-bookworm -t causal-grid .
#
# Base images are pinned by tag in ARGs so they can be overridden. The file
# needs nothing beyond the classic builder (no BuildKit-only syntax), so both
# `docker compose` v2 and `docker-compose` 1.29 can build it.

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /build
# The runtime image carries no debug info (see the strip below), so skip
# generating it: the crate's release profile asks for it for local profiling.
ENV CARGO_PROFILE_RELEASE_DEBUG=0

# Dependency layer: it depends on Cargo.toml and Cargo.lock only, so editing
# the sources does not rebuild the dependencies. The manifest's explicit
# [[bin]]/[[bench]]/[[test]]/[[example]] tables are dropped here because their
# source files are not in this layer yet; an empty library stands in for the
# crate itself.
COPY Cargo.toml Cargo.lock ./
RUN awk '/^\[\[(bin|bench|test|example)\]\]/ { skip = 1; next } /^\[/ { skip = 0 } !skip' \
        Cargo.toml > Cargo.deps.toml \
    && mv Cargo.deps.toml Cargo.toml \
    && mkdir -p src \
    && touch src/lib.rs \
    && cargo build --release --locked --lib \
    && rm -rf src

# The crate itself. COPY keeps the files' timestamps, which can be older than
# the stub above, so touch them to make cargo rebuild the crate for certain.
COPY . .
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bins \
    && mkdir -p /out \
    && find target/release -maxdepth 1 -type f -perm -u+x -exec cp {} /out/ \; \
    && if [ -z "$(ls /out)" ]; then echo 'no binaries were built' >&2; exit 1; fi
# Debug info stays in the build stage; symbol names stay for backtraces.
RUN strip --strip-debug /out/* && ls -l /out

FROM ${RUNTIME_IMAGE} AS runtime

# A fixed uid/gid so volume ownership is predictable across rebuilds.
RUN groupadd --system --gid 10001 grid \
    && useradd --system --uid 10001 --gid grid --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin grid \
    && mkdir -p /data \
    && chown grid:grid /data

COPY --from=builder /out/ /usr/local/bin/

# kv_node keeps its state here; a named volume mounted on it inherits the
# ownership above when it is first created.
ENV DATA_DIR=/data \
    RUST_LOG=info
WORKDIR /data
USER grid:grid

# kv_node 5000, charge_request 6000, load_balancer 7000, substation 8000.
EXPOSE 5000 6000 7000 8000
