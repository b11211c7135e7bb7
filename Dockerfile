# vfe image: `docker build -t vfe .` then see deploy/README.md.
#
# Two stages. The builder makes a virtualenv at /opt/venv: first the dependencies listed in
# pyproject.toml (a layer that is rebuilt only when pyproject.toml changes), then vfe
# itself. The final stage is the slim Python base, Debian's FFmpeg and that virtualenv: no
# compiler, no build tools, no source tree, no tests.
#
# The base is pinned by tag, not by digest: the tag names the Python minor and the Debian
# release (so FFmpeg stays on Debian 12's 5.1, the version the test suite runs against),
# and still takes the base image's security rebuilds. Pinning a digest (hadolint's advice)
# would freeze those fixes until someone bumps it; do that only with a bot that bumps it.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies only: their versions are bounded in pyproject.toml, which is the one place
# they are pinned; this layer is reused until that file changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# Then vfe itself (README.md is the package's long description).
COPY README.md ./
COPY vfe ./vfe
RUN pip install --no-cache-dir --no-deps .


FROM python:3.11-slim-bookworm

# Debian's FFmpeg (ffmpeg and ffprobe), without recommended extras; apt lists removed.
# The version is pinned to Debian 12's 5.1 series and takes its security updates.
RUN apt-get update \
    && apt-get install -y --no-install-recommends 'ffmpeg=7:5.1.*' \
    && rm -rf /var/lib/apt/lists/*

# A fixed, non-root user (10001, as in deploy/k8s) that owns the runtime volume only.
RUN groupadd --system --gid 10001 vfe \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin vfe \
    && mkdir -p /data /videos \
    && chown 10001:10001 /data

COPY --from=builder /opt/venv /opt/venv

# Runtime data (database, frames, uploads, logs) lives on the /data volume; /videos is the
# only folder a local `video_source` may name (mount it read-only).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8000 \
    DATABASE_PATH=/data/db/metadata.db \
    FRAMES_BASE_PATH=/data/frames \
    UPLOADS_PATH=/data/uploads \
    LOG_PATH=/data/logs/app.log \
    VIDEOS_BASE_PATH=/videos

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000

# Liveness only (the process and its event loop answer), with the Python the image has;
# urlopen raises on any status but 2xx, so a failure exits non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=3)"]

# uvicorn stops on SIGTERM: it stops taking jobs, ends event streams and gives open
# responses a bounded time (well inside Docker's and Kubernetes' default 30 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["vfe"]
CMD ["serve", "--host", "0.0.0.0"]
