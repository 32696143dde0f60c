# limpet's container image: built from Debian 12 packages, run as a user of its own.
#
#   docker build -t limpet .
#   docker run -p 8080:8080 -p 127.0.0.1:9090:9090 -v ./limpet.toml:/etc/limpet/limpet.toml:ro limpet
#
# The image's config (conf/docker/limpet.toml) listens on 0.0.0.0:8080 with ready_path
# /limpet-ready and serves /metrics on 0.0.0.0:9090; mount your own over it. The package lists
# below are checked against scripts/install-deps.sh, meson.build and the binary's shared
# libraries by tests/integration/test_packaging.py: change them together.

# --- stage 1: build ------------------------------------------------------------------------
FROM debian:12 AS build
# The build part of scripts/install-deps.sh, without what only the tests, benchmarks and fuzz
# targets need (g++ comes with build-essential).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential meson ninja-build pkg-config cmake \
      libuv1-dev libssl-dev libtoml11-dev node-llhttp libxxhash-dev \
      libhiredis-dev libsystemd-dev libc-ares-dev libnghttp2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN meson setup /build --prefix=/usr --buildtype=release -Dtests=false -Dbenchmarks=false \
 && ninja -C /build \
 && meson install -C /build --destdir /staging \
 && /staging/usr/sbin/limpet -v

# --- stage 2: run --------------------------------------------------------------------------
FROM debian:12-slim
# Only the shared libraries the binary links (toml11 is header-only, llhttp is compiled in;
# libstdc++6, libgcc-s1 and libc6 are in the base image). libsystemd0 is in the base image too;
# limpet calls sd_notify only under a systemd that asks for it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libuv1 libssl3 libxxhash0 libhiredis0.14 libsystemd0 libc-ares2 libnghttp2-14 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid, so a mounted config or certificate can be made readable to it.
RUN groupadd --system --gid 10001 limpet \
 && useradd --system --uid 10001 --gid limpet --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin limpet
COPY --from=build /staging/usr/sbin/limpet /usr/sbin/limpet
COPY conf/docker/limpet.toml /etc/limpet/limpet.toml
COPY conf/docker/limpet-healthcheck /usr/local/bin/limpet-healthcheck
# The image's config must pass its own check at build time, not at the first `docker run`.
RUN limpet -t -c /etc/limpet/limpet.toml
USER limpet
# 8080: the listener; 9090: the admin listener (/metrics, /status).
EXPOSE 8080 9090
# SIGQUIT is limpet's graceful stop (in-flight requests finish, WebSockets get a Close 1001
# spread over close_spread, exit within shutdown_timeout); Docker's default SIGTERM is the fast
# one. conf/docker/limpet.toml keeps shutdown_timeout under `docker stop`'s 10 s.
STOPSIGNAL SIGQUIT
# limpet's own readiness probe on the listener (ready_path): 200 while it serves, 503 once a stop
# begins. Set LIMPET_HEALTH_PORT / LIMPET_HEALTH_PATH when your config's listener differs.
ENV LIMPET_HEALTH_PORT=8080 LIMPET_HEALTH_PATH=/limpet-ready
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["/usr/local/bin/limpet-healthcheck"]
ENTRYPOINT ["limpet"]
CMD ["-c", "/etc/limpet/limpet.toml"]
