"""Choosing a replica: the least loaded one, or prefix affinity with bounded load.

Without affinity, load is the score of :mod:`aima.gateway.engine_load` where the replica reports its
queue, batch and KV cache, and its requests in flight through this gateway (least outstanding
requests) where it does not. Either suits engines whose cost per request varies a lot (LLM
generations): a replica busy with long generations gets fewer new ones.

Prefix affinity sends requests that share a conversation prefix to the same replica, so its KV cache
(vLLM/SGLang prefix caching) is reused. A prefix seen for the first time goes to the replica that
holds the fewest prefixes of late (ties in the prefix's rendezvous order, so gateways agree while
their tables do), and stays there: the prefixes spread evenly, so each replica's cache holds its
share. Hashing alone (rendezvous, as KubeAI's CHWBL) gives 16 prefixes over 4 replicas shares such as
6/5/3/2, and the replica with 6 evicts what it will need again. A replica above ``load_factor`` times
the mean requests in flight passes the request on to the next one in the prefix's rendezvous order,
without giving the prefix away ("consistent hashing with bounded loads", Mirrokni et al.).
That bound counts requests in flight through this gateway, not the score, even where engines report
their load: the score weighs a queue double and a full cache as four requests, so it trips the bound
sooner and moves requests off the replica that caches their prefix, to prefill it again elsewhere
(measured with ``hack/bench/routing.py``: 848 tokens/s against 985 bounded by requests in flight).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence

from aima.gateway.engine_load import EngineReport, scores

__all__ = ["Balancer", "PrefixOwners", "least_outstanding", "prefix_affinity"]


def least_outstanding(candidates: Sequence[str], loads: Mapping[str, float], *, turn: int) -> str:
    """The candidate with the lowest load (requests in flight, or score); ties rotate with ``turn`` (pure)."""
    fewest = min(loads.get(c, 0) for c in candidates)
    tied = [c for c in candidates if loads.get(c, 0) == fewest]
    return tied[turn % len(tied)]


def prefix_affinity(
    candidates: Sequence[str],
    loads: Mapping[str, int],
    *,
    key: bytes,
    load_factor: float,
    owner: str | None = None,
    owned: Mapping[str, int] | None = None,
) -> str:
    """The replica for a request whose prefix is ``key`` (pure): its ``owner`` while that one stays
    within the bound; for a prefix without an owner among ``candidates``, the replica that owns the
    fewest prefixes (``owned``) within the bound; past the bound, the first in ``key``'s rendezvous
    order within it.

    The bound is ceil(load_factor x mean requests in flight, this one included) plus one of slack, so
    that at low load a conversation stays on its replica, while no replica takes much more than its
    share when others idle; the least loaded replica always qualifies.
    """
    total = sum(loads.get(c, 0) for c in candidates) + 1
    bound = math.ceil(load_factor * total / len(candidates)) + 1
    order = sorted(candidates, key=lambda c: _score(key, c), reverse=True)
    within = [c for c in order if loads.get(c, 0) + 1 <= bound]
    if not within:  # unreachable with load_factor >= 1
        return least_outstanding(candidates, loads, turn=0)
    if owner in within:
        return owner
    if owned is not None and owner not in candidates:
        return min(within, key=lambda c: owned.get(c, 0))  # the first in order among the fewest
    return within[0]


class PrefixOwners:
    """Which replica each prefix key was given to, for the last ``capacity`` prefixes used within
    ``ttl`` seconds (least recently used leave first), and how many each replica owns."""

    def __init__(self, *, capacity: int = 4096, ttl: float = 600.0) -> None:
        self._capacity, self._ttl = capacity, ttl
        self._owners: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self.owned: Counter[str] = Counter()
        """Prefixes owned, by replica."""

    def owner(self, key: bytes, *, now: float) -> str | None:
        """The replica ``key`` was given to, or None; the key counts as used now."""
        self._expire(now)
        found = self._owners.get(key)
        if found is None:
            return None
        self._owners[key] = (found[0], now)
        self._owners.move_to_end(key)
        return found[0]

    def give(self, key: bytes, replica: str, *, now: float) -> None:
        """Make ``replica`` the owner of ``key``."""
        if (previous := self._owners.pop(key, None)) is not None:
            self._disown(previous[0])
        self._owners[key] = (replica, now)
        self.owned[replica] += 1
        while len(self._owners) > self._capacity:
            self._disown(self._owners.popitem(last=False)[1][0])

    def _expire(self, now: float) -> None:
        while self._owners:
            key, (replica, seen) = next(iter(self._owners.items()))
            if now - seen <= self._ttl:
                return
            del self._owners[key]
            self._disown(replica)

    def _disown(self, replica: str) -> None:
        self.owned[replica] -= 1
        if self.owned[replica] <= 0:
            del self.owned[replica]


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
        load_factor: float = 2.0,
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
        self._owners = PrefixOwners()

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
            return self._affine(candidates, affinity)
        loads: Mapping[str, float] = self._loads
        if self._reports:
            loads = scores(candidates, outstanding=self._loads, reports=self._reports)
        self._turn += 1
        return least_outstanding(candidates, loads, turn=self._turn)

    def _affine(self, candidates: Sequence[str], key: bytes) -> str:
        now = self._clock()
        owner = self._owners.owner(key, now=now)
        picked = prefix_affinity(
            candidates,
            self._loads,
            key=key,
            load_factor=self._load_factor,
            owner=owner,
            owned=self._owners.owned,
        )
        if owner not in candidates:  # a new prefix, or its replica is gone
            self._owners.give(key, picked, now=now)
        return picked

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
