"""The engines' own view of their load: each ready replica's Prometheus ``/metrics``, scraped every
``gateway_engine_metrics_interval_seconds``, made into one score per replica for the balancer's
picks without prefix affinity. Prefix affinity bounds its load by requests in flight instead: the
score moves requests off the replica that caches their prefix sooner, which cost about 14 % of the
throughput in ``hack/bench/routing.py`` (:mod:`aima.gateway.balancer` gives the figures).

The gateway's count of its requests in flight is blind to what the engine does with them: a vLLM
replica that holds 8 requests may run all 8 in its batch, or run 2 and queue 6 because its KV cache
is full. The engines say which, under the names the Gateway API Inference Extension's model-server
protocol lists: vLLM ``vllm:num_requests_waiting``, ``vllm:num_requests_running``,
``vllm:kv_cache_usage_perc`` (``vllm:gpu_cache_usage_perc`` before 0.10); SGLang
``sglang:num_queue_reqs``, ``sglang:num_running_reqs``, ``sglang:token_usage``; llama.cpp
``llamacpp:requests_deferred``, ``llamacpp:requests_processing``, ``llamacpp:kv_cache_usage_ratio``.
Counts are summed over label sets (a data-parallel vLLM reports one set per engine core), the KV
cache use is the highest set's. All catalog engines serve them at ``/metrics`` on their API port.

The score of a replica, in requests (lowest wins)::

    QUEUE_WEIGHT x waiting + running + KV_WEIGHT x kv_pressure + (in flight now - in flight at the scrape)

- ``waiting`` counts double: a queued request waits for a running one to end and then costs its own
  work, and a queue at all means the engine is saturated (its batch or KV cache is full).
- ``kv_pressure`` is the KV-cache use above ``KV_KNEE`` (80 %), scaled to 0..1: a full cache weighs
  as much as four requests, since the engine must queue or preempt. Below the knee the use mostly
  restates ``running`` (the running requests hold the blocks).
- The engine's counts are as old as the scrape (up to one interval, plus the engines' own stats
  period). Requests this gateway sent since then are not in them, and the ones that ended are still
  in them, so the score adds the change of the gateway's own count since the scrape: a burst
  between two scrapes spreads as by least outstanding requests instead of all going to the replica
  that looked idle. The engine's counts also hold the requests of other gateway replicas and of
  direct clients, which no gateway count sees.

A replica that exports none of these names (another engine, metrics off, a scrape that fails or
times out) scores its gateway requests in flight, as without scraping: it is not taken for down.
Scraping uses the proxy's connection pool; replicas that leave the routing table leave the map.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from aima.gateway.routes import Routes

__all__ = [
    "KV_KNEE",
    "KV_WEIGHT",
    "QUEUE_WEIGHT",
    "EngineLoad",
    "EngineReport",
    "EngineScraper",
    "parse",
    "score",
    "scores",
]

logger = logging.getLogger("aima.gateway.engine_load")

QUEUE_WEIGHT = 2.0
"""A queued request weighs this many running ones."""
KV_WEIGHT = 4.0
"""A full KV cache weighs this many running requests."""
KV_KNEE = 0.8
"""KV-cache use below this adds nothing to the score."""
METRICS_PATH = "/metrics"

_WAITING, _RUNNING, _KV = 0, 1, 2
_NAMES = {
    "vllm:num_requests_waiting": _WAITING,
    "vllm:num_requests_running": _RUNNING,
    "vllm:kv_cache_usage_perc": _KV,  # a ratio, despite the name
    "vllm:gpu_cache_usage_perc": _KV,
    "sglang:num_queue_reqs": _WAITING,
    "sglang:num_running_reqs": _RUNNING,
    "sglang:token_usage": _KV,
    "llamacpp:requests_deferred": _WAITING,
    "llamacpp:requests_processing": _RUNNING,
    "llamacpp:kv_cache_usage_ratio": _KV,
}
_PREFIXES = ("vllm:", "sglang:", "llamacpp:")
# The pool does not decompress (replies pass through as sent); a gzipped scrape would be unreadable.
_HEADERS = {"Accept": "text/plain", "Accept-Encoding": "identity"}


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """What one replica reports of its load."""

    waiting: float
    """Requests queued, not yet scheduled."""
    running: float
    """Requests in the running batch."""
    kv_usage: float | None
    """Share of the KV cache in use, 0 to 1; None when not reported."""


@dataclass(frozen=True, slots=True)
class EngineReport:
    """One scrape of a replica."""

    load: EngineLoad
    ours: int
    """This gateway's requests in flight to the replica when the scrape was sent."""


