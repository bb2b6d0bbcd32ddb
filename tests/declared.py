"""Objects the tests declare into the cluster as a controller or the loader would leave them."""

from __future__ import annotations

import json
import time
from typing import Any

from aima.loader.manifest import Manifest, ManifestFile
from aima.loader.report import final_status
from aima_testenv import ControlPlane
from waiting import eventually


def get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def make_model(
    plane: ControlPlane, namespace: str, *, name: str = "tiny", ready: bool, gguf: bool = False
) -> None:
    """A Model whose download the test declares done, as the loader would (no loader runs here)."""
    source = "hf://acme/tiny-gguf@main" if gguf else "hf://acme/tiny-llm@main"
    spec = {"source": source, "type": "LLM", "cache": {"size": "1Gi"}} | ({"format": "GGUF"} if gguf else {})
    plane.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }
        ]
    )
    job = eventually(
        lambda: (get(plane, "model", name, namespace) or {}).get("status", {}).get("loaderJob"),
        what="the loader Job",
    )
    if not ready:
        return
    mark_downloaded(plane, namespace, name, job, **(loader_detected("tiny.gguf") if gguf else {}))


def loader_detected(*paths: str) -> dict[str, Any]:
    """`format` and `weightsFile` as the loader's Ready report writes them for files at ``paths``."""
    files = tuple(ManifestFile(path=path, size=1, sha256="0" * 64) for path in paths)
    report = final_status(Manifest(source="declared", complete=True, files=files), sha256="0" * 64)
    return {key: report[key] for key in ("format", "weightsFile") if report[key] is not None}


def mark_downloaded(plane: ControlPlane, namespace: str, name: str, job: str, **status: Any) -> None:
    """Patch the Model's status as if loader Job ``job`` had downloaded and verified its files, for
    tests that skip the download on purpose; ``status`` adds loader fields such as loader_detected's."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    done = {
        "status": "True",
        "reason": "Ready",
        "message": "Files downloaded and verified",
        "lastTransitionTime": now,
    }
    # The loader's own report too: a controller pass that read the Model before this patch may
    # write its conditions back over it, and the next pass derives Ready from the report again.
    ready = {
        "loaderJob": job,
        "conditions": [{"type": "Downloaded", **done}, {"type": "Ready", **done}],
        "phase": "Ready",
        "progress": {"phase": "Ready", "percent": 100},
    }
    patch = json.dumps({"status": ready | status})
    plane.kubectl(
        "patch", "model", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )
