"""`make dev`'s main job: a control plane, the operator and a sample service that becomes Ready,
all stopped cleanly by SIGTERM."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aima.testenv import ensure_binaries

pytestmark = pytest.mark.e2e

_START_SECONDS = 240


def read_until(process: subprocess.Popen[str], marker: str, *, timeout: float) -> str:
    """What the process printed on stderr up to and including the line with ``marker``."""
    assert process.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr or ()], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        if marker in seen[-1]:
            return "".join(seen)
    pytest.fail(f"`aima dev up` never printed {marker!r}; it printed:\n{''.join(seen)}")


def test_dev_up_starts_everything_and_the_sample_becomes_ready(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    aima = Path(sys.executable).parent / "aima"
    process = subprocess.Popen(
        [str(aima), "dev", "up", "--kubeconfig-out", str(kubeconfig)], stderr=subprocess.PIPE, text=True
    )
    try:
        printed = read_until(process, "Press Ctrl-C", timeout=_START_SECONDS)
        assert "tiny-chat is Ready" in printed
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
