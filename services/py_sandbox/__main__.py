"""`python -m services.py_sandbox` starts the Python sandbox."""

import asyncio

from services.py_sandbox.server import main

asyncio.run(main())
