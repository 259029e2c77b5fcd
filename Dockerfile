# syntax=docker/dockerfile:1
# Release image for adxexporter: a Rust binary on distroless/cc (glibc, CA certificates for Azure and
# Kusto TLS, no shell), running as the distroless non-root user 65532.
#
#   docker build -t <registry>/adxexporter:<tag> .
#
# Not built in CI: the CI machines have no Docker engine. tests/deploy_manifests.rs checks this file's
# invariants instead (multi-stage, --locked, non-root final user, the binary as ENTRYPOINT).
#
# The builder is pinned by tag, not digest (no registry access here to resolve one); pin
# rust:1.95-bookworm@sha256:... in your own pipeline for reproducible builds. The runtime must stay on
# Debian 12 (bookworm) to match the builder's glibc.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Cargo.toml names the benches, so cargo needs their files to read the manifest.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Cache mounts (BuildKit) keep the registry and target dir between builds; the binary is copied out
# of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin adxexporter \
 && install -D -m 0755 target/release/adxexporter /out/adxexporter \
 && strip /out/adxexporter

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="adxexporter" \
      org.opencontainers.image.description="Exports Kusto (Azure Data Explorer) query results as metrics"
COPY --from=build /out/adxexporter /usr/local/bin/adxexporter
# 65532 = distroless "nonroot"; the StatefulSet runs as it too (runAsUser/fsGroup 65532).
USER 65532:65532
# 8080: /metrics. 8081: /healthz and /readyz.
EXPOSE 8080 8081
# The WAL (--wal-dir); a persistent volume in Kubernetes.
VOLUME ["/var/lib/adxexporter"]
ENTRYPOINT ["/usr/local/bin/adxexporter"]
CMD ["run"]
