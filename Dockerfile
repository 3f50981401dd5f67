# syntax=docker/dockerfile:1
# Static build → scratch image: one file, CA certificates, non-root user.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .cargo/config.toml links glibc, OpenSSL and zlib statically (crt-static).
RUN cargo build --release --locked \
    && cp target/x86_64-unknown-linux-gnu/release/sidecar /sidecar \
    && /sidecar --list

FROM scratch
COPY --from=build /sidecar /sidecar
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# OpenSSL (reqwest and libgit2) reads the bundle from here; point it elsewhere to use another CA.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# No /etc/passwd in the image: the numeric user is enough for every applet.
USER 65532:65532
ENTRYPOINT ["/sidecar"]
