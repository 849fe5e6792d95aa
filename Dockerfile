# novita-monitor in a container.
#   docker build -t novita-monitor .
#   docker run -d --name novita-monitor --restart unless-stopped --stop-timeout 15 \
#     -v novita-monitor-data:/var/lib/novita-monitor -p 9464:9464 \
#     -e NOVITA_API_KEY novita-monitor
# The image's configuration is docker/config.yaml (the key from NOVITA_API_KEY, the database in
# the volume, metrics on 0.0.0.0:9464); mount your own over /etc/novita-monitor/config.yaml.
# Reload configuration and rules: docker kill --signal HUP novita-monitor
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    XDG_STATE_HOME=/var/lib \
    NOVITA_MONITOR_CONFIG=/etc/novita-monitor/config.yaml

WORKDIR /src
COPY docker/constraints.txt ./docker/
COPY pyproject.toml README.md ./
COPY monitor ./monitor
RUN pip install --constraint docker/constraints.txt ".[postgres]" && rm -rf /src

RUN useradd --system --uid 10001 --no-create-home --home-dir /var/lib/novita-monitor monitor \
    && mkdir -p /var/lib/novita-monitor /etc/novita-monitor \
    && chown monitor /var/lib/novita-monitor \
    && chmod 0700 /var/lib/novita-monitor
COPY docker/config.yaml /etc/novita-monitor/config.yaml

USER 10001
WORKDIR /var/lib/novita-monitor
VOLUME ["/var/lib/novita-monitor"]
EXPOSE 9464

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["novita-monitor"]
CMD ["run", "--config", "/etc/novita-monitor/config.yaml"]
