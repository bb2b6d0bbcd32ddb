"""The device agent against the real API server, reading the fake libnvidia-ml.so.1 through pynvml:
what it publishes and how often, power limits through device.set_power_limit, the device.* units,
and its metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aima.device.agent import DeviceAgent
from aima.device.nvml import NvmlSource
from aima.kube import KubeClient, connect, resources
from aima.settings import Settings
from aima.units import Context, Request, execute, registry
from aima_testenv import ControlPlane
from aima_testenv.processes import free_port
from fakes.nvml import NO_PERMISSION, FakeGpu, write_config
from waiting import eventually

pytestmark = pytest.mark.integration

REGISTRY = registry()
NODE = "gpu-node-0"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture
def nvml_config(
    aima_crds: ControlPlane, fake_nvml_library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The machine the fake NVML describes; this node's NodeDevices is deleted afterwards."""
    eventually(
        lambda: aima_crds.kubectl("get", "nodedevices", check=False).returncode == 0,
        what="NodeDevices to be served",
    )
    config = tmp_path / "nvml.conf"
    monkeypatch.setenv("FAKE_NVML_CONFIG", str(config))
    yield config
    aima_crds.kubectl("delete", "nodedevices", NODE, "--ignore-not-found")


def settings(plane: ControlPlane, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kubeconfig": plane.kubeconfig,
        "device_node_name": NODE,
        "device_metrics_port": 0,
        "device_power_limits_allowed": True,
    }
    return Settings(**(values | overrides))


@contextlib.asynccontextmanager
async def agent_of(plane: ControlPlane, **overrides: Any) -> AsyncIterator[tuple[DeviceAgent, KubeClient]]:
    kube = await connect(kubeconfig=plane.kubeconfig)
    source = NvmlSource()
    try:
        yield DeviceAgent(source=source, kube=kube, settings=settings(plane, **overrides)), kube
    finally:
        source.close()
        await kube.close()


async def call(kube: KubeClient, unit: str, **input_: Any) -> dict[str, Any]:
    context = Context(kube=kube, settings=Settings(device_stale_seconds=10**9))
    response = (await execute(REGISTRY, context, Request(unit=unit, input=input_))).dump()
    return response


