# syntax=docker/dockerfile:1
#
# The blueshift image: built in a Rust image, run from a small Debian one as a non-root user.
#
#   docker build --build-arg BLUESHIFT_COMMIT=$(git rev-parse --short=12 HEAD) -t blueshift .
#   docker run --rm blueshift --version
#
# The runtime image holds the binary and CA certificates only; settings come from a mounted
# file (--config, default /etc/blueshift/blueshift.toml), BLUESHIFT_* variables and password
# files (docker secrets). Metrics, /healthz and /readyz on port 9187 when metrics_addr says so.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# .git is not sent to the build: the commit comes as an argument (`--version`, build_info).
ARG BLUESHIFT_COMMIT=unknown
ENV BLUESHIFT_COMMIT=${BLUESHIFT_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p blueshift \
    && install -m 0755 target/release/blueshift /usr/local/bin/blueshift

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /nonexistent \
        --shell /usr/sbin/nologin blueshift
COPY --from=build /usr/local/bin/blueshift /usr/local/bin/blueshift
USER 10001:10001
# Spill files of large transactions go to the system temp folder unless spill_dir says else.
WORKDIR /tmp
EXPOSE 9187
ENTRYPOINT ["blueshift"]
CMD ["sync", "--config", "/etc/blueshift/blueshift.toml"]
