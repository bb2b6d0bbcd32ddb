"""Pure device decisions: health, unified memory, when to publish, power limit plans, metrics text,
and how units tell agents apart."""

from __future__ import annotations

import datetime

import pytest

from aima.api.device import Gpu, GpuHealth, NodeDevices, NodeDevicesStatus, PowerLimitRequest, PowerLimitState
from aima.device import metrics
from aima.domain import devices
from aima.units.device import AgentState, reports_of, unlisted

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
GPU = Gpu(index=0, uuid="GPU-a", name="NVIDIA H100", temperature_celsius=60, utilization_percent=40,
          power_limit_watts=700.0, memory_total_mib=81920, memory_used_mib=1024)  # fmt: skip


def status(*gpus: Gpu) -> NodeDevicesStatus:
    reading = devices.Reading(nvml=True, gpus=gpus)
    return devices.node_status(
        reading,
        previous=None,
        power_limits=(),
        power_limits_allowed=False,
        generation=1,
        agent_version="t",
        now=NOW,
    )


def test_health_ignores_application_xids() -> None:
    assert devices.health_of(ecc_uncorrected=0, last_xid=13) == (GpuHealth.HEALTHY, None)
    assert devices.health_of(ecc_uncorrected=None, last_xid=48) == (
        GpuHealth.UNHEALTHY,
        "XID 48: double-bit ECC error",
    )


def test_unified_memory_from_meminfo() -> None:
    assert devices.unified_memory_mib("MemTotal: 2048 kB\nMemAvailable: 1024 kB\n") == (2, 1)
    assert devices.unified_memory_mib("MemTotal: 2048 kB\n") is None


@pytest.mark.parametrize(
    ("change", "seconds", "expected"),
    [
        ({}, 60, False),
        ({}, 301, True),
        ({"temperature_celsius": 61}, 10, False),
        ({"temperature_celsius": 61}, 31, True),
        ({"health": GpuHealth.UNHEALTHY, "health_message": "XID 79"}, 6, True),
        ({"health": GpuHealth.UNHEALTHY, "health_message": "XID 79"}, 2, False),
    ],
    ids=["unchanged", "heartbeat", "figures too soon", "figures", "health", "health too soon"],
)
def test_publish_policy(change: dict[str, object], seconds: float, expected: bool) -> None:
    before, after = status(GPU), status(GPU.model_copy(update=change))
    assert (
        devices.should_publish(before, after, seconds_since=seconds, policy=devices.PublishPolicy())
        is expected
    )


def test_power_limit_plan() -> None:
    requests = [PowerLimitRequest(gpu="GPU-a", watts=700), PowerLimitRequest(gpu="GPU-a2", watts=300)]
    known, to_try = devices.plan_power_limits(requests, [GPU], allowed=True, refused={})
    assert [(r.gpu, r.state) for r in known] == [
        ("GPU-a", PowerLimitState.APPLIED),
        ("GPU-a2", PowerLimitState.REFUSED),
    ]
    assert to_try == []
    lower = [PowerLimitRequest(gpu="GPU-a", watts=500)]
    assert devices.plan_power_limits(lower, [GPU], allowed=True, refused={})[1] == lower
    remembered = devices.plan_power_limits(lower, [GPU], allowed=True, refused={("GPU-a", 500): "needs root"})
    assert remembered == ([remembered[0][0]], []) and remembered[0][0].message == "needs root"
    (off,), _ = devices.plan_power_limits(lower, [GPU], allowed=False, refused={})
    assert off.state is PowerLimitState.REFUSED and "AIMA_DEVICE_POWER_LIMITS_ALLOWED" in off.message


def test_metrics_text() -> None:
    text = metrics.render(devices.Reading(nvml=True, gpus=(GPU,)), node='n"1')
    assert 'aima_gpu_utilization_ratio{node="n\\"1",gpu="0",UUID="GPU-a",modelName="NVIDIA H100"} 0.4' in text
    assert "aima_gpu_memory_used_bytes{" in text and text.endswith(" 1\n")
    assert "aima_gpu_power_watts" not in text  # no figure, no series
    empty = metrics.render(devices.Reading(nvml=False, message="no driver"), node="n")
    assert 'aima_device_nvml_available{node="n"} 0' in empty and "aima_gpu_" not in empty


def test_reports_tell_missing_stale_and_silent_agents_apart() -> None:
    def node(name: str, gpus: int) -> dict[str, object]:
        return {
            "metadata": {"name": name},
            "status": {"capacity": {"nvidia.com/gpu": str(gpus)} if gpus else {}},
        }

    def report(name: str, age: float, *, nvml: bool = True) -> NodeDevices:
        updated = NOW - datetime.timedelta(seconds=age)
        seen = {"nvml": nvml, "updatedAt": updated.isoformat(), "message": None if nvml else "no driver"}
        return NodeDevices.model_validate(
            {"metadata": {"name": name}, "spec": {"nodeName": name}, "status": seen}
        )

    nodes = [node("a", 8), node("b", 8), node("c", 8), node("cpu", 0), node("d", 0)]
    found = reports_of(
        nodes, [report("b", 5000), report("c", 5), report("d", 5, nvml=False)], now=NOW, stale_seconds=900
    )
    assert [(r.node, r.agent) for r in found] == [
        ("a", AgentState.MISSING),
        ("b", AgentState.STALE),
        ("c", AgentState.REPORTING),
        ("d", AgentState.NO_NVML),
    ]
    assert found[1].message == "last report 5000 s ago" and found[3].message == "no driver"
    # device.info and device.metrics say why GPUs are missing from their lists (not just `[]`).
    why = unlisted(found)
    assert why is not None and why.startswith("Not listed, their device agents do not report: a (Missing: ")
    assert "b (Stale: last report 5000 s ago)" in why and "d (NoNvml: no driver)" in why
    assert unlisted([found[2]]) is None
    assert unlisted([]) == "No node advertises nvidia.com/gpu; device.detect shows every node"
