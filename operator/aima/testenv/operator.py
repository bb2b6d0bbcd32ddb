"""Run the real operator in a background thread of this process (for tests and `aima dev`)."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aima import runner
from aima.settings import Settings

_START_TIMEOUT_SECONDS = 60.0


class OperatorThread:
    """The operator's event loop in a daemon thread; a context manager that stops it on exit."""

    def __init__(self, settings: Settings, *, wait_ready: bool = True) -> None:
        self.settings = settings
        self.wait_ready = wait_ready
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="aima-operator", daemon=True)

    def __enter__(self) -> OperatorThread:
        self._thread.start()
        if self.wait_ready:
            self.wait_until_ready(_START_TIMEOUT_SECONDS)
        return self

    @property
    def ready(self) -> bool:
        """Whether the controllers run (a replica waiting for the leader Lease is not ready)."""
        return self._ready.is_set() and self._error is None

    def wait_until_ready(self, timeout: float) -> None:
        """Block until the controllers run; raise if they did not within ``timeout`` seconds."""
        if not self._ready.wait(timeout) or self._error:
            raise RuntimeError(f"the operator did not start: {self._error!r}")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the operator and wait for its thread."""
        if self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._run())
        except BaseException as error:  # reported to the starting thread
            self._error = error
            self._ready.set()
        finally:
            self._loop.close()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        ready = asyncio.Event()
        watcher = asyncio.create_task(self._signal_ready(ready))
        try:
            await runner.run(self.settings, stop_flag=self._stop, ready_flag=ready)
        finally:
            watcher.cancel()
            # aiohttp closes TLS transports a moment after its sessions; let them go before the loop.
            await asyncio.sleep(0.25)

    async def _signal_ready(self, ready: asyncio.Event) -> None:
        await ready.wait()
        self._ready.set()
