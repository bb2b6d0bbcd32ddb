"""Pipelines and PipelineRuns on the real control plane, executed by the real operator against small
real servers speaking the engines' APIs: the voice assistant end to end, a failing middle step,
cancellation mid-run, invalid definitions refused, and a run explaining which service is not ready;
each reporting its progress as GitOps tools read it (Reconciling, Stalled, observedGeneration).

The session's operator calls the fake engine directly as its gateway (`gateway_url`), which answers
for every model (see the `fake_gateway` fixture).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from aima.cli.main import cli
from aima.kube import connect
from aima.settings import Settings
from aima.units import Context, Request, execute, registry
from aima_testenv import ControlPlane
from aima_testenv.engines import FakeEngine, wav_bytes
from aima_testenv.operator import OperatorThread
from waiting import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VOICE = yaml.safe_load((ROOT / "catalog" / "pipelines" / "voice-assistant.yaml").read_text())
QUESTION = wav_bytes(seconds=0.5)


def get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return dict(json.loads(plane.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout))


def condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def apply(plane: ControlPlane, namespace: str, *objects: dict[str, Any]) -> None:
    plane.apply([o | {"metadata": o["metadata"] | {"namespace": namespace}} for o in objects])


def voice_run(name: str, **spec: Any) -> dict[str, Any]:
    audio = base64.b64encode(QUESTION).decode()
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineRef": {"name": "voice-assistant"}, "inputs": {"audio": audio}} | spec,
    }


def finished_run(plane: ControlPlane, name: str, namespace: str, *, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = get(plane, "pipelinerun", name, namespace)
        found = condition(body, "Succeeded")
        return body if found and found["status"] != "Unknown" else None

    return eventually(done, timeout=timeout, what=f"PipelineRun {name} to finish")


def progress(body: dict[str, Any]) -> dict[str, str]:
    """The kstatus conditions present, by type, with their reasons (at most one is ever present)."""
    return {
        c["type"]: c["reason"]
        for c in body["status"]["conditions"]
        if c["type"] in ("Reconciling", "Stalled")
    }


def step_phases(body: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["phase"] for s in body["status"]["steps"]}


def test_voice_assistant_end_to_end(
    aima_crds: ControlPlane, namespace: str, operator: OperatorThread
) -> None:
    apply(aima_crds, namespace, VOICE, voice_run("hello"))
    pipeline = eventually(
        lambda: (
            (b := get(aima_crds, "pipeline", "voice-assistant", namespace))
            and (c := condition(b, "Ready"))
            and c["status"] == "True"
            and b
        ),
        what="the voice pipeline to be Ready",
    )
    assert condition(pipeline, "Valid")["status"] == "True"  # type: ignore[index]
    assert progress(pipeline) == {}
    run = finished_run(aima_crds, "hello", namespace)
    status = run["status"]
    assert condition(run, "Succeeded")["reason"] == "Succeeded", status  # type: ignore[index]
    assert condition(run, "Ready")["status"] == "True" and progress(run) == {}  # type: ignore[index]
    assert status["phase"] == "Succeeded" and status["executor"] == operator.settings.identity
    assert step_phases(run) == {"transcribe": "Succeeded", "chat": "Succeeded", "synthesize": "Succeeded"}
    assert all(s["durationMilliseconds"] >= 0 and s["attempts"] == 1 for s in status["steps"])
    outputs = status["outputs"]
    assert outputs["question"] == f"transcribed {len(QUESTION)} bytes from audio.wav"
    assert outputs["answer"] == "".join(f"tok{i} " for i in range(12))
    # Audio is kept out of the CR: a reference to the run's Secret, which holds one real WAV file.
    reference = outputs["audio"]["secretKeyRef"]
    assert reference == {"name": "hello-outputs", "key": "synthesize.audio"}
    secret = get(aima_crds, "secret", "hello-outputs", namespace)
    assert secret["metadata"]["ownerReferences"][0]["name"] == "hello"
    audio = base64.b64decode(secret["data"]["synthesize.audio"])
    with wave.open(io.BytesIO(audio)) as reader:
        assert reader.getframerate() == 16000 and reader.getnframes() > 0
    assert outputs["audio"]["bytes"] == len(audio)
    reasons = aima_crds.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector=involvedObject.name=hello",
        "-o",
        "jsonpath={.items[*].reason}",
    ).stdout.split()
    assert {"Started", "StepCompleted", "Completed"} <= set(reasons)


def test_a_failing_middle_step_stops_the_run(
    aima_crds: ControlPlane, namespace: str, operator: OperatorThread
) -> None:
    apply(aima_crds, namespace, VOICE, voice_run("broken", config={"llmModel": "broken"}))
    run = finished_run(aima_crds, "broken", namespace)
    status = run["status"]
    assert (status["phase"], status["failedStep"]) == ("Failed", "chat")
    assert condition(run, "Succeeded")["reason"] == "StepFailed"  # type: ignore[index]
    assert condition(run, "Ready")["status"] == "False" and progress(run) == {"Stalled": "StepFailed"}  # type: ignore[index]
    assert step_phases(run) == {"transcribe": "Succeeded", "chat": "Failed", "synthesize": "Skipped"}
    chat = next(s for s in status["steps"] if s["id"] == "chat")
    assert chat["errorCode"] == "UNAVAILABLE" and "503: engine crashed" in chat["error"]
    assert "text" in next(s for s in status["steps"] if s["id"] == "transcribe")["output"]


def test_cancelling_mid_run_stops_the_running_step(
    aima_crds: ControlPlane, namespace: str, operator: OperatorThread, engine: FakeEngine
) -> None:
    engine.options.tokens, engine.options.token_delay = 200, 0.2  # a 40 s answer
    apply(aima_crds, namespace, VOICE, voice_run("long"))
    eventually(
        lambda: (
            get(aima_crds, "pipelinerun", "long", namespace).get("status", {}).get("currentStep") == "chat"
        ),
        what="the chat step to run",
    )
    aima_crds.kubectl(
        "patch", "pipelinerun", "long", "-n", namespace, "--type=merge", "-p", '{"spec":{"cancel":true}}'
    )
    run = finished_run(aima_crds, "long", namespace, timeout=20)
    assert run["status"]["phase"] == "Cancelled" and progress(run) == {"Stalled": "Cancelled"}
    # The outcome answers the spec that asked for it (cancel bumped the generation mid-run).
    eventually(
        lambda: (
            (b := get(aima_crds, "pipelinerun", "long", namespace))["status"]["observedGeneration"]
            == b["metadata"]["generation"]
        ),
        what="the cancelled run to report the generation that cancelled it",
    )
    assert step_phases(run) == {"transcribe": "Succeeded", "chat": "Cancelled", "synthesize": "Skipped"}
    eventually(
        lambda: engine.stats.cancelled >= 1, what="the engine to see its request abandoned", timeout=10
    )


def test_cyclic_and_dangling_references_are_refused(
    aima_crds: ControlPlane, namespace: str, operator: OperatorThread
) -> None:
    cyclic = {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "cyclic", "namespace": namespace},
        "spec": {
            "steps": [
                {"id": "a", "unit": "inference.chat", "dependsOn": ["b"]},
                {"id": "b", "unit": "inference.chat", "dependsOn": ["a"]},
            ]
        },
    }
    refused = aima_crds.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(cyclic), check=False)
    assert (
        refused.returncode != 0 and "dependsOn may only name steps listed before the step" in refused.stderr
    )
    dangling = json.loads(json.dumps(VOICE))
    dangling["metadata"]["name"] = "dangling"
    dangling["spec"]["steps"][0]["inputs"]["audio"] = "${steps.synthesize.audio}"
    dangling["spec"]["steps"][1]["inputs"]["messages"][1]["content"] = "${steps.transcribe.txt}"
    run = voice_run("on-dangling") | {"spec": voice_run("x")["spec"] | {"pipelineRef": {"name": "dangling"}}}
    apply(aima_crds, namespace, dangling, run)
    pipeline = eventually(
        lambda: (b := get(aima_crds, "pipeline", "dangling", namespace)) and condition(b, "Valid") and b,
        what="the dangling pipeline to be validated",
    )
    assert condition(pipeline, "Valid")["status"] == "False"  # type: ignore[index]
    assert progress(pipeline) == {"Stalled": "InvalidSpec"}  # only an edit helps: Degraded in Argo CD
    problems = {(p.get("step"), p.get("field")): p["message"] for p in pipeline["status"]["problems"]}
    assert "must name a step listed before it" in problems[("transcribe", "inputs.audio")]
    assert "has no field 'txt'" in problems[("chat", "inputs.messages.1.content")]
    failed = finished_run(aima_crds, "on-dangling", namespace)
    assert condition(failed, "Succeeded")["reason"] == "InvalidSpec"  # type: ignore[index]
    assert "step 'transcribe' inputs.audio" in condition(failed, "Succeeded")["message"]  # type: ignore[index]
    assert progress(failed) == {"Stalled": "InvalidSpec"}


def test_a_run_explains_which_service_is_not_ready(
    aima_crds: ControlPlane, namespace: str, operator: OperatorThread
) -> None:
    service = {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "qwen3-8b"},
        "spec": {"modelRef": {"name": "qwen3-8b"}},  # no such Model: never ready
    }
    apply(aima_crds, namespace, service, VOICE, voice_run("waits"))

    def waiting() -> dict[str, Any] | None:
        body = get(aima_crds, "pipelinerun", "waits", namespace)
        found = condition(body, "Succeeded")
        return (
            found
            if found and found["reason"] == "ServicesNotReady" and "qwen3-8b is not ready" in found["message"]
            else None
        )

    message = eventually(waiting, what="the run to wait for its services")["message"]
    assert message.startswith(
        "Waiting for services before starting: step 'chat' (model qwen3-8b): "
        "InferenceService qwen3-8b is not ready (ModelNotFound"
    )
    assert "transcribe" not in message  # no service serves its model: the gateway decides
    assert progress(get(aima_crds, "pipelinerun", "waits", namespace)) == {"Reconciling": "ServicesNotReady"}
    pipeline = get(aima_crds, "pipeline", "voice-assistant", namespace)
    assert condition(pipeline, "Ready")["reason"] == "ServicesNotReady"  # type: ignore[index]
    assert progress(pipeline) == {"Reconciling": "ServicesNotReady"}  # the service may yet come up
    services = {s["step"]: s for s in pipeline["status"]["services"]}
    assert services["chat"]["service"] == "qwen3-8b" and services["chat"]["ready"] is False
    assert "no InferenceService serves model faster-whisper-large-v3" in services["transcribe"]["message"]
    assert get(aima_crds, "pipelinerun", "waits", namespace)["status"].get("startTime") is None


def units(plane: ControlPlane, namespace: str, unit: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Call a unit the way every door does, against this cluster and namespace."""

    async def go() -> dict[str, Any]:
        kube = await connect(kubeconfig=plane.kubeconfig)
        try:
            context = Context(kube=kube, settings=Settings(), namespace=namespace)
            return (await execute(registry(), context, Request(unit=unit, input=payload))).dump()
        finally:
            await kube.close()

    return asyncio.run(go())


