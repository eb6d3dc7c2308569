"""`python -m services.orchestrator` starts the orchestrator."""

import asyncio

from services.orchestrator.server import main

asyncio.run(main())
