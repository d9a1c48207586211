"""`GET /healthz` (the process is alive) and `GET /readyz` (it can serve now).

Ready means: storage takes a small write and answers a small read within
`health.timeout` seconds, and the server is not shutting down (from the first
SIGTERM or SIGINT on, so a probe in flight then is told 503, not 200).
Both answer JSON; neither needs credentials.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from storage import paths
from storage.driver import StorageDriver


class Readiness:
    def __init__(self, driver: StorageDriver, timeout: float) -> None:
        self.driver = driver
        self.timeout = timeout
        self.stopping = False

    async def problem(self) -> str | None:
        """Why the server is not ready, or None when it is."""
        if self.stopping:
            return "shutting down"
        try:
            async with asyncio.timeout(self.timeout):
                await self.driver.put(paths.health_probe(), str(time.time()).encode())
                await self.driver.get(paths.health_probe())
        except TimeoutError:
            return f"storage did not answer within {self.timeout:g}s"
        except Exception as error:  # whatever the driver raises, the answer is "not ready"
            return f"storage failed: {type(error).__name__}: {error}"
        return "shutting down" if self.stopping else None

    def stop_on_signals(self) -> None:
        """Mark the server stopping on SIGTERM/SIGINT, then run the handler that was there
        (uvicorn's, which starts the graceful shutdown). Only the main thread may do this."""
        for number in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(number)
            if not callable(previous):
                continue

            def handler(
                signum: int,
                frame: FrameType | None,
                previous: Callable[[int, FrameType | None], Any] = previous,
            ) -> None:
                self.stopping = True
                previous(signum, frame)

            signal.signal(number, handler)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> JSONResponse:
    readiness: Readiness = request.app.state.readiness
    if problem := await readiness.problem():
        return JSONResponse({"status": "unavailable", "reason": problem}, status_code=503)
    return JSONResponse({"status": "ready"})


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
