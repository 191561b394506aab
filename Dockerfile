# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root
# user in /var/lib/rustaxum (a volume: EmitHub's database and backups live in ./data).
#
#   docker build -t rustaxum .
#   docker run -d --name rustaxum -p 3000:3000 -p 8080:8080 -p 8081:8081 \
#     -e BROADCAST_API_TOKEN=$(openssl rand -hex 32) -v rustaxum-data:/var/lib/rustaxum rustaxum
#
# It listens on 0.0.0.0, so it needs BROADCAST_API_TOKEN (16+ characters; it refuses to
# start without one, naming that variable). Add JWT_SECRET, PUSHER_APP_* and the rest
# as environment variables (docs/configuration.md), or mount a Laravel .env at
# /var/lib/rustaxum/.env.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/rustaxum --shell /usr/sbin/nologin rustaxum \
    && mkdir -p /var/lib/rustaxum/data \
    && chown -R rustaxum:rustaxum /var/lib/rustaxum
COPY --from=build /src/target/release/rustaxum /src/target/release/artisan /usr/local/bin/
WORKDIR /var/lib/rustaxum
VOLUME ["/var/lib/rustaxum"]
USER rustaxum
ENV BROADCAST_HOST=0.0.0.0 \
    BROADCAST_APP_PORT=3000 \
    BROADCAST_WEBSOCKET_PORT=8080 \
    BROADCAST_RTC_PORT=8081 \
    RUST_LOG=info
EXPOSE 3000 8080 8081
STOPSIGNAL SIGTERM
# The binary is its own probe: it reads the same configuration, so it asks the port the
# server listens on, over https:// when BROADCAST_TLS_CERT is set (no curl in the image).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["rustaxum", "health"]
CMD ["rustaxum"]
