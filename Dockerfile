# novita-monitor in a container.
#   docker build -t novita-monitor .
#   docker run -d --name novita-monitor \
#     -v novita-monitor-data:/var/lib/novita-monitor \
#     -v $PWD/config.yaml:/etc/novita-monitor/config.yaml:ro \
#     -e NOVITA_API_KEY --restart unless-stopped novita-monitor
# Reload configuration and rules: docker kill --signal HUP novita-monitor
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    XDG_STATE_HOME=/var/lib \
    NOVITA_MONITOR_CONFIG=/etc/novita-monitor/config.yaml

WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
RUN pip install ".[postgres]" && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /var/lib/novita-monitor monitor \
    && mkdir -p /var/lib/novita-monitor /etc/novita-monitor \
    && chown monitor /var/lib/novita-monitor
USER monitor
WORKDIR /var/lib/novita-monitor
VOLUME ["/var/lib/novita-monitor"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["novita-monitor"]
CMD ["run"]
