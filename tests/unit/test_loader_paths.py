"""File names from a source may not escape the model directory; the plan refuses unsafe listings."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from aima.loader import paths, plan
from aima.loader.errors import UnsafePathError
from aima.loader.manifest import Manifest, ManifestFile
from aima.loader.plan import RemoteFile

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "a/../../evil",
        "/etc/passwd",
        "C:/x",
        "a\\..\\b",
        "a\x00b",
        "",
        "a//b",
        "./a",
        ".aima-manifest.json",
        ".aima-lock",
    ],
    ids=[
        "dotdot",
        "nested dotdot",
        "absolute",
        "drive",
        "backslash",
        "nul",
        "empty",
        "empty component",
        "dot",
        "manifest",
        "lock",
    ],
)
def test_check_relative_refuses(name: str) -> None:
    with pytest.raises(UnsafePathError, match="Refused file name"):
        paths.check_relative(name)


@pytest.mark.parametrize(
    "name", ["config.json", "sub/dir/model-00001-of-00002.safetensors", "..hidden", "a..b"]
)
def test_check_relative_accepts(name: str) -> None:
    assert paths.check_relative(name) == PurePosixPath(name)


def test_prepare_target_refuses_symlinked_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symlink"):
        paths.prepare_target(dest, PurePosixPath("sub/weights.bin"))


def test_prepare_target_refuses_symlinked_part_file(tmp_path: Path) -> None:
    (tmp_path / "weights.bin.part").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="symlink"):
        paths.prepare_target(tmp_path, PurePosixPath("weights.bin"))


def test_prepare_target_creates_parents(tmp_path: Path) -> None:
    target = paths.prepare_target(tmp_path, PurePosixPath("a/b/c.bin"))
    assert target == tmp_path.resolve() / "a/b/c.bin"
    assert target.parent.is_dir()


def _file(path: str, size: int = 10, sha256: str | None = "f" * 64) -> RemoteFile:
    return RemoteFile(path=path, url=f"http://h/{path}", size=size, sha256=sha256)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a", "a"], "twice"),
        (["a", "a.part"], "partial file"),
        (["a", "a/b"], "directory"),
        (["ok", "../evil"], "climbs out"),
    ],
    ids=["duplicate", "part collision", "file and directory", "traversal"],
)
def test_plan_refuses_unsafe_listings(names: list[str], message: str) -> None:
    with pytest.raises(UnsafePathError, match=message):
        plan.make_plan(
            [_file(name) for name in names], source="s", revision="r", manifest=None, present_sizes={}
        )


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        ((), (), ["config.json", "model.safetensors", "sub/model.safetensors", "pytorch_model.bin"]),
        (("*.safetensors", "*.json"), (), ["config.json", "model.safetensors", "sub/model.safetensors"]),
        ((), ("*.bin",), ["config.json", "model.safetensors", "sub/model.safetensors"]),
        (("*.safetensors",), ("sub/*",), ["model.safetensors"]),
    ],
    ids=["all", "include", "exclude", "both"],
)
def test_filter_files(include: tuple[str, ...], exclude: tuple[str, ...], expected: list[str]) -> None:
    files = [
        _file(n) for n in ["config.json", "model.safetensors", "sub/model.safetensors", "pytorch_model.bin"]
    ]
    assert [f.path for f in plan.filter_files(files, include=include, exclude=exclude)] == expected


def test_make_plan_skips_only_files_recorded_with_matching_size_digest_and_revision() -> None:
    files = [_file("done"), _file("other-digest"), _file("missing-on-disk"), _file("new")]
    recorded = Manifest(
        source="hf://a/b",
        revision="c1",
        files=(
            ManifestFile(path="done", size=10, sha256="f" * 64),
            ManifestFile(path="other-digest", size=10, sha256="0" * 64),
            ManifestFile(path="missing-on-disk", size=10, sha256="f" * 64),
        ),
    )
    present = {"done": 10, "other-digest": 10}
    result = plan.make_plan(files, source="hf://a/b", revision="c1", manifest=recorded, present_sizes=present)
    assert [f.path for f in result.skip] == ["done"]
    assert [f.path for f in result.fetch] == ["other-digest", "missing-on-disk", "new"]
    moved = plan.make_plan(files, source="hf://a/b", revision="c2", manifest=recorded, present_sizes=present)
    assert moved.skip == ()


def test_bytes_still_needed_counts_partial_files() -> None:
    todo = plan.Plan(fetch=(_file("a", 100), _file("b", 50), _file("c", 7, None)), skip=(_file("d", 1000),))
    assert plan.bytes_still_needed(todo, partial_sizes={"a": 40}) == 60 + 50 + 7
    assert todo.total_bytes == 1157


def test_only_partial_files_begun_from_the_listed_etag_are_resumed() -> None:
    def object_(path: str, etag: str | None) -> RemoteFile:
        return RemoteFile(path=path, url=f"https://s3/b/{path}", size=10, etag=etag)

    files = [
        object_("same", "e1"),
        object_("replaced", "e2-3"),
        object_("unrecorded", "e4"),
        object_("hub", None),
    ]
    recorded = Manifest(source="s3://b/p", partials={"same": "e1", "replaced": "e0-3"})
    partial = {"same": 4, "replaced": 4, "unrecorded": 4, "hub": 4}
    stale = plan.stale_partials(files, source="s3://b/p", manifest=recorded, partial_sizes=partial)
    assert stale == ("replaced", "unrecorded")  # a file without an ETag keeps resuming as before
    # A manifest of another source, or none, vouches for no partial file.
    for other in (recorded.model_copy(update={"source": "s3://c/p"}), None):
        assert plan.stale_partials(files, source="s3://b/p", manifest=other, partial_sizes=partial) == (
            "same",
            "replaced",
            "unrecorded",
        )
    assert plan.stale_partials(files, source="s3://b/p", manifest=recorded, partial_sizes={}) == ()
