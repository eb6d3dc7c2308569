"""`python -m services.sql_engine` starts the SQL engine."""

import asyncio

from services.sql_engine.server import main

asyncio.run(main())