def parse(text: str) -> EngineLoad | None:
    """The load in an exposition text, or None when it has none of the names (pure).

    Reads only the sample lines of the three engines' prefixes; a line it cannot read is skipped.
    """
    found = False
    waiting = running = 0.0
    kv: float | None = None
    for line in text.splitlines():
        if not line.startswith(_PREFIXES):
            continue
        brace, space = line.find("{"), line.find(" ")
        if brace != -1 and (space == -1 or brace < space):  # label values may hold spaces
            name, rest = line[:brace], line[line.rfind("}") + 1 :]
        else:
            name, rest = line[:space], line[space + 1 :]
        kind = _NAMES.get(name)
        if kind is None:
            continue
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if not math.isfinite(value):
            continue
        found = True
        if kind == _WAITING:
            waiting += value
        elif kind == _RUNNING:
            running += value
        else:
            kv = value if kv is None else max(kv, value)
    return EngineLoad(waiting=waiting, running=running, kv_usage=kv) if found else None


def score(report: EngineReport | None, *, outstanding: int) -> float:
    """A replica's load in requests, from its last report and the gateway's count now (pure)."""
    if report is None:
        return float(outstanding)
    load = report.load
    pressure = max(0.0, (load.kv_usage or 0.0) - KV_KNEE) / (1.0 - KV_KNEE)
    engine = QUEUE_WEIGHT * load.waiting + load.running + KV_WEIGHT * pressure
    return max(0.0, engine + outstanding - report.ours)


def scores(
    candidates: Sequence[str], *, outstanding: Mapping[str, int], reports: Mapping[str, EngineReport]
) -> dict[str, float]:
    """Every candidate's score (pure)."""
    return {c: score(reports.get(c), outstanding=outstanding.get(c, 0)) for c in candidates}


class EngineScraper:
    """Scrapes every replica in the routing table into ``reports`` (endpoint -> last report)."""

    def __init__(
        self,
        routes: Routes,
        *,
        session: aiohttp.ClientSession,
        reports: dict[str, EngineReport],
        outstanding: Callable[[str], int],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._routes, self._session, self.reports = routes, session, reports
        self._outstanding, self._interval, self._clock = outstanding, interval, clock
        # A loaded engine may answer its metrics late; past this it counts as exporting nothing.
        self._timeout = aiohttp.ClientTimeout(total=max(1.0, interval))

    async def run(self) -> None:
        """Scrape every interval until cancelled."""
        while True:
            started = self._clock()
            try:
                await self.scrape()
            except Exception:  # one bad round must not end balancing on the engines' load
                logger.exception("Scraping the engines' metrics failed")
            await asyncio.sleep(max(0.0, self._interval - (self._clock() - started)))

    async def scrape(self) -> None:
        """One round: every ready replica at once; replicas gone from the table are forgotten."""
        endpoints = {e for backend in self._routes.backends() for e in backend.endpoints}
        for gone in self.reports.keys() - endpoints:
            del self.reports[gone]
        await asyncio.gather(*(self._scrape(e) for e in endpoints))

    async def _scrape(self, endpoint: str) -> None:
        ours = self._outstanding(endpoint)
        load = None
        try:
            async with self._session.get(
                endpoint + METRICS_PATH, headers=_HEADERS, timeout=self._timeout
            ) as reply:
                if reply.status == 200:
                    load = parse((await reply.read()).decode("utf-8", "replace"))
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            logger.debug("No metrics from %s: %r", endpoint, error)
        if load is None:
            self.reports.pop(endpoint, None)
        else:
            self.reports[endpoint] = EngineReport(load=load, ours=ours)
