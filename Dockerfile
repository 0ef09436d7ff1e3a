FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin patchgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/patchgate /usr/local/bin/patchgate
# A named volume mounted here starts with this directory's owner: the server's user.
RUN mkdir -p /data && chown 65534:65534 /data
USER 65534
ENTRYPOINT ["patchgate"]
CMD ["serve"]
