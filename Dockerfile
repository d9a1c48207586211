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

# /v2/ answers 200 (open) or 401 (auth on): both mean the registry is serving.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u, urllib.error as e\ntry: u.urlopen('http://127.0.0.1:5000/v2/', timeout=4)\nexcept e.HTTPError as r: raise SystemExit(r.code != 401)"]

ENTRYPOINT ["dockyard"]
CMD ["serve"]
