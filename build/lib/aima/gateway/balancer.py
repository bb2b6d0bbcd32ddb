"""Choosing a replica: least outstanding requests, or prefix affinity with bounded load.

Least outstanding requests suits engines whose cost per request varies a lot (LLM generations):
a replica busy with long generations gets fewer new ones. Prefix affinity sends requests that
share a conversation prefix to the same replica, so its KV cache (vLLM/SGLang prefix caching) is
reused; it is "consistent hashing with bounded loads" (Mirrokni et al., as KubeAI's CHWBL does):
rendezvous hashing picks the preferred replica, and a replica already above ``load_factor`` times
the mean load passes the request to the next one in the key's order.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence

__all__ = ["Balancer", "least_outstanding", "prefix_affinity"]


def least_outstanding(candidates: Sequence[str], loads: Mapping[str, int], *, turn: int) -> str:
    """The candidate with the fewest requests in flight; ties rotate with ``turn`` (pure)."""
    fewest = min(loads.get(c, 0) for c in candidates)
    tied = [c for c in candidates if loads.get(c, 0) == fewest]
    return tied[turn % len(tied)]


def prefix_affinity(
    candidates: Sequence[str], loads: Mapping[str, int], *, key: bytes, load_factor: float
) -> str:
    """The first candidate in ``key``'s rendezvous order whose load stays within the bound (pure).

    The bound is ceil(load_factor x mean load, this request included) plus one request of slack, so
    that at low load a conversation stays on its replica, while no replica takes much more than its
    share when others idle; the least loaded replica always qualifies.
    """
    total = sum(loads.get(c, 0) for c in candidates) + 1
    bound = math.ceil(load_factor * total / len(candidates)) + 1
    for candidate in sorted(candidates, key=lambda c: _score(key, c), reverse=True):
        if loads.get(candidate, 0) + 1 <= bound:
            return candidate
    return least_outstanding(candidates, loads, turn=0)  # unreachable with load_factor >= 1


def _score(key: bytes, candidate: str) -> bytes:
    return hashlib.blake2b(key + b"\0" + candidate.encode(), digest_size=8).digest()


class Balancer:
    """Counts requests in flight per replica (by base URL) and picks the next one."""

    def __init__(
        self, *, load_factor: float = 1.25, cool_off: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._loads: dict[str, int] = {}
        self._turn = 0
        self._load_factor = load_factor
        self._cool_off, self._clock = cool_off, clock
        self._failed: dict[str, float] = {}  # replica -> until when it is passed over

    def pick(
        self, endpoints: Sequence[str], *, exclude: Collection[str] = (), affinity: bytes | None = None
    ) -> str | None:
        """A replica of ``endpoints`` not in ``exclude``, or None when none is left."""
        candidates = [e for e in endpoints if e not in exclude] if exclude else endpoints
        if not candidates:
            return None
        if self._failed:
            now = self._clock()
            # A replica that refused a connection is passed over for a while, unless all did.
            candidates = [e for e in candidates if self._failed.get(e, 0.0) <= now] or candidates
        if len(candidates) == 1:
            return candidates[0]
        if affinity is not None:
            return prefix_affinity(candidates, self._loads, key=affinity, load_factor=self._load_factor)
        self._turn += 1
        return least_outstanding(candidates, self._loads, turn=self._turn)

    def failed(self, endpoint: str) -> None:
        """Pass ``endpoint`` over for the cool-off time (it refused a connection)."""
        now = self._clock()
        self._failed = {e: t for e, t in self._failed.items() if t > now}
        self._failed[endpoint] = now + self._cool_off

    def acquire(self, endpoint: str) -> None:
        """Count a request to ``endpoint`` as started."""
        self._loads[endpoint] = self._loads.get(endpoint, 0) + 1

    def release(self, endpoint: str) -> None:
        """Count a request to ``endpoint`` as finished; idle replicas leave the map (no growth)."""
        left = self._loads.get(endpoint, 0) - 1
        if left > 0:
            self._loads[endpoint] = left
        else:
            self._loads.pop(endpoint, None)

    def outstanding(self, endpoint: str) -> int:
        """Requests in flight to ``endpoint``."""
        return self._loads.get(endpoint, 0)
