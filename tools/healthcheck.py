"""gRPC health probe for containers: `python -m tools.healthcheck HOST:PORT [SERVICE]`; exit 0 if SERVING.

Health is the one service every server answers without internal credentials, so a probe needs no secret.
"""

from __future__ import annotations

import asyncio
import sys

from common.channels import check_health, open_channel


async def probe(address: str, service: str) -> str:
    channel = open_channel(address, token="")
    try:
        return await check_health(channel, service)
    finally:
        await channel.close()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m tools.healthcheck HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    status = asyncio.run(probe(argv[1], argv[2] if len(argv) > 2 else ""))
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
