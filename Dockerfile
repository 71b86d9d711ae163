# The shop's services in one image, built from source.
#   docker build -t coord-shop:dev .
# Stage 1 compiles every binary with the Rust toolchain image; stage 2 is a slim
# Debian runtime that runs them as a non-root user (with DejaVu Sans for the load
# tester's charts). compose.yaml builds this image
# when it is missing. Offline (no registry), scripts/images.sh builds the same image
# from binaries compiled on the host instead (docker/Dockerfile.prebuilt).
ARG RUST_IMAGE=rust:1.88-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && find target/release -maxdepth 1 -type f -perm -u+x -exec cp {} /out/ \;

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin shop
COPY --from=builder /out/ /usr/local/bin/
USER shop
ENV RUST_LOG=info
