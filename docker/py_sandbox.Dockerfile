# py_sandbox: one gRPC service of InsightX. Build from the repository root:
#   docker build -f docker/py_sandbox.Dockerfile -t insightx/py_sandbox .
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
RUN useradd --system --uid 10001 --home /app insightx && mkdir -p /data && chown insightx /data
# The exception to non-root images: the supervisor creates namespaces, mounts a private root and drops each
# child to a uid of its own (from INSIGHTX_SANDBOX_UID, no account uses it) with seccomp, which needs root
# (with the capabilities compose grants). No untrusted code ever runs as root: the gRPC server never runs it,
# and every child is confined before it decodes anything the request carried.
USER root
EXPOSE 50054
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["python", "-m", "tools.healthcheck", "127.0.0.1:50054"]
CMD ["python", "-m", "services.py_sandbox"]
