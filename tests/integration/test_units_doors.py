"""The HTTP and CLI doors end to end against the real API server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from aima.cli.main import cli
from aima.doors.http import create_app
from aima.kube import connect
from aima.units import Context, registry
from aima_testenv import ControlPlane

pytestmark = pytest.mark.integration


def test_the_http_door_creates_lists_and_explains_errors(aima_crds: ControlPlane, namespace: str) -> None:
    async def scenario() -> None:
        kube = await connect(kubeconfig=aima_crds.kubeconfig)
        app = create_app(
            registry=registry(), context=Context(kube=kube, namespace=namespace), api_keys=["s3cret"]
        )
        headers = {"Authorization": "Bearer s3cret"}
        try:
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                denied = await client.post("/api/v2/query/model.list", json={})
                assert denied.status == 401
                created = await client.post(
                    "/api/v2/command/model.create",
                    json={"name": "tiny", "source": "hf://acme/tiny", "type": "LLM"},
                    headers=headers,
                )
                assert created.status == 200, await created.text()
                listed = await client.post(
                    "/api/v2/execute",
                    json={"type": "query", "unit": "model.list", "input": {}},
                    headers=headers,
                )
                body: dict[str, Any] = await listed.json()
                assert [m["name"] for m in body["data"]["items"]] == ["tiny"]
                missing = await client.post(
                    "/api/v2/query/service.get", json={"name": "nope"}, headers=headers
                )
                assert missing.status == 404
                assert (await missing.json())["error"]["code"] == "SERVICE_NOT_FOUND"
                metrics = await (await client.get("/metrics")).text()
                assert 'aima_unit_requests_total{unit="model.create",type="command",code="OK"} 1' in metrics
        finally:
            await kube.close()

    asyncio.run(scenario())


def test_aima_exec_runs_units_with_generated_options(aima_crds: ControlPlane, namespace: str) -> None:
    runner = CliRunner()
    env = {"KUBECONFIG": str(aima_crds.kubeconfig)}
    pulled = runner.invoke(
        cli,
        ["exec", "model.pull", "--name", "tiny", "--namespace", namespace, "--source", "hf://acme/tiny",
         "--type", "LLM", "--cache", '{"size": "1Gi"}', "--json"],
        env=env,
    )  # fmt: skip
    assert pulled.exit_code == 0, pulled.output
    assert json.loads(pulled.stdout)["spec"]["cache"]["size"] == "1Gi"

    table = runner.invoke(cli, ["exec", "model.list", "--namespace", namespace], env=env)
    assert table.exit_code == 0, table.output
    assert "tiny" in table.stdout
    assert "hf://acme/tiny" in table.stdout

    via_input = runner.invoke(
        cli,
        ["exec", "model.get", "--input", json.dumps({"name": "tiny", "namespace": namespace}), "--json"],
        env=env,
    )
    assert via_input.exit_code == 0, via_input.output
    assert json.loads(via_input.stdout)["metadata"]["name"] == "tiny"

    missing = runner.invoke(cli, ["exec", "service.get", "--name", "nope", "--namespace", namespace], env=env)
    assert missing.exit_code == 3
    assert "SERVICE_NOT_FOUND" in missing.stderr

    invalid = runner.invoke(
        cli, ["exec", "service.scale", "--name", "nope", "--namespace", namespace], env=env
    )
    assert invalid.exit_code == 2
    assert "replicas" in invalid.stderr

    too_big = runner.invoke(
        cli,
        ["exec", "service.create", "--name", "huge", "--namespace", namespace,
         "--model-ref", '{"name": "tiny"}', "--resources", '{"gpus": 16}'],
        env=env,
    )  # fmt: skip
    assert too_big.exit_code == 5, too_big.output
    assert "INSUFFICIENT_RESOURCES" in too_big.stderr

    status = runner.invoke(cli, ["exec", "resource.status", "--json"], env=env)
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["total"] == 16


def test_aima_units_lists_the_catalog() -> None:
    result = CliRunner().invoke(cli, ["units", "--json"])
    assert result.exit_code == 0
    assert {u["name"] for u in json.loads(result.stdout)} == {u.name for u in registry()}


@pytest.mark.parametrize(
    ("given", "words"),
    [("{name: tiny}", "--input is not JSON"), ('["tiny"]', "--input must be a JSON object")],
    ids=["not json", "not an object"],
)
def test_aima_exec_refuses_input_that_is_no_json_object(given: str, words: str) -> None:
    result = CliRunner().invoke(cli, ["exec", "model.get", "--input", given])
    assert result.exit_code == 2, result.output
    assert "INVALID_INPUT" in result.stderr
    assert words in result.stderr
    as_json = CliRunner().invoke(cli, ["exec", "model.get", "--input", given, "--json"])
    assert as_json.exit_code == 2
    assert json.loads(as_json.stderr)["error"]["code"] == "INVALID_INPUT"
