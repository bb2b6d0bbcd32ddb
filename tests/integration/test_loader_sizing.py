"""Sizing a cache volume from the source's listing before any download."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aima.api.model import Model
from aima.domain import model as planning
from aima.loader import sizing
from fakes.hub import FakeHub, HubFile
from fakes.s3 import FakeS3, S3Object
from fakes.serving import generate_file, running_in_thread

pytestmark = pytest.mark.integration


@pytest.fixture
def hub_url(tmp_path: Path) -> Iterator[str]:
    generate_file(tmp_path / "weights", 3 * 2**20, seed=1)
    (tmp_path / "readme").write_text("# tiny")
    files = {
        "model.safetensors": HubFile(tmp_path / "weights"),
        "README.md": HubFile(tmp_path / "readme", lfs=False),
    }
    with running_in_thread(FakeHub("acme/tiny", files).app()) as url:
        yield url


def test_listed_bytes_follow_the_loaders_filters(hub_url: str) -> None:
    everything = asyncio.run(
        sizing.listed_bytes(uri="hf://acme/tiny@main", endpoint=hub_url, include=(), exclude=())
    )
    weights_only = asyncio.run(
        sizing.listed_bytes(
            uri="hf://acme/tiny@main", endpoint=hub_url, include=("*.safetensors",), exclude=()
        )
    )
    assert everything == 3 * 2**20 + len("# tiny")
    assert weights_only == 3 * 2**20


def test_a_public_bucket_is_sized_from_its_listing_and_a_private_one_is_not(tmp_path: Path) -> None:
    generate_file(tmp_path / "weights", 3 * 2**20, seed=2)
    (tmp_path / "readme").write_text("# tiny")
    objects = {
        "m/model.safetensors": S3Object(tmp_path / "weights"),
        "m/README.md": S3Object(tmp_path / "readme"),
    }

    def listed(bucket: FakeS3) -> int | None:
        with running_in_thread(bucket.app()) as url:
            return asyncio.run(
                sizing.listed_bytes(
                    uri="s3://models/m",
                    endpoint=url,
                    region="eu-west-1",
                    include=("*.safetensors",),
                    exclude=(),
                )
            )

    assert listed(FakeS3("models", objects, region="eu-west-1")) == 3 * 2**20
    private = FakeS3("models", objects, access_key_id="AKID", secret_access_key="s", region="eu-west-1")
    assert listed(private) is None  # the reconcile never signs: the volume gets the default size
    assert private.refused == {"AccessDenied": 1}


def test_an_unreachable_source_gives_no_size_at_once() -> None:
    started = time.monotonic()
    found = asyncio.run(
        sizing.listed_bytes(uri="hf://acme/tiny@main", endpoint="http://127.0.0.1:9", include=(), exclude=())
    )
    assert found is None
    assert time.monotonic() - started < 2  # no retries: the reconcile that asked is waiting


@pytest.mark.parametrize(
    ("cache", "listed", "size"),
    [
        ({"size": "7Gi"}, 100 * 2**30, "7Gi"),
        (None, 100 * 2**30, "120Gi"),
        (None, 2**20, "1Gi"),
        (None, None, "50Gi"),
    ],
    ids=["the spec decides", "listing plus 20 percent", "at least 1Gi", "default without a listing"],
)
def test_cache_size(cache: dict[str, str] | None, listed: int | None, size: str) -> None:
    spec: dict[str, object] = {"source": "hf://acme/tiny", "type": "LLM"} | (
        {"cache": cache} if cache else {}
    )
    model = Model.model_validate({"metadata": {"name": "m", "namespace": "n"}, "spec": spec})
    assert planning.cache_size(model, listed_bytes=listed) == size
