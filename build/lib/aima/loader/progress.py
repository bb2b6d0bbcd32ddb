"""Progress reporting at a bounded rate.

`ProgressTracker` aggregates per-file byte counts from parallel transfers and hands a `Progress`
snapshot to a `ProgressSink` at most every `interval` seconds, plus on every phase change: the Model
controller patches status from the sink, and an API server must not see a write per chunk. Speed is
measured over a sliding window so that one stall does not swing the ETA. The clock is injected.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Protocol, TextIO

__all__ = [
    "JsonLinesSink",
    "Phase",
    "Progress",
    "ProgressSink",
    "ProgressTracker",
    "eta_seconds",
    "window_speed",
]


class Phase(StrEnum):
    """The loader's phases; the same words as the Model's status phase."""

    PENDING = "Pending"
    DOWNLOADING = "Downloading"
    VERIFYING = "Verifying"
    READY = "Ready"
    FAILED = "Failed"


@dataclass(frozen=True, kw_only=True)
class Progress:
    """One snapshot: speed in bytes per second, ETA in seconds (None while unknown)."""

    phase: Phase
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    speed: float = 0.0
    eta: float | None = None
    message: str = ""


class ProgressSink(Protocol):
    """Receives progress snapshots; must return quickly (it runs on the event loop)."""

    def report(self, progress: Progress) -> None:
        """Take one snapshot."""


class JsonLinesSink:
    """Writes each snapshot as one JSON line (camelCase keys, like Model status) to a stream."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def report(self, progress: Progress) -> None:
        """Write and flush one line, so a log reader sees it at once."""
        fields = asdict(progress)
        line = {
            "phase": str(progress.phase),
            "bytesDone": fields["bytes_done"],
            "bytesTotal": fields["bytes_total"],
            "filesDone": fields["files_done"],
            "filesTotal": fields["files_total"],
            "speedBytesPerSecond": round(progress.speed),
            "etaSeconds": None if progress.eta is None else round(progress.eta),
        }
        if progress.message:
            line["message"] = progress.message
        self._stream.write(json.dumps(line) + "\n")
        self._stream.flush()


def window_speed(samples: deque[tuple[float, int]]) -> float:
    """Bytes per second between the oldest and newest (time, bytes) sample; 0 when undefined."""
    if len(samples) < 2:
        return 0.0
    (t0, b0), (t1, b1) = samples[0], samples[-1]
    return max(b1 - b0, 0) / (t1 - t0) if t1 > t0 else 0.0


def eta_seconds(*, remaining: int, speed: float) -> float | None:
    """Seconds left at `speed`, None when nothing is moving."""
    if remaining <= 0:
        return 0.0
    return remaining / speed if speed > 0 else None


class ProgressTracker:
    """Aggregates progress from parallel transfers and reports it at a bounded rate."""

    def __init__(
        self,
        *,
        sink: ProgressSink,
        interval: float = 2.0,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._interval = interval
        self._window = window
        self._clock = clock
        self._state = Progress(phase=Phase.PENDING)
        self._per_file: dict[str, int] = {}
        self._base_done = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._last_emit: float | None = None

    @property
    def current(self) -> Progress:
        """The latest snapshot, reported or not."""
        return self._state

    def begin(
        self, phase: Phase, *, bytes_total: int, files_total: int, bytes_done: int = 0, files_done: int = 0
    ) -> None:
        """Start a phase with known totals; `bytes_done` counts work already complete (skipped files)."""
        self._per_file.clear()
        self._samples.clear()
        self._base_done = bytes_done
        self._state = Progress(
            phase=phase,
            bytes_done=bytes_done,
            bytes_total=bytes_total,
            files_done=files_done,
            files_total=files_total,
        )
        self._emit(force=True)

    def set_phase(self, phase: Phase) -> None:
        """Move to another phase, keeping the counts, and report it at once."""
        self._state = replace(self._state, phase=phase)
        self._emit(force=True)

    def file_bytes(self, key: str, done: int) -> None:
        """Record that file `key` now holds `done` bytes (may go down when a transfer restarts)."""
        self._per_file[key] = done
        self._update()

    def file_done(self) -> None:
        """Count one more complete file."""
        self._state = replace(self._state, files_done=self._state.files_done + 1)
        self._update()

    def finish(self, phase: Phase, *, message: str = "") -> None:
        """Enter a final phase and report it at once."""
        eta = 0.0 if phase is Phase.READY else None
        self._state = replace(self._state, phase=phase, message=message, eta=eta, speed=self._speed())
        self._emit(force=True)

    def _update(self) -> None:
        now = self._clock()
        done = self._base_done + sum(self._per_file.values())
        if not self._samples or now - self._samples[-1][0] >= 0.25:
            self._samples.append((now, done))
            while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
                self._samples.popleft()
        speed = self._speed()
        remaining = self._state.bytes_total - done
        self._state = replace(
            self._state, bytes_done=done, speed=speed, eta=eta_seconds(remaining=remaining, speed=speed)
        )
        self._emit(force=False)

    def _speed(self) -> float:
        return window_speed(self._samples)

    def _emit(self, *, force: bool) -> None:
        now = self._clock()
        if force or self._last_emit is None or now - self._last_emit >= self._interval:
            self._last_emit = now
            self._sink.report(self._state)
