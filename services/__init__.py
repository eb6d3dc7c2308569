"""The InsightX gRPC services, one package each, each runnable as `python -m services.<name>`."""

import common  # noqa: F401  (first: gRPC settings that must precede its import)
