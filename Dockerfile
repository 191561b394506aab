# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rustaxum
COPY --from=build /src/target/release/rustaxum /src/target/release/artisan /usr/local/bin/
USER rustaxum
ENV BROADCAST_HOST=0.0.0.0 \
    BROADCAST_APP_PORT=3000 \
    BROADCAST_WEBSOCKET_PORT=8080 \
    RUST_LOG=info
EXPOSE 3000 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${BROADCAST_WEBSOCKET_PORT}/health" || exit 1
CMD ["rustaxum"]
