"""The loader against a local server that speaks the Hugging Face Hub's API, with injected faults:
cut transfers resume, corrupt files are fetched again, 5xx is retried, traversal names are refused,
a full disk fails cleanly, and two loaders on one model do not collide."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from aima.loader import engine
from aima.loader.errors import (
    DiskFullError,
    LoaderError,
    LockHeldError,
    SourceError,
    TransferError,
    UnsafePathError,
    VerificationError,
)
from aima.loader.manifest import Manifest
from aima.loader.progress import Phase
from aima.loader.retry import RetryPolicy
from fakes.hub import COMMIT, FakeHub, HubFile
from fakes.loading import CollectSink, fast_env
from fakes.serving import generate_file, running

pytestmark = pytest.mark.integration

REPO = "acme/tiny-llm"
TOKEN = "hf_secret_token_value"
BIG = 200 * 2**20
READ_BUFFER_LOSS = 2 * 2**20


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 200 MB safetensors file, generated once for the module."""
    path = tmp_path_factory.mktemp("hub") / "model.safetensors"
    generate_file(path, BIG, seed=1)
    return path


@pytest.fixture
def small_repo(tmp_path: Path) -> dict[str, HubFile]:
    """A config (not LFS), a 3 MB weights file and a tokenizer in a sub-directory."""
    files = tmp_path / "served"
    generate_file(files / "weights", 3 * 2**20 + 17, seed=2)
    generate_file(files / "tokenizer", 300_000, seed=3)
    (files / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    return {
        "config.json": HubFile(files / "config.json", lfs=False),
        "model.safetensors": HubFile(files / "weights"),
        "tokenizer/tokenizer.json": HubFile(files / "tokenizer"),
    }


def _load(
    hub: FakeHub, dest: Path, **env_overrides: object
) -> Callable[[str], Awaitable[tuple[Manifest, CollectSink]]]:
    """A coroutine factory: load `hf://REPO` from the fake at `url` into `dest`."""

    async def run(url: str) -> tuple[Manifest, CollectSink]:
        sink = CollectSink()
        request = engine.LoadRequest(uri=f"hf://{REPO}@main", dest=dest, endpoint=url, token=hub.token)
        result = await engine.load(request, env=fast_env(sink, **env_overrides))
        return result, sink

    return run


def _serve_and_load(hub: FakeHub, dest: Path, **env_overrides: object) -> tuple[Manifest, CollectSink]:
    async def main() -> tuple[Manifest, CollectSink]:
        async with running(hub.app()) as url:
            return await _load(hub, dest, **env_overrides)(url)

    return asyncio.run(main())


def test_downloads_a_repository_verifies_it_and_writes_the_manifest(
    small_repo: dict[str, HubFile], tmp_path: Path
) -> None:
    hub = FakeHub(REPO, small_repo, token=TOKEN)
    dest = tmp_path / "model"
    result, sink = _serve_and_load(hub, dest)
    assert result.complete and result.revision == COMMIT and result.source == f"hf://{REPO}@main"
    for entry in result.files:
        assert (dest / entry.path).read_bytes() == small_repo[entry.path].path.read_bytes()
    assert {f.path: f.sha256 for f in result.files}["model.safetensors"] == hub.digest("model.safetensors")
    assert Manifest.model_validate_json((dest / ".aima-manifest.json").read_text()) == result
    assert sorted(p.name for p in dest.iterdir()) == [
        ".aima-manifest.json",
        "config.json",
        "model.safetensors",
        "tokenizer",
    ]
    assert sink.phases == [Phase.DOWNLOADING, Phase.VERIFYING, Phase.READY]
    last = sink.reports[-1]
    assert (last.bytes_done, last.files_done, last.files_total) == (result.total_bytes, 3, 3)


def test_a_second_run_skips_files_the_manifest_records(
    small_repo: dict[str, HubFile], tmp_path: Path
) -> None:
    hub = FakeHub(REPO, small_repo)
    _serve_and_load(hub, tmp_path)
    served_before = sum(hub.stats.body_bytes.values())
    _, sink = _serve_and_load(hub, tmp_path)
    assert sum(hub.stats.body_bytes.values()) == served_before
    assert sink.reports[0].files_done == 3


def test_a_cut_transfer_resumes_without_refetching_what_it_had(big_file: Path, tmp_path: Path) -> None:
    hub = FakeHub(REPO, {"model.safetensors": HubFile(big_file)})
    hub.faults.cut_after["model.safetensors"] = [BIG // 2 + 12345]
    result, _ = _serve_and_load(hub, tmp_path)
    assert result.files[0].sha256 == hub.digest("model.safetensors")
    # What aiohttp had buffered but not yet handed over when the connection broke is lost (it raises
    # before returning buffered data): at most its buffer's high-water mark (2 x 1 MiB) is fetched twice.
    refetched = hub.stats.body_bytes["model.safetensors"] - BIG
    assert 0 <= refetched <= READ_BUFFER_LOSS
    ranges = [header for name, header in hub.stats.requests if name == "model.safetensors"]
    assert ranges == [None, f"bytes={BIG // 2 + 12345 - refetched}-"]


def test_a_failed_run_leaves_a_part_file_that_the_next_run_resumes(
    small_repo: dict[str, HubFile], tmp_path: Path
) -> None:
    hub = FakeHub(REPO, small_repo)
    size = small_repo["model.safetensors"].path.stat().st_size
    hub.faults.cut_after["model.safetensors"] = [2 * 2**20]
    with pytest.raises(TransferError, match=r"model\.safetensors after 1 attempts"):
        _serve_and_load(hub, tmp_path, retry=RetryPolicy(attempts=1))
    kept = (tmp_path / "model.safetensors.part").stat().st_size
    assert 0 < kept <= 2 * 2**20
    _serve_and_load(hub, tmp_path)
    assert hub.stats.body_bytes["model.safetensors"] == size + 2 * 2**20 - kept
    assert hub.stats.requests[-1] == ("model.safetensors", f"bytes={kept}-")
    assert not (tmp_path / "model.safetensors.part").exists()


def test_a_server_that_ignores_range_restarts_the_file(
    small_repo: dict[str, HubFile], tmp_path: Path
) -> None:
    hub = FakeHub(REPO, small_repo)
    hub.faults.ignore_range = True
    hub.faults.cut_after["model.safetensors"] = [2**20 + 5]
    result, _ = _serve_and_load(hub, tmp_path)
    assert {f.path: f.sha256 for f in result.files}["model.safetensors"] == hub.digest("model.safetensors")
    assert hub.stats.statuses[206] == 0


def test_a_corrupted_file_fails_verification_and_is_fetched_again(
    small_repo: dict[str, HubFile], tmp_path: Path
) -> None:
    hub = FakeHub(REPO, small_repo)
    hub.faults.corrupt["model.safetensors"] = 1
    result, _ = _serve_and_load(hub, tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == small_repo["model.safetensors"].path.read_bytes()
    assert [name for name, _ in hub.stats.requests].count("model.safetensors") == 2
    assert result.complete


def test_a_file_corrupted_twice_fails_the_load_and_is_not_kept(
    small_repo: dict[str, HubFile], tmp_path: Path
) -> None:
    hub = FakeHub(REPO, small_repo)
    hub.faults.corrupt["model.safetensors"] = 2
    with pytest.raises(
        VerificationError,
        match=r"model\.safetensors failed verification twice .* sha256 [0-9a-f]{64}, expected",
    ):
        _serve_and_load(hub, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "model.safetensors.part").exists()
    assert not Manifest.model_validate_json((tmp_path / ".aima-manifest.json").read_text()).complete


def test_5xx_and_429_answers_are_retried(small_repo: dict[str, HubFile], tmp_path: Path) -> None:
    hub = FakeHub(REPO, small_repo)
    hub.faults.statuses["model.safetensors"] = [503, 500, 429]
    result, _ = _serve_and_load(hub, tmp_path)
    assert result.complete
    assert (hub.stats.statuses[503], hub.stats.statuses[500], hub.stats.statuses[429]) == (1, 1, 1)


def test_persistent_5xx_fails_with_the_status_in_words(
    small_repo: dict[str, HubFile], tmp_path: Path
) -> None:
    hub = FakeHub(REPO, small_repo)
    hub.faults.statuses["config.json"] = [503] * 10
    with pytest.raises(TransferError, match=r"Failed to download config\.json after 4 attempts: HTTP 503"):
        _serve_and_load(hub, tmp_path)


@pytest.mark.parametrize("name", ["../evil.txt", "sub/../../evil.txt", "/tmp/evil.txt", "a\\..\\evil.txt"])
def test_a_traversal_file_name_is_refused_before_any_download(
    small_repo: dict[str, HubFile], tmp_path: Path, name: str
) -> None:
    hub = FakeHub(REPO, {**small_repo, name: small_repo["config.json"]})
    dest = tmp_path / "deep" / "model"
    with pytest.raises(UnsafePathError, match="Refused file name"):
        _serve_and_load(hub, dest)
    assert not hub.stats.requests
    assert not (tmp_path / "deep" / "evil.txt").exists()
    assert not any(p.name != "model" for p in (tmp_path / "deep").iterdir())


def test_a_full_disk_fails_cleanly_before_writing(small_repo: dict[str, HubFile], tmp_path: Path) -> None:
    hub = FakeHub(REPO, small_repo)
    with pytest.raises(
        DiskFullError, match=r"Not enough free space in .*: the download needs 3\.3 MiB, 1\.0 MiB are free"
    ):
        _serve_and_load(hub, tmp_path / "model", free_space=lambda _: 2**20)
    assert not hub.stats.requests
    assert list((tmp_path / "model").iterdir()) == []  # no partial files, no lock left behind


def test_two_loaders_on_one_model_do_not_collide(small_repo: dict[str, HubFile], tmp_path: Path) -> None:
    hub = FakeHub(REPO, small_repo)
    hub.faults.delay_per_chunk = 0.05  # hold the first loader's transfer open

    async def main() -> tuple[BaseException | None, Manifest]:
        async with running(hub.app()) as url:
            first = asyncio.create_task(_load(hub, tmp_path)(url))
            while not (tmp_path / ".aima-lock").exists():
                await asyncio.sleep(0.01)
            try:
                await _load(hub, tmp_path)(url)
            except LoaderError as error:
                refused: BaseException | None = error
            result, _ = await first
            return refused, result

    refused, result = asyncio.run(main())
    assert isinstance(refused, LockHeldError)
    assert "is locked by loader pid" in str(refused)
    assert result.complete


def test_a_waiting_loader_finds_the_model_ready_and_downloads_nothing(
    small_repo: dict[str, HubFile], tmp_path: Path
) -> None:
    hub = FakeHub(REPO, small_repo)
    hub.faults.delay_per_chunk = 0.02
    waiting = fast_env(CollectSink()).lock

    async def main() -> None:
        async with running(hub.app()) as url:
            first = asyncio.create_task(_load(hub, tmp_path)(url))
            while not (tmp_path / ".aima-lock").exists():
                await asyncio.sleep(0.01)
            second = _load(hub, tmp_path, lock=type(waiting)(wait=30, poll=0.02))(url)
            (_, _), (_, sink) = await asyncio.gather(first, second)
            assert sink.reports[0].files_done == 3  # everything skipped

    asyncio.run(main())
    assert [name for name, _ in hub.stats.requests].count("model.safetensors") == 1


def test_the_token_is_sent_and_never_logged(
    small_repo: dict[str, HubFile], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hub = FakeHub(REPO, small_repo, token=TOKEN)
    hub.faults.statuses["config.json"] = [503]
    _serve_and_load(hub, tmp_path)
    wrong = FakeHub(REPO, small_repo, token="another")

    async def main() -> None:
        async with running(wrong.app()) as url:
            request = engine.LoadRequest(
                uri=f"hf://{REPO}", dest=tmp_path / "again", endpoint=url, token=TOKEN
            )
            await engine.load(request, env=fast_env(CollectSink()))

    with pytest.raises(SourceError, match="check the token") as refused:
        asyncio.run(main())
    assert TOKEN not in caplog.text
    assert TOKEN not in str(refused.value)
    assert TOKEN not in repr(engine.LoadRequest(uri="hf://a/b", dest=tmp_path, token=TOKEN))
