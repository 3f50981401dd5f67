# syntax=docker/dockerfile:1
# Static build → scratch image: one file, CA certificates, non-root user.
#   docker build -t ghcr.io/sidecar-dev/sidecar:0.2.0 \
#     --build-arg SIDECAR_GIT_COMMIT=$(git rev-parse --short=12 HEAD) .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config zlib1g-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore leaves out target/ and .git: the commit for --version comes in
# as a build argument (build.rs reads SIDECAR_GIT_COMMIT).
ARG SIDECAR_GIT_COMMIT=unknown
ARG SOURCE_DATE_EPOCH
COPY . .
# .cargo/config.toml links glibc and zlib statically (crt-static).
RUN cargo build --release --locked \
    && cp target/x86_64-unknown-linux-gnu/release/sidecar /sidecar \
    && /sidecar --version
# The CA bundle, and each certificate again under its hashed name: git-sync
# then reads, at a handshake, only the issuer a server names, not the bundle.
RUN scripts/ca-dir /ca

FROM scratch
COPY --from=build /sidecar /sidecar
COPY --from=build /ca/ /etc/ssl/certs/
# The HTTP clients (rustls-native-certs) read the bundle from here, git-sync the bundle and
# /etc/ssl/certs; point it elsewhere to use another CA.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# No /etc/passwd in the image: the numeric user is enough for every applet.
USER 65532:65532
ENTRYPOINT ["/sidecar"]
