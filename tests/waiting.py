"""Polling for the cluster to reach a state (tests assert on state, never on call counts)."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

LOADER_START_SECONDS = 5.0
"""How long the test operator lets a loader Job go without a pod before its Model says so."""


def eventually(check: Callable[[], T | None], *, timeout: float = 30, what: str) -> T:
    """Poll ``check`` until it returns something truthy and return that; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)  # each check may spawn kubectl: polling faster only slows the cluster
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def read_until(process: subprocess.Popen[str], marker: str, *, timeout: float) -> str:
    """What the process printed on stderr up to and including the line with ``marker``."""
    assert process.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr or ()], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        if marker in seen[-1]:
            return "".join(seen)
    pytest.fail(f"the process never printed {marker!r}; it printed:\n{''.join(seen)}")
