"""The catalog's voice-assistant Pipeline on real engines: a PipelineRun whose steps the operator sends
through the gateway to faster-whisper (the tiny Whisper hears "hello world" in any WAV), llama.cpp
(the tiny GGUF answers noise, at most maxTokens of it) and fastkokoro (the tiny Kokoro speaks the
answer), each served from a Model the real loader downloaded. Audio stays out of the CR: the run's
Secret holds the WAV fastkokoro made."""

from __future__ import annotations

import base64
import copy
import io
import json
import time
import wave
from typing import Any

import pytest
import yaml
from suite import FIGURES, SERVING_NAMESPACE
from test_llama_cpp import llama  # noqa: F401 - the services the steps call, as their tests make them
from test_tts import KOKORO_RATE, kokoro  # noqa: F401
from test_whisper import whisper  # noqa: F401

from aima_testenv import ControlPlane
from aima_testenv.binaries import REPO_ROOT
from aima_testenv.chart import Release
from aima_testenv.engines import wav_bytes
from reads import condition, get_json
from waiting import eventually

pytestmark = pytest.mark.realnode

RUN = "ask-aloud"
ANSWER_TOKENS = 12


def test_the_voice_assistant_hears_answers_and_speaks_on_real_engines(
    real_cluster: ControlPlane,
    platform: Release,
    whisper: str,  # noqa: F811
    llama: str,  # noqa: F811
    kokoro: str,  # noqa: F811
) -> None:
    pipeline = yaml.safe_load((REPO_ROOT / "catalog" / "pipelines" / "voice-assistant.yaml").read_text())
    pipeline = copy.deepcopy(pipeline)
    pipeline["metadata"] = {"name": "voice-assistant", "namespace": SERVING_NAMESPACE}
    # The ids the gateway lists: the run is outside the gateway's namespace.
    config = {
        "asrModel": f"{SERVING_NAMESPACE}/{whisper}",
        "llmModel": f"{SERVING_NAMESPACE}/{llama}",
        "ttsModel": f"{SERVING_NAMESPACE}/{kokoro}",
        "maxTokens": ANSWER_TOKENS,
    }
    audio = base64.b64encode(wav_bytes(seconds=2.0)).decode()
    start = time.monotonic()
    real_cluster.apply(
        [
            pipeline,
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "PipelineRun",
                "metadata": {"name": RUN, "namespace": SERVING_NAMESPACE},
                "spec": {
                    "pipelineRef": {"name": "voice-assistant"},
                    "inputs": {"audio": audio},
                    "config": config,
                },
            },
        ]
    )

    def finished() -> dict[str, Any] | None:
        run = get_json(real_cluster, "pipelinerun", RUN, "-n", SERVING_NAMESPACE)
        return run if run.get("status", {}).get("phase") in {"Succeeded", "Failed"} else None

    run = eventually(finished, what="the voice PipelineRun to finish", timeout=180)
    FIGURES["voice-assistant PipelineRun on real engines, apply -> Succeeded"] = (
        f"{time.monotonic() - start:.1f} s"
    )
    status = run["status"]
    assert status["phase"] == "Succeeded", json.dumps(status.get("conditions"))
    assert condition(run, "Succeeded") == "True"
    outputs = status["outputs"]
    assert outputs["question"].strip() == "hello world"
    assert outputs["answer"].strip()  # llama.cpp's noise, but its own
    reference = outputs["audio"]["secretKeyRef"]
    secret = get_json(real_cluster, "secret", reference["name"], "-n", SERVING_NAMESPACE)
    spoken = base64.b64decode(secret["data"][reference["key"]])
    with wave.open(io.BytesIO(spoken)) as reader:
        assert reader.getframerate() == KOKORO_RATE and reader.getnframes() > 0