def test_units_run_the_batch_and_rag_templates(
    aima_crds: ControlPlane, namespace: str, operator: OperatorThread
) -> None:
    batch = yaml.safe_load((ROOT / "catalog" / "pipelines" / "batch-inference.yaml").read_text())
    checked = units(aima_crds, namespace, "pipeline.validate", batch["spec"])
    assert checked["data"] == {"valid": True, "problems": []}
    created = units(aima_crds, namespace, "pipeline.create", batch["spec"] | {"name": "batch"})
    assert created["success"], created
    prompts = ["one", "two", "three"]
    ran = units(aima_crds, namespace, "pipeline.run", {"name": "batch", "inputs": {"prompts": prompts}})
    assert ran["success"] and ran["data"]["phase"] == "Succeeded", ran
    answers = ran["data"]["outputs"]["answers"]
    assert [a["content"] for a in answers] == [
        "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9 tok10 tok11 "
    ] * 3
    status = units(aima_crds, namespace, "pipeline.status", {"run": ran["data"]["run"]})
    assert status["data"]["steps"][0]["phase"] == "Succeeded"
    listed = units(aima_crds, namespace, "pipeline.list", {})
    assert [p["name"] for p in listed["data"]["items"]] == ["batch"]

    apply(aima_crds, namespace, yaml.safe_load((ROOT / "catalog" / "pipelines" / "rag.yaml").read_text()))
    asked = units(
        aima_crds, namespace, "pipeline.run", {"name": "rag", "inputs": {"question": "What is a unit?"}}
    )
    assert asked["data"]["phase"] == "Succeeded", asked
    outputs = asked["data"]["outputs"]
    assert len(outputs["citations"]) == 2 and outputs["answer"].startswith("tok0")
    assert {p["id"] for p in outputs["passages"]} == set(outputs["citations"])


