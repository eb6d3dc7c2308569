"""The sign-in link `make run` prints, like Jupyter's: the gateway's URL carrying the embedded user's token.

The token is INSIGHTX_AUTH_TOKEN when set, else the one the gateway made in `<data_dir>/gateway/auth_token`
(0600) on its first start; a person opens the link once and the page trades it for the login cookie.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

from gateway.settings import GatewaySettings


def embedded_token(data_dir: Path, wait_s: float = 10.0) -> str:
    """The embedded user's token (waiting up to `wait_s` for a starting gateway to write it); "" if none."""
    configured = GatewaySettings().auth_token
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    path = Path(data_dir) / "gateway" / "auth_token"
    deadline = time.monotonic() + wait_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return path.read_text().strip() if path.exists() else ""


def signin_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/?token={quote(token, safe='')}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
