"""Leader election on a coordination.k8s.io Lease, so that of several operator replicas one acts.

Replicas of one Deployment are equal by construction, so none is preferred: the first to take the
Lease acts, and the others wait until it is released or expires. Updates carry the Lease's
resourceVersion: of two replicas racing for it, the API server lets exactly one win.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass
from typing import Any

from aima.kube import resources
from aima.kube.client import KubeClient, KubeError

logger = logging.getLogger("aima.leader")


@dataclass(frozen=True, kw_only=True)
class LeaseSettings:
    """Where the Lease lives, who we are, and its timings in seconds."""

    namespace: str
    name: str
    identity: str
    duration_seconds: int = 15
    renew_seconds: float = 5.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _format(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expired(lease: dict[str, Any], *, now: datetime.datetime) -> bool:
    """Whether the Lease's holder stopped renewing it (or nobody holds it)."""
    spec = lease.get("spec", {})
    if not spec.get("holderIdentity") or not spec.get("renewTime"):
        return True
    renewed = datetime.datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00"))
    return renewed + datetime.timedelta(seconds=spec.get("leaseDurationSeconds", 15)) < now


async def try_acquire(kube: KubeClient, settings: LeaseSettings) -> bool:
    """Take or renew the Lease once; True when we hold it afterwards."""
    now = _now()
    lease = await kube.get(resources.LEASES, name=settings.name, namespace=settings.namespace)
    spec = {
        "holderIdentity": settings.identity,
        "leaseDurationSeconds": settings.duration_seconds,
        "renewTime": _format(now),
    }
    try:
        if lease is None:
            await kube.create(
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": settings.name, "namespace": settings.namespace},
                    "spec": spec | {"acquireTime": _format(now)},
                }
            )
            return True
        holder = lease.get("spec", {}).get("holderIdentity")
        if holder != settings.identity and not expired(lease, now=now):
            return False
        if holder != settings.identity:
            spec["acquireTime"] = _format(now)
            spec["leaseTransitions"] = lease.get("spec", {}).get("leaseTransitions", 0) + 1
        await kube.patch(
            resources.LEASES,
            name=settings.name,
            namespace=settings.namespace,
            patch={"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]}, "spec": spec},
        )
        return True
    except KubeError as error:
        if error.status in (409, 422):  # another replica won the race
            return False
        raise


async def acquire(kube: KubeClient, settings: LeaseSettings) -> None:
    """Wait until we hold the Lease."""
    while not await try_acquire(kube, settings):
        await asyncio.sleep(settings.renew_seconds)
    logger.info(
        "Acquired leadership: lease=%s/%s identity=%s", settings.namespace, settings.name, settings.identity
    )


async def keep(kube: KubeClient, settings: LeaseSettings, *, lost: asyncio.Event) -> None:
    """Renew the Lease until cancelled; set ``lost`` (and return) when it cannot be renewed in time."""
    last_renewal = asyncio.get_running_loop().time()
    while True:
        await asyncio.sleep(settings.renew_seconds)
        try:
            if await try_acquire(kube, settings):
                last_renewal = asyncio.get_running_loop().time()
                continue
        except (KubeError, OSError) as error:
            logger.warning("Could not renew the lease: %s", error)
            if asyncio.get_running_loop().time() - last_renewal < settings.duration_seconds:
                continue
        logger.error(
            "Lost leadership: lease=%s/%s identity=%s", settings.namespace, settings.name, settings.identity
        )
        lost.set()
        return


async def release(kube: KubeClient, settings: LeaseSettings) -> None:
    """Give the Lease up at shutdown so that another replica takes over at once."""
    lease = await kube.get(resources.LEASES, name=settings.name, namespace=settings.namespace)
    if lease and lease.get("spec", {}).get("holderIdentity") == settings.identity:
        await kube.patch(
            resources.LEASES,
            name=settings.name,
            namespace=settings.namespace,
            patch={
                "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {"holderIdentity": None, "renewTime": None},
            },
        )
