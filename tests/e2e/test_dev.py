"""`make dev`'s main job: a control plane, the operator, a sample service that becomes Ready and the
gateway that answers for it, all stopped cleanly by SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from aima_testenv import ensure_binaries
from waiting import eventually, read_until

pytestmark = pytest.mark.e2e

_START_SECONDS = 240


def chat_through_the_gateway(printed: str) -> None:
    """Follow the printed instructions: the gateway answers the sample's model with the printed key."""
    found = re.search(r"export OPENAI_BASE_URL=(\S+) OPENAI_API_KEY=(\S+)", printed)
    assert found, printed
    base_url, key = found.groups()
    chat = {"model": "tiny-chat", "messages": [{"role": "user", "content": "Hello"}]}
    refused = httpx.post(f"{base_url}/chat/completions", json=chat, timeout=30)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "missing_api_key"
    answered = httpx.post(
        f"{base_url}/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"].startswith("tok0")
    models = httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert [m["id"] for m in models.json()["data"]] == ["tiny-chat"]


def chat_through_mcp(printed: str, kubeconfig: Path) -> None:
    """Follow the printed MCP line with the printed exports: an agent's inference_chat reaches the
    gateway from outside the cluster, and one without the gateway's address is told how to give it."""
    exports = re.search(r"export AIMA_GATEWAY_URL=(\S+) AIMA_GATEWAY_API_KEY=(\S+)", printed)
    command = re.search(r"^\s*aima mcp serve (--gateway-url \S+)$", printed, re.MULTILINE)
    assert exports and command, printed
    env = {"KUBECONFIG": str(kubeconfig), "PATH": str(Path(sys.executable).parent)}
    chat = {"model": "tiny-chat", "messages": [{"role": "user", "content": "Hello"}]}

    async def ask(args: list[str]) -> CallToolResult:
        server = StdioServerParameters(
            command=str(Path(sys.executable).parent / "aima"),
            args=["mcp", "serve", *args],
            env=env | {"AIMA_GATEWAY_API_KEY": exports.group(2)},
        )
        async with Client(server) as agent:
            return await agent.call_tool("inference_chat", chat)

    answered = asyncio.run(ask(command.group(1).split()))
    assert answered.is_error is False, answered.content
    assert json.loads(answered.content[0].text)["content"].startswith("tok0")  # type: ignore[union-attr]
    lost = asyncio.run(ask([]))
    assert lost.is_error is True
    assert "aima mcp serve --gateway-url URL" in lost.content[0].text  # type: ignore[union-attr]


def test_dev_up_starts_everything_and_the_sample_becomes_ready(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    aima = Path(sys.executable).parent / "aima"
    process = subprocess.Popen(
        [str(aima), "dev", "up", "--kwok-only", "--kubeconfig-out", str(kubeconfig), "--gateway-port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        printed = read_until(process, "Press Ctrl-C", timeout=_START_SECONDS)
        assert "tiny-chat is Ready" in printed, printed
        assert f"export KUBECONFIG={kubeconfig}" in printed
        kubectl = ensure_binaries().path("kubectl")
        found = subprocess.run(
            [
                str(kubectl),
                f"--kubeconfig={kubeconfig}",
                "get",
                "isvc",
                "tiny-chat",
                "-n",
                "default",
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        status = json.loads(found.stdout)["status"]
        assert status["readyReplicas"] == 1
        assert status["engine"] == "vllm"
        chat_through_the_gateway(printed)
        chat_through_mcp(printed, kubeconfig)
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
        assert process.stderr is not None
        process.stderr.close()
    assert exit_code == 0
    left = subprocess.run(
        ["pgrep", "-f", str(kubeconfig.parent)], capture_output=True, text=True, check=False
    )
    assert left.stdout == ""


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (a zombie is not)."""
    found = []
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(pid)
    return found


def children_once_the_api_server_starts(pid: int) -> list[int] | None:
    listed = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid=,comm="], capture_output=True, text=True)
    rows = [line.split() for line in listed.stdout.splitlines()]
    return [int(row[0]) for row in rows] if any(row[1] == "kube-apiserver" for row in rows) else None


def test_dev_up_stopped_while_it_starts_stops_at_once_and_leaves_nothing_running(tmp_path: Path) -> None:
    aima = Path(sys.executable).parent / "aima"
    process = subprocess.Popen(
        [
            str(aima),
            "dev",
            "up",
            "--kwok-only",
            "--kubeconfig-out",
            str(tmp_path / "kubeconfig"),
            "--gateway-port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        children = eventually(
            lambda: children_once_the_api_server_starts(process.pid),
            what="the control plane to be starting",
            timeout=_START_SECONDS,
        )
        process.send_signal(signal.SIGTERM)
        _, printed = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "Local cluster is up" not in printed  # it stopped starting, rather than finish first
    assert len(children) >= 2 and alive(children) == []  # etcd and kube-apiserver at least
