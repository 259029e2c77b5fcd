# Release image: a static-ish Rust binary on distroless/cc (glibc + CA certificates for Azure TLS).
# Build: docker build -t adxexporter .   (not built in CI here: the CI machines have no Docker engine)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin adxexporter && strip target/release/adxexporter

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/adxexporter /usr/local/bin/adxexporter
USER nonroot
# 8080 /metrics, 8081 /healthz and /readyz
EXPOSE 8080 8081
VOLUME ["/var/lib/adxexporter"]
ENTRYPOINT ["/usr/local/bin/adxexporter"]
CMD ["run"]