def test_cancel_unit_and_cli_progress(
    aima_crds: ControlPlane,
    namespace: str,
    operator: OperatorThread,
    engine: FakeEngine,
    tmp_path: Path,
) -> None:
    apply(aima_crds, namespace, VOICE)
    question = tmp_path / "question.wav"
    question.write_bytes(QUESTION)
    result = CliRunner().invoke(
        cli,
        [
            *("pipeline", "run", "voice-assistant", "-n", namespace, "--input", f"audio=@{question}"),
            *("-o", str(tmp_path), "--kubeconfig", str(aima_crds.kubeconfig)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "transcribe" in result.output and "Succeeded" in result.output
    with wave.open(str(tmp_path / "audio.wav")) as reader:
        assert reader.getnframes() > 0

    engine.options.tokens, engine.options.token_delay = 200, 0.2
    started = units(
        aima_crds,
        namespace,
        "pipeline.run",
        {"name": "voice-assistant", "inputs": {"audio": "d2F2"}, "wait": False},
    )
    run = started["data"]["run"]
    eventually(
        lambda: (
            units(aima_crds, namespace, "pipeline.status", {"run": run})["data"].get("currentStep") == "chat"
            or None
        ),
        what="the chat step to run",
    )
    units(aima_crds, namespace, "pipeline.cancel", {"run": run})
    assert finished_run(aima_crds, run, namespace, timeout=20)["status"]["phase"] == "Cancelled"
