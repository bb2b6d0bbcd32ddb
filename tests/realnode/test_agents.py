"""Callers other than a person with an API key: an MCP agent driving the in-cluster MCP server
over streamable HTTP, and a PipelineRun whose steps the operator pod sends to the gateway with its
ServiceAccount token (accepted through a TokenReview)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from suite import SERVING_NAMESPACE

from aima_testenv import ControlPlane
from aima_testenv.chart import Release
from reads import get_json
from waiting import eventually

pytestmark = pytest.mark.realnode


@pytest.fixture(scope="module")
def mcp_url(real_cluster: ControlPlane, platform: Release) -> tuple[str, str]:
    """The MCP Service's address and the Host header naming it (the server refuses other hosts)."""
    name = platform.name("mcp")
    service = get_json(real_cluster, "service", name, "-n", platform.namespace)
    port = service["spec"]["ports"][0]["port"]
    return f"http://{service['spec']['clusterIP']}:{port}/mcp", f"{name}.{platform.namespace}.svc:{port}"


def test_an_agent_drives_the_in_cluster_mcp_server(
    mcp_url: tuple[str, str], keys: dict[str, str], downloaded: dict[str, Any]
) -> None:
    url, host = mcp_url

    async def session() -> dict[str, Any]:
        async with httpx2.AsyncClient(headers={"Host": host}) as stranger:
            refused = await stranger.post(url, json={}, headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401
        keyed = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {keys['mcp']}", "Host": host},
            timeout=httpx2.Timeout(30, read=120),
        )
        async with keyed, Client(streamable_http_client(url, http_client=keyed)) as agent:
            tools = {t.name for t in (await agent.list_tools()).tools}
            assert {"engine_list", "model_pull", "service_create"} <= tools
            engines = await agent.call_tool("engine_list", {})
            assert engines.is_error is False, engines.content
            models = await agent.call_tool("model_list", {"namespace": SERVING_NAMESPACE})
            assert models.is_error is False, models.content
            return {"engines": engines.content[0].text, "models": models.content[0].text}  # type: ignore[union-attr]

    seen = asyncio.run(session())
    assert "llama-cpp" in seen["engines"]  # the catalog the operator installed
    assert '"tiny"' in seen["models"]


def test_a_pipeline_run_reaches_the_gateway_with_the_operators_token(
    real_cluster: ControlPlane, platform: Release, served: str
) -> None:
    """No API key is configured for the operator (chart default): its calls carry its own
    ServiceAccount token, which the gateway accepts after a TokenReview."""
    real_cluster.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Pipeline",
                "metadata": {"name": "ask", "namespace": SERVING_NAMESPACE},
                "spec": {
                    "inputs": [{"name": "question"}],
                    "steps": [
                        {
                            "id": "answer",
                            "unit": "inference.chat",
                            "inputs": {
                                # The id the gateway lists: the run is outside its namespace.
                                "model": f"{SERVING_NAMESPACE}/{served}",
                                "messages": [{"role": "user", "content": "${input.question}"}],
                            },
                        }
                    ],
                    "outputs": {"answer": "${steps.answer.content}"},
                },
            },
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "PipelineRun",
                "metadata": {"name": "ask-once", "namespace": SERVING_NAMESPACE},
                "spec": {"pipelineRef": {"name": "ask"}, "inputs": {"question": "Hello?"}},
            },
        ]
    )

    def finished() -> dict[str, Any] | None:
        status = get_json(real_cluster, "pipelinerun", "ask-once", "-n", SERVING_NAMESPACE).get("status", {})
        return status if status.get("phase") in {"Succeeded", "Failed"} else None

    status = eventually(finished, what="the PipelineRun to finish", timeout=120)
    assert status["phase"] == "Succeeded", json.dumps(status["conditions"])
    assert status["outputs"]["answer"].split() == ["tok0", "tok1", "tok2", "tok3", "tok4"]
