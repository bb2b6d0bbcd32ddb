"""The loader against a local fake S3 bucket that checks SigV4 signatures: a prefix is listed page by
page and downloaded with signed requests, a cut transfer resumes with a signed Range, a wrong secret
or region is refused in words, single-part ETags are checked as MD5 and multipart ones by size, and
every object request is conditional on the listed ETag, so a replaced object is never completed
from two versions."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from aima.loader import engine
from aima.loader.errors import SourceError, TransferError, UnsafePathError
from aima.loader.manifest import Manifest
from aima.loader.retry import RetryPolicy
from aima.loader.sigv4 import Credentials
from fakes.loading import CollectSink, fast_env
from fakes.s3 import FakeS3, S3Object
from fakes.serving import generate_file, running

pytestmark = pytest.mark.integration

BUCKET = "models"
PREFIX = "llama/tiny"
KEY_ID = "AKIAFAKES3EXAMPLE0001"
SECRET = "fake/s3+secret/Value0123456789abcdefghij"
SESSION = "session-token/with+odd=characters"
WEIGHTS = f"{PREFIX}/model-00001-of-00002.safetensors"
SHARD = f"{PREFIX}/model-00002-of-00002.safetensors"
TOKENIZER = f"{PREFIX}/tokenizer/special tokens+map!.json"
WEIGHTS_SIZE = 20 * 2**20 + 17


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """About 32 MB of files, generated once for the module."""
    root = tmp_path_factory.mktemp("s3")
    generate_file(root / "weights", WEIGHTS_SIZE, seed=11)
    generate_file(root / "shard", 12 * 2**20, seed=12)
    generate_file(root / "tokenizer", 300_000, seed=13)
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / "marker").write_bytes(b"")
    return {name: root / name for name in ("weights", "shard", "tokenizer", "config.json", "marker")}


def _objects(served: dict[str, Path]) -> dict[str, S3Object]:
    return {
        f"{PREFIX}/": S3Object(served["marker"]),  # a folder marker, as consoles create them
        f"{PREFIX}/config.json": S3Object(served["config.json"]),
        WEIGHTS: S3Object(served["weights"]),
        SHARD: S3Object(served["shard"], multipart=True),
        TOKENIZER: S3Object(served["tokenizer"]),
        f"{PREFIX}-instruct/config.json": S3Object(served["config.json"]),  # a sibling, not under the prefix
        "other.bin": S3Object(served["config.json"]),
    }


def _bucket(served: dict[str, Path], **overrides: Any) -> FakeS3:
    values: dict[str, Any] = {
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        "session_token": SESSION,
        "page_size": 2,
    }
    return FakeS3(BUCKET, _objects(served), **(values | overrides))


CREDENTIALS = Credentials(access_key_id=KEY_ID, secret_access_key=SECRET, session_token=SESSION)


def _load(
    bucket: FakeS3,
    dest: Path,
    *,
    uri: str = f"s3://{BUCKET}/{PREFIX}",
    credentials: Credentials | None = CREDENTIALS,
    region: str = "us-east-1",
    retry: RetryPolicy | None = None,
    **request: Any,
) -> Manifest:
    env = fast_env(CollectSink()) if retry is None else fast_env(CollectSink(), retry=retry)

    async def main() -> Manifest:
        async with running(bucket.app()) as url:
            load = engine.LoadRequest(
                uri=uri, dest=dest, endpoint=url, region=region, aws_credentials=credentials, **request
            )
            return await engine.load(load, env=env)

    return asyncio.run(main())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_downloads_a_prefix_with_signed_requests_page_by_page(
    served: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bucket = _bucket(served)
    result = _load(bucket, tmp_path)
    files = {f.path: f for f in result.files}
    assert sorted(files) == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "tokenizer/special tokens+map!.json",
    ]
    for name, source in [
        ("config.json", "config.json"),
        ("model-00001-of-00002.safetensors", "weights"),
        ("model-00002-of-00002.safetensors", "shard"),
        ("tokenizer/special tokens+map!.json", "tokenizer"),
    ]:
        assert (tmp_path / name).read_bytes() == served[source].read_bytes()
        assert files[name].sha256 == _sha256(served[source])
    assert {name: f.verified_by for name, f in files.items()} == {
        "config.json": "md5",
        "model-00001-of-00002.safetensors": "md5",
        "model-00002-of-00002.safetensors": "size",
        "tokenizer/special tokens+map!.json": "md5",
    }
    assert Manifest.model_validate_json((tmp_path / ".aima-manifest.json").read_text()) == result
    assert result.complete and result.revision.startswith("sha256:")
    # Six keys start with the prefix, two a page: three listings, each after the token of the last.
    assert [q.get("continuation-token") is not None for q in bucket.listings] == [False, True, True]
    assert {q["prefix"] for q in bucket.listings} == {PREFIX}
    assert not bucket.refused
    assert bucket.signed == {True: 3 + 4}
    # Every object request was conditional on the ETag listed for it.
    assert len(bucket.if_match) == 4
    assert all(condition == f'"{bucket.etag(key)}"' for key, condition in bucket.if_match)
    assert "1 of 4 objects have multipart ETags" in caplog.text
    assert SECRET not in caplog.text and SESSION not in caplog.text


def test_a_second_run_lists_again_and_downloads_nothing(served: dict[str, Path], tmp_path: Path) -> None:
    bucket = _bucket(served)
    _load(bucket, tmp_path)
    served_before = sum(bucket.stats.body_bytes.values())
    _load(bucket, tmp_path)
    assert sum(bucket.stats.body_bytes.values()) == served_before


def test_a_cut_transfer_resumes_with_a_signed_range(served: dict[str, Path], tmp_path: Path) -> None:
    bucket = _bucket(served)
    cut = 10 * 2**20 + 12345
    bucket.faults.cut_after[WEIGHTS] = [cut]
    result = _load(bucket, tmp_path)
    entry = next(f for f in result.files if f.path == "model-00001-of-00002.safetensors")
    assert (entry.sha256, entry.verified_by) == (_sha256(served["weights"]), "md5")
    ranges = [header for key, header in bucket.stats.requests if key == WEIGHTS]
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(str(ranges[1]).removeprefix("bytes=").removesuffix("-"))
    assert cut - 2 * 2**20 <= resumed_at <= cut  # what aiohttp had buffered when the cut came is lost
    assert bucket.stats.body_bytes[WEIGHTS] == WEIGHTS_SIZE + cut - resumed_at
    assert not bucket.refused  # the Range header was signed, and the signature checked


def test_a_wrong_secret_is_refused_with_a_clear_error(served: dict[str, Path], tmp_path: Path) -> None:
    bucket = _bucket(served)
    wrong = Credentials(access_key_id=KEY_ID, secret_access_key="not-the-secret", session_token=SESSION)
    with pytest.raises(SourceError) as refused:
        _load(bucket, tmp_path / "model", credentials=wrong)
    assert str(refused.value).startswith(
        f"Access to s3://{BUCKET}/{PREFIX} was denied (HTTP 403 SignatureDoesNotMatch: The request "
        "signature we calculated does not match"
    )
    assert str(refused.value).endswith("; check AWS_SECRET_ACCESS_KEY")
    assert "not-the-secret" not in str(refused.value) and SESSION not in str(refused.value)
    assert not bucket.stats.requests
    assert list((tmp_path / "model").iterdir()) == []


def test_an_anonymous_request_to_a_private_bucket_says_so(served: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"denied \(HTTP 403 AccessDenied.*the request was anonymous"):
        _load(_bucket(served), tmp_path, credentials=None)


def test_a_bucket_in_another_region_names_its_region(served: dict[str, Path], tmp_path: Path) -> None:
    bucket = _bucket(served, region="eu-central-1")
    with pytest.raises(SourceError, match=r"is in region eu-central-1 .* https://s3.eu-central-1.amazonaws"):
        _load(bucket, tmp_path)
    assert _load(bucket, tmp_path, region="eu-central-1").complete


def test_a_public_bucket_is_read_without_signing(served: dict[str, Path], tmp_path: Path) -> None:
    bucket = _bucket(served, access_key_id=None, secret_access_key=None, session_token=None)
    result = _load(bucket, tmp_path, credentials=None, include=("*.json",))
    assert sorted(f.path for f in result.files) == ["config.json", "tokenizer/special tokens+map!.json"]
    assert bucket.signed == {False: 3 + 2}


def test_one_object_by_its_key(served: dict[str, Path], tmp_path: Path) -> None:
    bucket = _bucket(served)
    result = _load(bucket, tmp_path, uri=f"s3://{BUCKET}/{WEIGHTS}")
    assert [(f.path, f.verified_by) for f in result.files] == [("model-00001-of-00002.safetensors", "md5")]


def test_a_corrupted_single_part_object_fails_its_md5_and_is_fetched_again(
    served: dict[str, Path], tmp_path: Path
) -> None:
    bucket = _bucket(served)
    bucket.faults.corrupt[WEIGHTS] = 1
    _load(bucket, tmp_path)
    assert (tmp_path / "model-00001-of-00002.safetensors").read_bytes() == served["weights"].read_bytes()
    assert [key for key, _ in bucket.stats.requests].count(WEIGHTS) == 2


def test_multipart_and_kms_etags_are_no_md5_so_those_files_are_checked_by_size(
    served: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bucket = _bucket(served)
    bucket.objects[WEIGHTS].kms = True  # its ETag looks like an MD5, but the object's answer says KMS
    result = _load(bucket, tmp_path)
    checked = {f.path: f.verified_by for f in result.files}
    assert checked["model-00001-of-00002.safetensors"] == "size"
    assert checked["model-00002-of-00002.safetensors"] == "size"
    assert [key for key, _ in bucket.stats.requests].count(WEIGHTS) == 1  # not mistaken for corruption
    assert "model-00001-of-00002.safetensors: its ETag is no MD5 of its bytes" in caplog.text


def test_a_traversal_key_is_refused_before_any_download(served: dict[str, Path], tmp_path: Path) -> None:
    bucket = _bucket(served)
    bucket.objects[f"{PREFIX}/../../evil.txt"] = S3Object(served["config.json"])
    with pytest.raises(UnsafePathError, match=r"Refused file name '\.\./\.\./evil\.txt'"):
        _load(bucket, tmp_path / "model")
    assert not bucket.stats.requests
    assert not (tmp_path / "evil.txt").exists()


SHARD_NAME = "model-00002-of-00002.safetensors"


def _partial_shard(served: dict[str, Path], bucket: FakeS3, dest: Path) -> None:
    """A first run that leaves part of the multipart shard behind."""
    bucket.faults.cut_after[SHARD] = [6 * 2**20]
    with pytest.raises(TransferError):
        _load(bucket, dest, include=(SHARD_NAME,), retry=RetryPolicy(attempts=1))
    assert 0 < (dest / f"{SHARD_NAME}.part").stat().st_size < served["shard"].stat().st_size


@pytest.fixture
def new_shard(tmp_path: Path, served: dict[str, Path]) -> Path:
    """Other bytes of the same size: a size check alone cannot tell the two versions apart."""
    path = tmp_path / "served" / "shard-v2"
    generate_file(path, served["shard"].stat().st_size, seed=99)
    return path


def test_a_partial_file_of_an_object_replaced_between_runs_is_fetched_whole(
    served: dict[str, Path], new_shard: Path, tmp_path: Path
) -> None:
    bucket = _bucket(served)
    dest = tmp_path / "model"
    _partial_shard(served, bucket, dest)
    old_etag = bucket.etag(SHARD)
    bucket.replace(SHARD, S3Object(new_shard, multipart=True))
    assert bucket.etag(SHARD) != old_etag and "-" in bucket.etag(SHARD)
    bucket.stats.requests.clear()

    result = _load(bucket, dest, include=(SHARD_NAME,))

    assert (
        dest / SHARD_NAME
    ).read_bytes() == new_shard.read_bytes()  # not the old bytes' head on the new tail
    assert [(f.sha256, f.verified_by) for f in result.files] == [(_sha256(new_shard), "size")]
    assert bucket.stats.requests == [(SHARD, None)]  # whole, not resumed
    assert result.partials is None and not (dest / f"{SHARD_NAME}.part").exists()


def test_an_object_replaced_after_its_listing_fails_its_file_and_the_next_run_fetches_it_whole(
    served: dict[str, Path], new_shard: Path, tmp_path: Path
) -> None:
    bucket = _bucket(served)
    dest = tmp_path / "model"
    _partial_shard(served, bucket, dest)
    old_etag = bucket.etag(SHARD)
    bucket.replace_after_listing[SHARD] = S3Object(new_shard, multipart=True)

    with pytest.raises(TransferError) as failed:
        _load(bucket, dest, include=(SHARD_NAME,))
    assert str(failed.value) == (
        f"File {SHARD_NAME} changed on the source after it was listed (HTTP 412: its ETag is no longer "
        f"{old_etag}); its partial file was discarded, and the next run lists it again"
    )
    # The resume asked for the listed object, signed with its condition; S3 refused it, checked.
    assert bucket.if_match[-1] == (SHARD, f'"{old_etag}"')
    assert bucket.refused == {"PreconditionFailed": 1}
    assert not (dest / f"{SHARD_NAME}.part").exists() and not (dest / SHARD_NAME).exists()

    result = _load(bucket, dest, include=(SHARD_NAME,))
    assert (dest / SHARD_NAME).read_bytes() == new_shard.read_bytes()
    assert [f.sha256 for f in result.files] == [_sha256(new_shard)]
