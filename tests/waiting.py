"""Polling for the cluster to reach a state (tests assert on state, never on call counts)."""

from __future__ import annotations

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
