"""The newcomer's check: every example of every unit runs, against the real control plane and operator.

The examples form one story in one namespace, in this order: commands that add things (create, pull,
import, scale, start), then queries, then destructive commands (stop), then deletes; by unit name
within each step, so `model.create` makes the Model that `service.create` serves. The world holds
beforehand only what no unit makes: a PersistentVolumeClaim `models` (for model.import), an
AlertRule `gpu-hot` (rules come from Git, not from units), and a device agent on gpu-node-0 reading
the fake NVML with power limits allowed (for device.set_power_limit). inference.* units talk to a
fake OpenAI-compatible engine standing in for the gateway.

Each example is its own test, named `<unit>[<n>]`, and a failure says which example and why. Its
output must also validate against the unit's published output schema (what MCP clients check).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aima.device.agent import DeviceAgent
from aima.device.nvml import NvmlSource
from aima.kube import connect
from aima.settings import Settings
from aima.units import Context, Example, Request, Unit, execute, registry
from aima_testenv import ControlPlane
from aima_testenv.engines import EngineOptions, FakeEngine
from aima_testenv.operator import OperatorThread
from aima_testenv.threads import LoopThread
from fakes.nvml import CONFIG_ENV, FakeGpu, write_config
from waiting import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = registry()


def step(unit: Unit[Any, Any]) -> int:
    if unit.action == "delete":
        return 3
    if unit.destructive:
        return 2
    return 1 if unit.read_only else 0


EXAMPLES: list[tuple[Unit[Any, Any], int, Example]] = [
    (unit, i, example)
    for unit in sorted(REGISTRY, key=lambda u: (step(u), u.name))
    for i, example in enumerate(unit.examples)
]


AGENT_NODE = "gpu-node-0"


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    operator: OperatorThread,
    fake_nvml_library: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The namespace the story runs in, with what no unit makes."""
    name = f"examples-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    control_plane.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "models", "namespace": name},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            },
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "AlertRule",
                "metadata": {"name": "gpu-hot", "namespace": name},
                "spec": {"condition": {"gpu": {"metric": "TemperatureCelsius", "above": 85}}, "for": "0s"},
            },
        ]
    )
    nvml = write_config(
        tmp_path_factory.mktemp("nvml") / "nvml.conf", [FakeGpu(uuid="GPU-x", temperature=91)]
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CONFIG_ENV, str(nvml))
        with DeviceAgentThread(control_plane, node=AGENT_NODE):
            eventually(lambda: rule_state(control_plane, name) == "Firing", what="gpu-hot to fire")
            yield name
    control_plane.kubectl("delete", "nodedevices", AGENT_NODE, "--ignore-not-found")
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


def rule_state(plane: ControlPlane, namespace: str) -> str:
    jsonpath = "jsonpath={.status.state}"
    return plane.kubectl("get", "alertrule", "gpu-hot", "-n", namespace, "-o", jsonpath, check=False).stdout


class DeviceAgentThread(LoopThread):
    """The real agent sampling every 0.2 s in a thread of its own, as its DaemonSet pod would."""

    def __init__(self, plane: ControlPlane, *, node: str) -> None:
        super().__init__(name="device-agent")
        self.settings = Settings(
            kubeconfig=plane.kubeconfig,
            device_node_name=node,
            device_sample_seconds=0.2,
            device_publish_min_seconds=0,
            device_metrics_port=0,
            device_power_limits_allowed=True,
        )

    async def serve(self, stop: asyncio.Event) -> None:
        kube = await connect(kubeconfig=self.settings.kubeconfig)
        source = NvmlSource()
        try:
            self.mark_ready()
            await DeviceAgent(source=source, kube=kube, settings=self.settings).run(stop)
        finally:
            source.close()
            await kube.close()


def test_every_unit_has_an_example() -> None:
    assert [u.name for u in REGISTRY if not u.examples] == []


@pytest.mark.parametrize(
    ("unit", "index", "example"), EXAMPLES, ids=[f"{u.name}[{i}]" for u, i, _ in EXAMPLES]
)
def test_the_example_runs(
    control_plane: ControlPlane, world: str, unit: Unit[Any, Any], index: int, example: Example
) -> None:
    response = asyncio.run(run(control_plane, world, unit.name, dict(example.input)))
    assert response.error is None, (
        f"{unit.name} example {index} ({example.description}) failed with {response.error.code}: "
        f"{response.error.message}"
    )
    schema = unit.output.model_json_schema(by_alias=True, mode="serialization")
    jsonschema.validate(response.data, schema)


async def run(plane: ControlPlane, namespace: str, unit: str, input_: dict[str, Any]) -> Any:
    upstream = FakeEngine(EngineOptions(name="gateway"))
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(upstream.serve())
        kube = await connect(kubeconfig=plane.kubeconfig)
        stack.push_async_callback(kube.close)
        settings = Settings(catalog_dir=ROOT / "catalog", gateway_url=url)
        context = Context(kube=kube, settings=settings, namespace=namespace)
        return await execute(REGISTRY, context, Request(unit=unit, input=input_))
