# kpiwatch in a container: `docker build -t kpiwatch .`; `docker run kpiwatch` runs the daemon
# (`kpiwatch run`) on /etc/kpiwatch/kpiwatch.yaml, `docker run --rm kpiwatch demo` the demo.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KPIWATCH_CONFIG=/etc/kpiwatch/kpiwatch.yaml \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /src
COPY pyproject.toml README.md ./
COPY forecaster ./forecaster
COPY alerts ./alerts
COPY config ./config
RUN pip install ".[postgres,dask]" \
 && mkdir -p /etc/kpiwatch /var/lib/kpiwatch \
 && cp config/kpiwatch.yaml /etc/kpiwatch/kpiwatch.yaml \
 && useradd --create-home --uid 10001 kpiwatch \
 && chown kpiwatch /var/lib/kpiwatch

USER kpiwatch
WORKDIR /var/lib/kpiwatch
VOLUME ["/var/lib/kpiwatch"]
EXPOSE 8321
# The daemon's /healthz (daemon.health_port); the slim image has no curl, Python has urllib. It listens
# on 127.0.0.1 (daemon.bind): to publish the port (-p 8321:8321), set `daemon: {bind: 0.0.0.0}` in the config.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8321/healthz', timeout=4)" || exit 1
# `docker stop` sends SIGTERM and waits 10 s: the daemon cancels its running checks (judged again after
# the restart), flushes the outbox and exits 0 within daemon.shutdown_grace (default 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["kpiwatch"]
CMD ["run"]
