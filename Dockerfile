# executor — multi-stage image: the release binary, the pinned Claude Code CLI, git, and the
# pinned agno venv for Agno tasks.
# Build: docker build -t executor .
# (Not built in this repository's CI: its machines have no Docker engine.)

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY actors ./actors
COPY src ./src
COPY tests ./tests
COPY benches ./benches
COPY agno ./agno
RUN cargo build --release --bin executor

FROM node:22-bookworm-slim AS claude
ARG CLAUDE_CODE_VERSION=2.1.331
RUN npm install --global --no-audit --no-fund "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"

FROM debian:bookworm-slim
COPY agno/requirements.txt /opt/agno/requirements.txt
# DL3008 (pin apt versions) is ignored on purpose: Debian removes superseded versions from its
# mirrors, so exact pins break the build at the next security update of git or python3; the
# base image tag pins the release (bookworm) instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/agno-venv \
 && /opt/agno-venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /opt/agno/requirements.txt \
 && groupadd --gid 10001 executor \
 && useradd --create-home --uid 10001 --gid 10001 executor \
 && mkdir -p /workspace && chown executor:executor /workspace
# The CLI package ships a self-contained native binary; node is not needed at run time.
COPY --from=claude /usr/local/lib/node_modules/@anthropic-ai/claude-code /opt/claude-code
RUN ln -s /opt/claude-code/bin/claude.exe /usr/local/bin/claude && claude --version
COPY --from=build /src/target/release/executor /usr/local/bin/executor
COPY config/default.toml /etc/executor/default.toml
# Numeric, so the runtime (and Kubernetes' runAsNonRoot) can check it without /etc/passwd.
USER 10001:10001
ENV PORT=10001 WORKSPACE_ROOT=/workspace CLAUDE_BIN=/usr/local/bin/claude \
    AGNO_PYTHON=/opt/agno-venv/bin/python \
    DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
EXPOSE 10001
# No init needed: the executor is a child subreaper and reaps every descendant itself.
ENTRYPOINT ["/usr/local/bin/executor"]
