"""The loader against a local server that speaks an Ollama registry's API: blobs verified by digest
and laid out as Ollama's own models directory."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from aima.loader import engine, formats
from aima.loader.errors import VerificationError
from aima.loader.manifest import Manifest
from aima.loader.report import final_status
from fakes.loading import CollectSink, fast_env
from fakes.ollama import FakeOllama
from fakes.serving import generate_file, running

pytestmark = pytest.mark.integration

MODEL_MEDIA_TYPE = formats.OLLAMA_MODEL_MEDIA_TYPE


@pytest.fixture
def registry(tmp_path: Path) -> FakeOllama:
    served = tmp_path / "served"
    generate_file(served / "model.gguf", 24 * 2**20 + 3, seed=7)
    (served / "config.json").write_text(json.dumps({"model_format": "gguf", "model_family": "qwen2"}))
    (served / "template").write_text("{{ .Prompt }}")
    layers = {
        MODEL_MEDIA_TYPE: served / "model.gguf",
        "application/vnd.ollama.image.template": served / "template",
    }
    return FakeOllama("library/qwen2", "0.5b", config=served / "config.json", layers=layers)


def _pull(registry: FakeOllama, dest: Path) -> Manifest:
    async def main() -> Manifest:
        async with running(registry.app()) as url:
            request = engine.LoadRequest(uri="ollama://qwen2:0.5b", dest=dest, endpoint=url)
            return await engine.load(request, env=fast_env(CollectSink()))

    return asyncio.run(main())


def test_pull_lays_out_blobs_and_the_manifest_as_ollama_does(registry: FakeOllama, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    result = _pull(registry, dest)
    for digest, path in registry.blobs().items():
        assert (dest / "blobs" / f"sha256-{digest}").read_bytes() == path.read_bytes()
    stored = dest / "manifests/registry.ollama.ai/library/qwen2/0.5b"
    assert stored.read_bytes() == registry.manifest()
    assert result.revision == f"sha256:{hashlib.sha256(registry.manifest()).hexdigest()}"
    model = [f for f in result.files if f.media_type == MODEL_MEDIA_TYPE]
    assert len(model) == 1 and model[0].size == 24 * 2**20 + 3
    assert len(result.files) == 4  # config, two layers, the manifest
    # The Ready report points llama.cpp (and people) at the GGUF blob as it lies in the volume.
    report = final_status(result, sha256="0" * 64)
    assert report["format"] == "Ollama"
    assert (dest / report["weightsFile"]).read_bytes() == registry.layers[MODEL_MEDIA_TYPE].read_bytes()


def test_a_cut_blob_resumes_and_a_corrupted_one_is_fetched_again(
    registry: FakeOllama, tmp_path: Path
) -> None:
    digest = hashlib.sha256(registry.layers[MODEL_MEDIA_TYPE].read_bytes()).hexdigest()
    key = f"sha256:{digest}"
    registry.faults.cut_after[key] = [10 * 2**20]
    registry.faults.corrupt[key] = 1
    registry.faults.statuses[key] = [502]
    _pull(registry, tmp_path)
    assert (tmp_path / "blobs" / f"sha256-{digest}").read_bytes() == registry.layers[
        MODEL_MEDIA_TYPE
    ].read_bytes()


def test_a_blob_that_never_matches_its_digest_fails(registry: FakeOllama, tmp_path: Path) -> None:
    digest = hashlib.sha256(registry.layers[MODEL_MEDIA_TYPE].read_bytes()).hexdigest()
    registry.faults.corrupt[f"sha256:{digest}"] = 5
    with pytest.raises(VerificationError, match=f"blobs/sha256-{digest} failed verification twice"):
        _pull(registry, tmp_path)
    assert not (tmp_path / "manifests").exists()  # Ollama must not see a model whose blob is missing
