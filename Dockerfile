# Muninn container image: build with the official Rust image, run on Debian slim.
#   docker build -t muninn .
#   docker run -p 53:53/udp -p 53:53/tcp -p 9153:9153 -v $PWD/zones:/etc/muninn/zones:ro muninn
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin muninn

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends knot-dnsutils \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/muninn --create-home --shell /usr/sbin/nologin muninn
COPY --from=build /src/target/release/muninn /usr/local/bin/muninn
COPY config.toml /etc/muninn/config.toml
COPY zones /etc/muninn/zones
# Inside the container the metrics endpoint listens on all addresses (the [metrics] table is
# the last one in config.toml, so the uncommented key lands in it).
RUN sed -i 's|^# listen = "127.0.0.1:9153"|listen = "0.0.0.0:9153"|' /etc/muninn/config.toml \
    && muninn check-config /etc/muninn/config.toml
USER muninn
WORKDIR /var/lib/muninn
EXPOSE 53/udp 53/tcp 9153/tcp
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
    CMD kdig @127.0.0.1 -p 53 +time=2 +tries=1 example.test SOA | grep -q 'status: NOERROR' || exit 1
# DNS on all addresses, port 53 (Docker sets net.ipv4.ip_unprivileged_port_start=0 in
# containers, so the non-root user may bind it).
CMD ["muninn", "serve", "--config", "/etc/muninn/config.toml", "--data-dir", "/var/lib/muninn", \
     "--listen", "0.0.0.0:53", "--listen", "[::]:53"]
