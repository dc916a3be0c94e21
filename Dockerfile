# syntax=docker/dockerfile:1
# The one fanout image: fanout-operator, fanout-ingest and fanout-worker in
# /usr/local/bin. The operator runs from it and starts every route's ingest
# and worker pods from the same image (FANOUT_IMAGE).
#
#   docker build -t registry.example.com/fanout:0.1.0 .
#
# Build stage: release binaries of the three crates, from Cargo.lock as
# committed (--locked). The cache mounts only speed up rebuilds.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p fanout-operator -p fanout-ingest -p fanout-worker \
    && mkdir -p /out \
    && cp target/release/fanout-operator target/release/fanout-ingest target/release/fanout-worker /out/

# Final stage: glibc and CA certificates (for https destinations), no shell,
# no package manager; runs as the distroless "nonroot" user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080
# The pods name their binary (command: fanout-operator | fanout-ingest |
# fanout-worker); without one the container runs the operator.
ENTRYPOINT ["/usr/local/bin/fanout-operator"]
CMD ["run"]
