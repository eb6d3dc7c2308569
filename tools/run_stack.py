"""`make run` (`python -m tools.run_stack`): the same as `insightx serve`, which lives in gateway/serve.py."""

from __future__ import annotations

import sys

from gateway.serve import load_demo, main

__all__ = ["load_demo", "main"]

if __name__ == "__main__":
    sys.exit(main())
