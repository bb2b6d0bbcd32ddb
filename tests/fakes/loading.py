"""Helpers for driving the loader in tests: a sink that keeps every report and a fast environment."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aima.loader import engine, lock
from aima.loader.progress import Phase, Progress
from aima.loader.retry import RetryPolicy

FAST_RETRY = RetryPolicy(attempts=4, base_seconds=0.01, max_seconds=0.05)


class CollectSink:
    """Keeps every progress report."""

    def __init__(self) -> None:
        self.reports: list[Progress] = []

    def report(self, progress: Progress) -> None:
        self.reports.append(progress)

    @property
    def phases(self) -> list[Phase]:
        """Phases in order, repeats collapsed."""
        collapsed: list[Phase] = []
        for report in self.reports:
            if not collapsed or collapsed[-1] != report.phase:
                collapsed.append(report.phase)
        return collapsed


def fast_env(sink: CollectSink, **overrides: Any) -> engine.Environment:
    """An environment with quick retries and lock polling, reporting every update."""
    env = engine.Environment(
        sink=sink,
        retry=FAST_RETRY,
        lock=lock.LockSettings(wait=0, poll=0.02, heartbeat=0.5, stale_after=30),
        progress_interval=0,
    )
    return replace(env, **overrides)
