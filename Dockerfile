# kpiwatch in a container: `docker build -t kpiwatch .` then `docker run --rm kpiwatch demo`.
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
RUN pip install . \
 && mkdir -p /etc/kpiwatch /var/lib/kpiwatch \
 && cp config/kpiwatch.yaml /etc/kpiwatch/kpiwatch.yaml \
 && useradd --create-home --uid 10001 kpiwatch \
 && chown kpiwatch /var/lib/kpiwatch

USER kpiwatch
WORKDIR /var/lib/kpiwatch
VOLUME ["/var/lib/kpiwatch"]
ENTRYPOINT ["kpiwatch"]
CMD ["demo"]
