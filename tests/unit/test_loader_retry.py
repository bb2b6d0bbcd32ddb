"""Backoff delays, Retry-After parsing, and the free-space check."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from aima.loader import diskspace
from aima.loader.errors import DiskFullError
from aima.loader.retry import RetryPolicy, parse_retry_after

pytestmark = pytest.mark.unit


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    policy = RetryPolicy(base_seconds=1.0, max_seconds=8.0)
    assert [policy.delay(n, rand=0.0) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [policy.delay(n, rand=0.999) for n in range(5)] == pytest.approx(
        [1.0, 2.0, 4.0, 8.0, 8.0], abs=0.01
    )


def test_retry_after_wins_but_is_capped() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.delay(0, retry_after=7.0) == 7.0
    assert policy.delay(0, retry_after=3600.0) == 60.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, None), ("", None), ("120", 120.0), ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0), ("soon", None)],
    ids=["absent", "empty", "seconds", "http date", "garbage"],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds


def test_free_space_check_names_need_and_free(tmp_path: Path) -> None:
    with pytest.raises(DiskFullError, match=r"needs 1\.0 GiB, 100\.0 MiB are free"):
        diskspace.check(tmp_path, needed=2**30, free_space=lambda _: 100 * 2**20)
    diskspace.check(tmp_path, needed=2**20, free_space=lambda _: 2**30)
    diskspace.check(tmp_path, needed=0, free_space=lambda _: 0)  # nothing to write: no check
