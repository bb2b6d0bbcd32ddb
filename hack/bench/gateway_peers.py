"""The gateway's peers for hack/bench/gateway.py: LiteLLM's proxy and vllm-router, the proxies
users pick instead of ours, run against the same fake upstream.

Each is installed from PyPI with pip into its own virtual environment, cached outside the
repository and keyed on the pinned version (``~/.cache/aima-bench-v1/<name>-<version>/``), on
first use; a run after that downloads nothing. A peer that cannot be installed is skipped with
the reason. Each runs with its defaults, except what would phone home or need a database:

- LiteLLM (``litellm --config``): both fake models as ``openai/<name>`` with ``api_base``, one
  master key, which it checks on every request as our gateway checks its key; no database
  (``DATABASE_URL`` unset), telemetry off (``LITELLM_TELEMETRY=False``), the model cost map read
  from the package rather than fetched (``LITELLM_LOCAL_MODEL_COST_MAP=True``).
- vllm-router (the Rust router of vllm-project/router, a PyO3 extension behind a Python
  launcher): it balances over workers and does not route by model, so it runs as two instances,
  one per upstream. It checks no key (its ``--api-key`` is what it sends to the workers).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aima-bench-v1"
START_SECONDS = 180.0
"""How long a peer may take to answer its first request (LiteLLM takes about 16 s here)."""


@dataclass(frozen=True)
class Instance:
    """One running peer process: where it listens and its pid."""

    port: int
    pid: int


Argv = Callable[["Peer", int, dict[str, str], Path, str], list[str]]
"""The command line of an instance: peer, port, {model: upstream URL}, a folder for files, API key."""


@dataclass(frozen=True)
class Peer:
    name: str
    version: str
    requirement: str
    argv: Argv
    per_upstream: bool
    """Whether it routes by worker rather than by model, so that each upstream needs an instance."""

    @property
    def venv(self) -> Path:
        return CACHE / f"{self.name}-{self.version}"

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def _litellm_argv(peer: Peer, port: int, upstreams: dict[str, str], folder: Path, key: str) -> list[str]:
    models = [
        {
            "model_name": model,
            "litellm_params": {"model": f"openai/{model}", "api_base": f"{url}/v1", "api_key": "unused"},
        }
        for model, url in upstreams.items()
    ]
    config = {
        "model_list": models,
        "general_settings": {"master_key": key},
        "litellm_settings": {"telemetry": False},
    }
    path = folder / "litellm.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(config))
    executable = peer.venv / "bin" / "litellm"
    return [str(executable), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]


def _vllm_router_argv(peer: Peer, port: int, upstreams: dict[str, str], folder: Path, key: str) -> list[str]:
    from aima_testenv.processes import free_port

    executable = peer.venv / "bin" / "vllm-router"
    return [
        str(executable), "--host", "127.0.0.1", "--port", str(port),
        "--worker-urls", *upstreams.values(), "--policy", "round_robin", "--log-level", "warning",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
    ]  # fmt: skip


PEERS = {
    "litellm": Peer("litellm", "1.108.5", "litellm[proxy]==1.108.5", _litellm_argv, per_upstream=False),
    "vllm-router": Peer("vllm-router", "0.1.17", "vllm-router==0.1.17", _vllm_router_argv, per_upstream=True),
}
"""The pinned versions. LiteLLM 1.108.9 and later could not be installed from PyPI as mirrored
here: their ``proxy`` extra pins litellm-enterprise, litellm-proxy-extras or litellm-proxy versions
that the index lacks."""


def install(peer: Peer) -> str | None:
    """Create the peer's virtual environment unless it is cached; return why it could not be, or None.

    A complete one holds ``.installed``; anything else in its place is a failed try, removed first.
    """
    marker = peer.venv / ".installed"
    if marker.exists():
        return None
    shutil.rmtree(peer.venv, ignore_errors=True)
    peer.venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing {peer.requirement} into {peer.venv} (once)", file=sys.stderr, flush=True)  # noqa: T201
    subprocess.run([sys.executable, "-m", "venv", str(peer.venv)], check=True)
    pip = [str(peer.venv / "bin" / "python"), "-m", "pip", "install", "--quiet", peer.requirement]
    result = subprocess.run(pip, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(peer.venv, ignore_errors=True)
        lines = result.stderr.strip().splitlines() or [f"pip exited with {result.returncode}"]
        return lines[-1]
    marker.write_text(peer.requirement + "\n")
    return None


@contextlib.contextmanager
def serve(
    peer: Peer, *, upstreams: dict[str, str], key: str, cpu: int | None, folder: Path
) -> Iterator[dict[str, Instance]]:
    """Run the peer against ``upstreams`` ({model: URL}); yield the instance serving each model."""
    from aima_testenv.processes import free_port

    groups = [{model: url} for model, url in upstreams.items()] if peer.per_upstream else [upstreams]
    with contextlib.ExitStack() as stack:
        served: dict[str, Instance] = {}
        for group in groups:
            port = free_port()
            log = stack.enter_context((folder / f"{peer.name}-{port}.log").open("w"))
            process = subprocess.Popen(
                peer.argv(peer, port, group, folder, key),
                cwd=folder,
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=None if cpu is None else lambda: os.sched_setaffinity(0, {cpu}),
            )
            stack.callback(_stop, process)
            for model in group:
                _wait_answering(port, model, key, process, log=folder / f"{peer.name}-{port}.log")
                served[model] = Instance(port=port, pid=process.pid)
        yield served


def _environment() -> dict[str, str]:
    dropped = {"PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL"}
    environment = {name: value for name, value in os.environ.items() if name not in dropped}
    return environment | {
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    }


def _wait_answering(port: int, model: str, key: str, process: subprocess.Popen[bytes], *, log: Path) -> None:
    """Until a chat completion for ``model`` comes back 200 (a peer is up when it answers)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.5)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"peer on port {port} did not answer for {model}:\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
