"""The sources' listing answers turn into files to fetch (pure parts of hub, modelscope, ollama)."""

from __future__ import annotations

import pytest

from aima.loader import hub, modelscope, ollama
from aima.loader.errors import SourceError
from aima.loader.source import ModelScopeSource, OllamaSource

pytestmark = pytest.mark.unit

SHA = "b" * 64


def test_hub_revision_info_pins_the_commit_and_reads_lfs_digests() -> None:
    info = {
        "sha": "c0ffee",
        "siblings": [
            {"rfilename": "config.json", "size": 700, "blobId": "1" * 40},
            {
                "rfilename": "model 1.safetensors",
                "size": 9,
                "lfs": {"sha256": SHA, "size": 9000, "pointerSize": 134},
            },
        ],
    }
    commit, files = hub.files_from_revision_info(info, endpoint="https://hf-mirror.com", repo="org/m")
    assert commit == "c0ffee"
    assert [(f.path, f.size, f.sha256) for f in files] == [
        ("config.json", 700, None),
        ("model 1.safetensors", 9000, SHA),
    ]
    assert files[1].url == "https://hf-mirror.com/org/m/resolve/c0ffee/model%201.safetensors"


def test_hub_answer_without_sha_is_refused() -> None:
    with pytest.raises(SourceError, match="no commit sha"):
        hub.files_from_revision_info({"siblings": []}, endpoint="e", repo="org/m")


def test_modelscope_listing_skips_directories() -> None:
    answer = {
        "Code": 200,
        "Data": {
            "Files": [
                {"Path": "sub", "Type": "tree", "Size": 0},
                {"Path": "sub/model.bin", "Type": "blob", "Size": 12, "Sha256": SHA},
            ]
        },
    }
    source = ModelScopeSource("qwen/q", "v1")
    revision, (file,) = modelscope.files_from_listing(answer, endpoint="https://ms", source=source)
    assert (file.path, file.size, file.sha256) == ("sub/model.bin", 12, SHA)
    # No commit listed: the file stays at the revision asked for, and so does the manifest.
    assert revision == "v1"
    assert file.url == "https://ms/api/v1/models/qwen/q/repo?Revision=v1&FilePath=sub%2Fmodel.bin"


def test_modelscope_listing_pins_each_file_to_its_listed_commit_and_resolves_the_newest() -> None:
    older, newer = "a" * 40, "b" * 40

    def blob(path: str, commit: object, date: object) -> dict[str, object]:
        return {
            "Path": path,
            "Type": "blob",
            "Size": 1,
            "Sha256": SHA,
            "Revision": commit,
            "CommittedDate": date,
        }

    answer = {
        "Data": {
            "Files": [
                blob("config.json", newer, 1718000500),
                blob("model.bin", older, 1718000000),
                blob("README.md", "master", 1718000900),  # a branch name is no commit: not pinned
            ]
        }
    }
    source = ModelScopeSource("qwen/q", "master")
    revision, files = modelscope.files_from_listing(answer, endpoint="https://ms", source=source)
    assert revision == newer
    assert [f.url.split("?")[1] for f in files] == [
        f"Revision={newer}&FilePath=config.json",
        f"Revision={older}&FilePath=model.bin",
        "Revision=master&FilePath=README.md",
    ]


def test_ollama_manifest_lists_config_and_layers_once_each() -> None:
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{SHA}", "size": 5}
    manifest = {
        "config": {"mediaType": "c", "digest": f"sha256:{'c' * 64}", "size": 1},
        "layers": [layer, layer],
    }
    files = ollama.files_from_manifest(manifest, endpoint="https://r", source=OllamaSource("library/q", "1"))
    assert [f.path for f in files] == [f"blobs/sha256-{'c' * 64}", f"blobs/sha256-{SHA}"]
    assert files[1].url == f"https://r/v2/library/q/blobs/sha256:{SHA}"
    assert files[1].sha256 == SHA


def test_ollama_manifest_with_other_digest_is_refused() -> None:
    manifest = {"config": {"digest": "sha512:abc", "size": 1}, "layers": []}
    with pytest.raises(SourceError, match="non-sha256"):
        ollama.files_from_manifest(manifest, endpoint="https://r", source=OllamaSource("library/q", "1"))
