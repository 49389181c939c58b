# The Reconciler daemon: `docker run -v reconciler-state:/var/lib/reconciler -v ./etc:/etc/reconciler:ro -p 8080:8080 IMAGE`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package build needs (README.md is the project's readme in pyproject.toml).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN pip install . && rm -rf /src

# A fixed uid so volume ownership is predictable across rebuilds; no login shell, no sudo.
RUN groupadd --system --gid 10001 reconciler \
 && useradd --system --uid 10001 --gid reconciler --home-dir /home/reconciler --create-home \
        --shell /usr/sbin/nologin reconciler \
 && mkdir -p /var/lib/reconciler /etc/reconciler \
 && chown reconciler:reconciler /var/lib/reconciler

# State, mirrors, checkouts and the lake live here: keep them on a volume so a new image resumes them.
# (chown above runs first: a fresh named volume copies this ownership.)
VOLUME /var/lib/reconciler
ENV RECONCILER_STATE_DIR=/var/lib/reconciler \
    HOME=/home/reconciler

USER reconciler
WORKDIR /var/lib/reconciler

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["reconciler", "daemon"]
# Inside a container the daemon must bind all interfaces (0.0.0.0): a port is published from the
# container's own network namespace, so a loopback-only listener could not be reached through -p.
# --state-dir points at the volume: the daemon config's own default is next to reconciler.yaml.
CMD ["--config", "/etc/reconciler/reconciler.yaml", "--listen", "0.0.0.0:8080", "--state-dir", "/var/lib/reconciler"]
