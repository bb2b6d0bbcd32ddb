"""What a downloaded model is (pure): its format, and for single-file formats the file to load.

llama.cpp takes one GGUF file (given the first shard of a split model, it loads the rest itself),
and an Ollama model's weights are one GGUF blob, so both name a weights file. Directory formats
(SafeTensors, PyTorch, ONNX, CTranslate2) are served from the whole directory and name none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from aima.api.model import ModelFormat
from aima.loader.manifest import ManifestFile

__all__ = ["OLLAMA_MODEL_MEDIA_TYPE", "Detected", "detect"]

OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
_OLLAMA_BLOBS = "blobs/sha256-"
_SHARD = re.compile(r"-(?P<index>\d{5})-of-\d{5}\.gguf$", re.IGNORECASE)
"""How llama.cpp's gguf-split names the shards of one model: name-00001-of-00003.gguf."""
# CTranslate2 writes model.bin beside a vocabulary; PyTorch checkpoints are never named like that.
_CT2_VOCABULARIES = frozenset(
    f"{prefix}vocabulary.{ext}" for prefix in ("", "shared_", "source_", "target_") for ext in ("txt", "json")
)
# Checked in this order: a repository often carries several, and the first is what engines prefer.
_DIRECTORY_SUFFIXES = (
    (ModelFormat.SAFETENSORS, (".safetensors",)),
    (ModelFormat.PYTORCH, (".bin", ".pt", ".pth")),
    (ModelFormat.ONNX, (".onnx",)),
)


@dataclass(frozen=True)
class Detected:
    """The format found in the files, and the weights file relative to the model directory."""

    format: ModelFormat | None
    weights_file: str | None = None


def detect(files: Sequence[ManifestFile]) -> Detected:
    """The format of a model directory from its verified files; unknown formats give None."""
    if (blob := _ollama_model(files)) is not None:
        return Detected(ModelFormat.OLLAMA, blob)
    if gguf := [f for f in files if f.path.lower().endswith(".gguf")]:
        return Detected(ModelFormat.GGUF, _main_gguf(gguf))
    names = {PurePosixPath(f.path).name.lower() for f in files}
    if _is_ctranslate2(names):
        return Detected(ModelFormat.CTRANSLATE2)
    for found, suffixes in _DIRECTORY_SUFFIXES:
        if any(name.endswith(suffixes) for name in names):
            return Detected(found)
    return Detected(None)


def _ollama_model(files: Sequence[ManifestFile]) -> str | None:
    """The blob holding an Ollama model's weights: the registry's model layer when the media types
    were recorded, else (a volume filled by hand in Ollama's layout) the largest blob."""
    layers = [f for f in files if f.media_type == OLLAMA_MODEL_MEDIA_TYPE]
    if not layers and any(f.path.startswith("manifests/") for f in files):
        layers = [f for f in files if f.path.startswith(_OLLAMA_BLOBS)]
    return _largest({f.path: f.size for f in layers})


def _main_gguf(files: Sequence[ManifestFile]) -> str | None:
    """The single GGUF model, or the first shard of a split one; when a repository holds several
    (quantisations, a vision projector), the largest model counting all its shards."""
    sizes: dict[str, int] = {}
    for file in files:
        sizes[_first_shard(file.path)] = sizes.get(_first_shard(file.path), 0) + file.size
    return _largest(sizes)


def _first_shard(path: str) -> str:
    shard = _SHARD.search(path)
    return path if shard is None else f"{path[: shard.start('index')]}00001{path[shard.end('index') :]}"


def _largest(sizes: dict[str, int]) -> str | None:
    # Largest first; ties go to the first name, so the answer never depends on listing order.
    return min(sizes, key=lambda path: (-sizes[path], path), default=None)


def _is_ctranslate2(names: set[str]) -> bool:
    has_safetensors = any(name.endswith(".safetensors") for name in names)
    return "model.bin" in names and not names.isdisjoint(_CT2_VOCABULARIES) and not has_safetensors
