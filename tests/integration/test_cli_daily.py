"""The commands people type daily, against the real API server: model pull, get, service logs, and
exit codes that mean something."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner

from aima.cli.main import cli
from aima_testenv import ControlPlane
from aima_testenv.operator import OperatorThread
from declared import get, mark_downloaded
from waiting import eventually

pytestmark = pytest.mark.integration


def test_pull_get_and_logs(aima_crds: ControlPlane, namespace: str) -> None:
    runner = CliRunner()
    env = {"KUBECONFIG": str(aima_crds.kubeconfig)}

    pulled = runner.invoke(
        cli, ["model", "pull", "hf://Acme/Tiny-LLM@main", "-n", namespace, "-o", "json"], env=env
    )
    assert pulled.exit_code == 0, pulled.output
    assert json.loads(pulled.stdout)["metadata"]["name"] == "tiny-llm"

    # Nothing downloads without an operator: --wait ends with TIMEOUT's exit code and says what it saw.
    waited = runner.invoke(
        cli,
        ["model", "pull", "hf://Acme/Tiny-LLM@main", "-n", namespace, "--wait", "--timeout", "1"],
        env=env,
    )
    assert waited.exit_code == 7, waited.output
    assert "TIMEOUT" in waited.stderr

    listed = runner.invoke(cli, ["get", "models", "-n", namespace], env=env)
    assert listed.exit_code == 0, listed.output
    assert "tiny-llm" in listed.stdout
    one = runner.invoke(cli, ["get", "mdl", "tiny-llm", "-n", namespace, "-o", "json"], env=env)
    assert json.loads(one.stdout)["spec"]["source"] == "hf://Acme/Tiny-LLM@main"
    engines = runner.invoke(cli, ["get", "engines", "-o", "json"], env=env)
    assert engines.exit_code == 0, engines.output
    assert isinstance(json.loads(engines.stdout)["items"], list)

    missing = runner.invoke(cli, ["get", "service", "nope", "-n", namespace], env=env)
    assert missing.exit_code == 3
    assert "SERVICE_NOT_FOUND" in missing.stderr
    logs = runner.invoke(cli, ["service", "logs", "nope", "-n", namespace], env=env)
    assert logs.exit_code == 3
    conflict = runner.invoke(
        cli, ["model", "pull", "hf://Other/Tiny-LLM", "-n", namespace], env=env
    )  # same derived name, other source
    assert conflict.exit_code == 4
    assert "CONFLICT" in conflict.stderr


def test_service_logs_lists_what_each_replica_said_or_why_not(
    aima_crds: ControlPlane, namespace: str
) -> None:
    runner = CliRunner()
    env = {"KUBECONFIG": str(aima_crds.kubeconfig)}
    runner.invoke(cli, ["model", "pull", "hf://acme/tiny", "-n", namespace], env=env)
    created = runner.invoke(
        cli,
        [
            "exec",
            "service.create",
            "--name",
            "chat",
            "--namespace",
            namespace,
            "--model-ref",
            '{"name": "tiny"}',
        ],
        env=env,
    )
    assert created.exit_code == 0, created.output
    # Without an operator there are no replicas yet: the unit says so rather than failing.
    logs = runner.invoke(
        cli, ["exec", "service.logs", "--name", "chat", "--namespace", namespace, "-o", "json"], env=env
    )
    assert logs.exit_code == 0, logs.output
    body = json.loads(logs.stdout)
    assert body["pods"] == []
    assert body["message"].startswith("No replicas run")


def test_pull_wait_follows_the_models_status_to_ready(
    aima_crds: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    """`--wait` feeds its progress bar from status.progress and returns once the Model is Ready (the
    test plays the loader Job the operator starts, writing the status the loader would)."""
    runner = CliRunner()
    env = {"KUBECONFIG": str(aima_crds.kubeconfig)}
    argv = ["model", "pull", "hf://acme/wait-me", "-n", namespace, "--wait", "--timeout", "60"]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(runner.invoke, cli, argv, env=env)

        def loader_job() -> str | None:
            return (get(aima_crds, "model", "wait-me", namespace) or {}).get("status", {}).get("loaderJob")

        eventually(lambda: loader_job() is not None, what="the loader Job")
        half = {"phase": "Downloading", "bytesDone": 2**29, "bytesTotal": 2**30, "percent": 50}
        aima_crds.kubectl(
            "patch", "model", "wait-me", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"phase": "Downloading", "progress": half}}),
        )  # fmt: skip
        time.sleep(1.5)  # the command reads the status once a second
        assert not waiting.done()
        mark_downloaded(aima_crds, namespace, "wait-me", str(loader_job()))
        result = waiting.result(timeout=30)
    assert result.exit_code == 0, result.output
    assert "wait-me: Ready" in result.stderr
    assert "1.1 GB" in result.stderr  # the bar's total, from status.progress.bytesTotal
