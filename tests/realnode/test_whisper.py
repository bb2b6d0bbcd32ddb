"""Speech to text with a real engine on the real node: faster-whisper-server (CTranslate2, from PyPI
into an image built with no registry) transcribing a WAV through the gateway's Service with the
openai SDK. The model is a tiny Whisper made in the test (no training: its weights spell out one
answer, "hello world", for any audio), downloaded from the in-cluster Hub by the real loader, whose
detected format (CTranslate2) the engine declares."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from suite import FIGURES, SERVING_NAMESPACE, WHISPER_REPO
from test_llama_cpp import the_pod

from aima_testenv import ControlPlane
from aima_testenv.chart import Release
from aima_testenv.engines import wav_bytes
from reads import assert_runs_locked_down, get_json, ready_seconds

pytestmark = pytest.mark.realnode

SERVICE = "tiny-whisper"
MODEL_ID = f"{SERVING_NAMESPACE}/{SERVICE}"


def faster_whisper(image: str) -> dict[str, Any]:
    """An Engine for faster-whisper-server: one model, named by its path, serves every request."""
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Engine",
        "metadata": {"name": "faster-whisper-local"},
        "spec": {
            "description": "faster-whisper-server: Whisper on CTranslate2, OpenAI's transcription API.",
            "variants": [{"name": "cpu", "accelerator": "CPU", "architecture": "amd64", "image": image}],
            "args": ["{{ model.path }}", "--host=0.0.0.0", "--port={{ engine.port }}"],
            "env": {"HF_HUB_OFFLINE": "1"},
            "port": 8000,
            "health": {
                "path": "/health",
                "startupTimeoutSeconds": 120,
                "periodSeconds": 1,
                "drainSeconds": 1,
            },
            "modelTypes": ["ASR"],
            "modelFormats": ["CTranslate2"],
            "endpoints": ["/v1/audio/transcriptions", "/v1/audio/translations"],
            "resources": {"gpus": 0, "requests": {"cpu": "100m", "memory": "256Mi"}},
        },
    }


@pytest.fixture(scope="module")
def whisper(real_cluster: ControlPlane, platform: Release, downloaded: dict[str, Any]) -> str:
    assert real_cluster.real_node is not None
    real_cluster.apply(
        [
            faster_whisper(real_cluster.real_node.images["faster-whisper-server"]),
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "tiny-whisper", "namespace": SERVING_NAMESPACE},
                "spec": {"source": f"hf://{WHISPER_REPO}@main", "type": "ASR"},
            },
        ]
    )
    ready_seconds(real_cluster, "model", "tiny-whisper", SERVING_NAMESPACE, since=0)
    model = get_json(real_cluster, "model", "tiny-whisper", "-n", SERVING_NAMESPACE)
    assert model["status"]["format"] == "CTranslate2"
    start = time.monotonic()
    real_cluster.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "InferenceService",
                "metadata": {"name": SERVICE, "namespace": SERVING_NAMESPACE},
                "spec": {"modelRef": {"name": "tiny-whisper"}, "engineRef": {"name": "faster-whisper-local"}},
            }
        ]
    )
    seconds = ready_seconds(real_cluster, "isvc", SERVICE, SERVING_NAMESPACE, since=start)
    FIGURES["faster-whisper InferenceService apply -> Ready (tiny Whisper)"] = f"{seconds:.1f} s"
    return SERVICE


def test_whisper_transcribes_a_wav_through_the_gateway(client: openai.OpenAI, whisper: str) -> None:
    start = time.monotonic()
    transcript = client.audio.transcriptions.create(
        model=MODEL_ID, file=("question.wav", wav_bytes(seconds=2.0), "audio/wav")
    )
    FIGURES["faster-whisper transcription of a 2 s WAV through the gateway"] = (
        f"{time.monotonic() - start:.2f} s"
    )
    assert transcript.text.strip() == "hello world"


def test_whisper_answers_verbose_json_with_the_language_it_detected(
    client: openai.OpenAI, whisper: str
) -> None:
    transcript = client.audio.transcriptions.create(
        model=MODEL_ID,
        file=("question.wav", wav_bytes(seconds=1.5), "audio/wav"),
        response_format="verbose_json",
    )
    assert transcript.language == "en"
    assert transcript.text.strip() == "hello world"
    assert [round(s.end, 2) for s in transcript.segments or []] == [1.0]


def test_whisper_runs_as_its_user_on_a_read_only_root(real_cluster: ControlPlane, whisper: str) -> None:
    """The catalog's security defaults hold for the real engine: it loads and serves as user
    65532 with a read-only root filesystem, writing only under HOME (an emptyDir)."""
    assert_runs_locked_down(real_cluster, the_pod(real_cluster, f"aima.dev/inference-service={whisper}"))
