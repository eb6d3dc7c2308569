"""The demo dataset lives in the installed package (gateway/demo.py, which `insightx serve` loads); this
name stays for the repository's tests, benchmarks and `make demo`."""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.demo import DEFAULT_ROWS, SEED, generate, write_csv

__all__ = ["DEFAULT_ROWS", "SEED", "generate", "write_csv"]

if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data/demo/upi_transactions.csv")
    print(write_csv(target))