async def node_devices(kube: KubeClient) -> dict[str, Any]:
    body = await kube.get(resources.NODE_DEVICES, name=NODE)
    assert body is not None
    return body


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_publishes_at_a_bounded_rate(nvml_config: Path, aima_crds: ControlPlane) -> None:
    write_config(nvml_config, [FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")])

    async def scenario() -> None:
        async with agent_of(aima_crds) as (agent, kube):
            assert await agent.tick(now=T0)
            body = await node_devices(kube)
            assert body["metadata"]["ownerReferences"][0]["kind"] == "Node"
            status = body["status"]
            assert (status["gpuCount"], status["nvml"], status["conditions"][0]["reason"]) == (
                2,
                True,
                "GpusHealthy",
            )
            write_config(nvml_config, [FakeGpu(uuid="GPU-a", temperature=70), FakeGpu(uuid="GPU-b")])
            assert not await agent.tick(now=T0 + datetime.timedelta(seconds=10))  # figures wait 30 s
            assert await agent.tick(now=T0 + datetime.timedelta(seconds=31))
            assert not await agent.tick(now=T0 + datetime.timedelta(seconds=40))  # nothing changed
            write_config(
                nvml_config, [FakeGpu(uuid="GPU-a", temperature=70), FakeGpu(uuid="GPU-b", ecc_uncorrected=1)]
            )
            assert await agent.tick(now=T0 + datetime.timedelta(seconds=40))  # health goes out at once
            assert (await node_devices(kube))["status"]["unhealthy"] == 1
            assert await agent.tick(now=T0 + datetime.timedelta(seconds=400))  # the heartbeat

            health = (await call(kube, "device.health", node=NODE))["data"]
            assert (health["healthy"], health["unhealthy"]) == (1, 1)
            assert (
                health["problems"][0]["message"]
                == "GPU 1: 1 uncorrectable ECC errors since the driver loaded"
            )
            detected = (await call(kube, "device.detect"))["data"]
            agents = {n["node"]: n["agent"] for n in detected["nodes"]}
            assert agents == {"gpu-node-0": "Reporting", "gpu-node-1": "Missing"}
            metrics = (await call(kube, "device.metrics", node=NODE))["data"]["gpus"]
            assert [(g["uuid"], g["temperatureCelsius"]) for g in metrics] == [("GPU-a", 70), ("GPU-b", 55)]

    run(scenario)


def test_power_limits_through_the_agent(nvml_config: Path, aima_crds: ControlPlane) -> None:
    write_config(nvml_config, [FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b", power_set=NO_PERMISSION)])

    async def scenario() -> None:
        async with agent_of(aima_crds, device_publish_min_seconds=0) as (agent, kube):
            await agent.tick()
            ticking = asyncio.create_task(_tick_forever(agent))
            try:
                applied = await call(kube, "device.set_power_limit", node=NODE, gpu="0", watts=450)
                assert applied["data"]["state"] == "Applied", applied
                info = (await call(kube, "device.info", node=NODE))["data"]["gpus"]
                assert info[0]["powerLimitWatts"] == 450.0
                refused = await call(kube, "device.set_power_limit", node=NODE, gpu="GPU-b", watts=300)
                assert refused["error"]["code"] == "FORBIDDEN"
                assert "needs root on the node" in refused["error"]["message"]
                out_of_range = await call(kube, "device.set_power_limit", node=NODE, gpu="0", watts=900)
                assert out_of_range["error"]["message"] == "900 W is outside GPU 0's range, 200-700 W"
            finally:
                ticking.cancel()
        async with agent_of(aima_crds, device_power_limits_allowed=False, device_publish_min_seconds=0) as (
            agent,
            kube,
        ):
            await agent.tick()
            forbidden = await call(kube, "device.set_power_limit", node=NODE, gpu="0", watts=400)
            assert forbidden["error"]["code"] == "FORBIDDEN"
            assert "does not change power limits" in forbidden["error"]["message"]

    run(scenario)


async def _tick_forever(agent: DeviceAgent) -> None:
    while True:
        await agent.tick()
        await asyncio.sleep(0.2)


def test_a_node_without_a_driver_reports_none_and_why(nvml_config: Path, aima_crds: ControlPlane) -> None:
    write_config(nvml_config, [], init_error=9)

    async def scenario() -> None:
        async with agent_of(aima_crds) as (agent, kube):
            assert await agent.tick()
            ready = (await node_devices(kube))["status"]["conditions"][0]
            assert (ready["status"], ready["reason"]) == ("False", "NvmlUnavailable")
            detected = {n["node"]: n for n in (await call(kube, "device.detect"))["data"]["nodes"]}
            assert detected[NODE]["agent"] == "NoNvml"
            assert detected[NODE]["message"] == "the NVIDIA kernel driver is not loaded on this node"

    run(scenario)


def test_metrics_endpoint(nvml_config: Path, aima_crds: ControlPlane) -> None:
    write_config(nvml_config, [FakeGpu(uuid="GPU-a", temperature=66)])
    port = free_port()

    async def scenario() -> None:
        async with agent_of(aima_crds, device_metrics_port=port, device_sample_seconds=0.2) as (agent, _):
            stop = asyncio.Event()
            running = asyncio.create_task(agent.run(stop))
            try:
                text = await _scrape(port)
            finally:
                stop.set()
                await running
        assert 'aima_gpu_temperature_celsius{node="gpu-node-0",gpu="0",UUID="GPU-a",' in text
        assert 'aima_device_nvml_available{node="gpu-node-0"} 1' in text
        assert "aima_gpu_memory_total_bytes" in text and "aima_gpu_healthy" in text

    run(scenario)


async def _scrape(port: int) -> str:
    async with aiohttp.ClientSession() as session:
        for _ in range(50):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
                    if "aima_gpu_temperature_celsius" in text:
                        return text
            await asyncio.sleep(0.1)
    raise AssertionError("the metrics endpoint never showed a GPU")
