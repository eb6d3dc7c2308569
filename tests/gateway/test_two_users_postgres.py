"""The two-user tests of test_two_users.py again, with the gateway's state on PostgreSQL
(INSIGHTX_DATABASE_URL: a real server, tests/postgres_server.py): B still reaches nothing of A's through
any route, lists only its own, and A's API token and chats behave the same. A representative subset,
not the whole module twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.stacks import start_stack
from tests.gateway.test_two_users import (  # noqa: F401  (fixtures and tests collected here once more)
    LOCAL_TOKEN,
    SECRET,
    jwks_url,
    owned,
    project_key,
    test_a_chat_can_be_deleted_by_its_owner_only,
    test_api_tokens_act_as_their_maker_until_revoked,
    test_b_lists_only_its_own,
    test_b_reaches_nothing_of_as_through_any_route,
)
from tools.postgres_server import PostgresServer
from tools.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def team(
    tmp_path_factory: pytest.TempPathFactory,
    jwks_url: str,  # noqa: F811  (the fixture imported above)
    postgres_server: PostgresServer,
) -> Iterator[Stack]:
    """test_two_users' stack, its gateway keeping owners, tokens, usage and chats in PostgreSQL."""
    root = tmp_path_factory.mktemp("two-users-postgres")
    env = {
        "SUPABASE_JWT_SECRET": SECRET,
        "SUPABASE_JWKS_URL": jwks_url,
        "INSIGHTX_AUTH_TOKEN": LOCAL_TOKEN,
        "INSIGHTX_DATABASE_URL": postgres_server.new_database(),
    }
    stack = start_stack(root / "data", env, services=("sql_engine", "orchestrator"), log_dir=root / "logs")
    yield stack
    stack.stop()
    embedded = [root / "data" / "chats.sqlite3", root / "data" / "gateway" / "access.sqlite3"]
    assert not any(path.exists() for path in embedded)  # nothing of the state went to SQLite
