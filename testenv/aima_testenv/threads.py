"""An asyncio program in a daemon thread of this process (the operator and the gateway of tests and
`aima dev`), started and stopped as a context manager."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Self

__all__ = ["LoopThread"]


class LoopThread:
    """Runs :meth:`serve` on its own event loop in a daemon thread until :meth:`stop`.

    ``serve`` calls :meth:`mark_ready` once it does its job; entering the context waits for that
    (unless ``wait_ready`` is false) and raises if ``serve`` failed first.
    """

    start_timeout_seconds = 60.0

    def __init__(self, *, name: str, wait_ready: bool = True) -> None:
        self.wait_ready = wait_ready
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    async def serve(self, stop: asyncio.Event) -> None:
        """The program: run until ``stop`` is set."""
        raise NotImplementedError

    def mark_ready(self) -> None:
        """Tell the starting thread that the program does its job."""
        self._ready.set()

    @property
    def ready(self) -> bool:
        """Whether the program said it is ready and has not failed."""
        return self._ready.is_set() and self._error is None

    def wait_until_ready(self, timeout: float) -> None:
        """Block until the program is ready; raise if it was not within ``timeout`` seconds."""
        if not self._ready.wait(timeout) or self._error:
            raise RuntimeError(f"{self._thread.name} did not start: {self._error!r}")

    def __enter__(self) -> Self:
        self._thread.start()
        if self.wait_ready:
            try:
                self.wait_until_ready(self.start_timeout_seconds)
            except BaseException:  # also Ctrl-C: no __exit__ follows a failed __enter__
                self.stop()
                raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the program and wait for its thread."""
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
        await self.serve(self._stop)
