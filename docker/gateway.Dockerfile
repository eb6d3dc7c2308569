# gateway: the HTTP gateway (uploads, SSE, web page). Build from the repository root:
#   docker build -f docker/gateway.Dockerfile -t insightx/gateway .
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY gateway/web/package.json gateway/web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml ./
COPY common ./common
COPY insightx ./insightx
COPY services ./services
COPY gateway ./gateway
COPY tools ./tools
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 INSIGHTX_DATA_DIR=/data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /src /app
COPY --from=web /web/node_modules /app/gateway/web/node_modules
RUN useradd --system --uid 10001 --home /app insightx && mkdir -p /data && chown insightx /data
USER insightx
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["python", "-c", "import sys, httpx; sys.exit(0 if httpx.get('http://127.0.0.1:8000/health', timeout=3).status_code < 600 else 1)"]
CMD ["python", "-m", "gateway"]
