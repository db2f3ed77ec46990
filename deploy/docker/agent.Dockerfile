# syntax=docker/dockerfile:1
# The Tapline agent image. Build from the repository root:
#   docker build -f deploy/docker/agent.Dockerfile -t tapline/agent:0.1.0 .
# CI cannot build images (no container engine on its machines): build where one runs.

# --- build -------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
# libpcap-dev, pkg-config: the libpcap capture source (the `pcap` crate links libpcap).
# The eBPF programs (ebpf/, compiled by the agent's build.rs through aya-build) need a
# nightly toolchain with rust-src and bpf-linker built against the same LLVM major as
# that nightly's rustc (LLVM 22 for nightly 1.97): llvm-22-dev from Debian. Pin the
# nightly date (NIGHTLY) so rustc's LLVM and bpf-linker's stay equal.
ARG NIGHTLY=nightly
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcap-dev pkg-config llvm-22-dev \
 && rm -rf /var/lib/apt/lists/*
RUN rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src \
 && LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker@0.13.0 --locked \
      --no-default-features --features llvm-22
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tapline-agent \
 && install -D -m 0755 target/release/tapline-agent /out/tapline-agent

# --- runtime -----------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcap0.8 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/tapline-agent /usr/local/bin/tapline-agent
# Runs as root inside the container: capture needs capabilities (BPF, NET_ADMIN,
# PERFMON, NET_RAW, SYS_PTRACE) that Kubernetes grants to uid 0 only. The DaemonSet drops
# every other capability, forbids privilege escalation and mounts the root read-only
# (deploy/kubernetes/agent-daemonset.yaml).
USER 0:0
EXPOSE 9108
ENTRYPOINT ["/usr/local/bin/tapline-agent"]
CMD ["--help"]
