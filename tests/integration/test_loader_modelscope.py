"""The loader against a local server that speaks ModelScope's API: a recursive listing filtered by
globs, LFS files through the CDN redirect, every file verified against the sha256 ModelScope
publishes, a cut transfer resumed from where it broke, and every file fetched at the commit the
listing resolved the branch to, however the branch moves meanwhile."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from aima.loader import engine
from aima.loader.errors import SourceError
from aima.loader.manifest import Manifest
from fakes.loading import CollectSink, fast_env
from fakes.modelscope import COMMIT, FakeModelScope, ModelScopeFile
from fakes.serving import generate_file, running

pytestmark = pytest.mark.integration

REPO = "qwen/tiny-chat"
TOKEN = "ms-secret-token"
SHARD = 3 * 2**20 + 17
READ_BUFFER_LOSS = 2 * 2**20


@pytest.fixture
def modelscope(tmp_path: Path) -> FakeModelScope:
    """Two safetensors shards (LFS), a config, a tokenizer in a sub-directory, an ONNX export and a README."""
    served = tmp_path / "served"
    generate_file(served / "shard1", SHARD, seed=11)
    generate_file(served / "shard2", 2 * 2**20, seed=12)
    generate_file(served / "onnx", 2**20, seed=13)
    (served / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    (served / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    (served / "README.md").write_text("# tiny chat")
    files = {
        "config.json": ModelScopeFile(served / "config.json", lfs=False),
        "model-00001-of-00002.safetensors": ModelScopeFile(served / "shard1"),
        "model-00002-of-00002.safetensors": ModelScopeFile(served / "shard2"),
        "tokenizer/tokenizer.json": ModelScopeFile(served / "tokenizer.json", lfs=False),
        "onnx/model.onnx": ModelScopeFile(served / "onnx"),
        "README.md": ModelScopeFile(served / "README.md", lfs=False),
    }
    return FakeModelScope(REPO, files, token=TOKEN)


def _load(
    fake: FakeModelScope,
    dest: Path,
    *,
    uri: str = f"modelscope://{REPO}",
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> Manifest:
    async def main() -> Manifest:
        async with running(fake.app()) as url:
            request = engine.LoadRequest(
                uri=uri, dest=dest, endpoint=url, token=fake.token, include=include, exclude=exclude
            )
            return await engine.load(request, env=fast_env(CollectSink()))

    return asyncio.run(main())


def test_downloads_the_filtered_files_verified_and_resumes_a_cut_transfer(
    modelscope: FakeModelScope, tmp_path: Path
) -> None:
    cut = 2 * 2**20 + 12345
    modelscope.faults.cut_after["model-00001-of-00002.safetensors"] = [cut]
    dest = tmp_path / "model"
    result = _load(modelscope, dest, include=("*.safetensors", "*.json"), exclude=("onnx/*",))

    assert result.complete and result.source == f"modelscope://{REPO}" and result.revision == COMMIT
    wanted = [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "tokenizer/tokenizer.json",
    ]
    assert sorted(f.path for f in result.files) == wanted
    for entry in result.files:
        assert entry.sha256 == modelscope.digest(entry.path)
        assert (dest / entry.path).read_bytes() == modelscope.files[entry.path].path.read_bytes()
    assert Manifest.model_validate_json((dest / ".aima-manifest.json").read_text()) == result
    assert not (dest / "onnx").exists() and not (dest / "README.md").exists()
    # One listing, recursive, at the default branch; no request for a filtered-out file.
    assert modelscope.listings == [{"Revision": "master", "Recursive": "true"}]
    assert {name for name, _ in modelscope.stats.requests} == set(wanted)
    # The cut shard was asked for again from where its partial file ended, and only once.
    ranges = [h for name, h in modelscope.stats.requests if name == "model-00001-of-00002.safetensors"]
    refetched = modelscope.stats.body_bytes["model-00001-of-00002.safetensors"] - SHARD
    assert 0 <= refetched <= READ_BUFFER_LOSS
    assert ranges == [None, f"bytes={cut - refetched}-"]
    assert not list(dest.rglob("*.part"))


def test_a_file_that_differs_from_the_published_sha256_is_fetched_again(
    modelscope: FakeModelScope, tmp_path: Path
) -> None:
    # One flipped byte keeps the size: only the sha256 ModelScope publishes can catch it.
    modelscope.faults.corrupt["model-00002-of-00002.safetensors"] = 1
    dest = tmp_path / "model"
    result = _load(modelscope, dest, include=("model-00002-of-00002.safetensors",))
    assert [f.sha256 for f in result.files] == [modelscope.digest("model-00002-of-00002.safetensors")]
    assert modelscope.stats.requests == [("model-00002-of-00002.safetensors", None)] * 2
    assert (dest / "model-00002-of-00002.safetensors").read_bytes() == (
        modelscope.files["model-00002-of-00002.safetensors"].path.read_bytes()
    )


def test_an_unknown_revision_fails_in_words_before_any_download(
    modelscope: FakeModelScope, tmp_path: Path
) -> None:
    with pytest.raises(SourceError, match=rf"ModelScope repository {REPO}@v9 was not found \(HTTP 404\)"):
        _load(modelscope, tmp_path / "model", uri=f"modelscope://{REPO}@v9")
    assert modelscope.listings == [{"Revision": "v9", "Recursive": "true"}]
    assert not modelscope.stats.requests


def test_files_are_fetched_at_the_listed_commit_while_the_branch_moves_on(
    modelscope: FakeModelScope, tmp_path: Path
) -> None:
    moved = tmp_path / "moved"
    generate_file(moved / "shard1", SHARD, seed=21)  # same size: only the commit tells them apart
    (moved / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"]}))
    listed = {name: file.path.read_bytes() for name, file in modelscope.files.items()}
    pushed = modelscope.files | {
        "model-00001-of-00002.safetensors": ModelScopeFile(moved / "shard1"),
        "config.json": ModelScopeFile(moved / "config.json", lfs=False),
    }
    modelscope.push_after_listing = ("0123abcd" * 5, pushed)
    dest = tmp_path / "model"

    result = _load(modelscope, dest, include=("*.safetensors", "config.json"))

    assert modelscope.commit == "0123abcd" * 5  # the branch moved before the first byte
    assert result.revision == COMMIT  # the commit listed, not the branch's name
    assert Manifest.model_validate_json((dest / ".aima-manifest.json").read_text()).revision == COMMIT
    for entry in result.files:
        assert (dest / entry.path).read_bytes() == listed[entry.path]
    assert sorted(modelscope.downloads) == [
        (COMMIT, "config.json"),
        (COMMIT, "model-00001-of-00002.safetensors"),
        (COMMIT, "model-00002-of-00002.safetensors"),
    ]
