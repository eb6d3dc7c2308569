"""Developer tools: stub generation, the demo dataset, and the stack runner."""

import common  # noqa: F401  (first: gRPC settings that must precede its import)
