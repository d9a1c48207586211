# Dockyard container image: the registry on its embedded default (filesystem storage).
#   docker build -t dockyard . && docker run -p 5000:5000 -v dockyard-data:/var/lib/dockyard dockyard
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DOCKYARD_STORAGE__FILESYSTEM__ROOT=/var/lib/dockyard

WORKDIR /app
COPY pyproject.toml README.md ./
COPY registry ./registry
COPY storage ./storage
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/dockyard --create-home dockyard

USER dockyard
VOLUME ["/var/lib/dockyard"]
EXPOSE 5000

# Probes /v2/ over HTTP or HTTPS as configured; 200 or 401 (auth on) means serving.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["dockyard", "healthcheck", "--timeout", "4"]

ENTRYPOINT ["dockyard"]
CMD ["serve"]
