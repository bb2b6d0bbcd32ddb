"""A Model from apply to Ready: the operator makes the volume and the loader Job; the loader, run
with the Job's own arguments and ServiceAccount, downloads from a Hub-speaking server and drives
the status through Downloading to Ready with a verified manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aima.api.engine import Engine
from aima.api.inference_service import InferenceService
from aima.api.model import Model
from aima.domain.engine_args import render_args, template_context
from aima_testenv import ControlPlane
from aima_testenv.operator import OperatorThread
from declared import get
from fakes.hub import FakeHub, HubFile
from fakes.serving import generate_file, running_in_thread
from waiting import eventually

pytestmark = pytest.mark.e2e

WEIGHTS_BYTES = 64 * 2**20


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[str, FakeHub]]:
    served = tmp_path / "served"
    generate_file(served / "weights", WEIGHTS_BYTES, seed=7)
    (served / "config.json").write_text('{"architectures": ["Tiny"]}')
    fake = FakeHub(
        "acme/tiny-llm",
        {
            "model.safetensors": HubFile(served / "weights"),
            "config.json": HubFile(served / "config.json", lfs=False),
        },
    )
    with running_in_thread(fake.app()) as url:
        yield url, fake


def model_status(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    body = json.loads(plane.kubectl("get", "model", "tiny", "-n", namespace, "-o", "json").stdout)
    return dict(body.get("status", {}))


def ready_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})


def apply_model(plane: ControlPlane, namespace: str, spec: dict[str, Any]) -> str:
    """Apply the Model `tiny` with ``spec``; the name of the loader Job the operator starts for it."""
    plane.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "tiny", "namespace": namespace},
                "spec": spec,
            }
        ]
    )
    job: str = eventually(lambda: model_status(plane, namespace).get("loaderJob"), what="the loader Job")
    return job


def run_loader_as_the_job(
    plane: ControlPlane, *, namespace: str, job: str, dest: Path, endpoint: str
) -> subprocess.CompletedProcess[str]:
    """Run `aima` with the Job's container arguments and ServiceAccount, the volume and the Hub
    swapped for local ones."""
    spec = json.loads(plane.kubectl("get", "job", job, "-n", namespace, "-o", "json").stdout)["spec"]
    args: list[str] = spec["template"]["spec"]["containers"][0]["args"]
    args[args.index("--dest") + 1] = str(dest)
    args[args.index("--endpoint") + 1] = endpoint
    account = spec["template"]["spec"]["serviceAccountName"]
    kubeconfig = plane.service_account_kubeconfig(namespace=namespace, name=account)
    aima = Path(sys.executable).parent / "aima"
    result = subprocess.run(
        [str(aima), *args],
        env=os.environ | {"KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result


def test_model_goes_from_apply_to_ready_through_the_loader(
    control_plane: ControlPlane,
    operator: OperatorThread,
    namespace: str,
    hub: tuple[str, FakeHub],
    tmp_path: Path,
) -> None:
    url, fake = hub
    job = apply_model(
        control_plane,
        namespace,
        {"source": "hf://acme/tiny-llm@main", "type": "LLM", "cache": {"size": "1Gi"}},
    )
    eventually(
        lambda: (
            control_plane.kubectl(
                "get", "pvc", "tiny-model", "-n", namespace, "-o", "jsonpath={.status.phase}"
            ).stdout
            == "Bound"
        ),
        what="the cache volume to be bound",
    )
    # kwok completes Job pods at once; the Model must still wait for the loader's own report.
    eventually(
        lambda: (get(control_plane, "job", job, namespace) or {}).get("status", {}).get("succeeded"),
        what="kwok to complete the loader pod",
    )
    time.sleep(1)
    waiting = model_status(control_plane, namespace)
    assert ready_condition(waiting)["status"] == "False"
    assert waiting["phase"] == "Downloading"  # a pod ran: no longer Pending

    loaded = run_loader_as_the_job(
        control_plane, namespace=namespace, job=job, dest=tmp_path / "model", endpoint=url
    )
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout.splitlines()[-1])["phase"] == "Ready"

    status = eventually(
        lambda: (
            (s := model_status(control_plane, namespace)) and ready_condition(s).get("status") == "True" and s
        ),
        what="the Model to be Ready",
    )
    assert status["phase"] == "Ready"
    assert status["progress"]["percent"] == 100
    assert status["progress"]["bytesDone"] == WEIGHTS_BYTES + len('{"architectures": ["Tiny"]}')
    manifest = status["manifest"]
    assert manifest["fileCount"] == 2
    weights = next(f for f in manifest["files"] if f["path"] == "model.safetensors")
    assert weights["sha256"] == fake.digest("model.safetensors")
    assert status["estimate"]["gpus"] == 1
    assert status["claimName"] == "tiny-model"
    assert (status["format"], status.get("weightsFile")) == ("SafeTensors", None)
    assert (tmp_path / "model" / "model.safetensors").stat().st_size == WEIGHTS_BYTES


def watched_statuses(log: Path) -> list[dict[str, Any]]:
    """The Model's status at each event of a `kubectl get --watch -o json` written to `log`, in order."""
    decoder, text = json.JSONDecoder(), log.read_text()
    statuses: list[dict[str, Any]] = []
    position = 0
    while text[position:].strip():
        position = len(text) - len(text[position:].lstrip())
        try:
            body, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            break  # kubectl is still writing this one
        statuses.append(dict(body.get("status", {})))
    return statuses


