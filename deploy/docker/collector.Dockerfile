# syntax=docker/dockerfile:1
# The Tapline collector image. Build from the repository root:
#   docker build -f deploy/docker/collector.Dockerfile -t tapline/collector:0.1.0 .
# CI cannot build images (no container engine on its machines): build where one runs.

# --- build -------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
# No system library: the collector does not link libpcap (only the agent does), SQLite
# is compiled in (rusqlite "bundled") and TLS is rustls.
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tapline-collector \
 && install -D -m 0755 target/release/tapline-collector /out/tapline-collector

# --- runtime -----------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: the webhook export over HTTPS. The binary links only libc and libgcc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/tapline
COPY --from=build /out/tapline-collector /usr/local/bin/tapline-collector
# Non-root: the collector needs no capability (its ports are above 1024).
USER 65532:65532
VOLUME ["/var/lib/tapline"]
# 4780: agents (mutual TLS); 9109: /metrics; 9110: the HTTP API.
EXPOSE 4780 9109 9110
ENTRYPOINT ["/usr/local/bin/tapline-collector"]
CMD ["serve", "--data", "/var/lib/tapline"]
