# The ccpool service: a multi-stage Rust build, then a slim runtime image with the binary.
# ccpool reaches the Docker engine through the socket compose.yaml mounts; it starts its
# workers (images/worker) as sibling containers.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY tests/support tests/support
RUN cargo build --release --locked --bin ccpool

FROM ${BASE_IMAGE}
COPY --from=build /src/target/release/ccpool /usr/local/bin/ccpool
ENTRYPOINT ["ccpool"]
CMD ["serve", "--listen", "0.0.0.0:8787", "--allow-unauthenticated-network"]