def test_the_model_shows_progress_while_the_loader_downloads(
    control_plane: ControlPlane,
    operator: OperatorThread,
    namespace: str,
    hub: tuple[str, FakeHub],
    tmp_path: Path,
) -> None:
    url, fake = hub
    fake.faults.delay_per_chunk = 0.08  # 64 MiB in 1 MiB chunks: about 5 s, past the 2 s report interval
    job = apply_model(
        control_plane,
        namespace,
        {"source": "hf://acme/tiny-llm@main", "type": "LLM", "cache": {"size": "1Gi"}},
    )
    log = tmp_path / "watch.json"
    kubectl = [str(control_plane.binaries.path("kubectl")), f"--kubeconfig={control_plane.kubeconfig}"]
    with log.open("w") as output:
        watch = subprocess.Popen(
            [*kubectl, "get", "model", "tiny", "-n", namespace, "-o", "json", "--watch"], stdout=output
        )
    try:
        eventually(lambda: watched_statuses(log), what="the watch to list the Model")
        loaded = run_loader_as_the_job(
            control_plane, namespace=namespace, job=job, dest=tmp_path / "model", endpoint=url
        )
        assert loaded.returncode == 0, loaded.stderr
        statuses = eventually(
            lambda: (
                (seen := watched_statuses(log))
                and any(s.get("progress", {}).get("phase") == "Ready" for s in seen)
                and seen
            ),
            what="the watch to see the Ready report",
        )
    finally:
        watch.terminate()
        watch.wait(timeout=10)

    reports = [s["progress"] for s in statuses if "progress" in s]
    ready = next(i for i, report in enumerate(reports) if report["phase"] == "Ready")
    midway = [
        report
        for report in reports[:ready]
        if report["phase"] == "Downloading" and 0 < report["bytesDone"] < report["bytesTotal"]
    ]
    assert midway, f"no progress between 0 and the total before Ready: {reports}"
    assert 0 < midway[0]["percent"] < 100
    assert midway[0]["bytesTotal"] == reports[ready]["bytesTotal"]


@pytest.fixture
def gguf_hub(tmp_path: Path) -> Iterator[str]:
    """A llama.cpp-style repository: two quantisations, a vision projector and a README."""
    served = tmp_path / "served-gguf"
    generate_file(served / "q4", 3 * 2**20, seed=1)
    generate_file(served / "q8", 5 * 2**20, seed=2)
    generate_file(served / "mmproj", 2**20, seed=3)
    (served / "README.md").write_text("# tiny gguf")
    fake = FakeHub(
        "acme/tiny-gguf",
        {
            "tiny-Q4_K_M.gguf": HubFile(served / "q4"),
            "tiny-Q8_0.gguf": HubFile(served / "q8"),
            "mmproj-tiny-f16.gguf": HubFile(served / "mmproj"),
            "README.md": HubFile(served / "README.md", lfs=False),
        },
    )
    with running_in_thread(fake.app()) as url:
        yield url


def test_a_downloaded_gguf_model_names_the_file_llama_cpp_loads(
    control_plane: ControlPlane, operator: OperatorThread, namespace: str, gguf_hub: str, tmp_path: Path
) -> None:
    spec = {"source": "hf://acme/tiny-gguf@main", "type": "LLM", "cache": {"size": "1Gi"}}
    spec["files"] = {"include": ["tiny-Q8_0.gguf", "mmproj-*.gguf"]}  # the format is left to detection
    job = apply_model(control_plane, namespace, spec)
    dest = tmp_path / "model"
    loaded = run_loader_as_the_job(control_plane, namespace=namespace, job=job, dest=dest, endpoint=gguf_hub)
    assert loaded.returncode == 0, loaded.stderr

    body = eventually(
        lambda: (
            (b := get(control_plane, "model", "tiny", namespace))
            and ready_condition(b.get("status", {})).get("status") == "True"
            and b
        ),
        what="the Model to be Ready",
    )
    assert (body["status"]["format"], body["status"]["weightsFile"]) == ("GGUF", "tiny-Q8_0.gguf")
    # llama.cpp's --model, rendered as an InferenceService would, with the volume mounted at dest.
    engine = Engine.model_validate(get(control_plane, "engine", "llama-cpp", "default") or {})
    cpu = next(v for v in engine.spec.variants if v.name == "cpu")
    service = InferenceService.model_validate(
        {"metadata": {"name": "chat", "namespace": namespace}, "spec": {"modelRef": {"name": "tiny"}}}
    )
    context = template_context(
        model=Model.model_validate(body),
        service=service,
        engine=engine,
        variant=cpu,
        model_path=str(dest),
        gpus=0,
    )
    args = render_args(engine.spec.args, engine="llama-cpp", context=context)
    weights = Path(args[args.index("--model") + 1])
    assert weights == dest / "tiny-Q8_0.gguf"
    assert weights.stat().st_size == 5 * 2**20


def test_a_failed_download_says_why(
    control_plane: ControlPlane,
    operator: OperatorThread,
    namespace: str,
    hub: tuple[str, FakeHub],
    tmp_path: Path,
) -> None:
    job = apply_model(control_plane, namespace, {"source": "hf://acme/missing@main", "type": "LLM"})
    # The Hub answers, but has no acme/missing.
    result = run_loader_as_the_job(
        control_plane, namespace=namespace, job=job, dest=tmp_path / "model", endpoint=hub[0]
    )
    assert result.returncode == 1
    status = model_status(control_plane, namespace)
    assert status["progress"]["phase"] == "Failed"
    assert "acme/missing" in status["progress"]["message"]
    ready = eventually(
        lambda: (
            (c := ready_condition(model_status(control_plane, namespace))).get("reason") == "DownloadFailed"
            and c
        ),
        what="the Model to report the failure",
    )
    assert "acme/missing" in ready["message"]
    events = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=DownloadFailed"
    ).stdout
    assert "acme/missing" in events
