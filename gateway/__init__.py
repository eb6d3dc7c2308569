"""The HTTP edge of InsightX: uploads, SSE chat streams, health and the built-in web page."""

import common  # noqa: F401  (first: gRPC settings that must precede its import)
