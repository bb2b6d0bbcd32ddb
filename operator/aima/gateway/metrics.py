"""Request metrics of the OpenAI gateway, in Prometheus text format.

Labels are bounded: ``model`` is a routed model id (unknown ids count as ``""``), ``route`` one of
the fixed /v1 paths, ``code`` an HTTP status.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from aima.exposition import Histogram, counter_lines

__all__ = ["GatewayMetrics", "usage_tokens"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


def usage_tokens(data: bytes) -> tuple[int, int] | None:
    """(prompt, completion) tokens from the ``usage`` an engine put in ``data``, if any.

    A search on the bytes, not a JSON parse: bodies pass through untouched, and the check for
    ``"usage"`` makes chunks without it cost one substring search.
    """
    if b'"usage"' not in data:
        return None
    prompt, completion = _PROMPT.findall(data), _COMPLETION.findall(data)
    if not prompt and not completion:
        return None
    return int(prompt[-1]) if prompt else 0, int(completion[-1]) if completion else 0


class GatewayMetrics:
    """Counters, histograms and gauges of the proxy path."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, ...]] = Counter()
        self.tokens: Counter[tuple[str, ...]] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.scale_ups: Counter[str] = Counter()
        self.sources: list[Callable[[], list[str]]] = []
        """More exposition lines, rendered when scraped (held requests, autoscaling signals)."""
        self.watch_restarts: Counter[str] = Counter()
        """Breaks of the watches behind the routing table and the keys, by resource."""
        self.key_tokens: Counter[tuple[str, ...]] = Counter()
        """Tokens the engines reported, by key (its Secret's name) and kind."""
        self.rate_limited: Counter[tuple[str, ...]] = Counter()
        """Requests refused (429), by key and the kind of window that was spent."""
        self.quota_store_errors: Counter[str] = Counter()
        """Failed calls of the quota store, by operation (reserve, adjust)."""
        self.split_requests: Counter[tuple[str, ...]] = Counter()
        """Requests for a model id with a traffic split, by the InferenceService that took each."""
        self.duration = Histogram(
            "aima_gateway_request_duration_seconds",
            "Time from request to the end of the reply.",
            ("model", "route"),
            buckets=_BUCKETS,
        )
        self.first_byte = Histogram(
            "aima_gateway_time_to_first_byte_seconds",
            "Time from request to the first byte of a streamed reply (the first token).",
            ("model", "route"),
            buckets=_BUCKETS,
        )

    def finish(self, *, model: str, route: str, code: int, seconds: float) -> None:
        """Count one finished request."""
        self.requests[(model, route, str(code))] += 1
        self.duration.observe((model, route), seconds)

    def count_usage(self, model: str, usage: tuple[int, int], *, key: str | None = None) -> None:
        """Add the tokens an engine reported, to ``key`` too when the request had one."""
        self.tokens[(model, "prompt")] += usage[0]
        self.tokens[(model, "completion")] += usage[1]
        if key is not None:
            self.key_tokens[(key, "prompt")] += usage[0]
            self.key_tokens[(key, "completion")] += usage[1]

    def render(self) -> str:
        """The exposition text."""
        lines = counter_lines(
            "aima_gateway_requests_total",
            "Requests by model, route and status.",
            ("model", "route", "code"),
            self.requests,
        )
        lines += counter_lines(
            "aima_gateway_tokens_total", "Tokens the engines reported.", ("model", "kind"), self.tokens
        )
        lines += ["# HELP aima_gateway_in_flight Requests in flight.", "# TYPE aima_gateway_in_flight gauge"]
        lines += [f'aima_gateway_in_flight{{model="{m}"}} {n}' for m, n in sorted(self.in_flight.items())]
        lines += counter_lines(
            "aima_gateway_upstream_retries_total",
            "Requests sent to another replica after a connect failure.",
            ("model",),
            {(m,): n for m, n in self.retries.items()},
        )
        lines += counter_lines(
            "aima_gateway_scale_from_zero_total",
            "Services the gateway scaled up from zero replicas.",
            ("model",),
            {(m,): n for m, n in self.scale_ups.items()},
        )
        lines += counter_lines(
            "aima_gateway_watch_restarts_total",
            "Watches of the cluster that broke and were listed again, by resource.",
            ("resource",),
            {(r,): n for r, n in self.watch_restarts.items()},
        )
        lines += counter_lines(
            "aima_gateway_key_tokens_total",
            "Tokens the engines reported, by API key (its Secret's name) and kind.",
            ("key", "kind"),
            self.key_tokens,
        )
        lines += counter_lines(
            "aima_gateway_rate_limited_total",
            "Requests refused with 429, by API key and the limit that was reached.",
            ("key", "limit"),
            self.rate_limited,
        )
        lines += counter_lines(
            "aima_gateway_quota_store_errors_total",
            "Failed calls of the quota store (requests then pass unchecked), by operation.",
            ("operation",),
            {(o,): n for o, n in self.quota_store_errors.items()},
        )
        lines += counter_lines(
            "aima_gateway_split_requests_total",
            "Requests for a model with a traffic split, by the InferenceService that took each.",
            ("model", "service"),
            self.split_requests,
        )
        lines += [line for source in self.sources for line in source()]
        lines += self.duration.render() + self.first_byte.render()
        return "\n".join(lines) + "\n"
