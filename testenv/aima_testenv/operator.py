"""Run the real operator in a background thread of this process (for tests and `aima dev`), or as a
process of its own (for tests that kill it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from aima import runner
from aima.settings import Settings
from aima_testenv.processes import free_port
from aima_testenv.threads import LoopThread

__all__ = ["OperatorProcess", "OperatorThread"]


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


class OperatorProcess:
    """`aima operator run` as a process of its own, as a pod runs it: for tests and benchmarks that
    kill it outright, restart it, or read its memory. ``settings`` reach it as the chart's do, by
    AIMA_* variables; its /metrics is served on a free local port, its output appended to ``log``."""

    def __init__(self, settings: Settings, *, log: Path) -> None:
        self.port = free_port()
        served = settings.model_copy(
            update={"operator_health_host": "127.0.0.1", "operator_health_port": self.port}
        )
        self.env = os.environ | served.to_env()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "the operator was not started"
        return self.process.pid

    def start(self) -> None:
        """Start a fresh process (the previous one must be gone)."""
        assert self.process is None or self.process.poll() is not None, "the operator still runs"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "aima"), "operator", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or released (a node loss, an OOM kill)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, *, grace_seconds: float = 20) -> None:
        """SIGTERM, as the kubelet sends; SIGKILL after ``grace_seconds``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_seconds)
        self.kill()

    def passes(self, kind: str) -> int:
        """Successful reconcile passes over ``kind`` so far (its /metrics); 0 while it starts."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            return 0
        wanted = f'aima_operator_reconcile_total{{kind="{kind}",result="ok"}} '
        return sum(int(float(line[len(wanted) :])) for line in text.splitlines() if line.startswith(wanted))

    def peak_rss_mib(self) -> float:
        """The process's peak resident memory so far (VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmHWM for process {self.pid}")

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
