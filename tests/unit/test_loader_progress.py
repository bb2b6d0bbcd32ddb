"""Progress is aggregated across files and reported at a bounded rate, with speed and ETA."""

from __future__ import annotations

import io
import json
from collections import deque

import pytest

from aima.loader.progress import JsonLinesSink, Phase, Progress, ProgressTracker, eta_seconds, window_speed

pytestmark = pytest.mark.unit


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Collect:
    def __init__(self) -> None:
        self.reports: list[Progress] = []

    def report(self, progress: Progress) -> None:
        self.reports.append(progress)


def test_tracker_reports_at_most_every_interval_plus_phase_changes() -> None:
    clock, sink = _Clock(), _Collect()
    tracker = ProgressTracker(sink=sink, interval=2.0, clock=clock)
    tracker.begin(Phase.DOWNLOADING, bytes_total=1000, files_total=2)
    for step in range(1, 41):  # 40 updates over 4 s
        clock.now = step * 0.1
        tracker.file_bytes("a" if step % 2 else "b", step * 10)
    tracker.set_phase(Phase.VERIFYING)
    tracker.finish(Phase.READY)
    phases = [r.phase for r in sink.reports]
    assert phases.count(Phase.DOWNLOADING) == 3  # begin, then at 2 s and 4 s
    assert phases[-2:] == [Phase.VERIFYING, Phase.READY]
    assert sink.reports[-1].eta == 0.0


def test_tracker_sums_files_and_survives_restarts() -> None:
    clock, sink = _Clock(), _Collect()
    tracker = ProgressTracker(sink=sink, interval=0, clock=clock)
    tracker.begin(Phase.DOWNLOADING, bytes_total=300, files_total=3, bytes_done=100, files_done=1)
    tracker.file_bytes("a", 50)
    tracker.file_bytes("b", 30)
    tracker.file_bytes("a", 0)  # server ignored Range: the file restarted
    assert tracker.current.bytes_done == 130
    tracker.file_done()
    assert tracker.current.files_done == 2


def test_speed_and_eta_follow_the_window() -> None:
    clock, sink = _Clock(), _Collect()
    tracker = ProgressTracker(sink=sink, interval=0, window=10.0, clock=clock)
    tracker.begin(Phase.DOWNLOADING, bytes_total=10_000, files_total=1)
    for second in range(1, 6):
        clock.now = float(second)
        tracker.file_bytes("a", second * 1000)
    assert tracker.current.speed == pytest.approx(1000.0)
    assert tracker.current.eta == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("samples", "speed"),
    [
        ([], 0.0),
        ([(0.0, 0)], 0.0),
        ([(0.0, 0), (2.0, 100)], 50.0),
        ([(1.0, 100), (1.0, 200)], 0.0),
        ([(0.0, 100), (1.0, 50)], 0.0),
    ],
    ids=["empty", "one sample", "steady", "no time", "went down"],
)
def test_window_speed(samples: list[tuple[float, int]], speed: float) -> None:
    assert window_speed(deque(samples)) == speed


def test_eta_unknown_while_stalled() -> None:
    assert eta_seconds(remaining=10, speed=0) is None
    assert eta_seconds(remaining=0, speed=0) == 0.0


def test_json_lines_sink_writes_camel_case_lines() -> None:
    stream = io.StringIO()
    JsonLinesSink(stream).report(
        Progress(phase=Phase.FAILED, bytes_done=5, bytes_total=10, speed=2.4, message="Boom")
    )
    line = json.loads(stream.getvalue())
    assert line == {
        "phase": "Failed",
        "bytesDone": 5,
        "bytesTotal": 10,
        "filesDone": 0,
        "filesTotal": 0,
        "speedBytesPerSecond": 2,
        "etaSeconds": None,
        "message": "Boom",
    }
