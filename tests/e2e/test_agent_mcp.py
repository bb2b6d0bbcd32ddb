"""An agent's session, through MCP only: `aima mcp serve` over stdio, confined to one namespace.

The agent pulls a model, is refused a service no node could ever hold, creates one that fits, scales
it beyond the cluster's GPUs, and reads from the service's resource why it is pending. The test
stands in for the loader (no model downloads here): once the operator has started the loader Job,
it marks the download done, as the loader would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from aima_testenv import ControlPlane
from aima_testenv.operator import OperatorThread
from aima_testenv.processes import free_port
from declared import mark_downloaded

pytestmark = pytest.mark.e2e

AIMA = str(Path(sys.executable).with_name("aima"))


async def poll(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


def body(result: CallToolResult) -> dict[str, Any]:
    """A tool result's JSON (results carry it once, as text)."""
    assert result.is_error is False, result.content
    text = result.content[0]
    assert isinstance(text, TextContent)
    parsed: dict[str, Any] = json.loads(text.text)
    return parsed


def test_an_agent_pulls_serves_scales_and_reads_why_it_is_pending(
    aima_crds: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    server = StdioServerParameters(
        command=AIMA,
        args=["mcp", "serve", "--namespace", namespace, "--allow-namespace", namespace, "--no-destructive"],
        env={"KUBECONFIG": str(aima_crds.kubeconfig), "PATH": str(Path(sys.executable).parent)},
    )

    async def session() -> None:
        async with Client(server) as agent:
            tools = {t.name for t in (await agent.list_tools()).tools}
            assert {"model_pull", "service_create", "service_scale", "service_get"} <= tools
            assert "service_delete" not in tools  # --no-destructive

            pulled = await agent.call_tool(
                "model_pull", {"name": "tiny", "source": "hf://acme/tiny-llm@main", "type": "LLM"}
            )
            assert pulled.is_error is False, pulled.content
            assert body(pulled)["metadata"]["namespace"] == namespace

            async def loader_job() -> str | None:
                got = await agent.call_tool("model_get", {"name": "tiny"})
                job: str | None = body(got).get("status", {}).get("loaderJob")
                return job

            mark_downloaded(aima_crds, namespace, "tiny", await poll("the loader Job", loader_job))

            created = await agent.call_tool(
                "service_create", {"name": "chat", "modelRef": {"name": "tiny"}, "resources": {"gpus": 16}}
            )
            assert created.is_error is True  # no node has 16 GPUs: refused, not left pending forever
            assert created.content[0].text.startswith("INSUFFICIENT_RESOURCES")  # type: ignore[union-attr]
            created = await agent.call_tool(
                "service_create", {"name": "chat", "modelRef": {"name": "tiny"}, "resources": {"gpus": 8}}
            )
            assert created.is_error is False, created.content
            # Two nodes of 8 GPUs hold two replicas of 8 GPUs at most: the third waits.
            scaled = await agent.call_tool("service_scale", {"name": "chat", "replicas": 3})
            assert body(scaled)["replicas"] == 3

            async def pending() -> dict[str, Any] | None:
                read = await agent.read_resource("aima://services/chat")
                body: dict[str, Any] = json.loads(read.contents[0].text)  # type: ignore[union-attr]
                conditions = body.get("status", {}).get("conditions", [])
                return next((c for c in conditions if c.get("reason") == "InsufficientGPU"), None)

            why = await poll("the service to explain why it is pending", pending)
            assert "needs 8 nvidia.com/gpu on one node" in why["message"]

            elsewhere = await agent.call_tool("service_get", {"name": "chat", "namespace": "kube-system"})
            assert elsewhere.is_error is True
            assert elsewhere.content[0].text.startswith("FORBIDDEN")  # type: ignore[union-attr]

    asyncio.run(session())


def test_an_agent_over_streamable_http_presents_the_doors_key(aima_crds: ControlPlane) -> None:
    port = free_port()
    command = [AIMA, "mcp", "serve", "--transport", "http", "--port", str(port), "--read-only"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "--api-key" in refused.stderr  # no open door by accident
    env = {"KUBECONFIG": str(aima_crds.kubeconfig), "PATH": str(Path(sys.executable).parent)}
    env["AIMA_MCP_API_KEYS"] = "mcp-key-1 mcp-key-2"
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    async def session() -> None:
        async def healthy() -> bool:
            assert server.poll() is None, "aima mcp serve exited"
            try:
                async with httpx2.AsyncClient() as plain:
                    return (await plain.get(url + "/healthz")).status_code == 200
            except httpx2.TransportError:
                return False

        await poll("aima mcp serve to listen", healthy)
        async with httpx2.AsyncClient() as plain:
            stranger = await plain.post(url + "/mcp", json={}, headers={"Authorization": "Bearer wrong"})
            assert stranger.status_code == 401
            assert stranger.headers["WWW-Authenticate"] == "Bearer"
        keyed = httpx2.AsyncClient(
            headers={"Authorization": "Bearer mcp-key-2"}, timeout=httpx2.Timeout(30, read=300)
        )
        async with keyed, Client(streamable_http_client(url + "/mcp", http_client=keyed)) as agent:
            tools = {t.name for t in (await agent.list_tools()).tools}
            assert "engine_list" in tools and "service_create" not in tools  # --read-only
            engines = await agent.call_tool("engine_list", {})
            assert engines.is_error is False, engines.content

    try:
        asyncio.run(session())
    finally:
        server.terminate()
        server.wait(timeout=10)
        assert server.stderr is not None
        server.stderr.close()
