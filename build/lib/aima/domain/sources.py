"""Parse a Model's `spec.source` URI into its parts (pure).

hf://org/repo@rev        -> scheme hf, repo org/repo, revision rev
modelscope://org/repo    -> scheme modelscope, repo org/repo
ollama://llama3.2:1b     -> scheme ollama, repo llama3.2:1b
pvc://claim/sub/dir      -> scheme pvc, claim claim, path sub/dir
s3://bucket/prefix, https://host/file -> scheme and the rest as location
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelSource", "parse_source"]


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """The parts of a source URI; fields that do not apply to the scheme are None."""

    scheme: str
    location: str
    """Everything after `scheme://`."""
    repo: str | None = None
    """org/repo for hf:// and modelscope://, name[:tag] for ollama://."""
    revision: str | None = None
    """The part after @ for hf:// and modelscope://."""
    claim: str | None = None
    """The PVC name for pvc://."""
    path: str | None = None
    """The path inside the PVC for pvc://."""


def parse_source(source: str) -> ModelSource:
    """Split a source URI; raises ValueError when it has no `scheme://` (the CRD refuses those)."""
    scheme, separator, location = source.partition("://")
    if not separator or not scheme:
        raise ValueError(f"model source {source!r} has no scheme:// prefix")
    if scheme in ("hf", "modelscope"):
        repo, _, revision = location.partition("@")
        return ModelSource(scheme=scheme, location=location, repo=repo, revision=revision or None)
    if scheme == "ollama":
        return ModelSource(scheme=scheme, location=location, repo=location)
    if scheme == "pvc":
        claim, _, path = location.partition("/")
        return ModelSource(scheme=scheme, location=location, claim=claim, path=path or None)
    return ModelSource(scheme=scheme, location=location)
