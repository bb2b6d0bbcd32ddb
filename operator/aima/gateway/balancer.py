"""Choosing a replica: the least loaded one, or prefix affinity with bounded load.

Without affinity, load is the score of :mod:`aima.gateway.engine_load` where the replica reports its
queue, batch and KV cache, and its requests in flight through this gateway (least outstanding
requests) where it does not. Either suits engines whose cost per request varies a lot (LLM
generations): a replica busy with long generations gets fewer new ones.

Prefix affinity sends requests that share a conversation prefix to the same replica, so its KV cache
(vLLM/SGLang prefix caching) is reused; it is "consistent hashing with bounded loads" (Mirrokni et
al., as KubeAI's CHWBL does): rendezvous hashing picks the preferred replica, and a replica already
above ``load_factor`` times the mean load passes the request to the next one in the key's order.
That bound counts requests in flight through this gateway, not the score, even where engines report
their load: the score weighs a queue double and a full cache as four requests, so it trips the bound
sooner and moves requests off the replica that caches their prefix, to prefill it again elsewhere.
Measured with ``hack/bench/routing.py`` (32 clients, 16 shared prefixes), affinity bounded by the
score served 848 tokens/s and 76 % prefix-cache hits, by requests in flight 985 and 81 %: about 14 %
more throughput.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from aima.gateway.engine_load import EngineReport, scores

__all__ = ["Balancer", "least_outstanding", "prefix_affinity"]


def least_outstanding(candidates: Sequence[str], loads: Mapping[str, float], *, turn: int) -> str:
    """The candidate with the lowest load (requests in flight, or score); ties rotate with ``turn`` (pure)."""
    fewest = min(loads.get(c, 0) for c in candidates)
    tied = [c for c in candidates if loads.get(c, 0) == fewest]
    return tied[turn % len(tied)]


def prefix_affinity(
    candidates: Sequence[str], loads: Mapping[str, int], *, key: bytes, load_factor: float
) -> str:
    """The first candidate in ``key``'s rendezvous order whose requests in flight (``loads``) stay
    within the bound (pure).

    The bound is ceil(load_factor x mean requests in flight, this one included) plus one of slack, so
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
    """Counts requests in flight per replica (by base URL) and picks the next one.

    ``engine_reports`` (endpoint -> last scrape, kept by :class:`aima.gateway.engine_load.EngineScraper`)
    turns on balancing by the engines' own load for picks without affinity; None counts only this
    gateway's requests.
    """

    def __init__(
        self,
        *,
        load_factor: float = 1.25,
        cool_off: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        engine_reports: Mapping[str, EngineReport] | None = None,
    ) -> None:
        self._loads: dict[str, int] = {}
        self._reports = engine_reports
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
        if affinity is not None:  # bounded by requests in flight, not the score (see above)
            return prefix_affinity(candidates, self._loads, key=affinity, load_factor=self._load_factor)
        loads: Mapping[str, float] = self._loads
        if self._reports:
            loads = scores(candidates, outstanding=self._loads, reports=self._reports)
        self._turn += 1
        return least_outstanding(candidates, loads, turn=self._turn)

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
