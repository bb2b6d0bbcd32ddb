"""Ten everyday tasks of an agent that has nothing but the MCP tool list, played through the SDK's
client against the local control plane and the real operator (issue 17).

Each task completes with tools alone, every failure met on the way names its cause and the next
action, and the output budgets hold: the tool list under 27,000 characters in full mode, no result
over 4,000 characters unless asked for in detail. The one stand-in: no model hub is reachable here,
so once the operator has started the loader Job the test marks the download done, as the loader
would (tests/e2e/test_model_download.py runs the real loader).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import ListToolsResult, TextContent

from aima.doors.mcp import Policy, build_server
from aima.doors.mcp.server import RESULT_LIMIT
from aima.kube import connect
from aima.settings import Settings
from aima.units import Context, registry
from aima_testenv import ControlPlane
from aima_testenv.engines import FakeEngine
from aima_testenv.operator import OperatorThread
from declared import mark_downloaded

pytestmark = pytest.mark.e2e
_log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
TOOL_LIST_BUDGET = 27_000
CLOSED_PORT = "http://127.0.0.1:9"
"""The discard port: a gateway there is refused at once, as an unresolvable in-cluster name is."""
SILENCE = "UklGRsQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YaAAAAA" + "A" * 213
"""10 ms of silence as base64 WAV: the spoken question of the voice pipeline."""


@dataclass(frozen=True)
class World:
    """Where the agent works: the control plane (for the loader's stand-in) and its namespace."""

    plane: ControlPlane
    namespace: str


class Agent:
    """An MCP client session that keeps the sizes of what it was told."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.largest = 0

    async def ok(self, tool: str, arguments: dict[str, Any]) -> Any:
        """A call that must succeed; its JSON."""
        text = await self._call(tool, arguments, error=False)
        return json.loads(text)

    async def refused(self, tool: str, arguments: dict[str, Any]) -> str:
        """A call that must fail; its text (code first)."""
        return await self._call(tool, arguments, error=True)

    async def until(
        self, what: str, tool: str, arguments: dict[str, Any], check: Callable[[Any], bool]
    ) -> Any:
        """Call until `check` holds for the JSON result, as an agent polls."""
        deadline = time.monotonic() + 90
        while True:
            found = await self.ok(tool, arguments)
            if check(found):
                return found
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {found}"
            await asyncio.sleep(0.5)

    async def _call(self, tool: str, arguments: dict[str, Any], *, error: bool) -> str:
        result = await self.client.call_tool(tool, arguments)
        text = result.content[0]
        assert isinstance(text, TextContent)
        assert result.is_error is error, f"{tool} {arguments}: {text.text}"
        assert result.structured_content is None  # the JSON once, as text
        if not arguments.get("detail"):
            self.largest = max(self.largest, len(text.text))
        return text.text


def test_ten_everyday_tasks_through_mcp_alone(
    aima_crds: ControlPlane, operator: OperatorThread, fake_gateway: tuple[FakeEngine, str], namespace: str
) -> None:
    world = World(plane=aima_crds, namespace=namespace)
    settings = Settings(gateway_url=fake_gateway[1], catalog_dir=ROOT / "catalog")
    unreachable = settings.model_copy(update={"gateway_url": CLOSED_PORT})

    async def session() -> None:
        async with AsyncExitStack() as stack:
            kube = await connect(kubeconfig=aima_crds.kubeconfig)
            stack.push_async_callback(kube.close)

            async def serve(policy: Policy, settings: Settings = settings) -> Agent:
                context = Context(kube=kube, settings=settings, namespace=namespace)
                server = build_server(registry(), lambda: context, policy=policy, namespace=namespace)
                return Agent(await stack.enter_async_context(Client(server)))

            full = await serve(Policy())
            listed = await full.client.list_tools()
            tools = ListToolsResult(tools=listed.tools).model_dump_json(by_alias=True, exclude_none=True)
            _log.info("Measured tool list tools=%d characters=%d", len(listed.tools), len(tools))
            assert len(tools) < TOOL_LIST_BUDGET
            for task in TASKS:
                await task(full, world)
            await _read_only(await serve(Policy(read_only=True)))
            await _gateway_elsewhere(await serve(Policy(), unreachable))
            await _clean_up(full, world)
            _log.info("Measured largest result characters=%d", full.largest)
            assert full.largest <= RESULT_LIMIT

    asyncio.run(session())


async def _gpus_free(agent: Agent, world: World) -> None:
    """1. Which GPUs are free: one call, in one sentence."""
    status = await agent.ok("resource_status", {})
    # Earlier tests' services may hold some of the session's 16 GPUs still.
    assert re.match(r"\d+ of 16 GPUs free: gpu-node-0 has \d+, gpu-node-1 has \d+$", status["summary"])
    assert sum(n["free"] for n in status["nodes"]) == status["free"]


async def _pull_and_follow(agent: Agent, world: World) -> None:
    """2. Pull a model and follow it to Ready (the loader's part stood in for)."""
    pulled = await agent.ok(
        "model_pull", {"name": "tiny", "source": "hf://acme/tiny-llm@main", "type": "LLM"}
    )
    assert pulled["metadata"]["namespace"] == world.namespace
    model = await agent.until(
        "the loader Job", "model_get", {"name": "tiny"}, lambda m: m.get("status", {}).get("loaderJob")
    )
    mark_downloaded(world.plane, world.namespace, "tiny", model["status"]["loaderJob"])
    await agent.until(
        "the Model to be Ready", "model_list", {}, lambda found: found["items"][0]["ready"] == "True"
    )


async def _serve(agent: Agent, world: World) -> None:
    """3. Serve it: the result is the service's first status, and it becomes ready."""
    created = await agent.ok(
        "service_create", {"name": "chat", "modelRef": {"name": "tiny"}, "resources": {"gpus": 1}}
    )
    assert (
        created["name"] == "chat" and created.get("phase") is not None
    )  # the operator's word, not an empty status
    await agent.until(
        "the service to be ready",
        "service_get",
        {"name": "chat"},
        lambda s: s["status"].get("readyReplicas") == 1,
    )


async def _why_not_ready(agent: Agent, world: World) -> None:
    """4. Why is it not ready: refusals name the cause and the next tool; a waiting service says why."""
    missing = await agent.refused("service_create", {"name": "other", "modelRef": {"name": "nope"}})
    assert missing.startswith("MODEL_NOT_FOUND: Model nope not found") and "model.pull" in missing
    elsewhere = await agent.refused(
        "service_create", {"name": "other", "modelRef": {"name": "tiny", "namespace": "x"}}
    )
    assert (
        elsewhere.startswith("INVALID_INPUT")
        and "modelRef.namespace: unknown field; modelRef takes name" in elsewhere
    )
    await agent.ok(
        "service_create",
        {"name": "big", "modelRef": {"name": "tiny"}, "resources": {"gpus": 8}, "replicas": 3},
    )
    waiting = await agent.until(
        "the service to say why it waits", "service_get", {"name": "big"},
        lambda s: any(c.get("reason") == "InsufficientGPU" for c in s["status"].get("conditions", [])),
    )  # fmt: skip
    why = next(c for c in waiting["status"]["conditions"] if c["reason"] == "InsufficientGPU")
    assert "needs 8 nvidia.com/gpu on one node" in why["message"]
    messages = [c["message"] for c in waiting["status"]["conditions"] if not c["message"].startswith("As ")]
    assert len(messages) == len(set(messages))  # each said once
    await agent.ok("service_delete", {"name": "big"})


async def _beyond_capacity(agent: Agent, world: World) -> None:
    """5. Scale beyond capacity: done, and said how much waits and what to do about it."""
    mine = {"namespace": world.namespace}
    await agent.until("big's replicas to go", "resource_allocations", mine, lambda a: len(a["items"]) == 1)
    free = (await agent.ok("resource_status", {}))["free"]
    scaled = await agent.ok("service_scale", {"name": "chat", "replicas": 20})
    assert scaled["replicas"] == 20
    said = re.match(r"Only (\d+) of the 19 replicas to start fit in the free GPUs now", scaled["warning"])
    assert said, scaled["warning"]
    fit = int(said.group(1))  # earlier tests' GPUs may have come free meanwhile, never the reverse
    assert free <= fit < 19 and f"service_scale to {1 + fit} avoids the wait" in scaled["warning"]
    never = await agent.refused(
        "service_create", {"name": "huge", "modelRef": {"name": "tiny"}, "resources": {"gpus": 16}}
    )
    assert never.startswith("INSUFFICIENT_RESOURCES: A replica needs 16 GPUs on one node")
    await agent.ok("service_scale", {"name": "chat", "replicas": 1})


async def _stop_and_start(agent: Agent, world: World) -> None:
    """6. Stop and start: the results show the state they led to, and the count is kept."""
    stopped = await agent.ok("service_stop", {"name": "chat"})
    assert (stopped["phase"], stopped["replicas"], stopped["suspend"]) == ("Suspended", 1, True)
    started = await agent.ok("service_start", {"name": "chat"})
    assert started["phase"] != "Suspended" and started["replicas"] == 1
    await agent.until(
        "the service to be ready again",
        "service_get",
        {"name": "chat"},
        lambda s: s["status"].get("readyReplicas") == 1,
    )


async def _ask_a_model(agent: Agent, world: World) -> None:
    """7. Ask a model through the gateway."""
    answer = await agent.ok("inference_chat", {"model": "chat", "messages": [{"content": "Hello"}]})
    assert answer["content"].startswith("tok0")


async def _voice_pipeline(agent: Agent, world: World) -> None:
    """8. The voice pipeline: from the catalog's template, run, listed, deleted."""
    listed = await agent.ok("pipeline_list", {})
    assert "voice-assistant" in {t["name"] for t in listed["templates"]}
    await agent.ok("pipeline_create", {"name": "voice", "template": "voice-assistant"})
    ran = await agent.ok(
        "pipeline_run", {"name": "voice", "run": "voice-1", "inputs": {"audio": SILENCE}, "waitSeconds": 60}
    )
    assert ran["phase"] == "Succeeded", ran
    assert [s["id"] for s in ran["steps"]] == ["transcribe", "chat", "synthesize"]
    runs = await agent.ok("pipeline_runs", {"pipeline": "voice"})
    assert [r["run"] for r in runs["items"]] == ["voice-1"]
    stored = json.loads(
        world.plane.kubectl("get", "pipelinerun", "voice-1", "-n", world.namespace, "-o", "json").stdout
    )
    assert stored["spec"]["inputs"] == {"audio": {"secretKeyRef": {"name": "voice-1-inputs", "key": "audio"}}}
    unknown = await agent.refused("pipeline_status", {"run": "voice-2"})
    assert unknown.startswith("PIPELINE_RUN_NOT_FOUND") and "pipeline.runs" in unknown


async def _overview(agent: Agent, world: World) -> None:
    """10. An overview in one call; a namespace that does not exist says so at once."""
    seen = await agent.ok("resource_overview", {"namespace": world.namespace})
    assert world.namespace in seen["namespaces"]
    assert seen["services"] == {"ready": 1}
    missing = await agent.refused("model_list", {"namespace": "no-such-team"})
    assert missing.startswith("NAMESPACE_NOT_FOUND: Namespace no-such-team does not exist")
    budget = await agent.refused("resource_budget", {"namespace": "no-such-team"})
    assert budget.startswith("NAMESPACE_NOT_FOUND")


async def _read_only(reader: Agent) -> None:
    """9. Read-only mode says so up front and in the refusal."""
    assert "read-only" in (reader.client.instructions or "")
    tools = {t.name for t in (await reader.client.list_tools()).tools}
    assert "service_scale" not in tools and "service_get" in tools
    refused = await reader.refused("service_scale", {"name": "chat", "replicas": 2})
    assert refused.startswith("FORBIDDEN: service_scale changes state, and this MCP server is read-only")


async def _gateway_elsewhere(stranded: Agent) -> None:
    """7's failure: a gateway the server cannot reach says how to name it."""
    lost = await stranded.refused("inference_chat", {"model": "chat", "messages": [{"content": "Hello"}]})
    assert lost.startswith("UNAVAILABLE: The gateway at") and "--gateway-url" in lost


async def _clean_up(agent: Agent, world: World) -> None:
    """11. Clean up: everything made goes, runs (and their audio) included."""
    inputs = world.plane.kubectl(
        "get", "secret", "voice-1-inputs", "-n", world.namespace, "-o", "json"
    ).stdout
    assert json.loads(inputs)["metadata"]["ownerReferences"][0]["name"] == "voice-1"  # goes with the run
    await agent.ok("pipeline_delete_run", {"run": "voice-1"})
    await agent.ok("pipeline_delete", {"name": "voice"})
    await agent.ok("service_delete", {"name": "chat"})
    await agent.ok("model_delete", {"name": "tiny"})
    empty = {"namespace": world.namespace}
    await agent.until(
        "the namespace to be empty", "resource_overview", empty,
        lambda seen: seen["services"] == {} and seen["models"] == {} and seen["runs"] == {},
    )  # fmt: skip


TASKS = (
    _gpus_free, _pull_and_follow, _serve, _why_not_ready, _beyond_capacity, _stop_and_start, _ask_a_model,
    _voice_pipeline, _overview,
)  # fmt: skip
"""Tasks 1 to 8 and 10 with every tool; 9 (read-only) and the cleanup run apart."""
