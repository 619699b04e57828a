# syntax=docker/dockerfile:1
# zonefwd container image: a static-ish Rust binary on a slim Debian base, running as
# a non-root user that can bind port 53 through a file capability only.
#
#   docker build -t zonefwd .
#   docker run --rm -p 53:53/udp -p 53:53/tcp \
#     -v $PWD/zonefwd.toml:/etc/zonefwd/zonefwd.toml:ro zonefwd

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Everything the manifest names: the library and binary, the bench target it declares,
# the preset catalogue src/presets.rs embeds, and the reference configuration
# zonefwd.toml(5) is made from (src/main.rs embeds it). .ci/image-build-check.sh builds
# from exactly these lines.
COPY Cargo.toml Cargo.lock build.rs ./
# The allocator's lazy arena commit, compiled in (the ENV below covers builds without it).
COPY .cargo ./.cargo
COPY src ./src
COPY benches ./benches
COPY presets ./presets
COPY config/reference.toml ./config/reference.toml
# The source comes without .git: `docker build --build-arg ZONEFWD_COMMIT=$(git
# rev-parse --short=12 HEAD)` stamps zonefwd_build_info{commit}.
ARG ZONEFWD_COMMIT=
RUN cargo build --release --locked

FROM debian:bookworm-slim
COPY --from=build /src/target/release/zonefwd /usr/local/bin/zonefwd
# The file capability is set here, in the image's own layer: COPY --from has not
# always kept extended attributes (moby#38132, buildkit#2250), RUN layers do.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && setcap cap_net_bind_service=+ep /usr/local/bin/zonefwd \
 && apt-get purge -y libcap2-bin \
 && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*
COPY config/container.toml /etc/zonefwd/zonefwd.toml
USER 65532:65532
EXPOSE 53/udp 53/tcp
ENV ZONEFWD_CONFIG=/etc/zonefwd/zonefwd.toml
# The control socket for `docker exec CONTAINER zonefwd ctl status`, whatever the
# mounted file says: `run` serves it and `ctl` finds it through the same variable.
# Under /tmp, which the image's non-root user can write.
ENV ZONEFWD_CONTROL=/tmp/zonefwd-control.sock
# mimalloc (zonefwd's allocator) commits its first arena lazily: 6 MiB idle, not 13.
ENV MIMALLOC_ARENA_EAGER_COMMIT=0
# A DNS round trip to the listener itself, answered by zonefwd without any upstream.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/zonefwd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/zonefwd"]
CMD ["run"]
