"""`make dev`'s main job on the real node: the chart installed from the image built here, a sample
whose tiny GGUF llama.cpp serves on the node's CPU, the gateway on 127.0.0.1 answering with what the
engine wrote, and a SIGTERM that leaves the host clean. Runs after the teardown test (conftest.py):
one real node per host, and the suite's own has stopped by then."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from suite import FIGURES

from aima_testenv import ensure_binaries, host
from waiting import read_until

pytestmark = pytest.mark.realnode

_START_SECONDS = 280


def test_make_dev_serves_the_sample_with_llama_cpp_on_the_real_node(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    aima = Path(sys.executable).parent / "aima"
    before = host.snapshot()
    start = time.monotonic()
    process = subprocess.Popen(
        [str(aima), "dev", "up", "--kubeconfig-out", str(kubeconfig), "--gateway-port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        printed = read_until(process, "Press Ctrl-C", timeout=_START_SECONDS)
        FIGURES["aima dev up (real node, warm caches) -> the sample answers"] = (
            f"{time.monotonic() - start:.0f} s"
        )
        assert "tiny-chat is Ready on the real node, served by llama.cpp" in printed, printed
        found = re.search(r"export OPENAI_BASE_URL=(\S+) OPENAI_API_KEY=(\S+)", printed)
        assert found, printed
        base_url, key = found.groups()
        assert base_url.startswith("http://127.0.0.1:")
        chat = {"model": "tiny-chat", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6}
        answered = httpx.post(
            f"{base_url}/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        assert answered.status_code == 200, answered.text
        reply = answered.json()
        assert "timings" in reply, reply  # llama.cpp's own field: a real engine wrote this
        assert reply["usage"]["completion_tokens"] == 6
        assert reply["choices"][0]["message"]["content"].isalpha()
        chosen = subprocess.run(
            [
                str(ensure_binaries().path("kubectl")),
                f"--kubeconfig={kubeconfig}",
                "get",
                "isvc",
                "tiny-chat",
                "-o",
                "jsonpath={.status.engine}/{.status.engineVariant}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert chosen.stdout == "llama-cpp/cpu"  # chosen for the GGUF the loader found, on a CPU node
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=180)
        assert process.stderr is not None
        process.stderr.close()
    assert exit_code == 0
    assert host.snapshot().added_since(before) == {
        "mounts": [],
        "network namespaces": [],
        "links": [],
        "iptables chains": [],
        "nftables tables": [],
        "sysctls": [],
    }
    left = subprocess.run(
        ["pgrep", "-f", str(kubeconfig.parent)], capture_output=True, text=True, check=False
    )
    assert left.stdout == ""
