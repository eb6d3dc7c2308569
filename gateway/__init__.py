"""The HTTP edge of InsightX: uploads, SSE chat streams, health and the built-in web page."""
