"""Prometheus text exposition: counters and histograms by label tuple, for every /metrics of AIMA
(the units' HTTP door, the gateway). Labels must stay bounded: callers pass known values only."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

__all__ = ["Histogram", "counter_lines", "gauge_lines"]


def counter_lines(
    name: str, help_text: str, labels: tuple[str, ...], values: Mapping[tuple[str, ...], int]
) -> list[str]:
    """A counter's exposition lines, one per label tuple, sorted."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    for key, value in sorted(values.items()):
        lines.append(f"{name}{{{_labels(labels, key)}}} {value}")
    return lines


def gauge_lines(
    name: str, help_text: str, labels: tuple[str, ...], values: Mapping[tuple[str, ...], float]
) -> list[str]:
    """A gauge's exposition lines, one per label tuple, sorted."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for key, value in sorted(values.items()):
        lines.append(f"{name}{{{_labels(labels, key)}}} {value:g}")
    return lines


class Histogram:
    """Cumulative-bucket histogram per label tuple; ``buckets`` are the upper bounds in seconds."""

    def __init__(
        self, name: str, help_text: str, labels: tuple[str, ...], *, buckets: Sequence[float]
    ) -> None:
        self._name, self._help, self._labels = name, help_text, labels
        self._buckets = tuple(buckets)
        self._counts: dict[tuple[str, ...], list[int]] = {}
        self._sums: dict[tuple[str, ...], float] = {}

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        """Record one observation."""
        counts = self._counts.get(labels)
        if counts is None:
            counts = self._counts[labels] = [0] * (len(self._buckets) + 1)
        counts[bisect.bisect_left(self._buckets, seconds)] += 1
        self._sums[labels] = self._sums.get(labels, 0.0) + seconds

    def render(self) -> list[str]:
        """Exposition lines."""
        lines = [f"# HELP {self._name} {self._help}", f"# TYPE {self._name} histogram"]
        for labels, counts in sorted(self._counts.items()):
            base = _labels(self._labels, labels)
            running = 0
            for bound, count in zip((*self._buckets, "+Inf"), counts, strict=True):
                running += count
                lines.append(f'{self._name}_bucket{{{base},le="{bound}"}} {running}')
            lines.append(f"{self._name}_sum{{{base}}} {self._sums[labels]:.6f}")
            lines.append(f"{self._name}_count{{{base}}} {running}")
        return lines


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in zip(names, values, strict=True))
