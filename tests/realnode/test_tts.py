"""Text to speech with a real engine on the real node: fastkokoro (Kokoro on ONNX Runtime, from PyPI
into an image built with no registry) speaking through the gateway's Service with the openai SDK.
The Engine is the catalog's, only its image the local build; the model is a tiny Kokoro made in the
test (random weights, Kokoro's interface, msgflux/Kokoro-82M-streaming-onnx's layout), downloaded
from the in-cluster Hub by the real loader. fastkokoro answers only to the model name "kokoro":
the Engine says so (spec.modelName) and the gateway renames the request."""

from __future__ import annotations

import copy
import io
import time
import wave
from typing import Any

import httpx
import openai
import pytest
import yaml
from suite import FIGURES, KOKORO_REPO, SERVING_NAMESPACE
from test_llama_cpp import the_pod

from aima_testenv import ControlPlane
from aima_testenv.binaries import REPO_ROOT
from aima_testenv.chart import Release
from aima_testenv.models import KOKORO_SAMPLES_PER_PHONEME
from reads import assert_runs_locked_down, condition, get_json, ready_seconds
from waiting import eventually

pytestmark = pytest.mark.realnode

SERVICE = "tiny-kokoro"
MODEL_ID = f"{SERVING_NAMESPACE}/{SERVICE}"
KOKORO_RATE = 24000


def local_fastkokoro(image: str) -> dict[str, Any]:
    """The catalog's fastkokoro Engine under another name, its one variant the local build."""
    engine = yaml.safe_load((REPO_ROOT / "catalog" / "engines" / "fastkokoro.yaml").read_text())
    local = copy.deepcopy(engine)
    local["metadata"] = {"name": "fastkokoro-local"}
    (cpu,) = engine["spec"]["variants"]
    local["spec"]["variants"] = [cpu | {"image": image}]
    local["spec"]["health"]["periodSeconds"] = 1
    local["spec"]["health"]["drainSeconds"] = 1  # its replies take milliseconds
    return dict(local)


@pytest.fixture(scope="module")
def kokoro(real_cluster: ControlPlane, platform: Release, downloaded: dict[str, Any]) -> str:
    assert real_cluster.real_node is not None
    real_cluster.apply(
        [
            local_fastkokoro(real_cluster.real_node.images["fastkokoro"]),
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "tiny-kokoro", "namespace": SERVING_NAMESPACE},
                "spec": {"source": f"hf://{KOKORO_REPO}", "type": "TTS"},
            },
        ]
    )
    eventually(
        lambda: (
            condition(get_json(real_cluster, "model", "tiny-kokoro", "-n", SERVING_NAMESPACE), "Ready")
            == "True"
        ),
        what="the Kokoro Model to be downloaded",
        timeout=120,
    )
    assert (
        get_json(real_cluster, "model", "tiny-kokoro", "-n", SERVING_NAMESPACE)["status"]["format"] == "ONNX"
    )
    start = time.monotonic()
    real_cluster.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "InferenceService",
                "metadata": {"name": SERVICE, "namespace": SERVING_NAMESPACE},
                "spec": {"modelRef": {"name": "tiny-kokoro"}, "engineRef": {"name": "fastkokoro-local"}},
            }
        ]
    )
    seconds = ready_seconds(real_cluster, "isvc", SERVICE, SERVING_NAMESPACE, since=start)
    FIGURES["fastkokoro InferenceService apply -> Ready (tiny Kokoro)"] = f"{seconds:.1f} s"
    return SERVICE


def speak(client: openai.OpenAI, text: str, *, voice: str = "af_heart") -> wave.Wave_read:
    reply = client.audio.speech.create(model=MODEL_ID, voice=voice, input=text, response_format="wav")
    return wave.open(io.BytesIO(reply.content))


def test_the_service_tells_the_engines_own_model_name(real_cluster: ControlPlane, kokoro: str) -> None:
    status = get_json(real_cluster, "isvc", kokoro, "-n", SERVING_NAMESPACE)["status"]
    assert (status["servedName"], status["engineModel"]) == (SERVICE, "kokoro")


def test_fastkokoro_speaks_a_wav_through_the_gateway(client: openai.OpenAI, kokoro: str) -> None:
    text = "Hello world, this sentence is spoken by a tiny Kokoro on the real node."
    start = time.monotonic()
    audio = speak(client, text)
    FIGURES["fastkokoro speech of one sentence through the gateway"] = f"{time.monotonic() - start:.2f} s"
    assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (KOKORO_RATE, 1, 2)
    # Its phonemes, not silence or a canned clip: a longer text is longer audio.
    assert audio.getnframes() > 20 * KOKORO_SAMPLES_PER_PHONEME
    longer = speak(client, f"{text} {text}", voice="am_adam")
    assert longer.getnframes() > 1.5 * audio.getnframes()


def test_the_voices_are_the_models_own(gateway_url: str, keys: dict[str, str], kokoro: str) -> None:
    reply = httpx.get(
        f"{gateway_url}/audio/voices",
        params={"model": MODEL_ID},
        headers={"Authorization": f"Bearer {keys['gateway']}"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["voices"] == ["af_heart", "am_adam"]


def test_a_voice_the_model_lacks_is_refused_with_the_engines_reason(
    client: openai.OpenAI, kokoro: str
) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        speak(client, "Hello.", voice="zz_nobody")
    assert 400 <= refused.value.status_code < 500
    assert "zz_nobody" in str(refused.value.body)


def test_fastkokoro_runs_as_its_user_on_a_read_only_root(real_cluster: ControlPlane, kokoro: str) -> None:
    """The catalog's security defaults hold for the real engine: it loads and serves as user
    65532 with a read-only root filesystem, writing only under HOME (an emptyDir)."""
    assert_runs_locked_down(real_cluster, the_pod(real_cluster, f"aima.dev/inference-service={kokoro}"))
