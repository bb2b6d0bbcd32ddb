"""`aima loader` as the Model controller's Job runs it: JSON progress lines on stdout, exit status
and a one-line reason on failure; https, s3 and pvc sources; --verify-only."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from aima.loader.cli import loader
from fakes.hub import FakeHub, HubFile
from fakes.s3 import FakeS3, S3Object
from fakes.serving import Faults, Stats, generate_file, running_in_thread, serve_file

pytestmark = pytest.mark.integration


@pytest.fixture
def hub_url(tmp_path: Path) -> Iterator[str]:
    generate_file(tmp_path / "served" / "weights", 2 * 2**20, seed=4)
    (tmp_path / "served" / "config.json").write_text("{}")
    files = {
        "model.safetensors": HubFile(tmp_path / "served" / "weights"),
        "config.json": HubFile(tmp_path / "served" / "config.json", lfs=False),
    }
    with running_in_thread(FakeHub("acme/m", files, token="t0k3n").app()) as url:
        yield url


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(loader, list(args), catch_exceptions=False)


def _lines(result: Result) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_loads_from_the_hub_and_prints_progress_lines(hub_url: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0k3n\n")
    dest = tmp_path / "model"
    result = _invoke(
        "--source",
        "hf://acme/m@main",
        "--dest",
        str(dest),
        "--endpoint",
        hub_url,
        "--token-file",
        str(token_file),
    )
    assert result.exit_code == 0, result.stderr
    lines = _lines(result)
    assert lines[-1]["phase"] == "Ready"
    assert lines[-1]["bytesDone"] == lines[-1]["bytesTotal"] == 2 * 2**20 + 2
    assert {"Downloading", "Verifying"} <= {line["phase"] for line in lines}
    verified = _invoke("--source", "hf://acme/m@main", "--dest", str(dest), "--verify-only")
    assert verified.exit_code == 0, verified.stderr
    assert _lines(verified)[-1]["phase"] == "Ready"


def test_python_m_aima_loader_downloads_without_importing_the_operator(hub_url: str, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    command = [sys.executable, "-X", "importtime", "-m", "aima.loader", "--source", "hf://acme/m@main"]
    options = ["--dest", str(dest), "--endpoint", hub_url, "--token-env", "HUB_TOKEN"]
    env = dict(os.environ, HUB_TOKEN="t0k3n")
    result = subprocess.run([*command, *options], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1])["phase"] == "Ready"
    assert (dest / "model.safetensors").read_bytes() == (tmp_path / "served" / "weights").read_bytes()
    # -X importtime lists every module imported; the point of `-m aima.loader` is a fast, small start.
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "aima.loader.transfer" in imported
    assert not {"mcp", "aima.kube", "aima.controllers"} & imported


def test_a_failure_exits_1_with_one_line_and_a_failed_progress_line(
    hub_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG_TOKEN", "nope")
    dest = tmp_path / "model"
    result = _invoke(
        "--source", "hf://acme/m", "--dest", str(dest), "--endpoint", hub_url, "--token-env", "WRONG_TOKEN"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "aima loader: Access to Hub repository acme/m@main was denied (HTTP 401); check the token"
    )
    assert result.stderr.count("\n") == 1
    assert _lines(result)[-1]["phase"] == "Failed"
    assert "nope" not in result.stdout + result.stderr


def test_malformed_source_exits_1(tmp_path: Path) -> None:
    result = _invoke("--source", "ftp://bucket/key", "--dest", str(tmp_path))
    assert result.exit_code == 1
    assert "unsupported scheme 'ftp'" in result.stderr


def test_s3_source_signs_with_the_aws_variables_and_never_prints_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = generate_file(tmp_path / "served" / "weights", 3 * 2**20, seed=7)
    objects = {"team/qwen/model.safetensors": S3Object(tmp_path / "served" / "weights")}
    bucket = FakeS3(
        "models", objects, access_key_id="AKIDCLI", secret_access_key="cli/secret+key", region="eu-west-1"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDCLI")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cli/secret+key")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    dest = tmp_path / "model"
    with running_in_thread(bucket.app()) as url:
        options = ["--source", "s3://models/team/qwen", "--dest", str(dest), "--endpoint", url]
        result = _invoke(*options, "--region", "eu-west-1")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong/secret")
        refused = _invoke(*options, "--region", "eu-west-1", "--dest", str(tmp_path / "again"))
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        half = _invoke(*options)
    assert result.exit_code == 0, result.stderr
    assert _lines(result)[-1]["phase"] == "Ready"
    assert hashlib.sha256((dest / "model.safetensors").read_bytes()).hexdigest() == digest
    assert refused.exit_code == 1
    assert refused.stderr.startswith(
        "aima loader: Access to s3://models/team/qwen was denied (HTTP 403 SignatureDoesNotMatch"
    )
    assert refused.stderr.rstrip().endswith("check AWS_SECRET_ACCESS_KEY")
    assert half.exit_code == 1
    assert "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not" in half.stderr
    everything = "".join(r.stdout + r.stderr for r in (result, refused, half))
    assert "secret+key" not in everything and "wrong/secret" not in everything


def test_https_file_with_published_digest_then_verify_only_catches_a_corruption(tmp_path: Path) -> None:
    served = tmp_path / "served.gguf"
    digest = generate_file(served, 3 * 2**20, seed=5)
    stats, faults = Stats(), Faults(statuses={"f": [503]})
    app = web.Application()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve_file(request, key="f", path=served, faults=faults, stats=stats)

    app.router.add_route("*", "/files/model.gguf", handler)
    dest = tmp_path / "model"
    with running_in_thread(app) as url:
        result = _invoke("--source", f"{url}/files/model.gguf#sha256={digest}", "--dest", str(dest))
    assert result.exit_code == 0, result.stderr
    assert hashlib.sha256((dest / "model.gguf").read_bytes()).hexdigest() == digest
    assert stats.statuses[503] == 1
    with (dest / "model.gguf").open("r+b") as handle:
        handle.seek(2**20)
        handle.write(b"X")
    checked = _invoke("--source", f"{url}/files/model.gguf", "--dest", str(dest), "--verify-only")
    assert checked.exit_code == 1
    assert "1 files failed verification: model.gguf: sha256" in checked.stderr


def test_pvc_source_describes_a_hand_filled_volume_then_verifies_it(tmp_path: Path) -> None:
    generate_file(tmp_path / "sub" / "weights.bin", 2**20, seed=6)
    (tmp_path / "config.json").write_text("{}")
    first = _invoke("--source", "pvc://models/qwen", "--dest", str(tmp_path))
    assert first.exit_code == 0, first.stderr
    recorded = json.loads((tmp_path / ".aima-manifest.json").read_text())
    assert [f["path"] for f in recorded["files"]] == ["config.json", "sub/weights.bin"]
    assert recorded["complete"] is True
    (tmp_path / "config.json").write_text("{ }")
    second = _invoke("--source", "pvc://models/qwen", "--dest", str(tmp_path))
    assert second.exit_code == 1
    assert "config.json: size 3 bytes, expected 2" in second.stderr


def test_a_held_lock_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / ".aima-lock").write_text(
        json.dumps({"pid": 1, "host": "other-pod", "created": 0.0, "token": "x"})
    )
    result = _invoke("--source", "pvc://models/qwen", "--dest", str(tmp_path))
    assert result.exit_code == 1
    assert "is locked by loader pid 1 on host other-pod since 1970-01-01T00:00:00Z" in result.stderr
