"""Parsing of loader source URIs."""

from __future__ import annotations

import pytest

from aima.loader.errors import SourceError
from aima.loader.source import (
    HfSource,
    HttpSource,
    ModelScopeSource,
    OllamaSource,
    PvcSource,
    S3Source,
    parse_source,
    with_revision,
)

pytestmark = pytest.mark.unit

SHA = "a" * 64


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hf://Qwen/Qwen2.5-0.5B", HfSource("Qwen/Qwen2.5-0.5B", "main")),
        ("hf://Qwen/Qwen2.5-0.5B@v1.0", HfSource("Qwen/Qwen2.5-0.5B", "v1.0")),
        ("hf://org/repo@refs/pr/1", HfSource("org/repo", "refs/pr/1")),
        ("modelscope://qwen/Qwen2-7B@v1", ModelScopeSource("qwen/Qwen2-7B", "v1")),
        ("modelscope://qwen/Qwen2-7B", ModelScopeSource("qwen/Qwen2-7B", "master")),
        ("ollama://library/qwen2:7b", OllamaSource("library/qwen2", "7b")),
        ("ollama://qwen2", OllamaSource("library/qwen2", "latest")),
        ("https://example.com/a/model.gguf", HttpSource("https://example.com/a/model.gguf", "model.gguf")),
        (
            f"https://example.com/m%20x.bin#sha256={SHA}",
            HttpSource("https://example.com/m%20x.bin", "m x.bin", SHA),
        ),
        ("pvc://models/qwen/7b", PvcSource("models", "qwen/7b")),
        ("pvc://models", PvcSource("models", "")),
        ("s3://models/llama/3.1-8b/", S3Source("models", "llama/3.1-8b")),
        ("s3://models/one/model.gguf", S3Source("models", "one/model.gguf")),
        ("s3://Legacy_Bucket", S3Source("Legacy_Bucket", "")),
    ],
    ids=[
        "hf default",
        "hf tag",
        "hf pr ref",
        "modelscope",
        "modelscope default",
        "ollama",
        "ollama bare",
        "https",
        "https sha",
        "pvc",
        "pvc root",
        "s3 prefix",
        "s3 one object",
        "s3 whole bucket",
    ],
)
def test_parse_source_accepts(uri: str, expected: object) -> None:
    assert parse_source(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "Qwen/Qwen2",
        "ftp://host/key",
        "hf://just-a-name",
        "hf://org/../etc",
        "hf://org/repo@../../x",
        "ollama://Library/UPPER:tag",
        "https://example.com/",
        "https://example.com/file#md5=abc",
        "pvc://Bad_Claim/x",
        "pvc://claim/../other",
        "s3://b/key",
        "s3://bucket/a/../b",
        "s3://bucket/a/./b",
        "s3://-bucket/a",
    ],
    ids=[
        "no scheme",
        "unknown scheme",
        "hf one segment",
        "hf dotdot repo",
        "hf dotdot revision",
        "ollama upper",
        "https no file",
        "https bad fragment",
        "pvc bad claim",
        "pvc dotdot",
        "s3 short bucket",
        "s3 dotdot",
        "s3 dot",
        "s3 bad bucket",
    ],
)
def test_parse_source_refuses(uri: str) -> None:
    with pytest.raises(SourceError):
        parse_source(uri)


def test_with_revision_overrides_revision_and_tag() -> None:
    assert with_revision(parse_source("hf://a/b@main"), "abc123") == HfSource("a/b", "abc123")
    assert with_revision(parse_source("ollama://qwen2:7b"), "14b") == OllamaSource("library/qwen2", "14b")
    assert with_revision(parse_source("hf://a/b"), None) == HfSource("a/b", "main")
    with pytest.raises(SourceError):
        with_revision(parse_source("https://h/f.bin"), "v2")
    with pytest.raises(SourceError):
        with_revision(parse_source("s3://bucket/m"), "v2")
