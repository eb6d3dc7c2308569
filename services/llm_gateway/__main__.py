"""`python -m services.llm_gateway` starts the LLM gateway."""

import asyncio

from services.llm_gateway.server import main

asyncio.run(main())
