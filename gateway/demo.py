"""The demo dataset: 250,000 UPI transactions, generated with a fixed seed (same bytes every time)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

DEFAULT_ROWS = 250_000
SEED = 20240601

TYPES = ["P2P", "P2M", "Bill Payment", "Recharge"]
CATEGORIES = [
    "Food",
    "Grocery",
    "Fuel",
    "Entertainment",
    "Shopping",
    "Healthcare",
    "Education",
    "Transport",
    "Utilities",
    "Other",
]
AGE_GROUPS = ["18-25", "26-35", "36-45", "46-55", "56+"]
STATES = [
    "Maharashtra",
    "Karnataka",
    "Tamil Nadu",
    "Delhi",
    "Uttar Pradesh",
    "Gujarat",
    "Rajasthan",
    "West Bengal",
    "Telangana",
    "Andhra Pradesh",
]
BANKS = ["SBI", "HDFC", "ICICI", "Axis", "PNB", "Kotak", "IndusInd", "Yes Bank"]
DEVICES = ["Android", "iOS", "Web"]
NETWORKS = ["4G", "5G", "WiFi", "3G"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def generate(rows: int = DEFAULT_ROWS, seed: int = SEED) -> pa.Table:
    """A table shaped like the UPI transactions InsightX was first built for."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-01T00:00:00")
    seconds = np.sort(rng.integers(0, 366 * 24 * 3600, rows))
    stamps = start + seconds.astype("timedelta64[s]")
    hours = (seconds // 3600) % 24
    weekday = ((seconds // 86400) + 0) % 7  # 2024-01-01 was a Monday
    kind = rng.choice(len(TYPES), rows, p=[0.45, 0.35, 0.12, 0.08])
    category = rng.choice(len(CATEGORIES), rows)
    amount = np.round(np.exp(rng.normal(6.2, 1.1, rows)) + np.where(kind == 2, 800, 0), 2)
    device = rng.choice(len(DEVICES), rows, p=[0.72, 0.23, 0.05])
    network = rng.choice(len(NETWORKS), rows, p=[0.55, 0.25, 0.15, 0.05])
    fail_p = 0.035 + 0.015 * (device == 0) + 0.04 * (network == 3) + 0.01 * (weekday >= 5)
    failed = rng.random(rows) < fail_p
    fraud = (rng.random(rows) < 0.0019 + 0.004 * (amount > 5000)).astype(np.int64)
    table = {
        "transaction id": [f"TXN{i:09d}" for i in range(1, rows + 1)],
        "timestamp": np.char.replace(stamps.astype("datetime64[s]").astype(str), "T", " "),
        "transaction type": np.array(TYPES)[kind],
        "merchant_category": np.array(CATEGORIES)[category],
        "amount (INR)": amount,
        "transaction_status": np.where(failed, "FAILED", "SUCCESS"),
        "sender_age_group": np.array(AGE_GROUPS)[rng.choice(5, rows, p=[0.25, 0.35, 0.2, 0.12, 0.08])],
        "receiver_age_group": np.array(AGE_GROUPS)[rng.choice(5, rows, p=[0.2, 0.35, 0.25, 0.12, 0.08])],
        "sender_state": np.array(STATES)[rng.choice(len(STATES), rows)],
        "sender_bank": np.array(BANKS)[rng.choice(len(BANKS), rows)],
        "receiver_bank": np.array(BANKS)[rng.choice(len(BANKS), rows)],
        "device_type": np.array(DEVICES)[device],
        "network_type": np.array(NETWORKS)[network],
        "fraud_flag": fraud,
        "hour_of_day": hours.astype(np.int64),
        "day_of_week": np.array(DAYS)[weekday],
        "is_weekend": (weekday >= 5).astype(np.int64),
    }
    arrays = {k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in table.items()}
    return pa.table(arrays)


def write_csv(path: Path, rows: int = DEFAULT_ROWS) -> Path:
    """Writes the demo CSV (once; the content is deterministic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        pacsv.write_csv(generate(rows), tmp)
        tmp.rename(path)
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data/demo/upi_transactions.csv")
    print(write_csv(target))
