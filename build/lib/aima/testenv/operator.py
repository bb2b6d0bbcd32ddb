"""Run the real operator in a background thread of this process (for tests and `aima dev`)."""

from __future__ import annotations

import asyncio

from aima import runner
from aima.settings import Settings
from aima.testenv.threads import LoopThread

__all__ = ["OperatorThread"]


class OperatorThread(LoopThread):
    """The operator's event loop in a daemon thread; a context manager that stops it on exit.

    It is ready once the controllers run (a replica waiting for the leader Lease is not ready).
    """

    def __init__(self, settings: Settings, *, wait_ready: bool = True) -> None:
        super().__init__(name="aima-operator", wait_ready=wait_ready)
        self.settings = settings

    async def serve(self, stop: asyncio.Event) -> None:
        ready = asyncio.Event()
        watcher = asyncio.create_task(self._signal_ready(ready))
        try:
            await runner.run(self.settings, stop_flag=stop, ready_flag=ready)
        finally:
            watcher.cancel()
            # aiohttp closes TLS transports a moment after its sessions; let them go before the loop.
            await asyncio.sleep(0.25)

    async def _signal_ready(self, ready: asyncio.Event) -> None:
        await ready.wait()
        self.mark_ready()
