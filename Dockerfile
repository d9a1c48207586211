# Dockyard container image (base image: python:3.11-slim, pulled from Docker Hub).
#   docker build -t dockyard .
#   docker run -d --name dockyard -p 5000:5000 -v dockyard-data:/var/lib/dockyard dockyard
# The working directory is the volume, so every relative path of the configuration
# (data ./data, users ./htpasswd, the generated token key) lands in it. The configuration
# is /etc/dockyard/config.yaml (config.example.yaml: the defaults); mount your own there.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DOCKYARD_CONFIG=/etc/dockyard/config.yaml

WORKDIR /app
COPY pyproject.toml README.md ./
COPY oci ./oci
COPY registry ./registry
COPY storage ./storage
COPY collector ./collector
COPY proxy ./proxy
COPY ui ./ui
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/dockyard --create-home dockyard
COPY config.example.yaml /etc/dockyard/config.yaml

USER dockyard
WORKDIR /var/lib/dockyard
VOLUME ["/var/lib/dockyard"]
EXPOSE 5000

# Asks /readyz over HTTP or HTTPS as configured: storage answers and the server is not
# stopping; prints the reason when not (docker inspect shows it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["dockyard", "healthcheck", "--timeout", "4"]

ENTRYPOINT ["dockyard"]
CMD ["serve"]
