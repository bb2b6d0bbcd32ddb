"""The Model controller on the real API server: cache volume, loader Job, status."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from aima import runner
from aima.kube import connect
from aima.testenv import ControlPlane
from aima.testenv.operator import OperatorThread
from waiting import eventually

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[2] / "catalog"


def get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def model(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {"source": "hf://acme/tiny-llm@main", "type": "LLM", "cache": {"size": "2Gi"}} | spec,
    }


def test_a_model_gets_a_bound_volume_a_loader_job_and_a_downloading_status(
    control_plane: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    control_plane.apply([model("tiny") | {"metadata": {"name": "tiny", "namespace": namespace}}])

    claim = eventually(lambda: get(control_plane, "pvc", "tiny-model", namespace), what="the cache claim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["metadata"]["ownerReferences"][0]["kind"] == "Model"
    status = eventually(
        lambda: (get(control_plane, "model", "tiny", namespace) or {}).get("status", {}).get("loaderJob"),
        what="the loader Job in status",
    )
    job = eventually(lambda: get(control_plane, "job", status, namespace), what="the loader Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["loader", "--source", "hf://acme/tiny-llm@main"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "aima-loader"
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    found = get(control_plane, "model", "tiny", namespace)
    assert found is not None
    ready = next(c for c in found["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "Downloading"


def test_the_operator_installs_the_engine_catalog_once(
    control_plane: ControlPlane, operator: OperatorThread
) -> None:
    engines = json.loads(
        control_plane.kubectl("get", "engines", "-l", "aima.dev/catalog=true", "-o", "json").stdout
    )
    names = {e["metadata"]["name"] for e in engines["items"]}
    assert {"vllm", "sglang", "ollama", "llama-cpp", "speaches", "kokoro", "infinity"} <= names

    # A second start finds every Engine as the catalog says and writes nothing.
    async def install_again() -> int:
        kube = await connect(kubeconfig=control_plane.kubeconfig)
        try:
            return await runner.install_engines(kube, catalog_dir=CATALOG)
        finally:
            await kube.close()

    assert asyncio.run(install_again()) == 0
