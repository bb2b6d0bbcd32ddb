"""The control plane build script: a failed build says what failed, and a finished cache is reused."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from aima_testenv.binaries import BUILD_SCRIPT

pytestmark = pytest.mark.integration


def run_build(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_failed_build_names_the_binary_the_version_and_the_compiler_output(tmp_path: Path) -> None:
    versions = tmp_path / "versions.env"
    versions.write_text(
        "K8S_VERSION=v1.36.4\nETCD_VERSION=v3.6.999\nKWOK_VERSION=v0.8.0\nHELM_VERSION=v3.21.4\n"
    )
    result = run_build(
        {"AIMA_TESTENV_VERSIONS": str(versions), "AIMA_TESTENV_CACHE": str(tmp_path / "cache")}
    )
    assert result.returncode != 0
    assert "FAILED to build etcd v3.6.999" in result.stderr
    assert "v3.6.999" in result.stderr.split("last lines of the compiler output:")[1]
    assert not list((tmp_path / "cache").glob("*/.complete"))


def test_a_second_run_finds_the_cached_binaries_in_seconds() -> None:
    first = run_build({})
    assert first.returncode == 0, first.stderr
    started = time.monotonic()
    second = run_build({})
    assert second.returncode == 0
    assert second.stdout == first.stdout
    assert time.monotonic() - started < 5
    assert (Path(second.stdout.strip()).parent / ".complete").exists()


def test_a_failed_run_keeps_what_it_built_and_the_next_run_starts_there(tmp_path: Path) -> None:
    versions = tmp_path / "versions.env"
    versions.write_text(
        "K8S_VERSION=v1.36.4\nETCD_VERSION=v3.6.14\nKWOK_VERSION=v0.0.999\nHELM_VERSION=v3.21.4\n"
    )
    env = {"AIMA_TESTENV_VERSIONS": str(versions), "AIMA_TESTENV_CACHE": str(tmp_path / "cache")}
    first = run_build(env)
    assert first.returncode != 0
    assert "built etcd v3.6.14" in first.stderr and "FAILED to build kwok v0.0.999" in first.stderr
    second = run_build(env)
    assert second.returncode != 0
    assert "building etcd" not in second.stderr, "etcd was kept from the failed run"
    assert "FAILED to build kwok v0.0.999" in second.stderr
