"""What the loader reports the downloaded files to be: the format, and the file llama.cpp loads."""

from __future__ import annotations

import pytest

from aima.api.model import ModelFormat
from aima.loader import formats
from aima.loader.manifest import Manifest, ManifestFile
from aima.loader.report import final_status

pytestmark = pytest.mark.unit

GIB = 2**30
BLOB = "blobs/sha256-" + "a" * 64


def files(*entries: tuple[str, int] | tuple[str, int, str]) -> list[ManifestFile]:
    return [
        ManifestFile(path=e[0], size=e[1], sha256="0" * 64, media_type=e[2] if len(e) == 3 else None)
        for e in entries
    ]


@pytest.mark.parametrize(
    ("found", "format_", "weights"),
    [
        (files(("qwen-q4_k_m.gguf", GIB), ("README.md", 10)), ModelFormat.GGUF, "qwen-q4_k_m.gguf"),
        (
            files(
                ("big/m-00002-of-00003.gguf", 4 * GIB),
                ("big/m-00001-of-00003.gguf", 4 * GIB),
                ("big/m-00003-of-00003.gguf", GIB),
                ("m-q8_0.gguf", 8 * GIB),
            ),
            ModelFormat.GGUF,
            "big/m-00001-of-00003.gguf",
        ),
        (files(("mmproj-f16.gguf", GIB // 2), ("model-Q4.gguf", 2 * GIB)), ModelFormat.GGUF, "model-Q4.gguf"),
        (files(("b.gguf", GIB), ("a.gguf", GIB)), ModelFormat.GGUF, "a.gguf"),
        (
            files(
                ("model-00001-of-00002.safetensors", 5 * GIB),
                ("model-00002-of-00002.safetensors", GIB),
                ("pytorch_model.bin", 6 * GIB),
                ("config.json", 1),
            ),
            ModelFormat.SAFETENSORS,
            None,
        ),
        (files(("pytorch_model.bin", GIB), ("config.json", 1)), ModelFormat.PYTORCH, None),
        (files(("kokoro-v1_0.pth", GIB), ("voices/af.pt", 10)), ModelFormat.PYTORCH, None),
        (files(("onnx/model.onnx", GIB), ("tokenizer.json", 1)), ModelFormat.ONNX, None),
        (
            files(("model.bin", GIB), ("config.json", 1), ("vocabulary.json", 1)),
            ModelFormat.CTRANSLATE2,
            None,
        ),
        (
            files(
                ("blobs/sha256-" + "c" * 64, 100),
                (BLOB, GIB, formats.OLLAMA_MODEL_MEDIA_TYPE),
                ("blobs/sha256-" + "b" * 64, 20, "application/vnd.ollama.image.template"),
                ("manifests/registry.ollama.ai/library/qwen2/0.5b", 500),
            ),
            ModelFormat.OLLAMA,
            BLOB,
        ),
        (
            files(("blobs/sha256-" + "c" * 64, 100), (BLOB, GIB), ("manifests/registry.ollama.ai/x/y/z", 5)),
            ModelFormat.OLLAMA,
            BLOB,
        ),
        (files(("notes.txt", 5)), None, None),
    ],
    ids=[
        "one gguf",
        "split gguf: the first shard of the largest model",
        "a vision projector is not the model",
        "equal sizes: the first name",
        "safetensors beside a pytorch copy",
        "pytorch bin",
        "pytorch pth",
        "onnx",
        "ctranslate2",
        "ollama model layer",
        "ollama layout filled by hand",
        "unknown",
    ],
)
def test_detect(found: list[ManifestFile], format_: ModelFormat | None, weights: str | None) -> None:
    assert formats.detect(found) == formats.Detected(format_, weights)


def test_the_ready_report_names_the_weights_file_or_clears_an_old_one() -> None:
    gguf = Manifest(source="hf://a/b", complete=True, files=tuple(files(("m.gguf", GIB))))
    report = final_status(gguf, sha256="f" * 64)
    assert (report["format"], report["weightsFile"]) == ("GGUF", "m.gguf")
    directory = Manifest(source="hf://a/c", complete=True, files=tuple(files(("model.safetensors", GIB))))
    report = final_status(directory, sha256="f" * 64)
    # A merge patch's null removes the field an earlier GGUF download left.
    assert (report["format"], report["weightsFile"]) == ("SafeTensors", None)
