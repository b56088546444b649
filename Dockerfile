# tokend container image: build stage + small runtime stage, non-root.
#   docker build -t tokend .
#   docker run -p 8000:8000 -e TOKEND__JWT__SIGNING_KEY=... tokend
# SQLite by default (in the /var/lib/tokend volume); set DATABASE_URL to a
# postgres:// URL for PostgreSQL. No secret is baked into the image.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# libpq and SQLite are compiled in (bundled); OpenSSL comes from the system.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock diesel.toml ./
COPY src ./src
# Declared in Cargo.toml; not built here.
COPY benches ./benches
COPY migrations ./migrations
COPY config ./config
RUN cargo build --release --locked \
    && strip target/release/tokend

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/tokend --create-home tokend
COPY --from=build /src/target/release/tokend /usr/local/bin/tokend
COPY config /etc/tokend
# The names contain "TOKEN" (tokend's prefix), not secrets: no key is set here.
# hadolint ignore=DL3064
ENV TOKEND_CONFIG_DIR=/etc/tokend \
    TOKEND__SERVER__HOST=0.0.0.0 \
    PORT=8000 \
    TOKEND__DATABASE__URL=sqlite:///var/lib/tokend/tokend.sqlite3
USER 10001:10001
WORKDIR /var/lib/tokend
VOLUME ["/var/lib/tokend"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["tokend", "healthcheck"]
ENTRYPOINT ["tokend"]
CMD ["serve"]
