"""Rollout guards: each traffic split target's last requests, judged against its service's
spec.rolloutGuard, and the halt a target earns by crossing it.

A halt is written as the service's `aima.dev/rollout-halted` annotation (see `halt`): every gateway
replica reads it from its routing table and sends that target nothing, the operator shows it in
TrafficReady, and it lasts until service.rollout or service.rollback removes it. Judging is local to
each gateway replica: any one that sees the bound crossed halts the target for all.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from dataclasses import dataclass

from aima.api.common import Keys
from aima.gateway.routes import Backend, Guard
from aima.kube import KubeClient, KubeError
from aima.kube.resources import INFERENCE_SERVICES

__all__ = ["Halt", "Judge", "halt"]

logger = logging.getLogger("aima.gateway.rollout_guard")


@dataclass(frozen=True, slots=True)
class Halt:
    """A split target that crossed its guard."""

    namespace: str
    service: str
    """The service whose split names the target."""
    target: str
    reason: str

    @property
    def annotation(self) -> str:
        return f"{self.target}: {self.reason}"


@dataclass(frozen=True, slots=True)
class _Outcome:
    failed: bool
    first_byte: float | None
    """Seconds to the first byte of a streamed reply; None for a whole reply."""


class Judge:
    """The windows of the split targets a guard watches (no I/O)."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str, str], deque[_Outcome]] = {}

    def record(
        self, asked: Backend, served: Backend, *, failed: bool, first_byte: float | None
    ) -> Halt | None:
        """Count one request ``served`` took for ``asked``'s split; the halt it completes, if any.
        A window starts afresh after a halt, so a halt lifted by hand is judged anew."""
        guard, service = asked.service.guard, asked.service
        if guard is None or not asked.split or served.service.name == service.name:
            return None  # unguarded, or the service's own replicas, which a rollout does not judge
        key = (service.namespace, service.name, served.service.name)
        window = self._windows.get(key)
        if window is None or window.maxlen != guard.window_requests:
            window = self._windows[key] = deque(window or (), maxlen=guard.window_requests)
        window.append(_Outcome(failed=failed, first_byte=first_byte))
        if len(window) < guard.window_requests or (reason := breach(window, guard)) is None:
            return None
        del self._windows[key]
        return Halt(
            namespace=service.namespace, service=service.name, target=served.service.name, reason=reason
        )


def breach(window: deque[_Outcome], guard: Guard) -> str | None:
    """Why a full window crosses ``guard``, in words; None when it does not."""
    failed = sum(o.failed for o in window)
    if (share := 100 * failed / len(window)) > guard.max_error_percent:
        bound = f"{guard.max_error_percent:g} %"
        return f"{failed} of its last {len(window)} requests failed ({share:.0f} % > {bound})"
    firsts = [o.first_byte for o in window if o.first_byte is not None]
    most = guard.max_time_to_first_token_seconds
    if most is not None and firsts and (median := statistics.median(firsts)) > most:
        return f"median time to first token {median:.3f} s over its last {len(firsts)} streams > {most:g} s"
    return None


async def halt(kube: KubeClient, found: Halt) -> None:
    """Write the halt on the service; a failure is logged, and the next window tries again."""
    logger.warning("Halting %s of %s/%s: %s", found.target, found.namespace, found.service, found.reason)
    try:
        await kube.patch(
            INFERENCE_SERVICES,
            name=found.service,
            namespace=found.namespace,
            patch={"metadata": {"annotations": {Keys.ROLLOUT_HALTED: found.annotation}}},
        )
    except (KubeError, OSError, TimeoutError) as error:
        logger.warning("Could not halt %s of %s/%s: %s", found.target, found.namespace, found.service, error)
