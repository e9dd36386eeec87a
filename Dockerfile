# The service image: `docker compose up --build` (docker-compose.yml) builds it once.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock, as tested.
RUN cargo build --release --locked --bin kokuho-ledger

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /data kokuho && mkdir -p /data && chown kokuho /data
COPY --from=build /src/target/release/kokuho-ledger /usr/local/bin/kokuho-ledger
USER kokuho
WORKDIR /data
EXPOSE 8080
ENTRYPOINT ["kokuho-ledger"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
